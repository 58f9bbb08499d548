"""Heads: K/V sharing and score-scale model options, --set overrides, studies, and `attnbench heads`
(importance against per-example gradients, pruning, statistics against the weights by hand)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from attnbench.suite.analysis import heads as analysis
from attnbench.suite.analysis.trained import load_trained
from attnbench.suite.cli import main
from attnbench.suite.core.errors import UserError
from attnbench.suite.core.registry import load_registry
from attnbench.suite.outputs.heatmap import attention_maps
from attnbench.suite.runs.heads_records import read_heads
from attnbench.suite.runs.records import read_records
from attnbench.suite.training import study as studies
from attnbench.suite.training.model import ModelConfig, SelfAttention, check_layout
from attnbench.suite.training.presets import load_train_preset
from attnbench.suite.training.runs import run_key
from attnbench.variants.contract import AttentionSpec

REGISTRY = load_registry()


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def layer(**fields) -> SelfAttention:
    cfg = ModelConfig(dim=32, heads=4, **fields)
    torch.manual_seed(0)
    spec = AttentionSpec(num_heads=4, head_dim=8, num_kv_heads=None if cfg.kv_latent else cfg.kv_heads)
    return SelfAttention(cfg, REGISTRY.build("naive", spec))


def by_hand(attn: SelfAttention, x: torch.Tensor, scale: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v per head from the layer's own projections, K/V heads repeated."""
    b, n, _ = x.shape
    q = attn.q(x).view(b, n, attn.heads, attn.head_dim).transpose(1, 2)
    latent = attn.kv_down(x) if hasattr(attn, "kv_down") else x
    k, v = attn.kv(latent).view(b, n, 2, attn.kv_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    k, v = (t.repeat_interleave(attn.heads // attn.kv_heads, dim=1) for t in (k, v))
    o = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v
    if gate is not None:
        o = o * gate.view(1, -1, 1, 1)
    return attn.out(o.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize(
    ("fields", "layout", "cache"),
    [({}, "MHA", 2 * 4 * 8), ({"kv_heads": 2}, "GQA-2", 2 * 2 * 8), ({"kv_heads": 1}, "MQA", 2 * 8),
     ({"kv_latent": 6}, "MLA-6", 6)],
)  # fmt: skip
def test_kv_layouts_compute_attention_and_name_their_cache(fields, layout, cache):
    attn, x = layer(**fields), torch.randn(2, 5, 32)
    torch.testing.assert_close(attn(x), by_hand(attn, x, 1 / math.sqrt(8)), rtol=1e-5, atol=1e-5)
    cfg = ModelConfig(dim=32, heads=4, depth=3, **fields)
    assert cfg.kv_layout == layout and cfg.kv_cache_values() == 3 * cache
    if "kv_latent" in fields:  # K and V come from the shared latent through one up-projection to every head
        assert attn.kv_down[0].weight.shape == (6, 32) and attn.kv.weight.shape == (2 * 4 * 8, 6)


def test_score_scale_replaces_one_over_sqrt_d_and_gates_mask_heads():
    x = torch.randn(2, 5, 32)
    for scale in (1.0, 0.05):
        attn = layer(score_scale=scale)
        torch.testing.assert_close(attn(x), by_hand(attn, x, scale), rtol=1e-5, atol=1e-5)
    attn = layer(kv_heads=2)
    gate = torch.tensor([1.0, 0.0, 1.0, 0.5])
    attn.head_gate = gate
    torch.testing.assert_close(attn(x), by_hand(attn, x, 1 / math.sqrt(8), gate), rtol=1e-5, atol=1e-5)
    attn.head_gate = gate.expand(2, 4)  # one gate row per example: the same here
    torch.testing.assert_close(attn(x), by_hand(attn, x, 1 / math.sqrt(8), gate), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"heads": 4, "kv_heads": 3}, "multiple of kv_heads"), ({"kv_heads": 2, "kv_latent": 8}, "not both"),
     ({"heads": 3}, "not divisible by 3 heads"), ({"score_scale": 0}, "greater than 0")],
)  # fmt: skip
def test_model_config_refuses_layouts_that_do_not_fit(fields, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(dim=32, **fields)


def test_variants_that_cannot_take_the_layout_or_the_scale_are_refused(plugins):
    check_layout(ModelConfig(heads=4, kv_latent=8), REGISTRY.get("linear-elu").info)  # MLA keeps every head
    with pytest.raises(UserError, match="no softmax scale"):
        check_layout(ModelConfig(score_scale=1.0), REGISTRY.get("linear-elu").info)
    registry = load_registry([plugins / "no_gqa.py"])
    with pytest.raises(UserError, match="cannot take grouped K/V heads \\(GQA-2\\)"):
        check_layout(ModelConfig(heads=4, kv_heads=2), registry.get("no-gqa").info)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--set", "model.kv_heads=3"], "--set model: heads (2) must be a multiple of kv_heads (3)"),
     (["--set", "model.nope=1"], "--set model.nope: Extra inputs are not permitted"),
     (["--set", "heads=4"], "expected SECTION.KEY=VALUE"),
     (["--set", "optim.lr=1"], "expected SECTION.KEY=VALUE"),
     (["--set", "train.steps=-1"], "--set train.steps: Input should be greater than 0"),
     (["--set", "model.score_scale=1", "--variant", "linear-elu"], "linear-elu has no softmax scale"),
     (["--set", "model.kv_heads=1", "--variant", "no-gqa"], "no-gqa cannot take grouped K/V heads (MQA)")],
)  # fmt: skip
def test_bad_settings_are_one_line(capsys, tmp_path, plugins, argv, message):
    variant = [] if "--variant" in argv else ["--variant", "sdpa"]
    code, _, err = cli(capsys, "train", "--task", "mqar", "--preset", "tiny", *variant, *argv, "--plugin",
                       str(plugins / "no_gqa.py"), "--out", str(tmp_path / "run"))  # fmt: skip
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_settings_are_in_the_record_and_its_stored_command_remakes_the_run(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, _ = cli(capsys, "train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--set",
                     "model.kv_latent=8", "--set", "train.steps=10", "--out", str(out))  # fmt: skip
    (record,) = read_records(out)
    assert code == 0 and record["model"]["kv_latent"] == 8 and record["train"]["steps"] == 10 == record["steps"]
    assert record["settings"] == {"model": {"kv_latent": 8}, "train": {"steps": 10}}
    assert record["kv_layout"] == "MLA-8" and record["kv_cache_values_per_token"] == 8  # 1 layer
    assert len(record["curve"]) == 1 and record["curve"][0]["grad_norm"] > 0
    argv = shlex.split(record["command"])
    assert argv[:2] == ["attnbench", "train"] and argv[-1] == "--scratch"
    code, out_text, _ = cli(capsys, *argv[1:-1], "--out", str(out))
    assert code == 0 and "already recorded" in out_text and len(read_records(out)) == 1


def test_runs_recorded_before_the_new_model_fields_keep_their_key():
    setup = load_train_preset("tiny").tasks["mqar"]
    key = json.loads(run_key("mqar", "sdpa", 0, "tiny", setup, None))
    assert "kv_latent" not in key["setup"]["model"] and "score_scale" not in key["setup"]["model"]
    scaled = setup.model_copy(update={"model": setup.model.model_copy(update={"score_scale": 1.0})})
    assert json.loads(run_key("mqar", "sdpa", 0, "tiny", scaled, None))["setup"]["model"]["score_scale"] == 1


@pytest.mark.parametrize("name", ["head-count", "kv-sharing", "scale", "head-time"])
def test_shipped_studies_plan_their_runs(tmp_path, name):
    plan = studies.load_study(name)
    jobs = studies.study_jobs(plan, REGISTRY, "cpu", tmp_path, ())
    assert len(jobs) == len(plan.tasks) * len(plan.arms) * len(plan.variants) * len(plan.seeds)
    labels = {studies.arm_of(plan, {"task": j.task, "settings": j.settings}) for j in jobs}
    assert labels == {arm.label for arm in plan.arms}  # every run maps back to its arm


def test_bad_studies_are_one_line(capsys, tmp_path):
    code, _, err = cli(capsys, "study", "nope")
    assert code == 2 and "unknown study 'nope'" in err and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\ndescription: d\npreset: tiny\ntasks: [mqar]\narms: [{label: a}, {label: a}]\n")
    code, _, err = cli(capsys, "study", str(bad))
    assert code == 2 and "arm labels repeat" in err and err.count("\n") == 1
    bad.write_text("name: b\ndescription: d\npreset: tiny\ntasks: [mqar]\nvariants: [linear-elu]\n"
                   "arms: [{label: a}, {label: b, model: {score_scale: 1}}]\n")  # fmt: skip
    code, _, err = cli(capsys, "study", str(bad), "--out", str(tmp_path / "run"))
    assert code == 2 and "linear-elu has no softmax scale" in err and not (tmp_path / "run").exists()
    code, _, err = cli(capsys, "study", "kv-sharing", "--seeds", "0,1", "--out", str(tmp_path / "run"))
    assert code == 2 and "--seeds are the protocol's: give --lrs too" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "study", "kv-sharing", "--lrs", "0.001", "--seeds", "0", "--out", str(tmp_path / "run"))
    assert code == 2 and "protocol: seeds" in err and not (tmp_path / "run").exists()


def _two_layouts(tmp_path, extra: str = "") -> Path:
    """A study of MHA against MQA on tiny's MQAR."""
    plan = tmp_path / "mini.yaml"
    plan.write_text(
        f"name: mini\ndescription: two layouts\npreset: tiny\ntasks: [mqar]\n{extra}"
        "arms:\n  - {label: MHA, model: {heads: 4}}\n  - {label: MQA, model: {heads: 4, kv_heads: 1}}\n"
    )
    return plan


def _study_rows(out: Path) -> dict[str, dict[str, str]]:
    """study.md's table as {arm: {column: cell}}."""
    lines = [line for line in (out / "study.md").read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = (dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:])
    return {r["arm"]: r for r in rows}


def test_study_trains_its_arms_and_writes_table_chart_readme(capsys, tmp_path):
    plan = _two_layouts(tmp_path, "seeds: [0]\ntrain: {steps: 10}\n")
    out = tmp_path / "run"
    code, _, _ = cli(capsys, "study", str(plan), "--out", str(out))
    assert code == 0 and len(read_records(out)) == 2
    rows = _study_rows(out)
    assert set(rows) == {"MHA", "MQA"} and rows["MQA"]["K/V"] == "MQA"
    # 2 (K and V) x K/V heads x 8 dims x 1 layer x 4 bytes
    assert rows["MHA"]["KV cache B/token"] == "256" and rows["MQA"]["KV cache B/token"] == "64"
    assert float(rows["MHA"]["step time vs first"]) == 1 and rows["MHA"]["seeds"] == "1"
    readme = (out / "README.md").read_text()
    assert "study-mini.png" in readme and f"attnbench study {plan} --out {out}" in readme
    assert (out / "study-mini.png").stat().st_size > 10_000
    table = (out / "study.md").read_text()
    code, _, _ = cli(capsys, "study", str(plan), "--out", str(out))  # resumes: nothing retrained
    assert code == 0 and len(read_records(out)) == 2 and (out / "study.md").read_text() == table


def test_a_study_under_the_protocol_judges_each_arm_against_the_first(capsys, tmp_path):
    plan = _two_layouts(tmp_path)
    out = tmp_path / "run"
    argv = ["study", str(plan), "--out", str(out), "--lrs", "0.003,0.01", "--seeds", "0,1"]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    records = read_records(out)
    assert len(records) == 2 * 2 + 2 and all(r["settings"]["train"]["steps"] == 300 for r in records)
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["baseline_setting"] == "MHA" and [c["label"] for c in protocol["choices"]] == ["MHA", "MQA"]
    rows = _study_rows(out)
    assert rows["MHA"]["seeds"] == rows["MQA"]["seeds"] == "2"  # the final runs only, not the sweep's other rate
    assert rows["MHA"]["verdict"] == "-" and rows["MQA"]["verdict"] in ("same", "better", "worse", "inconclusive")
    assert all(row["lr chosen"].endswith(" swept)") for row in rows.values())  # two rates: always an edge
    assert "[" in rows["MQA"]["test acc [95% CI]"] and "[" in rows["MQA"]["vs first arm [95% CI]"]
    assert "--lrs 0.003,0.01 --seeds 0,1" in (out / "README.md").read_text()
    table = (out / "study.md").read_text()
    code, _, _ = cli(capsys, *argv)  # resumes: nothing retrained, judged alike
    assert code == 0 and len(read_records(out)) == 6 and (out / "study.md").read_text() == table


def _mini_study(tmp_path, steps: int) -> str:
    plan = tmp_path / "pair.yaml"
    plan.write_text(
        f"name: pair\ndescription: d\npreset: tiny\ntasks: [mqar]\nseeds: [0]\ntrain: {{steps: {steps}}}\n"
        "arms:\n  - {label: MHA, model: {heads: 4}}\n  - {label: MQA, model: {heads: 4, kv_heads: 1}}\n"
    )
    return str(plan)


def test_a_study_plans_its_runs_and_trains_only_the_tasks_asked(capsys, tmp_path):
    plan = _two_layouts(tmp_path, "seeds: [0]\ntrain: {steps: 10}\n")
    plan.write_text(plan.read_text().replace("tasks: [mqar]", "tasks: [mqar, listops]"))
    out = tmp_path / "run"
    argv = ["study", str(plan), "--out", str(out), "--tasks", "mqar"]
    code, stdout, err = cli(capsys, *argv, "--lrs", "0.003,0.01", "--seeds", "0,1", "--dry-run")
    # Per arm: the sweep's two rates at seed 0, then seed 1 at the choice (seed 0's run there is the sweep's).
    assert code == 0 and "6 runs, about" in stdout and "Nothing was trained" in stdout, err
    assert "MQA" in stdout and "listops" not in stdout and not out.exists()
    code, _, err = cli(capsys, *argv[:-1], "pathfinder")
    assert code == 2 and "has tasks mqar, listops; not pathfinder" in err and err.count("\n") == 1
    code, _, err = cli(capsys, *argv)
    assert code == 0 and {r["task"] for r in read_records(out)} == {"mqar"}, err
    assert f"attnbench study {plan} --out {out} --device cpu --tasks mqar" in (out / "README.md").read_text()


def test_a_study_trains_runs_in_parallel_into_one_folder(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = cli(capsys, "study", _mini_study(tmp_path, 60), "--out", str(out), "--parallel", "2")
    records = read_records(out)
    assert code == 0 and sorted(r["kv_layout"] for r in records) == ["MHA", "MQA"]
    assert all(r["status"] == "ok" for r in records) and "[1/2]" in stdout and "[2/2]" in stdout
    # Both ran at once: each started before the other ended (dates are whole seconds).
    ends = [dt.datetime.fromisoformat(r["date"]).timestamp() for r in records]
    starts = [end - r["wall_s"] for end, r in zip(ends, records, strict=True)]
    assert starts[0] < ends[1] + 1 and starts[1] < ends[0] + 1
    assert "--parallel 2" in (out / "README.md").read_text()
    # The study leaves threads to torch: two runs at once share the cores, and each is still its arm's.
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(r["threads"] == threads and f"train.threads={threads}" in r["command"] for r in records)
    assert {arm: row["seeds"] for arm, row in _study_rows(out).items()} == {"MHA": "1", "MQA": "1"}
    code, _, err = cli(capsys, "study", _mini_study(tmp_path, 60), "--out", str(out), "--parallel", "2",
                       "--executor", "ray")  # fmt: skip
    assert code == 2 and "--parallel is for the local executor" in err and err.count("\n") == 1


def test_an_interrupted_parallel_study_stops_its_runs(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "attnbench", "study", _mini_study(tmp_path, 100_000), "--out", str(out),
            "--parallel", "2"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    while not ("[1/2]" in seen and "[2/2]" in seen) and proc.poll() is None:
        seen += proc.stdout.readline()
    started = "[1/2]" in seen and "[2/2]" in seen
    time.sleep(3)  # the two workers are training
    proc.send_signal(signal.SIGTERM)  # the driver alone (as a scheduler does): it must end its workers itself
    rest, _ = proc.communicate(timeout=60)
    assert started and proc.returncode == 130 and "rerun the same command to resume" in rest
    assert not (out / "records.jsonl").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MQAR model with 2 layers of 2 heads, trained into a run folder."""
    out = tmp_path_factory.mktemp("heads") / "run"
    main_args = ["train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--set", "model.depth=2",
                 "--set", "train.steps=40", "--out", str(out)]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(main_args)
    assert (info.value.code or 0) == 0
    (record,) = read_records(out)
    return out, record


def test_importance_is_the_mean_absolute_per_example_gradient_normalised_per_layer(trained):
    out, record = trained
    model = load_trained(out, record, REGISTRY)
    scores = analysis.importance(model, batch_size=7, limit=12)
    # By hand: one example at a time, one shared gate per layer, |dL/dgate| averaged.
    total = torch.zeros(2, 2)
    split = model.data.val
    for i in range(12):
        gates = torch.ones(2, 2, requires_grad=True)
        analysis._set_gates(model.model, gates)
        loss = analysis._example_losses(model.model, split, torch.tensor([i])).sum()
        (grad,) = torch.autograd.grad(loss, gates)
        total += grad.abs()
    analysis._set_gates(model.model, None)
    expected = total / total.norm(dim=1, keepdim=True)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6)
    # A head whose output projection is zero changes nothing: importance 0, pruned first, free to prune.
    model.model.attention_layers[1].out.weight.data[:, 16:32] = 0  # head dim 16
    scores = analysis.importance(model, limit=32)
    assert scores[1, 1] == 0 and torch.allclose(scores.norm(dim=1), torch.ones(2))
    curves = analysis.pruning_curves(model, scores, seeds=3)
    assert curves["order"][0] == "2.2" and len(curves["importance"]) == 5 and len(curves["random"]) == 3
    assert curves["importance"][1] == curves["importance"][0] == analysis.accuracy(model, [])
    assert curves == analysis.pruning_curves(model, scores, seeds=3)  # seeded random orders


def test_head_statistics_match_the_weights_by_hand(trained):
    out, record = trained
    model = load_trained(out, record, REGISTRY)
    stats = analysis.head_statistics(model, examples=1)
    weights = attention_maps(model.model, model.data.val.tokens[:1])  # per layer (H, N, N), causal
    n = weights[0].shape[-1]
    for layer_index, w in enumerate(weights):
        for head in range(2):
            p = w[head]
            rows = range(1, n)  # queries from position 1 (position 0 sees one key)
            ent = sum(-(p[i, : i + 1] * p[i, : i + 1].clamp_min(1e-12).log()).sum() / math.log(i + 1) for i in rows)
            dist = sum((p[i, : i + 1] * torch.arange(i, -1, -1)).sum() / (i / 2) for i in rows)
            got = stats[layer_index][head]
            assert got["entropy"] == pytest.approx(float(ent) / (n - 1), rel=1e-4)
            assert got["distance"] == pytest.approx(float(dist) / (n - 1), rel=1e-4)
            assert got["previous"] == pytest.approx(float(sum(p[i, i - 1] for i in rows)) / (n - 1), rel=1e-4)
            assert got["first"] == pytest.approx(float(sum(p[i, 0] for i in rows)) / (n - 1), rel=1e-4)
            assert got["self"] == pytest.approx(float(sum(p[i, i] for i in rows)) / (n - 1), rel=1e-4)


@pytest.mark.parametrize(
    ("stats", "kind"),
    [({"entropy": 0.1, "distance": 0.1, "previous": 0.7, "first": 0.1, "self": 0.1}, "positional (previous)"),
     ({"entropy": 0.3, "distance": 1.5, "previous": 0.0, "first": 0.6, "self": 0.0}, "positional (first)"),
     ({"entropy": 0.9, "distance": 1.0, "previous": 0.05, "first": 0.05, "self": 0.05}, "diffuse"),
     ({"entropy": 0.5, "distance": 0.3, "previous": 0.3, "first": 0.0, "self": 0.3}, "local"),
     ({"entropy": 0.5, "distance": 0.9, "previous": 0.0, "first": 0.2, "self": 0.0}, "global")],
)  # fmt: skip
def test_head_classes_follow_the_documented_thresholds(stats, kind):
    assert analysis.classify(stats) == kind


def test_heads_command_writes_records_charts_and_readme_section(capsys, trained):
    out, record = trained
    code, text, _ = cli(capsys, "heads", str(out), "--prune-seeds", "3", "--examples", "16")
    assert code == 0 and "least important heads masked" in text
    (heads,) = read_heads(out)
    assert heads["layers"] == 2 and heads["heads"] == 2 and len(heads["pruning"]["random"]) == 3
    assert heads["half"]["heads_masked"] == 2 and len(heads["classes"]) == 2
    assert heads["code"]["commit"] == record["code"]["commit"]
    for kind in ("importance", "pruning", "statistics"):
        chart = out / "heads" / f"{heads['name']}-{kind}.png"
        assert chart.stat().st_size > 5_000 and f"heads/{chart.name}" in (out / "README.md").read_text()
    code, _, _ = cli(capsys, "heads", str(out), "--prune-seeds", "3", "--examples", "16")
    assert code == 0 and len(read_heads(out)) == 1  # the analysis of a model is replaced, not repeated
    assert (out / "README.md").read_text().count("## Heads") == 1
    code, text, _ = cli(capsys, "heads", str(out), "--mask", "1.1,2.2")
    assert code == 0 and "with 1.1,2.2 masked" in text


def test_heads_command_rejects_with_one_line(capsys, tmp_path, trained):
    out, record = trained
    code, _, err = cli(capsys, "heads", str(out), "--mask", "3.1")
    assert code == 2 and "head 3.1 does not exist: the model has 2 layers x 2 heads" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "heads", str(out), "--mask", "one")
    assert code == 2 and "expected LAYER.HEAD" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "heads", str(out), "--task", "listops")
    assert code == 2 and "no finished training run matches" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "heads", str(tmp_path / "absent"))
    assert code == 2 and err.count("\n") == 1
    weights = out / record["model_path"]
    saved = weights.read_bytes()
    weights.unlink()
    try:
        code, _, err = cli(capsys, "heads", str(out))
        assert code == 2 and "no trained weights for mqar / sdpa / seed 0" in err and err.count("\n") == 1
        weights.write_bytes(b"not a checkpoint")
        code, _, err = cli(capsys, "heads", str(out))
        assert code == 2 and "not the weights of mqar / sdpa / seed 0" in err and err.count("\n") == 1
    finally:
        weights.write_bytes(saved)


def test_a_variant_without_a_weight_matrix_gets_importance_and_pruning_only(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, _ = cli(capsys, "train", "--task", "listops", "--variant", "performer", "--preset", "tiny", "--set",
                     "train.steps=10", "--out", str(out))  # fmt: skip
    assert code == 0
    code, _, _ = cli(capsys, "heads", str(out), "--prune-seeds", "3")
    (heads,) = read_heads(out)
    assert code == 0 and heads["stats"] is None and "no attention-weight matrix" in heads["stats_missing"]
    assert len(heads["pruning"]["importance"]) == 3 and heads["importance"][0][0] >= 0
    assert "No head statistics: variant performer has no attention-weight matrix" in (out / "README.md").read_text()
    assert not list((out / "heads").glob("*-statistics.png"))
