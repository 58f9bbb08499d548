"""The gated and delta-rule recurrences on the harness: gates drawn by bench and check, made by a task
model's projections; decoding from a carried state; the state's size in records; the family's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnbench.suite.checks.checker import Checker, CheckFailed
from attnbench.suite.cli import main
from attnbench.suite.core.registry import load_registry
from attnbench.suite.runs.records import read_records
from attnbench.suite.training.model import ModelConfig, TaskModel
from attnbench.tasks import load_task
from attnbench.variants.contract import AttentionSpec, attend, reference
from attnbench.variants.gates import make_gates

FAMILY = ("retnet", "gla", "deltanet", "gated-deltanet", "rwkv7")
FAST = ["--budget", "0.05", "--repeats", "3", "--warmup", "1", "--threads", "1"]
PLUGINS = Path(__file__).parent / "plugins"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.mark.parametrize("name", FAMILY)
def test_the_family_is_listed_available_on_cpu_and_declares_its_gates(name):
    cls = load_registry().get(name)
    assert cls.info.recurrent and cls.info.family == "linear" and cls.unavailable_reason("cpu") is None
    assert cls.info.causal and not cls.info.non_causal
    # Their kernels on CUDA: the same definition, and a reason on this machine.
    fla = load_registry().get(f"{name}-fla")
    assert fla.info.definition == cls.info.definition and fla.unavailable_reason("cpu") == "runs on cuda only"


@pytest.mark.parametrize("name", FAMILY)
def test_attend_draws_the_declared_gates_and_reference_sees_the_same(name):
    variant = load_registry().build(name, AttentionSpec(num_heads=4, head_dim=16, num_kv_heads=2, causal=True))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 33, 16, generator=gen) for h in (4, 2, 2))
    out = attend(variant, q, k, v)
    assert reference(variant, q, k, v).sub(out.double()).norm() < 1e-5 * out.norm()
    gates = make_gates(variant.info.gates, q, k, seed=3)  # other gates, another output (where there are gates)
    if gates:
        assert not torch.allclose(attend(variant, q, k, v, gates=gates), out)
    with pytest.raises(ValueError, match="takes gates"):
        variant(q, k, v, **{"nosuch": torch.zeros(2, 4, 33)})


@pytest.mark.parametrize("name", FAMILY)
def test_a_task_model_makes_the_gates_with_the_layer_projections_and_trains_them(name):
    params = {"vocab_size": 64, "seq_len": 32, "num_kv_pairs": 4, "train_size": 8, "val_size": 4, "test_size": 4}
    data = load_task("mqar", params, None)
    model = TaskModel.for_task(data, ModelConfig(dim=32, heads=2, depth=1), load_registry(), name)
    layer = model.attention_layers[0]
    gated = load_registry().get(name).info.gates
    assert (layer.gate_layer is None) == (not gated)
    logits = model(data.train.tokens[:2])
    logits.float().sum().backward()
    if gated:  # the gates' own parameters learn
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.gate_layer.parameters())


def test_bench_measures_the_family_correct_against_the_recurrence_with_its_state_beside_the_cache(tmp_path, capsys):
    argv = ["bench", "--variants", "gla,gated-deltanet", "--seq", "64,200", "--causal", "--mode", "fwd_bwd", *FAST]
    code, _, err = cli(capsys, *argv, "--out", str(tmp_path), "--no-report")
    records = read_records(tmp_path)
    assert code == 0 and len(records) == 4 and all(r["status"] == "ok" and r["correct"] for r in records), err
    for r in records:  # one layer's state (H x D x D floats) against its K/V cache (2 x H_kv x N x D)
        assert r["state_bytes"] == r["batch"] * r["heads"] * r["head_dim"] ** 2 * 4
        assert r["kv_cache_bytes"] == 2 * r["batch"] * r["kv_heads"] * r["seq"] * r["head_dim"] * 4


def test_decoding_runs_the_step_from_a_carried_state(tmp_path, capsys):
    argv = ["bench", "--variants", "deltanet,rwkv7", "--seq", "300", "--q-len", "1", "--causal", *FAST]
    code, _, err = cli(capsys, *argv, "--out", str(tmp_path), "--no-report")
    records = read_records(tmp_path)
    assert code == 0 and all(r["status"] == "ok" and r["correct"] for r in records), err


def test_train_records_the_state_a_recurrence_carries(tmp_path, capsys):
    argv = ["train", "--task", "mqar", "--variant", "gated-deltanet", "--preset", "tiny", "--out", str(tmp_path)]
    code, out, _ = cli(capsys, *argv)
    (record,) = read_records(tmp_path)
    model = record["model"]
    head_dim = (model["qkv_dim"] or model["dim"]) // model["heads"]
    assert code == 0 and record["status"] == "ok", out
    assert record["state_values"] == model["heads"] * head_dim**2 * model["depth"]
    code, _, _ = cli(capsys, "train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--out", str(tmp_path))
    assert read_records(tmp_path)[-1]["state_values"] is None  # a KV cache, not a state


@pytest.mark.parametrize(
    "plugin, variant, failed, words",
    [
        ("gate_after_update.py", "gla-gate-after", "gate-order", "applied after the update"),
        (
            "beta_value_only.py",
            "deltanet-beta-value-only",
            "delta-rule",
            "beta is applied to v but not to the key side",
        ),
    ],
)
def test_check_names_the_bug_class_of_a_broken_plugin(capsys, plugin, variant, failed, words):
    argv = ["check", "--plugin", str(PLUGINS / plugin), variant, "--dtype", "float32", "--json"]
    code, out, _ = cli(capsys, *argv)
    results = {r["check"]: r for r in json.loads(out)}
    assert code == 1 and results[failed]["status"] == "fail" and words in results[failed]["detail"]


def test_the_family_checks_pass_for_a_member_and_name_a_chunk_boundary_bug():
    from attnbench.suite.checks.recurrence import check_chunk_boundaries, check_state_carry
    from attnbench.variants.linear.gla import GlaAttention

    checker = Checker(GlaAttention, "cpu", torch.float32)
    assert "max rel err" in check_chunk_boundaries(checker) and "carried in" in check_state_carry(checker)

    class LateBoundary(GlaAttention):  # hands the state on one token late: right within one chunk only
        def chunked(self, q, k, v, gates, state):
            size = self.options.chunk_size
            if q.shape[2] <= size:
                return super().chunked(q, k, v, gates, state)
            first, rest = slice(0, size + 1), slice(size, None)
            head, mid = super().chunked(*(x[:, :, first] for x in (q, k, v)), {"g": gates["g"][:, :, first]}, state)
            tail, final = super().chunked(*(x[:, :, rest] for x in (q, k, v)), {"g": gates["g"][:, :, rest]}, mid)
            return torch.cat([head[:, :, :size], tail], 2), final

    with pytest.raises(CheckFailed, match="a chunk boundary is off"):
        check_chunk_boundaries(Checker(LateBoundary, "cpu", torch.float32))


def test_the_delta_rule_check_names_a_missing_l2_norm():
    from attnbench.suite.checks.recurrence import check_delta_rule
    from attnbench.variants.linear.deltanet import DeltaNetAttention, chunked_delta_rule

    class NoNorm(DeltaNetAttention):  # the chunked form on q and k as given
        def chunked(self, q, k, v, gates, state):
            return chunked_delta_rule(q, k, v, gates["beta"], state, self.options.chunk_size, self.scale(q.shape[-1]))

    assert "(v_0 + v_t) / 2" in check_delta_rule(Checker(DeltaNetAttention, "cpu", torch.float32))
    with pytest.raises(CheckFailed, match="q and k are not L2-normalised"):
        check_delta_rule(Checker(NoNorm, "cpu", torch.float32))
