"""MAD's six tasks against their definitions (athms/mad-lab's mad/data/instances.py), walked example by
example here, and MAD's macro accuracy against a float64 loop over classes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from attnbench.suite.cli import main
from attnbench.suite.runs.records import read_records
from attnbench.suite.training.presets import load_train_preset
from attnbench.suite.training.sweeps import task_settings
from attnbench.tasks import load_task
from attnbench.tasks.base import FIRST_SYMBOL, IGNORE
from attnbench.tasks.metrics import MAD_BATCH, macro_accuracy, score

MAD_TASKS = [
    "mad-in-context-recall",
    "mad-noisy-in-context-recall",
    "mad-fuzzy-in-context-recall",
    "mad-selective-copying",
    "mad-compression",
    "mad-memorization",
]


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def _load(task: str, tmp_path, **params):
    return load_task(task, {"train_size": 64, "val_size": 64, "test_size": 64, **params}, cache_dir=tmp_path)


def _macro_by_hand(preds: list[int], labels: list[int]) -> float:
    """torchmetrics' macro accuracy in float64, one class at a time."""
    kept = [(p, y) for p, y in zip(preds, labels, strict=True) if y != IGNORE]
    classes = {p for p, _ in kept} | {y for _, y in kept}
    recalls = []
    for c in sorted(classes):
        support = sum(1 for _, y in kept if y == c)
        hits = sum(1 for p, y in kept if y == c and p == c)
        recalls.append(hits / support if support else 0.0)
    return sum(recalls) / len(recalls) if recalls else 0.0


def test_macro_accuracy_is_torchmetrics_macro_over_scored_positions():
    rng = random.Random(0)
    for _ in range(50):
        labels = [rng.choice([IGNORE, 2, 3, 4, 5]) for _ in range(40)]
        preds = [rng.choice([2, 3, 4, 5, 6]) for _ in range(40)]
        got = macro_accuracy(torch.tensor(preds), torch.tensor(labels))
        assert got == pytest.approx(_macro_by_hand(preds, labels), abs=1e-12)
    # A class predicted but never a label counts 0: one of two right, and class 7 wrongly predicted.
    assert macro_accuracy(torch.tensor([2, 7]), torch.tensor([2, 3])) == pytest.approx(1 / 3)
    # What is predicted where nothing is scored does not count.
    labels = torch.tensor([[IGNORE, 2, IGNORE, 3]])
    assert macro_accuracy(torch.tensor([[9, 2, 9, 3]]), labels) == macro_accuracy(torch.tensor([[5, 2, 5, 3]]), labels)
    assert macro_accuracy(torch.tensor([5]), torch.tensor([IGNORE])) == 0.0


def test_macro_accuracy_of_a_split_is_the_mean_over_mad_batches():
    labels = torch.tensor([2] * MAD_BATCH + [3] * 32)
    preds = torch.tensor([2] * MAD_BATCH + [4] * 32)  # the first batch all right, the second all wrong
    assert score("macro-accuracy", preds, labels) == pytest.approx(MAD_BATCH / (MAD_BATCH + 32))
    assert score("accuracy", preds, labels) == pytest.approx(MAD_BATCH / (MAD_BATCH + 32))
    with pytest.raises(ValueError, match="unknown metric"):
        score("f1", preds, labels)


def _mad_tokens(x: torch.Tensor) -> list[int]:
    return [t - FIRST_SYMBOL if t != IGNORE else IGNORE for t in x.tolist()]


@pytest.mark.parametrize("noisy", [False, True])
def test_in_context_recall_scores_each_repeated_key_and_the_probe(tmp_path, noisy):
    task = "mad-noisy-in-context-recall" if noisy else "mad-in-context-recall"
    data = _load(task, tmp_path)
    vocab, noise = (32, 16) if noisy else (16, 0)
    half = (vocab - noise) // 2
    assert data.metric == "macro-accuracy" and data.max_len == 127 and data.vocab_size == vocab + FIRST_SYMBOL
    for tokens, labels in zip(data.test.tokens, data.test.labels, strict=True):
        seq, targets = _mad_tokens(tokens), _mad_tokens(labels)
        full = [*seq, targets[-1]]  # the input drops the sequence's last token: the probe's value
        expected, shown = [IGNORE] * len(seq), {}
        for j in range(0, len(full) - 2, 2):
            key, value = full[j], full[j + 1]
            if key >= vocab - noise:  # a noise pair: two noise symbols, unscored, not shown
                assert value >= vocab - noise
                continue
            assert key < half <= value < vocab - noise and shown.get(key, value) == value
            if key in shown:
                expected[j] = value  # the target at the key's position is the next token, its value
            shown[key] = value
        probe, answer = full[-2], full[-1]
        assert shown[probe] == answer
        expected[-1] = answer
        assert targets == expected
    train = data.train
    assert torch.equal(train.labels[:, :-1], train.tokens[:, 1:])  # every next token in training


def test_fuzzy_recall_keeps_each_motif_key_to_its_value_and_scores_the_probe(tmp_path):
    data = _load("mad-fuzzy-in-context-recall", tmp_path)
    pad = 15
    for tokens, labels in zip(data.test.tokens, data.test.labels, strict=True):
        seq, targets = _mad_tokens(tokens), _mad_tokens(labels)
        full = [*seq, targets[-1]]
        assert len(full) == 129 and full[0] == pad  # left-padded to seq_len + 1
        scored = [i for i, t in enumerate(targets) if t != IGNORE]
        assert scored and all(targets[i] == full[i + 1] and 7 <= targets[i] < pad for i in scored)
        assert targets[-1] != IGNORE  # the probe's last value token
    assert torch.equal(data.train.labels[:, :-1], data.train.tokens[:, 1:])


def test_selective_copying_asks_for_the_data_tokens_in_order_after_the_copy_token(tmp_path):
    data = _load("mad-selective-copying", tmp_path)
    blank, copy = 14, 15
    for tokens, labels in zip(data.test.tokens, data.test.labels, strict=True):
        seq, targets = _mad_tokens(tokens), _mad_tokens(labels)
        at = seq.index(copy)
        assert at == 256 - 16 - 1 and seq[at + 1 :] == [blank] * 16
        shown = [t for t in seq[:at] if t != blank]
        assert len(shown) == 16 and seq[at - 1] != blank  # MAD never puts a blank after the last data token
        assert targets[at + 1 :] == shown and set(targets[: at + 1]) == {IGNORE}
    # Training asks the same (no shift): the 16 trailing blanks only.
    assert (data.train.labels[:, :-16] == IGNORE).all() and (data.train.labels[:, -16:] != IGNORE).all()


def test_compression_rebuilds_every_token_and_ends_with_its_token(tmp_path):
    data = _load("mad-compression", tmp_path)
    assert data.kind == "autoencode" and data.max_len == 32
    assert torch.equal(data.train.tokens, data.train.labels) and torch.equal(data.test.tokens, data.test.labels)
    assert (data.test.tokens[:, -1] == 15 + FIRST_SYMBOL).all() and (data.test.tokens[:, :-1] < 15 + FIRST_SYMBOL).all()


def test_memorization_is_one_fixed_map_across_splits(tmp_path):
    data = _load("mad-memorization", tmp_path)
    mapping = {}
    for split in (data.train, data.val, data.test):
        for tokens, labels in zip(split.tokens, split.labels, strict=True):
            seq, targets = _mad_tokens(tokens), _mad_tokens(labels)
            assert seq[1::2] == [255] * 16 and targets[0::2] == [IGNORE] * 16
            for key, value in zip(seq[0::2], targets[1::2], strict=True):
                assert key < 127 <= value < 255 and mapping.setdefault(key, value) == value
    assert len(set(mapping.values())) == len(mapping) > 100  # distinct values: nothing to infer in context
    other = _load("mad-memorization", tmp_path, data_seed=1)
    assert not torch.equal(other.test.labels, data.test.labels)


@pytest.mark.parametrize("task", MAD_TASKS)
def test_each_mad_task_trains_and_records_macro_accuracy(capsys, tmp_path, task):
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "train", "--task", task, "--variant", "sdpa", "--preset", "tiny", "--out", str(out))
    (record,) = read_records(out)
    assert code == 0 and record["status"] == "ok", err
    assert record["metric"] == "macro-accuracy" and 0 <= record["test_acc"] <= 1 and "test macro accuracy" in stdout


def test_mad_parameters_that_cannot_make_a_sequence_are_refused_in_one_line(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--task", "mad-in-context-recall", "--variant", "sdpa", "--preset", "tiny",
                       "--set", "params.seq_len=31", "--scratch")  # fmt: skip
    assert code != 0 and "seq_len must be even" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "train", "--task", "mad-selective-copying", "--variant", "sdpa", "--preset", "tiny",
                       "--set", "params.num_tokens_to_copy=16", "--scratch")  # fmt: skip
    assert code != 0 and "seq_len must exceed 33" in err and err.count("\n") == 1


def test_mad_data_draw_the_same_examples_from_the_same_seed(tmp_path):
    first = _load("mad-fuzzy-in-context-recall", tmp_path / "a")
    again = _load("mad-fuzzy-in-context-recall", tmp_path / "b")
    assert torch.equal(first.test.tokens, again.test.tokens) and torch.equal(first.train.labels, again.train.labels)
    assert json.dumps(first.params, sort_keys=True) == json.dumps(again.params, sort_keys=True)
    assert np.unique(first.train.tokens.numpy()).size > 10


def _varied_preset(tmp_path, variations: str):
    """tiny with MAD's in-context recall varied as MAD varies it: one parameter at a time."""
    from attnbench.suite.training.presets import TRAIN_PRESETS

    text = (TRAIN_PRESETS / "tiny.yaml").read_text().replace("name: tiny", "name: varied")
    anchor = "  mad-in-context-recall:\n"
    text = text.replace(anchor, anchor + f"    variations: {variations}\n")
    path = tmp_path / "varied.yaml"
    path.write_text(text)
    return path


def test_a_preset_varies_a_task_one_parameter_at_a_time(capsys, tmp_path):
    preset = _varied_preset(tmp_path, "{vocab_size: [32], seq_len: [48, 64]}")
    code, out, err = cli(capsys, "suite", "--preset", str(preset), "--tasks", "mad-in-context-recall", "--variants",
                         "sdpa", "--lrs", "0.003,0.01", "--dry-run")  # fmt: skip
    # The preset's own setting and three variations, each swept at 2 rates then seeded (3 seeds, one shared).
    assert code == 0 and "16 runs, about" in out, err
    settings = task_settings(load_train_preset(str(preset)), "mad-in-context-recall")
    assert [(s.label, s.settings) for s in settings] == [
        ("", {}),
        ("vocab_size=32", {"params": {"vocab_size": 32}}),
        ("seq_len=48", {"params": {"seq_len": 48}}),
        ("seq_len=64", {"params": {"seq_len": 64}}),
    ]
    bad = _varied_preset(tmp_path, "{seq_len: [31]}")
    code, _, err = cli(capsys, "suite", "--preset", str(bad), "--tasks", "mad-in-context-recall", "--variants",
                       "sdpa", "--dry-run")  # fmt: skip
    assert code == 2 and "mad-in-context-recall at seq_len=31" in err and "even" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "suite", "--preset", str(preset), "--tasks", "mad-in-context-recall", "--variants",
                       "sdpa", "--lengths", "32,64", "--dry-run")  # fmt: skip
    assert code == 2 and "give lengths or variations" in err


def test_the_mad_presets_hold_mads_settings_model_and_grid():
    from attnbench.suite.training.protocol import points

    full, cpu = load_train_preset("mad"), load_train_preset("cpu-mad")
    assert set(full.tasks) == set(cpu.tasks) == set(MAD_TASKS)
    # MAD's 66 settings: each task's baseline and each change (configs/tasks/*.yml), valid for its generator.
    assert sum(len(task_settings(full, task)) for task in full.tasks) == 66
    assert all(len(task_settings(cpu, task)) == 1 for task in cpu.tasks)
    assert points(full.protocol) == [(lr, wd) for lr in (1e-4, 5e-4, 1e-3) for wd in (0.0, 0.1)]
    # MAD's shape at width 128; cpu-mad halves the width and keeps the head dim (8).
    for preset, dim, heads in ((full, 128, 16), (cpu, 64, 8)):
        for setup in preset.tasks.values():
            model = setup.model
            assert (model.dim, model.depth, model.heads, model.positions, model.mlp) == (
                dim,
                2,
                heads,
                "rotary",
                "swiglu",
            )
            assert setup.train.schedule == "constant" and setup.train.grad_clip is None


def test_the_cpu_mad_preset_plans_its_protocol_on_all_six_tasks(capsys, tmp_path):
    code, out, err = cli(capsys, "suite", "--preset", "cpu-mad", "--variants", "sdpa", "--dry-run",
                         "--out", str(tmp_path / "run"))  # fmt: skip
    # Without --tasks, the preset's six; per task: 2 learning rates at seed 0, then seeds 1 and 2 at the choice.
    assert code == 0 and "24 runs, about" in out and "Nothing was trained" in out, err
    assert all(task in out for task in MAD_TASKS)
    assert not (tmp_path / "run").exists()


def _run(task: str, variant: str, seed: int, acc: float) -> dict:
    return {"kind": "train", "status": "ok", "task": task, "variant": variant, "seed": seed, "test_acc": acc}


def test_the_mad_score_averages_settings_then_the_six_tasks_beside_the_published_ones():
    from attnbench.suite.analysis.mad import mad_markdown, mad_table

    scores = dict(zip(MAD_TASKS, (0.9, 0.8, 0.3, 1.0, 0.5, 0.7), strict=True))
    records = [_run(task, "sdpa", seed, acc + 0.02 * seed) for task, acc in scores.items() for seed in (0, 1)]
    records += [_run("mad-compression", "gla", 0, 0.4)]  # one task of six: no average
    table, settings = mad_table(records, None)
    assert table.loc["sdpa", "In-Context Recall"] == pytest.approx(91.0)  # seeds 0 and 1: 90 and 92
    assert table.loc["sdpa", "Average"] == pytest.approx(100 * sum(scores.values()) / 6 + 1.0)
    assert table.loc["gla", "Compress"] == pytest.approx(40.0) and np.isnan(table.loc["gla", "Average"])
    assert settings["Compress"] == 1
    text = mad_markdown(records, None)
    assert "| gla " in text and "Transformer (= sdpa)" in text and "GLA (= gla)" in text
    assert "74.5" in text and "What differs" in text  # the DeltaNet paper's Transformer average
    assert mad_markdown([_run("mqar", "sdpa", 0, 1.0)], None) == ""


def test_a_protocol_run_on_a_mad_task_writes_its_mad_score(capsys, tmp_path):
    code, _, err = cli(capsys, "suite", "--preset", "tiny", "--tasks", "mad-memorization", "--variants", "sdpa",
                       "--lrs", "0.003,0.01", "--seeds", "0,1", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    (choice,) = json.loads((tmp_path / "protocol.json").read_text())["choices"]
    final = [r for r in read_records(tmp_path) if r["train"]["lr"] == choice["chosen_lr"]]
    assert sorted(r["seed"] for r in final) == [0, 1]
    mean = 100 * sum(r["test_acc"] for r in final) / 2  # the memorization column: one setting, two seeds
    text = (tmp_path / "accuracy.md").read_text()
    assert "### MAD score" in text and f" {mean:.1f} " in text.split("### MAD score")[1].split("Published")[0]
