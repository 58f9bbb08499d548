"""`attnbench compare`: the U test on hand-computed values, verdicts on synthetic records, real runs."""

from __future__ import annotations

import json
import random

import pytest

from attnbench.suite.cli import main
from attnbench.suite.outputs.compare import (
    compare_records,
    identity,
    judge_memory,
    judge_time,
    least_p,
    machine_moved,
    mann_whitney,
    relative_times,
)

MIB = 2**20


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def record(variant="sdpa", seq=1024, times=(), peaks=None, **fields):
    """A measured point as a run records it (the fields compare reads)."""
    times = list(times)
    peaks = list(peaks) if peaks is not None else [10 * MIB] * 5
    base = dict(kind="bench", status="ok", variant=variant, seq=seq, q_len=seq, batch=1, heads=8, kv_heads=8,
                head_dim=64, dtype="float32", causal=False, mode="fwd", device="cpu", options={},
                times_ms=times, time_ms=sorted(times)[len(times) // 2] if times else None,
                peak_bytes=min(peaks), peak_bytes_samples=peaks)  # fmt: skip
    return base | fields


def draws(seed, n=20, median=10.0, spread=0.03):
    """`n` repeat times around `median`, log-normally spread as a quiet CPU's are."""
    rng = random.Random(seed)
    return [median * rng.lognormvariate(0, spread) for _ in range(n)]


# The U test (scipy's), against values worked by hand.


def test_u_test_of_two_separated_samples_of_three():
    # U = 0 (no a above any b); mean 4.5; variance 3*3/12 * 7 = 5.25;
    # z = (4.5 - 0.5) / sqrt(5.25) = 1.7457; p = erfc(z / sqrt 2) = 0.08086
    result = mann_whitney([1, 2, 3], [4, 5, 6])
    assert result.u == 0 and result.p == pytest.approx(0.080856, abs=1e-6)


def test_u_test_with_ties():
    # Ranks of 1,2,2,2,3,3,4,5 are 1,3,3,3,5.5,5.5,7,8; a = [1,2,2,3] sums 12.5, U = 12.5 - 10 = 2.5.
    # Ties: one group of 3 and one of 2, sum(t^3 - t) = 30; variance 16/12 * (9 - 30/56) = 11.2857;
    # z = (8 - 2.5 - 0.5) / sqrt(11.2857) = 1.48835; p = 0.13666
    result = mann_whitney([1, 2, 2, 3], [2, 3, 4, 5])
    assert result.u == 2.5 and result.p == pytest.approx(0.136658, abs=1e-6)


def test_u_test_is_symmetric_and_equal_samples_give_p_one():
    forward, backward = mann_whitney([1, 2, 2, 3], [2, 3, 4, 5]), mann_whitney([2, 3, 4, 5], [1, 2, 2, 3])
    assert backward.u == 16 - forward.u and backward.p == forward.p
    assert mann_whitney([7, 7, 7], [7, 7]).p == 1.0


def test_three_repeats_a_side_can_never_be_significant_but_four_can():
    assert least_p(3, 3) == pytest.approx(0.0809, abs=1e-4)
    assert least_p(4, 4) == pytest.approx(0.0304, abs=1e-4)


# Time verdicts.


def test_same_distribution_is_no_change():
    verdict, p = judge_time(draws(1), draws(2), threshold=0.05, alpha=0.05)
    assert verdict.mark == "~" and verdict.kind == "same" and p > 0.05


def test_thirty_percent_slower_is_a_regression_and_faster_is_better():
    slower, p = judge_time(draws(1), [1.3 * t for t in draws(2)], threshold=0.05, alpha=0.05)
    assert slower.kind == "regression" and float(slower.mark.rstrip("%")) == pytest.approx(30, abs=3) and p < 1e-6
    faster, _ = judge_time(draws(1), [0.7 * t for t in draws(2)], threshold=0.05, alpha=0.05)
    assert faster.kind == "better" and faster.mark.startswith("-")


def test_a_significant_change_under_the_threshold_is_no_change():
    verdict, p = judge_time(draws(1, spread=0.002), [1.02 * t for t in draws(2, spread=0.002)], 0.05, 0.05)
    assert p < 0.05 and verdict.mark == "~"


def test_three_repeats_are_noisy_however_far_apart():
    verdict, p = judge_time([1.0, 1.1, 1.2], [2.0, 2.1, 2.2], threshold=0.05, alpha=0.05)
    assert verdict.kind == "noisy" and p is None and "3 vs 3 repeats" in verdict.why
    verdict, _ = judge_time(draws(1), [2.0, 2.1, 2.2], threshold=0.05, alpha=0.05)
    assert verdict.kind == "noisy" and "20 vs 3 repeats" in verdict.why


def test_a_large_move_the_spread_cannot_confirm_is_noisy():
    a, b = [1, 5, 9, 13, 17, 21], [2, 6, 10, 14, 18, 30]  # medians 11 and 12: +9%, but interleaved
    verdict, p = judge_time(a, b, threshold=0.05, alpha=0.05)
    assert verdict.kind == "noisy" and p > 0.5


def test_records_without_per_repeat_times_are_noisy():
    verdict, p = judge_time(None, draws(1), threshold=0.05, alpha=0.05)
    assert verdict.kind == "noisy" and p is None and "remeasure" in verdict.why


# Memory verdicts, against the samples' own spread.


def test_calls_are_judged_relative_to_the_machine_probe_before_each():
    # The machine ran 2x slower for B and so did every call: no change. Raw times would call it +100%.
    a = record(times=draws(1), machine_ms=[0.6] * 20)
    b = record(times=[2 * t for t in draws(2)], machine_ms=[1.2] * 20)
    assert relative_times(a) == pytest.approx([t / 0.6 for t in a["times_ms"]])
    assert compare_records([a], [b]).points[0].time.kind == "same"
    # Same machine speed, calls 30% slower: a regression of the relative times.
    c = record(times=[1.3 * t for t in draws(2)], machine_ms=[0.6] * 20)
    point = compare_records([a], [c]).points[0]
    assert point.time.kind == "regression" and point.time.mark.startswith("+")
    # The machine 2x faster and the calls 30% slower: the machine's swing could explain it, no verdict.
    d = record(times=[1.3 * t for t in draws(2)], machine_ms=[0.3] * 20)
    point = compare_records([a], [d]).points[0]
    assert point.time.kind == "noisy" and point.time.why == "the machine itself ran -50%"
    # ... but calls 200x slower are beyond any swing of the machine.
    e = record(times=[200 * t for t in draws(2)], machine_ms=[0.3] * 20)
    assert compare_records([a], [e]).points[0].time.kind == "regression"


def test_a_probe_per_call_is_needed_for_relative_times():
    assert relative_times(record(times=[1.0, 2.0], machine_ms=[0.5])) is None
    assert relative_times(record(times=[1.0, 2.0])) is None
    regression = compare_records([record(times=draws(1))], [record(times=draws(2, median=20))]).points[0].time
    assert machine_moved(record(times=[1.0]), record(times=[1.0], machine_ms=[0.5]), regression, 0.05) == regression


def test_memory_within_threshold_is_no_change_and_beyond_spread_a_regression():
    assert judge_memory([20 * MIB] * 5, [int(20.5 * MIB)] * 5, 0.10, MIB).kind == "same"
    grown = judge_memory([20 * MIB] * 5, [32 * MIB] * 5, 0.10, MIB)
    assert grown.kind == "regression" and grown.mark == "+60.0%"
    assert judge_memory([32 * MIB] * 5, [20 * MIB] * 5, 0.10, MIB).kind == "better"


def test_memory_change_within_the_samples_spread_is_noisy():
    a = [20 * MIB, 21 * MIB, 37 * MIB, 25 * MIB, 29 * MIB]  # samples as the CPU method gave them before the fix
    verdict = judge_memory(a, [25 * MIB] * 5, 0.10, MIB)
    assert verdict.kind == "noisy" and "+25.0%" in verdict.why


def test_small_cpu_peaks_move_by_less_than_the_floor():
    assert judge_memory([int(0.5 * MIB)] * 5, [int(0.8 * MIB)] * 5, 0.10, MIB).kind == "same"
    assert judge_memory([int(0.5 * MIB)], [int(0.8 * MIB)], 0.10, 0).kind == "regression"  # CUDA: exact


# Whole comparisons of synthetic runs.


def test_an_option_sweep_stays_two_points():
    a = [record("chunked", times=draws(i), options={"block_size": bs}) for i, bs in ((1, 64), (2, 128))]
    b = [record("chunked", times=draws(3), options={"block_size": 64}),
         record("chunked", times=[1.3 * t for t in draws(4)], options={"block_size": 128})]  # fmt: skip
    result = compare_records(a, b)
    assert len(result.points) == 2 and identity(a[0]) != identity(a[1])
    text, code = result.report()
    assert code == 1 and "REGRESSION in 1 of 2 points (chunked[block_size=128])" in text


def test_identity_matches_the_records_key_and_older_records_without_options():
    rec = record(options={"block_size": 64})
    key = json.dumps({f: rec[f] for f in json.loads(identity(rec))}, sort_keys=True)
    assert identity(rec) == key
    old = record()
    del old["options"]
    assert identity(old) == identity(record())


def test_report_counts_same_noisy_and_regressions():
    a = [record(seq=n, times=draws(n)) for n in (256, 512, 1024)]
    b = [record(seq=256, times=draws(7)), record(seq=512, times=[1.0, 1.1, 1.2]), record(seq=1024, times=draws(9))]
    text, code = compare_records(a, b).report()
    assert code == 0 and text.splitlines()[-1] == (
        "no regression over 3 points: 2 the same, 0 better, 1 noisy (no verdict possible)"
    )
    b[2]["peak_bytes_samples"] = [40 * MIB] * 5
    b[2]["peak_bytes"] = 40 * MIB
    text, code = compare_records(a, b).report()
    assert code == 1 and "REGRESSION in 1 of 3 points (sdpa)" in text and "memory regression" in text


def test_failed_and_unmatched_points_are_not_judged():
    a = [record(seq=256, times=draws(1)), record(seq=512, times=draws(2))]
    b = [record(seq=256, times=draws(3)), record(seq=512, status="oom"), record(seq=2048, times=draws(4))]
    result = compare_records(a, b)
    assert len(result.points) == 1 and (result.only_a, result.only_b) == (1, 1)


# The command, on real runs.

# One thread: two on a shared two-core machine make single repeats many times slower, at random.
FAST = ["--budget", "0.2", "--repeats", "10", "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with pytest.raises(SystemExit):
        main(["bench", "--variants", "naive,sdpa,chunked", "--seq", "128,256,512", *FAST, "--out", str(out)])
    return out


def test_compare_a_run_with_itself_is_clean(bench_run, capsys):
    code, out, _ = cli(capsys, "compare", str(bench_run), str(bench_run))
    assert code == 0 and "no regression over 9 points: 9 the same" in out


def test_compare_flags_a_variant_whose_times_doubled(bench_run, tmp_path, capsys):
    slower = tmp_path / "slower"
    slower.mkdir()
    lines = []
    for line in (bench_run / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["variant"] == "chunked":
            for field in ("time_ms", "time_p20_ms", "time_p80_ms"):
                record[field] *= 2
            record["times_ms"] = [2 * t for t in record["times_ms"]]
        lines.append(json.dumps(record))
    (slower / "records.jsonl").write_text("\n".join(lines) + "\n")
    code, out, _ = cli(capsys, "compare", str(bench_run), str(slower))
    assert code == 1 and "REGRESSION in 3 of 9 points (chunked)" in out


@pytest.mark.slow
def test_back_to_back_runs_agree_and_a_slowed_variant_alone_is_flagged(plugins, tmp_path, capsys, monkeypatch):
    sweep = ["bench", "--variants", "sdpa,chunked,linear-elu,naive,slowed-sdpa", "--seq", "256,512,1024,2048",
             "--mode", "fwd", "--plugin", str(plugins / "slowed.py")]  # fmt: skip
    for name, slowdown in (("a", "0"), ("b", "0"), ("slowed", "0.3")):
        monkeypatch.setenv("ATTNBENCH_SLOWDOWN", slowdown)
        cli(capsys, *sweep, "--out", str(tmp_path / name))
    code, out, _ = cli(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 0 and "no regression over 20 points" in out and "memory regression" not in out, out
    code, out, _ = cli(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "slowed"))
    flagged = [line for line in out.splitlines() if "time regression" in line]
    assert code == 1 and "(slowed-sdpa)" in out.splitlines()[-1], out
    assert flagged and all(line.startswith("| slowed-sdpa") for line in flagged), out
