"""Run folders are safe: whole lines, atomic env.json, one writer, no orphan worker, one-line OS errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from attnbench.suite.cli import main
from attnbench.suite.core.errors import UserError
from attnbench.suite.runs import records as run_records
from attnbench.suite.runs.records import read_records, run_lock, write_env

FAST = ["--budget", "0.05", "--repeats", "3", "--warmup", "1"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_a_resume_after_a_cut_last_line_keeps_every_record_whole(tmp_path, capsys, recwarn):
    argv = ["bench", "--variants", "sdpa", "--seq", "64,128", *FAST, "--out", str(tmp_path)]
    cli(capsys, *argv)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    # A crash while the second record was written: half of its line is on disk, with no newline.
    (tmp_path / "records.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    code, _, _ = cli(capsys, *argv)
    text = (tmp_path / "records.jsonl").read_text()
    assert code == 0 and text.endswith("\n") and len(text.splitlines()) == 2
    assert all(json.loads(line)["status"] == "ok" for line in text.splitlines())
    assert (tmp_path / "records.jsonl.partial").read_text() == lines[1][: len(lines[1]) // 2] + "\n"
    assert any("cut short" in str(w.message) for w in recwarn)


def test_an_append_starts_on_a_fresh_line(tmp_path):
    record = {"kind": "train", "run_id": "r", "key": "k", "command": "c", "date": "d", "status": "ok",
              "variant": "sdpa", "device": "cpu", "task": "mqar", "seed": 0, "preset": "tiny", "data": "x",
              "task_params": {}, "model": {}, "train": {}}  # fmt: skip
    (tmp_path / "records.jsonl").write_text('{"half a rec')
    run_records.append_record(tmp_path, record)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert lines[0] == '{"half a rec' and json.loads(lines[1])["key"] == "k"


def test_env_json_is_replaced_atomically(tmp_path, monkeypatch):
    write_env(tmp_path, {"a": 1})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(run_records.os, "replace", crash)
    with pytest.raises(UserError, match=r"env\.json: cannot write"):
        write_env(tmp_path, {"a": 2})
    assert json.loads((tmp_path / "env.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["env.json"]  # no temporary file left


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    with run_lock(tmp_path):
        # Another process holds it: a fresh interpreter cannot inherit this one's lock.
        done = subprocess.run(
            [sys.executable, "-m", "attnbench", "bench", "--variants", "sdpa", "--seq", "64", "--out", str(tmp_path)],
            capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != run_records.LOCK_ENV},
        )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and f"being written by pid {os.getpid()}" in done.stderr
    assert not (tmp_path / "records.jsonl").exists()


def _live_descendants(root: int) -> set[int]:
    """Processes below `root` that are still alive (zombies awaiting their reaper do not count)."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] != "Z":
                    parents[int(proc.name)] = int(stat[1])
        except (OSError, IndexError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc are Linux")
def test_kill_9_of_bench_leaves_no_worker_and_a_rerun_completes(tmp_path, plugins):
    out = tmp_path / "run"
    ours = set(Path(tempfile.gettempdir()).glob("attnbench-*"))
    argv = [sys.executable, "-m", "attnbench", "bench", "--variants", "sdpa,hangs", "--seq", "256,1024", *FAST,
            "--timeout", "5", "--plugin", str(plugins / "hangs.py"), "--out", str(out), "--no-report"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Wait for the worker of the last point, which hangs: a sweep killed while a worker runs.
    records = out / "records.jsonl"
    while (not records.exists() or len(records.read_text().splitlines()) < 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    workers = _live_descendants(proc.pid)  # the fork server and the worker forked from it
    assert len(workers) >= 2, "no worker started"
    proc.kill()
    proc.wait()
    time.sleep(2)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived the killed bench"
    # The fork server's socket folder, named for the killed command, is what a kill -9 leaves behind
    # (its owner cannot clean up): the next command removes it.
    left = set(Path(tempfile.gettempdir()).glob("attnbench-fork-*")) - ours
    stale = {p for p in left if not _alive(int(p.name.split("-")[2]))}  # not a command running beside this test
    assert {p.name.startswith(f"attnbench-fork-{proc.pid}-") for p in stale} <= {True}
    rerun = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert rerun.wait(timeout=300) == 0
    # Neither command's folder is left: the rerun removed the killed one's, and its own at exit.
    named = {int(p.name.split("-")[2]) for p in Path(tempfile.gettempdir()).glob("attnbench-fork-*")}
    assert not named & {proc.pid, rerun.pid}
    records = read_records(out)
    assert len(records) == len({r["key"] for r in records}) == 4
    assert all(line.strip() and json.loads(line) for line in (out / "records.jsonl").read_text().splitlines())
    assert {(r["variant"], r["seq"], r["status"]) for r in records} >= {("hangs", 1024, "timeout")}


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write into, root included (chattr +i where running as root)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
            pytest.skip("running as root and chattr +i is not available here: no folder is read-only to root")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)])
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_out_naming_a_file_or_a_read_only_place_is_one_line(tmp_path, read_only_dir, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    for out, words in ((a_file, "is a file, not a run folder"), (read_only_dir / "run", str(read_only_dir / "run"))):
        code, _, err = cli(capsys, "bench", "--variants", "sdpa", "--seq", "64", *FAST, "--out", str(out))
        assert code == 2 and err.count("\n") == 1 and words in err and "Traceback" not in err
    assert a_file.read_text() == "not a folder"


def test_plot_into_a_read_only_run_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    cli(capsys, "bench", "--variants", "sdpa", "--seq", "64,128", *FAST, "--no-report", "--out", str(run))
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(run)]).returncode:
            pytest.skip("running as root and chattr +i is not available here")
    else:
        run.chmod(0o555)
    try:
        code, _, err = cli(capsys, "plot", str(run))
    finally:
        subprocess.run(["chattr", "-i", str(run)]) if os.geteuid() == 0 else run.chmod(0o755)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and str(run) in err
