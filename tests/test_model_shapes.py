"""The model's shapes beyond one variant: hybrids (`model.layers`), the short convolution, and MAD's pieces
(rotary positions in the softmax layers, SwiGLU, its constant schedule)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from attnbench.suite.cli import main
from attnbench.suite.core.registry import load_registry
from attnbench.suite.runs.records import read_records
from attnbench.suite.training.model import ModelConfig, TaskModel


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_a_pattern_repeats_to_the_depth_and_reads_from_a_comma_list():
    cfg = ModelConfig(depth=5, layers="gla, sdpa")
    assert cfg.layers == ["gla", "sdpa"] and cfg.mixers("naive") == ["gla", "sdpa", "gla", "sdpa", "gla"]
    assert ModelConfig(depth=2).mixers("naive") == ["naive", "naive"]
    with pytest.raises(ValidationError):
        ModelConfig(layers=[])


def test_each_layer_gets_its_own_variant_and_options():
    cfg = ModelConfig(dim=16, heads=2, depth=3, layers=["sliding-window", "sdpa"])
    model = TaskModel("lm", 20, 20, 24, cfg, load_registry(), "sdpa", None, {"sliding-window": {"window": 3}})
    cores = [layer.core for layer in model.attention_layers]
    assert [c.info.name for c in cores] == ["sliding-window", "sdpa", "sliding-window"]
    assert cores[0].spec.options == {"window": 3} and cores[1].spec.options == {}
    assert model(torch.randint(2, 20, (1, 24))).shape == (1, 24, 20)
    with pytest.raises(Exception, match="unknown variant 'nope'"):
        TaskModel("lm", 20, 20, 24, ModelConfig(dim=16, heads=2, layers=["nope"]), load_registry(), "sdpa")


def test_a_hybrid_trains_and_its_record_names_every_layer(capsys, tmp_path):
    # The tiny preset has one layer: a pattern of two builds both (the command, as written).
    argv = ["train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--set", "model.layers=linear-elu,sdpa",
            "--out", str(tmp_path)]  # fmt: skip
    code, _, err = cli(capsys, *argv)
    (record,) = read_records(tmp_path)
    assert code == 0 and record["status"] == "ok", err
    assert record["mixers"] == ["linear-elu", "sdpa"] and record["model"]["layers"] == ["linear-elu", "sdpa"]
    assert record["model"]["depth"] == 2
    assert record["layer_options"] == {"linear-elu": {}}
    assert record["layer_sources"]["linear-elu"]["module"] == "attnbench.variants.linear.elu"
    assert "model.layers" in record["command"]
    code, out, _ = cli(capsys, *argv)  # the same hybrid resumes as recorded; another pattern is another run
    assert "already recorded" in out and len(read_records(tmp_path)) == 1
    code, _, _ = cli(capsys, *argv[:7], "--set", "model.layers=sdpa,linear-elu", *argv[9:])  # the same --out
    assert code == 0 and [r["mixers"] for r in read_records(tmp_path)][-1] == ["sdpa", "linear-elu"]
    # The run's table and charts name each pattern, not the --variant its layers replaced.
    code, _, err = cli(capsys, "report", str(tmp_path))
    table = (tmp_path / "accuracy.md").read_text()
    assert code == 0 and "| linear-elu+sdpa |" in table and "| sdpa+linear-elu |" in table, err
    assert "| sdpa " not in table.replace("| sdpa+", "")


def test_a_hybrid_counts_caches_for_attention_layers_and_states_for_recurrences(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--set",
                       "model.layers=gla,sdpa,sdpa", "--set", "model.depth=3", "--out", str(tmp_path))  # fmt: skip
    (record,) = read_records(tmp_path)
    assert code == 0 and record["status"] == "ok", err
    head_dim = record["model"]["dim"] // record["model"]["heads"]
    assert record["kv_cache_values_per_token"] == 2 * 2 * record["model"]["heads"] * head_dim  # two sdpa layers
    assert record["state_values"] == record["model"]["heads"] * head_dim**2  # one gla layer


def test_a_plugin_can_be_a_layer_and_a_bad_layer_is_one_line(capsys, tmp_path, plugins):
    code, _, err = cli(capsys, "train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny",
                       "--plugin", str(plugins / "previous_two.py"), "--set", "model.layers=previous-two,sdpa",
                       "--out", str(tmp_path / "ok"))  # fmt: skip
    assert code == 0 and read_records(tmp_path / "ok")[0]["mixers"] == ["previous-two", "sdpa"], err
    code, _, err = cli(capsys, "train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny",
                       "--set", "model.layers=nope,sdpa", "--out", str(tmp_path / "bad"))  # fmt: skip
    assert code != 0 and "unknown variant 'nope'" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_a_short_convolution_mixes_the_last_tokens_and_stays_causal():
    torch.manual_seed(0)
    cfg = ModelConfig(dim=16, heads=2, depth=1, short_conv=4)
    model = TaskModel("lm", 20, 20, 24, cfg, load_registry(), "linear-elu").eval()
    plain = TaskModel("lm", 20, 20, 24, ModelConfig(dim=16, heads=2, depth=1), load_registry(), "linear-elu")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.kernel_size for c in convs] == [(4,), (4,)] and not any(
        isinstance(m, torch.nn.Conv1d) for m in plain.modules()
    )
    tokens = torch.randint(2, 20, (1, 24))
    changed = tokens.clone()
    changed[0, 12] = (tokens[0, 12] - 1) % 18 + 2  # another token at position 12
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert torch.allclose(before[:, :12], after[:, :12], atol=1e-6)  # no position sees a later token
    assert not torch.allclose(before[:, 12:], after[:, 12:])


def _rotary_by_hand(x: list[list[float]], base: float = 10000.0) -> list[list[float]]:
    """Each position m's feature pairs (i, i + D/2) turned by m * base^(-i / (D/2)), in float64."""
    import math

    half = len(x[0]) // 2
    out = []
    for m, row in enumerate(x):
        turned = list(row)
        for i in range(half):
            angle = m * base ** (-i / half)
            a, b = row[i], row[i + half]
            turned[i], turned[i + half] = (
                a * math.cos(angle) - b * math.sin(angle),
                a * math.sin(angle) + b * math.cos(angle),
            )
        out.append(turned)
    return out


def test_rotary_turns_feature_pairs_by_position_so_scores_see_offsets_only():
    from attnbench.suite.training.model import rotary

    x = torch.randn(1, 1, 7, 8, dtype=torch.float64)
    assert torch.allclose(rotary(x)[0, 0], torch.tensor(_rotary_by_hand(x[0, 0].tolist()), dtype=torch.float64))
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    seq = torch.stack([q, k, q, k, q, k])[None, None]  # q at 0, 2, 4; k at 1, 3, 5
    turned = rotary(seq)[0, 0]
    assert torch.allclose(turned[0] @ turned[1], turned[2] @ turned[3]) and torch.allclose(
        turned[2] @ turned[5], turned[0] @ turned[3]
    )


def test_mads_model_shape_rotary_in_softmax_layers_no_embedding_and_swiglu():
    cfg = ModelConfig(dim=128, heads=16, depth=2, positions="rotary", mlp="swiglu", layers=["gla", "sdpa"])
    model = TaskModel("lm", 20, 20, 24, cfg, load_registry(), "sdpa")
    assert [layer.rotates for layer in model.attention_layers] == [False, True]  # gla places tokens by its gates
    assert "pos" not in dict(model.encoder.named_parameters()) and not model.encoder.pos.any()
    mlp = model.encoder.blocks[0].mlp
    assert cfg.mlp_dim == 352 and mlp.w1.weight.shape == (352, 128) and mlp.w1.bias is None  # MAD: 2*128*4/3 -> 352
    with pytest.raises(ValidationError, match="odd"):
        ModelConfig(dim=12, heads=4, positions="rotary")


def test_mads_constant_schedule_warms_up_then_holds_the_rate():
    from attnbench.suite.training import loop, presets

    factor = loop.schedule(presets.TrainSettings(steps=100, warmup_steps=10, schedule="constant"))
    assert [factor(s) for s in (0, 4, 9, 10, 50, 99)] == [0.1, 0.5, 1.0, 1.0, 1.0, 1.0]


def test_the_hybrids_study_plans_its_ratios_on_mqar_and_mad_recall(tmp_path):
    from attnbench.suite.training import study as studies

    plan = studies.load_study("hybrids")
    jobs = studies.study_jobs(plan, load_registry(), "cpu", tmp_path, ())
    assert {job.task for job in jobs} == {"mqar", "mad-in-context-recall"} and len(jobs) == 2 * 4 * 2
    depth4 = [ModelConfig(**{"depth": 4, **arm.model}).mixers("gla") for arm in plan.arms]
    assert [m.count("sdpa") for m in depth4] == [0, 1, 2, 4]
