"""Ragged batches: sequence-length distributions, padded and packed layouts, measured end to end."""

from __future__ import annotations

import shlex

import pytest
from test_bench import FAST, bench

from attnbench.suite.cli import main
from attnbench.suite.core.lengths import parse_lengths
from attnbench.suite.measure.flops import causal_pairs
from attnbench.suite.runs.records import read_records


def test_uniform_lengths_lie_within_their_fractions_of_n_and_repeat_for_the_same_point():
    spec = parse_lengths("uniform:0.25:1")
    drawn = spec.draw(64, 400)
    assert all(100 <= n <= 400 for n in drawn) and len(set(drawn)) > 10
    assert spec.draw(64, 400) == drawn


def test_fixed_and_listed_lengths():
    assert parse_lengths("fixed").draw(3, 128) == [128, 128, 128]
    assert parse_lengths("list:5,9").draw(5, 16) == [5, 9, 5, 9, 5]
    with pytest.raises(ValueError, match="longer than N = 8"):
        parse_lengths("list:5,9").draw(2, 8)


@pytest.mark.parametrize(
    ("text", "words"),
    [("uniform:2:1", "0 < LO <= HI <= 1"), ("uniform:0.5", "uniform:LO:HI"), ("list:4,x", "whole token counts"),
     ("list:0,4", "at least 1"), ("gauss", "expected fixed, uniform:LO:HI or list")],
)  # fmt: skip
def test_a_bad_distribution_is_named(text, words):
    with pytest.raises(ValueError, match=words):
        parse_lengths(text)


@pytest.fixture(scope="module")
def ragged_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ragged")
    with pytest.raises(SystemExit) as info:
        main(["bench", "--variants", "naive,sdpa,chunked,linear-elu", "--seq", "128,256", "--batch", "3", "--causal",
              "--lengths", "uniform:0.25:1", "--layout", "padded,packed", *FAST, "--out", str(out)])  # fmt: skip
    assert info.value.code in (0, None)
    return out


def test_exact_variants_measure_both_layouts_correctly_and_a_variant_without_packing_says_so(ragged_run):
    records = read_records(ragged_run)
    assert len(records) == 16
    for r in records:
        if (r["variant"], r["layout"]) == ("linear-elu", "packed"):
            assert r["status"] == "unsupported" and "does not take packed sequences" in r["reason"]
        else:
            assert (r["status"], r["correct"]) == ("ok", True), (r["variant"], r["layout"], r.get("reason"))


def test_every_variant_and_layout_of_a_point_sees_the_same_lengths_and_flops_count_real_pairs_only(ragged_run):
    ok = [r for r in read_records(ragged_run) if r["status"] == "ok"]
    for n in (128, 256):
        at_n = [r for r in ok if r["seq"] == n]
        (lengths,) = {tuple(r["seq_lengths"]) for r in at_n}
        assert all(n // 4 <= length <= n for length in lengths) and len(lengths) == 3
        real = sum(causal_pairs(m, m) for m in lengths)
        exact = [r for r in at_n if r["exact"]]
        assert {r["flops"] for r in exact} == {4.0 * 8 * real * 64}
        assert {r["real_tokens"] for r in at_n} == {sum(lengths)}
        assert {round(r["padding_waste"], 12) for r in at_n} == {round(1 - real / (3 * causal_pairs(n, n)), 12)}


def test_the_summary_and_chart_compare_packed_with_padded(ragged_run):
    summary = (ragged_run / "summary.md").read_text()
    assert "lengths=uniform:0.25:1: packed vs padded" in summary and "packed / padded time" in summary
    assert len(list(ragged_run.glob("ragged-*.png"))) == 1
    assert "ragged-" in (ragged_run / "README.md").read_text()


def test_a_ragged_record_command_measures_the_same_point(ragged_run, capsys):
    record = next(r for r in read_records(ragged_run) if r["variant"] == "chunked" and r["layout"] == "packed")
    argv = shlex.split(record["command"])[2:]  # after "attnbench bench"
    code, out, _ = bench(capsys, *argv)
    assert code == 0 and "lengths=uniform:0.25:1 packed" in out
    scratch = out.split(" points -> ")[1].split()[0]
    (again,) = read_records(scratch)
    assert again["key"] == record["key"] and again["seq_lengths"] == record["seq_lengths"]


@pytest.mark.parametrize("mode", ["bwd", "fwd_bwd"])
def test_gradients_of_packed_and_padded_batches_are_timed(tmp_path, capsys, mode):
    code, _, err = bench(capsys, "--variants", "chunked,sdpa", "--seq", "192", "--batch", "2", "--mode", mode,
                         "--lengths", "list:150,40", "--layout", "padded,packed", *FAST,
                         "--out", str(tmp_path))  # fmt: skip
    records = read_records(tmp_path)
    assert code == 0 and "Traceback" not in err
    assert [(r["status"], r["correct"]) for r in records] == [("ok", True)] * 4, [r.get("reason") for r in records]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lengths", "uniform:2:1"], "0 < LO <= HI <= 1"),
        (["--lengths", "list:300"], "300 is longer than seq 128"),
        (["--layout", "diagonal"], "layout"),
        (["--layout", ""], "layout: List should have at least 1 item"),
        (["--lengths", ""], "lengths '': expected fixed"),
        (["--lengths", "uniform:0.5:1", "--q-len", "64"], "give lengths/layout or q_len, not both"),
    ],
)
def test_bad_ragged_input_is_one_line_exit_2(capsys, tmp_path, argv, message):
    code, _, err = bench(capsys, "--variants", "sdpa", "--seq", "128", *argv, "--out", str(tmp_path))
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "records.jsonl").exists()


def test_compiled_flex_is_judged_against_the_definition_in_both_layouts(tmp_path, capsys):
    """The float64 error is measured on the compiled kernel itself (nothing after timing may spoil its cache)."""
    code, _, _ = bench(capsys, "--variants", "flex", "--seq", "256", "--batch", "3", "--lengths", "uniform:0.25:1",
                         "--layout", "padded,packed", *FAST, "--out", str(tmp_path))  # fmt: skip
    records = read_records(tmp_path)
    assert code == 0 and [(r["status"], r["correct"]) for r in records] == [("ok", True)] * 2, [
        r.get("error_note") for r in records
    ]


def test_compare_and_rerun_keep_the_layouts_apart(ragged_run, capsys):
    from attnbench.suite.outputs.compare import ok_points

    assert len(ok_points(read_records(ragged_run))) == 14  # 16 points, linear-elu packed unsupported
    with pytest.raises(SystemExit) as info:
        main(["rerun", str(ragged_run), "--where", "variant=chunked,seq=128,layout=packed"])
    out, _ = capsys.readouterr()
    # One point re-measured and one row: a timing verdict may go either way on a loaded machine.
    assert info.value.code in (0, 1) and "re-measuring 1 points" in out and "packed" in out


def test_equal_distributions_are_one_point_and_a_list_longer_than_the_batch_is_refused(capsys, tmp_path):
    code, out, _ = bench(capsys, "--variants", "sdpa", "--seq", "64", "--batch", "2", "--lengths",
                         "uniform:0.250:1.0;uniform:0.25:1", *FAST, "--out", str(tmp_path))  # fmt: skip
    assert code == 0 and "1 points" in out and read_records(tmp_path)[0]["lengths"] == "uniform:0.25:1"
    code, _, err = bench(capsys, "--variants", "sdpa", "--seq", "64", "--batch", "2", "--lengths", "list:10,20,30",
                         "--out", str(tmp_path / "list"))  # fmt: skip
    assert code == 2 and "3 lengths for a batch of 2" in err


def test_a_run_of_variants_without_a_flop_count_still_gets_its_summary(capsys, tmp_path):
    code, _, err = bench(capsys, "--variants", "linear-elu", "--seq", "64", *FAST, "--out", str(tmp_path))
    assert code == 0 and "Traceback" not in err and "linear-elu" in (tmp_path / "summary.md").read_text()
