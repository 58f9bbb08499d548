"""`attnbench bench` end to end: real worker processes, records, failures, resume, summary."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from attnbench.suite.cli import main
from attnbench.suite.outputs.summary import bench_frame, fit_exponent
from attnbench.suite.runs.records import read_records
from attnbench.suite.runs.schema import SCHEMA_VERSION

FAST = ["--budget", "0.05", "--repeats", "3", "--warmup", "1"]


def bench(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["bench", *argv])
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.fixture(scope="module")
def growth_run(tmp_path_factory):
    """One small sweep shared by the tests that read it."""
    out = tmp_path_factory.mktemp("growth")
    with pytest.raises(SystemExit):
        main(["bench", "--variants", "naive,chunked,sdpa", "--seq", "256,512,1024,2048", *FAST, "--out", str(out)])
    return out


def test_records_env_and_summary_are_written(growth_run):
    records = read_records(growth_run)
    assert len(records) == 12 and {r["status"] for r in records} == {"ok"}
    first = records[0]
    for field in ("time_ms", "time_p20_ms", "time_p80_ms", "peak_bytes", "flops", "tflops", "first_call_s",
                  "error", "threads", "command", "key"):  # fmt: skip
        assert field in first, field
    assert first["time_p20_ms"] <= first["time_ms"] <= first["time_p80_ms"]
    assert first["error"] < 1e-5  # float32 against the float64 definition
    assert first["command"].startswith("attnbench bench --variants ")
    env = json.loads((growth_run / "env.json").read_text())
    assert env["device"] == "cpu" and env["versions"]["torch"] and env["matmul_tflops"]["float32"] > 0
    assert 0 < first["peak_fraction"] < 1.5
    assert "growth in N" in (growth_run / "summary.md").read_text()


def test_every_point_is_placed_on_the_runs_roofline(growth_run):
    """Bandwidth measured once per run beside the matmul peak; each record's bytes, intensity and the
    fraction of both ceilings it reached; the roofline chart drawn from them."""
    from attnbench.suite.measure.roofline import io_bytes

    env = json.loads((growth_run / "env.json").read_text())
    assert env["bandwidth_gbs"] > 0
    for r in read_records(growth_run):
        assert r["io_bytes"] == io_bytes(1, 8, 8, r["seq"], r["seq"], 64, "float32", "fwd") == 4 * 4 * 8 * r["seq"] * 64
        assert r["intensity"] == pytest.approx(r["flops"] / r["io_bytes"])  # 4 N^2 H D / (16 N H D) = N / 4
        assert r["intensity"] == pytest.approx(r["seq"] / 4)
        reached = r["io_bytes"] / (r["time_ms"] * 1e-3) / 1e9
        assert r["bandwidth_fraction"] == pytest.approx(reached / env["bandwidth_gbs"])
        assert r["peak_fraction"] == pytest.approx(r["tflops"] / env["matmul_tflops"]["float32"])
        assert r["wall_s"] > 0
    assert (growth_run / "roofline-cpu-float32.png").stat().st_size > 0


def test_memory_exponents_separate_quadratic_from_linear(growth_run):
    df = bench_frame(read_records(growth_run))
    fits = {variant: fit_exponent(rows["seq"], rows["peak_bytes"]) for variant, rows in df.groupby("variant")}
    assert 1.8 <= fits["naive"] <= 2.2
    assert fits["chunked"] <= 1.2 and fits["sdpa"] <= 1.2


def _folder_bytes(run) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_record_command_run_as_it_is_measures_its_point_and_leaves_the_run_alone(growth_run):
    """The stored command, through a shell as a user would paste it: a time for that point, in a fresh
    folder; the run it came from is unchanged to the byte."""
    record = read_records(growth_run)[-1]
    before = _folder_bytes(growth_run)
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", record["command"]], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already recorded" not in done.stdout
    scratch = Path(re.search(r"1 points -> (\S+)", done.stdout).group(1))
    (again,) = read_records(scratch)
    assert again["key"] == record["key"] and again["status"] == "ok" and again["time_ms"] > 0
    assert f"{again['time_ms']:.3f}" in done.stdout  # the time is printed
    assert scratch != growth_run and _folder_bytes(growth_run) == before


def test_records_name_the_code_that_made_them(growth_run):
    record = read_records(growth_run)[0]
    assert record["schema_version"] == SCHEMA_VERSION
    assert len(record["code"]["commit"]) == 40 and isinstance(record["code"]["dirty"], bool)
    assert record["source"] == {"kind": "built-in", "module": "attnbench.variants.exact.naive",
                                "qualname": "NaiveAttention", "path": None, "distribution": None, "version": None,
                                "packages": {}, "departures": []}  # fmt: skip
    assert record["versions"]["torch"] == torch.__version__
    assert record["clock"] == "perf_counter" and record["memory_method"].startswith("VmHWM")
    assert record["executor"] == "local" and record["host"] == platform.node()
    assert len(record["times_ms"]) == record["timed_calls"] >= 3
    assert len(record["machine_ms"]) == record["timed_calls"] and min(record["machine_ms"]) > 0  # CPU: a probe per call
    sdpa = next(r for r in read_records(growth_run) if r["variant"] == "sdpa")
    assert sdpa["sdpa_backend"] in ("flash", "math") and record["sdpa_backend"] is None  # naive runs no SDPA


@pytest.mark.parametrize("mode", ["bwd", "fwd_bwd"])
def test_every_mode_runs_end_to_end(tmp_path, capsys, mode):
    code, _, err = bench(capsys, "--variants", "naive,sdpa,chunked", "--seq", "128,256", "--mode", mode, *FAST,
                         "--out", str(tmp_path))  # fmt: skip
    records = read_records(tmp_path)
    assert code == 0 and "Traceback" not in err
    assert [(r["status"], r["correct"]) for r in records] == [("ok", True)] * 6, [r.get("reason") for r in records]
    assert all(r["mode"] == mode and r["peak_bytes"] > 0 for r in records)
    for chart in ("time", "memory", "tflops", "speedup"):
        assert len(list(tmp_path.glob(f"*-{mode.replace('_', '-')}-*-{chart}.png"))) == 1


def test_timed_backward_builds_a_fresh_graph_and_leaves_grad_alone():
    from attnbench.suite.measure.point import Point
    from attnbench.suite.measure.worker import _call_plan, make_inputs
    from attnbench.variants.contract import AttentionSpec
    from attnbench.variants.exact.naive import NaiveAttention

    point = Point(
        variant="naive",
        batch=1,
        heads=2,
        kv_heads=2,
        q_len=16,
        seq=16,
        head_dim=8,
        dtype="float32",
        causal=False,
        mode="bwd",
        device="cpu",
    )
    q, k, v, layout = make_inputs(point, requires_grad=True)
    setup, fn = _call_plan(NaiveAttention(AttentionSpec(2, 8)), point, q, k, v, layout)
    first, second = fn(setup()), fn(setup())  # a second backward over the same graph would raise
    assert torch.equal(first[0], second[0]) and q.grad is None and k.grad is None


def test_wrong_causal_alignment_is_recorded_as_wrong_and_fails_the_bench(plugins, tmp_path, capsys):
    code, out, _ = bench(capsys, "--variants", "decode-misaligned,sdpa", "--seq", "64,128", "--q-len", "1", "--causal",
                         *FAST, "--plugin", str(plugins / "decode_misaligned.py"), "--out", str(tmp_path))  # fmt: skip
    records = {r["variant"]: r for r in read_records(tmp_path)}
    wrong = records["decode-misaligned"]
    assert code == 1 and "FAILED CORRECTNESS in 2 of 4 points (decode-misaligned)" in out
    assert wrong["status"] == "ok" and wrong["correct"] is False and wrong["error"] > wrong["tolerance"]
    assert records["sdpa"]["correct"] is True
    summary = (tmp_path / "summary.md").read_text()
    assert "WRONG: 2 points off their definition" in summary and "decode-misaligned N=128" in summary
    assert "WRONG (tol 1e-05)" in summary  # in the error table beside the times
    assert "WRONG" in (tmp_path / "README.md").read_text()


def test_an_option_sweep_stays_apart_in_records_summary_and_charts(tmp_path, capsys):
    for block in (32, 64):
        bench(capsys, "--variants", "chunked", "--seq", "128,256", *FAST, "--option", f"chunked.block_size={block}",
              "--out", str(tmp_path))  # fmt: skip
    assert len({r["key"] for r in read_records(tmp_path)}) == 4
    summary = (tmp_path / "summary.md").read_text()
    assert "chunked[block_size=32]" in summary and "chunked[block_size=64]" in summary
    svg = next(tmp_path.glob("*-time.svg")).read_text()
    assert "chunked[block_size=32]" in svg and "chunked[block_size=64]" in svg


def test_failing_and_hanging_points_are_recorded_and_the_rest_present(plugins, tmp_path, capsys):
    code, _, _ = bench(
        capsys, "--variants", "fails-long,hangs,sdpa", "--seq", "256,1024", *FAST, "--timeout", "8",
        "--plugin", str(plugins / "fails_long.py"), "--plugin", str(plugins / "hangs.py"), "--out", str(tmp_path),
    )  # fmt: skip
    status = {(r["variant"], r["seq"]): (r["status"], r.get("reason", "")) for r in read_records(tmp_path)}
    assert code == 0 and len(status) == 6
    assert status["fails-long", 1024][0] == "error" and "no tile config" in status["fails-long", 1024][1]
    assert status["hangs", 1024][0] == "timeout"
    assert all(status[v, 256][0] == "ok" for v in ("fails-long", "hangs", "sdpa"))
    assert status["sdpa", 1024][0] == "ok"


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("fwd", "output shape (1, 128, 8, 64) != q shape (1, 8, 128, 64)"),
        ("fwd_bwd", "Mismatch in shape: grad_output[0] has a shape of torch.Size([1, 8, 128, 64])"),  # torch's
    ],
)
def test_a_wrong_shaped_output_is_an_error_not_a_timed_point(plugins, tmp_path, capsys, mode, words):
    bench(capsys, "--variants", "wrong-shape", "--seq", "128", "--mode", mode, *FAST,
          "--plugin", str(plugins / "wrong_shape.py"), "--out", str(tmp_path))  # fmt: skip
    (record,) = read_records(tmp_path)
    assert record["status"] == "error" and words in record["reason"]


def test_rerun_skips_recorded_points(tmp_path, capsys):
    argv = ["--variants", "sdpa,chunked", "--seq", "128,256", *FAST, "--out", str(tmp_path)]
    bench(capsys, *argv)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    # A crash after two points: the file holds only those.
    (tmp_path / "records.jsonl").write_text("\n".join(lines[:2]) + "\n")
    _, out, _ = bench(capsys, *argv)
    records = read_records(tmp_path)
    assert "2 of 4 points already recorded" in out
    assert [r["key"] for r in records[:2]] == [json.loads(line)["key"] for line in lines[:2]]
    assert len({r["key"] for r in records}) == len(records) == 4
    assert len(json.loads((tmp_path / "env.json").read_text())["resumed"]) == 1


def test_a_run_from_another_machine_is_never_resumed(tmp_path, capsys):
    argv = ["--variants", "sdpa", "--seq", "128", *FAST, "--out", str(tmp_path)]
    bench(capsys, *argv)
    env = json.loads((tmp_path / "env.json").read_text())
    (tmp_path / "env.json").write_text(json.dumps(env | {"hostname": "elsewhere"}))
    before = (tmp_path / "records.jsonl").read_text()
    code, out, err = bench(capsys, *argv)
    message = out + err
    assert code != 0 and "another machine" in message and "'elsewhere'" in message and "choose another --out" in message
    assert (tmp_path / "records.jsonl").read_text() == before


def test_a_local_run_never_adds_to_a_folder_of_several_hosts(tmp_path, capsys):
    # A cluster run's records name the hosts that measured them; a local bench must not mix in its own.
    argv = ["--variants", "sdpa", "--seq", "128", *FAST, "--out", str(tmp_path)]
    bench(capsys, *argv)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    moved = [json.dumps(json.loads(line) | {"host": "node-7"}) for line in lines]
    (tmp_path / "records.jsonl").write_text("\n".join(moved) + "\n")
    code, out, err = bench(capsys, *argv, "--seq", "256")
    message = out + err
    assert code != 0 and "other hosts (node-7)" in message and "--executor ray|slurm" in message
    assert (tmp_path / "records.jsonl").read_text().splitlines() == moved


@pytest.mark.slow
def test_interrupted_sweep_resumes_with_the_same_command(tmp_path):
    argv = [sys.executable, "-m", "attnbench", "bench", "--variants", "naive,sdpa", "--seq", "128,256,512,1024",
            *FAST, "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not (tmp_path / "records.jsonl").exists() and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun the same command to resume" in out
    kept = len(read_records(tmp_path))
    assert 1 <= kept < 8
    subprocess.run(argv, check=True, capture_output=True)
    records = read_records(tmp_path)
    assert len(records) == 8 and len({r["key"] for r in records}) == 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variants", "nope", "--seq", "128"], "unknown variant 'nope'"),
        (["--variants", "naive", "--seq", "12x"], "comma-separated list of int"),
        (["--variants", "naive", "--seq", "128", "--mode", "train"], "mode"),
        (["--preset", "cpu2"], "unknown preset"),
        (["--variants", "naive"], "at least --variants and --seq"),
        (["--variants", "naive", "--seq", "64", "--option", "naive-block=3"], "VARIANT.KEY=VALUE"),
        (["--variants", "chunked", "--seq", "64", "--option", "chunked.blok=3"], "option blok"),
        (["--variants", "chunked", "--seq", "64", "--option", "chunked.block_size=-2"], "block_size"),
    ],
)
def test_bad_bench_input_is_one_line_exit_2(capsys, tmp_path, argv, message):
    code, _, err = bench(capsys, *argv, "--out", str(tmp_path))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "records.jsonl").exists()


def test_corrupt_record_line_is_skipped_with_a_warning(growth_run, tmp_path):
    lines = (growth_run / "records.jsonl").read_text().splitlines()
    (tmp_path / "records.jsonl").write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    with pytest.warns(UserWarning, match=r"records.jsonl:2: skipped corrupt record"):
        records = read_records(tmp_path)
    assert [r["key"] for r in records] == [json.loads(lines[i])["key"] for i in (0, 2)]


def test_records_of_the_older_schema_are_read_and_a_newer_one_refused_in_one_line(growth_run, tmp_path, capsys):
    (old,) = read_records(ROOT / "tests/data/run-v0")  # a record written before the schema, as committed then
    assert old["schema_version"] == 0 and old["timed_calls"] > 0 and old["repeats"] is None and old["code"] is None
    newer = json.loads((growth_run / "records.jsonl").read_text().splitlines()[0]) | {"schema_version": 99}
    (tmp_path / "records.jsonl").write_text(json.dumps(newer) + "\n")
    code, _, err = bench(capsys, "--variants", "naive", "--seq", "64", *FAST, "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "records.jsonl:1: record schema 99 is newer" in err


def test_a_record_that_does_not_fit_its_schema_is_skipped_naming_the_field(growth_run, tmp_path):
    bad = json.loads((growth_run / "records.jsonl").read_text().splitlines()[0]) | {"seq": "long"}
    (tmp_path / "records.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.warns(UserWarning, match=r"records.jsonl:1: skipped record that does not fit its schema \(seq: "):
        assert read_records(tmp_path) == []


def test_rerun_prints_recorded_against_new_and_exits_1_when_a_point_does_not_reproduce(
    plugins, tmp_path, capsys, monkeypatch
):
    argv = ["--variants", "slowed-sdpa,sdpa", "--seq", "64", "--repeats", "8", "--budget", "0.5", "--warmup", "1",
            "--plugin", str(plugins / "slowed.py"), "--no-report", "--out", str(tmp_path)]  # fmt: skip
    bench(capsys, *argv)
    before = _folder_bytes(tmp_path)
    # The code got slower since the run was recorded: 200 ms a call, where the call took well under 1 ms
    # (a loaded machine stretched such calls to 30 ms at most here).
    monkeypatch.setenv("ATTNBENCH_DELAY_MS", "200")
    with pytest.raises(SystemExit) as info:
        main(["rerun", str(tmp_path), "--where", "variant=slowed-sdpa"])
    out = capsys.readouterr().out
    assert info.value.code == 1 and "NOT REPRODUCED: 1 of 1 points moved beyond the run's spread (slowed-sdpa)" in out
    assert "recorded (ms)" in out and "new (ms)" in out and "time regression" in out
    assert _folder_bytes(tmp_path) == before  # the run is only read


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--where", "colour=red"], "expected FIELD=VALUE with FIELD one of variant"),
     (["--where", "variant=nope"], "no measured (ok) bench point matches variant=nope")],
)  # fmt: skip
def test_bad_rerun_input_is_one_line(growth_run, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["rerun", str(growth_run), *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and err.count("\n") == 1
