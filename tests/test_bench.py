"""`attnbench bench` end to end: real worker processes, records, failures, resume, summary."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from attnbench.suite.cli import main
from attnbench.suite.records import read_records
from attnbench.suite.summary import bench_frame, exponents

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


def test_memory_exponents_separate_quadratic_from_linear(growth_run):
    fits = exponents(bench_frame(read_records(growth_run))).set_index("variant")["memory_exponent"]
    assert 1.8 <= fits["naive"] <= 2.2
    assert fits["chunked"] <= 1.2 and fits["sdpa"] <= 1.2


def test_record_command_reproduces_its_point_alone(growth_run, tmp_path, capsys):
    record = read_records(growth_run)[0]
    argv = record["command"].split()[2:]  # drop "attnbench bench"
    argv[argv.index("--out") + 1] = str(tmp_path)
    code, _, _ = bench(capsys, *argv)
    (again,) = read_records(tmp_path)
    assert code == 0 and again["key"] == record["key"] and again["status"] == "ok"


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


def test_corrupt_record_line_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "records.jsonl").write_text('{"variant": "a", "seq": 1}\n{"variant": "b", "se\n{"variant": "c"}\n')
    with pytest.warns(UserWarning, match=r"records.jsonl:2: skipped corrupt record"):
        records = read_records(tmp_path)
    assert [r["variant"] for r in records] == ["a", "c"]
