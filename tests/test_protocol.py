"""The accuracy protocol: intervals and verdicts against independent computations, the learning rate chosen on
validation only, and a tiny protocol run end to end (a twin of sdpa judged same, a two-token window worse)."""

from __future__ import annotations

import json
import math

import matplotlib.image
import pytest
from scipy import stats

from attnbench.suite.analysis.accuracy import difference_interval, mean_interval, sweep_edge, verdict
from attnbench.suite.cli import main
from attnbench.suite.outputs.summary import accuracy_markdown
from attnbench.suite.runs.records import read_records
from attnbench.suite.training.jobs import TrainJob
from attnbench.suite.training.presets import Protocol
from attnbench.suite.training.protocol import choose, seed_jobs, sweep_jobs

# Student's t at 0.975 with 2 degrees of freedom, from a printed table: the interval of 3 seeds.
T_975_DF2 = 4.302652729911275


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_the_interval_of_three_seeds_is_the_mean_plus_minus_t_times_the_standard_error():
    values = [20.0, 24.0, 31.0]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = T_975_DF2 * sd / math.sqrt(3)
    interval = mean_interval(values)
    assert interval.mean == pytest.approx(mean)
    assert (interval.low, interval.high) == pytest.approx((mean - half, mean + half))
    assert math.isnan(mean_interval([50.0]).low)  # one seed: a mean, no interval


def test_the_difference_intervals_are_welchs_and_the_paired_ts():
    a, b = [61.0, 66.5, 58.0, 70.2], [52.0, 55.5, 49.0, 60.1]
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    paired = stats.ttest_rel(a, b).confidence_interval(0.95)
    unpaired, by_seed = difference_interval(a, b), difference_interval(a, b, paired=True)
    assert (unpaired.low, unpaired.high) == pytest.approx((welch.low, welch.high))
    assert (by_seed.low, by_seed.high) == pytest.approx((paired.low, paired.high))


@pytest.mark.parametrize(
    ("variant", "baseline", "paired", "expected"),
    [
        ([23.7, 21.5, 25.0], [23.7, 21.5, 25.0], True, "same"),  # the same runs: no difference, no spread
        ([6.0, 5.5, 7.0], [23.7, 21.5, 25.0], True, "worse"),
        ([90.0, 92.0, 91.0], [60.0, 61.0, 59.5], False, "better"),
        ([50.0, 70.0, 30.0], [52.0, 48.0, 50.0], False, "inconclusive"),  # too much spread to say
        ([50.6, 50.9, 50.7], [50.0, 50.1, 50.0], True, "same"),  # real but below the least effect, and within it
        ([53.1, 53.0, 53.2], [50.0, 51.9, 50.2], True, "inconclusive"),  # above 0 surely, past 2 points not surely
        ([60.0], [50.0], True, "inconclusive"),  # one seed a side: no interval
    ],
)
def test_verdicts(variant, baseline, paired, expected):
    assert verdict(variant, baseline, least_effect=2.0, paired=paired) == expected


def test_the_learning_rate_is_chosen_on_validation_never_on_test():
    protocol = Protocol(lrs=[0.001, 0.003, 0.01], train={"steps": 100})
    grid = [TrainJob("mqar", "sdpa", seed, "tiny", "cpu", None) for seed in (0, 1, 2)]
    sweep = sweep_jobs(protocol, grid)
    assert [(j.seed, j.settings["train"]) for j in sweep] == [
        (0, {"steps": 100, "lr": lr}) for lr in (0.001, 0.003, 0.01)
    ]
    # 0.003 is best on validation, 0.01 best on test; 0.001 has no result.
    scores = {0.003: (0.8, 0.5), 0.01: (0.6, 0.9)}
    records = [
        {"kind": "train", "status": "ok", "task": "mqar", "variant": "sdpa", "seed": 0,
         "settings": {"train": {"steps": 100, "lr": lr}}, "best_val_acc": val, "test_acc": test}
        for lr, (val, test) in scores.items()
    ]  # fmt: skip
    (choice,) = choose(protocol, grid, records)
    assert (choice.task, choice.variant, choice.label, choice.setting) == ("mqar", "sdpa", "", {})
    assert (choice.val_acc, choice.chosen_lr) == ({"0.001": None, "0.003": 0.8, "0.01": 0.6}, 0.003)
    choices = [choice]
    final = seed_jobs(protocol, grid, choices)
    assert [(j.seed, j.settings["train"]["lr"]) for j in final] == [(0, 0.003), (1, 0.003), (2, 0.003)]


@pytest.mark.parametrize(
    ("lr", "lrs", "edge"),
    [(0.01, [0.003, 0.01], "largest"), (0.001, [0.001, 0.003, 0.01], "smallest"), (0.003, [0.001, 0.003, 0.01], None),
     (0.01, [0.01], None)],
)  # fmt: skip
def test_a_choice_at_the_edge_of_the_sweep_is_said(lr, lrs, edge):
    assert sweep_edge(lr, lrs) == edge


def test_a_tiny_protocol_run_writes_intervals_and_verdicts(capsys, tmp_path, plugins):
    """sdpa under another name is judged same; attention to the previous two tokens only is judged worse."""
    argv = ["suite", "--preset", "tiny", "--tasks", "mqar", "--variants", "sdpa,sdpa-twin,previous-two",
            "--plugin", str(plugins / "sdpa_twin.py"), "--plugin", str(plugins / "previous_two.py"),
            "--lrs", "0.003,0.01", "--seeds", "0,1,2", "--out", str(tmp_path)]  # fmt: skip
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    records = read_records(tmp_path)
    assert len(records) == 3 * 2 + 3 * 2  # the sweep, then seeds 1 and 2 at the chosen rate (seed 0 ran)
    protocol = json.loads((tmp_path / "protocol.json").read_text())
    assert protocol["lrs"] == [0.003, 0.01] and protocol["seeds"] == [0, 1, 2]
    assert [(c["task"], c["variant"]) for c in protocol["choices"]] == [
        ("mqar", v) for v in ("sdpa", "sdpa-twin", "previous-two")
    ]
    for choice in protocol["choices"]:
        best = max(choice["val_acc"], key=lambda lr: (choice["val_acc"][lr], -float(lr)))
        assert choice["chosen_lr"] == float(best), choice
    table = (tmp_path / "accuracy.md").read_text()
    rows = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| mqar")}
    assert rows["sdpa-twin"].rstrip(" |").endswith("same") and rows["previous-two"].rstrip(" |").endswith("worse")
    assert "[" in rows["sdpa"] and "95% interval" in table
    assert all(" swept)" in row for row in rows.values())  # two rates: every choice is at an edge, and says so
    code, _, _ = cli(capsys, "report", str(tmp_path))
    assert code == 0 and matplotlib.image.imread(tmp_path / "accuracy-protocol.png").shape[1] > 300
    assert "accuracy-protocol.png" in (tmp_path / "README.md").read_text()
    code, _, err = cli(capsys, "site", str(tmp_path), "--out", str(tmp_path / "site"))
    pages = "".join(p.read_text() for p in (tmp_path / "site").rglob("*.html"))
    assert code == 0 and "test acc [95% CI]" in pages and ">worse<" in pages and ">same<" in pages, err
    # Resumable: the same command again trains nothing and judges alike.
    recorded = (tmp_path / "records.jsonl").read_bytes()
    code, _, _ = cli(capsys, *argv)
    assert code == 0 and (tmp_path / "records.jsonl").read_bytes() == recorded
    assert (tmp_path / "accuracy.md").read_text() == table


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lrs", "fast"], "cannot read 'fast' as a comma-separated list of float"),
        (["--lrs", "0.01", "--seeds", "0"], "protocol: seeds"),
        (["--lrs", "0.01", "--variants", "linear-elu"], "verdicts are against sdpa: add it to --variants"),
        (["--lrs", "-0.01"], "learning rates to sweep, each > 0"),
        (["--lrs", "0.01", "--weight-decays", "-0.1"], "weight decays must each be >= 0"),
    ],
)
def test_bad_protocol_input_is_one_line(capsys, tmp_path, extra, message):
    argv = ["suite", "--preset", "tiny", "--tasks", "mqar", "--out", str(tmp_path / "run"), *extra]
    if "--variants" not in extra:
        argv += ["--variants", "sdpa"]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "records.jsonl").exists()


@pytest.mark.parametrize("protocol", [True, False])
def test_dry_run_prints_the_runs_and_their_hours_and_trains_nothing(capsys, tmp_path, protocol):
    argv = ["suite", "--preset", "tiny", "--tasks", "mqar,listops", "--variants", "sdpa,linear-elu", "--dry-run",
            "--out", str(tmp_path / "run")]  # fmt: skip
    argv += ["--lrs", "0.001,0.003,0.01"] if protocol else ["--seeds", "0,1"]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("│ ")]
    assert len(rows) == 4 and all("sdpa" in r or "linear-elu" in r for r in rows)
    runs_each = 3 + 3 - 1 if protocol else 2  # the sweep seed's run at the chosen rate counts once
    steps = 300 if protocol else 30  # the protocol's step cap in tiny, else the tasks' own
    assert all(f"│ {runs_each}    " in r and f"│ {steps} " in r for r in rows), out
    assert f"{4 * runs_each} runs, about " in out and "Nothing was trained" in out
    assert not (tmp_path / "run").exists()


def test_the_cpu_protocol_preset_plans_its_grid(capsys, tmp_path, monkeypatch):
    """The README's command as written: four learning rates and three seeds per task and variant."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "suite", "--preset", "cpu-protocol", "--tasks", "mqar", "--variants",
                         "sdpa,linear-elu", "--dry-run")  # fmt: skip
    assert code == 0, err
    assert "0.0003, 0.001, 0.003, 0.01 (sweep)" in out and "12 runs, about" in out
    assert not (tmp_path / "results").exists()


def test_the_articles_claim_is_answered_with_an_interval():
    protocol = {"lrs": [0.001], "seeds": [0, 1, 2], "sweep_seed": 0, "baseline": "sdpa", "least_effect": 2.0,
                "train": {}, "choices": [{"task": "mqar", "variant": v, "label": "", "setting": {},
                                          "val_acc": {"0.001": 0.5}, "chosen_lr": 0.001}
                                         for v in ("sdpa", "linear-elu")]}  # fmt: skip
    accs = {"sdpa": [0.90, 0.92, 0.91], "linear-elu": [0.60, 0.65, 0.62]}
    records = [
        {"kind": "train", "status": "ok", "task": "mqar", "variant": v, "seed": seed, "test_acc": acc,
         "settings": {"train": {"lr": 0.001}}}
        for v, values in accs.items() for seed, acc in enumerate(values)
    ]  # fmt: skip
    text = accuracy_markdown(records, protocol=protocol)
    diffs = [100 * (a - b) for a, b in zip(accs["linear-elu"], accs["sdpa"], strict=True)]
    expected = difference_interval(diffs, [0.0] * 3, paired=True).text()  # the mean of per-seed differences
    assert f"mqar {expected} (worse)" in text and "loses 5.8 points" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff{", "not valid JSON (UnicodeDecodeError)"),
        (b"[1, 2]", "Input should be a valid dictionary"),
        (b'{"lrs": "x", "choices": []}', "lrs: Input should be a valid list"),
        (b'{"lrs": [0.1], "choices": {"mqar": 3}}', "choices: Input should be a valid list"),
        (b'{"lrs": [0.1], "choices": [{"task": "mqar"}]}', "choices.0.variant: Field required"),
    ],
)
def test_a_bad_protocol_file_is_one_line(capsys, tmp_path, content, message):
    cli(capsys, "train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--out", str(tmp_path))
    (tmp_path / "protocol.json").write_bytes(content)
    code, _, err = cli(capsys, "report", str(tmp_path))
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_weight_decay_sweep_chooses_a_rate_and_a_decay_on_validation(capsys, tmp_path):
    argv = ["suite", "--preset", "tiny", "--tasks", "mqar", "--variants", "sdpa", "--lrs", "0.003,0.01",
            "--weight-decays", "0,0.1", "--seeds", "0,1", "--out", str(tmp_path)]  # fmt: skip
    code, out, err = cli(capsys, *argv)
    assert code == 0 and "learning rates 0.003, 0.01 x weight decays 0, 0.1" in out, err
    records = read_records(tmp_path)
    sweep = {
        (r["settings"]["train"]["lr"], r["settings"]["train"]["weight_decay"]): r for r in records if r["seed"] == 0
    }
    assert set(sweep) == {(0.003, 0.0), (0.003, 0.1), (0.01, 0.0), (0.01, 0.1)} and len(records) == 5
    (choice,) = json.loads((tmp_path / "protocol.json").read_text())["choices"]
    best = max(sweep.items(), key=lambda item: (item[1]["best_val_acc"], -item[0][0], -item[0][1]))[0]
    assert (choice["chosen_lr"], choice["chosen_wd"]) == best
    assert choice["val_acc"] == {f"{lr!r}/{wd!r}": r["best_val_acc"] for (lr, wd), r in sweep.items()}
    (seed_one,) = [r for r in records if r["seed"] == 1]  # the second seed trains at the chosen point
    assert (seed_one["train"]["lr"], seed_one["train"]["weight_decay"]) == best
    assert f", wd {best[1]:g}" in (tmp_path / "accuracy.md").read_text()
    assert f"{best[0]:g} wd {best[1]:g}: " in (tmp_path / "accuracy.md").read_text()
