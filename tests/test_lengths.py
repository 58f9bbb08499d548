"""Accuracy against sequence length: each task's length rule, the settings a suite trains at, the table and
chart of accuracy against N, and bad input refused in one line."""

from __future__ import annotations

import json
import math

import matplotlib.image
import pandas as pd
import pytest

from attnbench.suite.analysis.accuracy import mean_interval
from attnbench.suite.cli import main
from attnbench.suite.core.errors import UserError
from attnbench.suite.outputs.summary import length_frame, lengths_vary
from attnbench.suite.runs.records import read_records
from attnbench.suite.training.presets import load_train_preset
from attnbench.suite.training.sweeps import task_settings
from attnbench.tasks import get_task, load_task
from attnbench.tasks.base import IGNORE


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.mark.parametrize(("n", "pairs"), [(32, 2), (64, 4), (128, 8), (512, 32)])
def test_mqar_at_a_length_asks_for_pairs_in_proportion(tmp_path, n, pairs):
    """The generated sequences have N tokens and ask for the rule's number of pairs (one label per query)."""
    base = {"vocab_size": 128, "seq_len": 128, "num_kv_pairs": 8, "train_size": 8, "val_size": 4, "test_size": 4}
    params = get_task("mqar").at_length(base, n)
    assert (params["seq_len"], params["num_kv_pairs"], params["vocab_size"]) == (n, pairs, 128)
    data = load_task("mqar", params, cache_dir=tmp_path)
    assert data.max_len == n and data.train.tokens.shape == (8, n)
    assert ((data.train.labels != IGNORE).sum(dim=1) == pairs).all()


def test_listops_at_a_length_keeps_lras_quarter(tmp_path):
    base = {"max_depth": 10, "max_args": 10, "min_length": 32, "max_length": 128}
    params = get_task("listops").at_length(base, 256)
    assert (params["min_length"], params["max_length"], params["max_depth"]) == (64, 256, 10)
    data = load_task("listops", params | {"train_size": 20, "val_size": 5, "test_size": 5}, cache_dir=tmp_path)
    symbols = (data.train.tokens != 0).sum(dim=1)
    assert data.max_len == 256 and bool(((symbols > 64) & (symbols < 256)).all())


def test_a_preset_gives_a_setting_per_length_and_width_its_own_length_unset():
    preset = load_train_preset("tiny")  # mqar: 32 tokens, 4 pairs, width 32
    settings = task_settings(preset, "mqar", [32, 64], [32, 64])
    assert [s.label for s in settings] == ["N=32 dim=32", "N=32 dim=64", "N=64 dim=32", "N=64 dim=64"]
    assert settings[0].settings == {}  # the preset's own run, the same key as without a sweep
    assert settings[1].settings == {"model": {"dim": 64}}
    assert settings[3].settings == {"params": {"seq_len": 64, "num_kv_pairs": 8}, "model": {"dim": 64}}
    assert [s.label for s in task_settings(preset, "mqar")] == [""]  # tiny lists no lengths
    shipped = load_train_preset("cpu-lengths")
    assert [s.label for s in task_settings(shipped, "mqar")] == ["N=64", "N=128", "N=256", "N=512"]


@pytest.mark.parametrize(
    ("task", "lengths", "widths", "message"),
    [
        ("pathfinder", [64], None, "task pathfinder has no length rule"),
        ("mqar", [2048], None, "mqar at N=2048: params: 256 distinct keys need vocab_size > 512"),
        ("mqar", [0, 64], None, "lengths: expected distinct positive integers, got [0, 64]"),
        ("mqar", None, [31], "mqar at dim=31: --set model: attention width 31 is not divisible by 2 heads"),
    ],
)
def test_a_setting_that_cannot_be_made_is_one_line(task, lengths, widths, message):
    with pytest.raises(UserError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        task_settings(load_train_preset("tiny"), task, lengths, widths)


def test_the_length_table_is_the_mean_and_interval_over_seeds_with_the_runs_time_and_memory():
    def run(n, seed, acc, steps_per_s, status="ok"):
        return {"task": "mqar", "variant": "sdpa", "model": {"dim": 32}, "max_len": n, "seed": seed,
                "status": status, "test_acc": acc, "steps_per_s": steps_per_s, "peak_bytes": 2**20 * n}  # fmt: skip

    records = [run(32, 0, 0.5, 10.0), run(32, 1, 0.7, 20.0), run(32, 2, 0.6, 40.0), run(64, 0, None, None, "oom")]
    table = length_frame(pd.DataFrame(records)).set_index("N")
    expected = mean_interval([50.0, 70.0, 60.0])
    assert table.loc[32, ["test_acc", "low", "high"]].tolist() == pytest.approx([60.0, expected.low, expected.high])
    assert table.loc[32, "step_ms"] == pytest.approx(1000 / 20.0) and table.loc[32, "peak_mib"] == 32
    assert table.loc[64, "seeds"] == 0 and table.loc[64, "failed"] == "oom" and math.isnan(table.loc[64, "test_acc"])


def test_only_one_setting_per_length_is_a_length_sweep():
    def run(n, params):
        return {"task": "t", "variant": "sdpa", "model": {"dim": 32}, "max_len": n, "settings": {"params": params}}

    # A length sweep: each N its own parameters (MQAR's pairs grow with N).
    assert lengths_vary(pd.DataFrame([run(32, {}), run(64, {"seq_len": 64, "num_kv_pairs": 8})]))
    # MAD's variations: a longer sequence is one of them, the vocabulary change stays at the baseline's N.
    assert not lengths_vary(pd.DataFrame([run(32, {}), run(32, {"vocab_size": 64}), run(64, {"seq_len": 64})]))
    assert not lengths_vary(pd.DataFrame([run(32, {}), run(32, {})]))


def test_a_tiny_protocol_at_two_lengths_writes_verdicts_per_length_and_the_chart(capsys, tmp_path):
    argv = ["suite", "--preset", "tiny", "--tasks", "mqar", "--variants", "sdpa,linear-elu", "--lengths", "32,64",
            "--lrs", "0.003,0.01", "--seeds", "0,1", "--out", str(tmp_path)]  # fmt: skip
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    records = read_records(tmp_path)
    assert len(records) == 2 * 2 * (2 + 1)  # per length and variant: the sweep, then seed 1 at the chosen rate
    assert sorted({r["max_len"] for r in records}) == [32, 64]
    assert {r["task_params"]["num_kv_pairs"] for r in records if r["max_len"] == 64} == {8}
    choices = json.loads((tmp_path / "protocol.json").read_text())["choices"]
    assert [(c["label"], c["variant"]) for c in choices] == [
        ("N=32", "sdpa"), ("N=32", "linear-elu"), ("N=64", "sdpa"), ("N=64", "linear-elu")
    ]  # fmt: skip
    assert choices[2]["setting"] == {"params": {"seq_len": 64, "num_kv_pairs": 8}}
    table = (tmp_path / "accuracy.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| mqar")]
    assert [row.split("|")[2].strip() for row in rows] == ["N=32", "N=32", "N=64", "N=64"]
    assert all(row.rstrip(" |").split("|")[-1].strip() in ("same", "better", "worse", "inconclusive")
               for row in rows if "linear-elu" in row)  # fmt: skip
    code, _, err = cli(capsys, "report", str(tmp_path))
    assert code == 0, err
    assert matplotlib.image.imread(tmp_path / "accuracy-vs-length.png").shape[1] > 1000
    assert "accuracy-vs-length.png" in (tmp_path / "README.md").read_text()
    # Each run's stored command remakes it alone, at its length.
    stored = next(r["command"] for r in records if r["max_len"] == 64)
    assert "--set params.seq_len=64" in stored and "--set params.num_kv_pairs=8" in stored


def test_without_the_protocol_the_accuracy_table_has_a_row_per_length(capsys, tmp_path):
    code, _, err = cli(capsys, "suite", "--preset", "tiny", "--tasks", "mqar", "--variants", "sdpa", "--lengths",
                       "32,64", "--seeds", "0,1", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    table = (tmp_path / "accuracy.md").read_text()
    assert "| task   |   N | variant   |" in table
    assert [line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| mqar")] == ["32", "64"]


def test_widths_alone_give_a_row_per_width(capsys, tmp_path):
    code, _, err = cli(capsys, "suite", "--preset", "tiny", "--tasks", "mqar", "--variants", "sdpa", "--widths",
                       "16,32", "--seeds", "0", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert sorted(r["model"]["dim"] for r in read_records(tmp_path)) == [16, 32]
    table = (tmp_path / "accuracy.md").read_text()
    assert [line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| mqar")] == ["16", "32"]


def test_dry_run_plans_each_length(capsys, tmp_path):
    code, out, err = cli(capsys, "suite", "--preset", "tiny", "--tasks", "mqar", "--variants", "sdpa", "--lengths",
                         "32,64", "--lrs", "0.003,0.01", "--dry-run", "--out", str(tmp_path / "run"))  # fmt: skip
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("│ mqar")]
    assert [row.split("│")[2].strip() for row in rows] == ["N=32", "N=64"] and "8 runs, about" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lengths", "64,x"], "cannot read '64,x' as a comma-separated list of int"),
        (["--lengths", "64", "--tasks", "pathfinder"], "task pathfinder has no length rule"),
        (["--lengths", "2048"], "mqar at N=2048: params: 256 distinct keys"),
        (["--widths", "-32"], "widths: expected distinct positive integers"),
    ],
)
def test_bad_lengths_are_one_line_and_train_nothing(capsys, tmp_path, extra, message):
    argv = ["suite", "--preset", "tiny", "--variants", "sdpa", "--out", str(tmp_path / "run"), *extra]
    if "--tasks" not in extra:
        argv += ["--tasks", "mqar"]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
