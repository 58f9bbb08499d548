"""Faults injected for real: bad bytes in every file a command reads, killed and interrupted commands,
rogue plugins. Each ends in one line and a non-zero exit, or is skipped with a warning while the rest is
used; nothing recorded is lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnbench.suite.cli import main

FAST = ["--repeats", "3", "--budget", "0.05", "--warmup", "1", "--threads", "1"]
NOT_UTF8 = b'{"kind": "bench", "variant": "\xff\xfe"}'


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """Four measured points, then a line of bytes that are not UTF-8 put in the middle of records.jsonl."""
    run = tmp_path_factory.mktemp("faults") / "run"
    with pytest.raises(SystemExit) as info:
        main(["bench", "--variants", "naive,sdpa", "--seq", "64,128", *FAST, "--out", str(run), "--no-report"])
    assert info.value.code in (0, None)
    lines = (run / "records.jsonl").read_bytes().splitlines()
    assert len(lines) == 4
    (run / "records.jsonl").write_bytes(b"\n".join([*lines[:2], NOT_UTF8, *lines[2:]]) + b"\n")
    return run


def _one_warning(err: str) -> None:
    """One warning, naming the bad line, and no traceback."""
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == len(set(warned)), err
    assert warned and all("records.jsonl:3: skipped corrupt record (UnicodeDecodeError" in w for w in warned), err
    assert "Traceback" not in err


def attnbench(*argv: str, cwd: Path) -> tuple[int, str, str]:
    """The command in a process of its own, as a user runs it: its exit code, stdout and stderr."""
    command = [sys.executable, "-m", "attnbench", *argv]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)
    return done.returncode, done.stdout, done.stderr


def test_a_line_of_bad_bytes_is_skipped_by_every_reader_and_the_rest_used(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    code, out, err = attnbench("plot", str(run), cwd=tmp_path)
    assert code == 0 and "files written" in out and list(run.glob("*-time.png"))
    _one_warning(err)
    code, out, err = attnbench("report", str(run), cwd=tmp_path)
    assert code == 0 and "naive" in (run / "README.md").read_text()
    _one_warning(err)
    code, out, err = attnbench("compare", str(run), str(small_run), cwd=tmp_path)
    assert code in (0, 1) and "naive" in out and "sdpa" in out, out
    _one_warning(err)
    code, out, err = attnbench("site", str(run), "--out", str(tmp_path / "site"), cwd=tmp_path)
    assert code == 0 and (tmp_path / "site" / "index.html").exists()
    _one_warning(err)
    code, out, err = attnbench("rerun", str(run), "--where", "variant=naive,seq=64", cwd=tmp_path)
    assert code in (0, 1) and "re-measuring 1 points" in out
    _one_warning(err)
    argv = ["bench", "--variants", "naive,sdpa", "--seq", "64,128", *FAST, "--out", str(run), "--no-report"]
    code, out, err = attnbench(*argv, cwd=tmp_path)
    assert code == 0 and "4 of 4 points already recorded" in " ".join(out.split())
    _one_warning(err)
    assert (run / "records.jsonl").read_bytes().splitlines()[2] == NOT_UTF8  # left as it was, never rewritten


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"device": "cpu", "x": "\xff"}', "not valid JSON (UnicodeDecodeError"),
        (b"[1, 2]", "not a JSON object but list"),
        (b"null", "not a JSON object but NoneType"),
    ],
)
def test_a_bad_env_json_is_one_line(small_run, tmp_path, capsys, content, words):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "env.json").write_bytes(content)
    for argv in (["plot", str(run)], ["bench", "--variants", "naive", "--seq", "64", *FAST, "--out", str(run)]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and "env.json: " + words in err, err


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("bad.yaml", b"name: x\nsweeps: [{variants: [naive], seq: [64]}]\ndescription: '\xff'\n", "not valid YAML"),
        ("bad.toml", b'name = "\xff"\n', "not valid TOML"),
        ("list.yaml", b"- 1\n- 2\n", "expected a mapping of fields, got list"),
    ],
)
def test_a_config_of_bad_bytes_or_the_wrong_type_is_one_line(tmp_path, capsys, name, content, words):
    (tmp_path / name).write_bytes(content)
    code, _, err = cli(capsys, "bench", "--config", str(tmp_path / name))
    assert code == 2 and err.count("\n") == 1 and words in err, err
    code, _, err = cli(capsys, "train", "--preset", str(tmp_path / name.replace("toml", "yaml")), "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


def test_task_files_of_bad_bytes_or_endless_lines_are_named(tmp_path, capsys):
    folder = tmp_path / "lra_release" / "listops-1000"
    folder.mkdir(parents=True)
    good = "Source\tTarget\n( ( [MAX 2 ) 9 ] )\t9\n"
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text(good)
    (folder / "basic_train.tsv").write_bytes(b"Source\tTarget\n( [MAX 2 \xff ] )\t2\n")
    argv = ["train", "--task", "listops", "--variant", "sdpa", "--preset", "tiny", "--data-dir", str(tmp_path)]
    code, _, err = cli(capsys, *argv, "--scratch")
    assert code == 2 and "basic_train.tsv:2: not UTF-8 text" in err and err.count("\n") == 1, err
    # A line longer than the csv module's field limit (131072) is data like any other: too long, left out.
    endless = "( [MAX " + "2 " * 100_000 + "] )\t2\n"
    (folder / "basic_train.tsv").write_text(good + endless)
    from attnbench.tasks import listops

    split = listops.read_tsv(folder / "basic_train.tsv", max_len=100)
    assert len(split) == 1 and split.skipped == 1


@pytest.mark.parametrize(
    "plugin, failed, why",
    [
        ("exits", "output", "worker exited with 0 before it finished (sys.exit or os._exit"),
        ("segfaults", "output", "worker killed by SIGSEGV"),
        ("interrupts", "output", "worker exited with 1 before it finished: KeyboardInterrupt"),
        ("hangs", "large-shapes", "no result within 8 s; worker killed"),
    ],
)
def test_check_fails_a_plugin_that_exits_crashes_or_hangs_its_worker(plugins, capsys, plugin, failed, why):
    argv = ["check", "--plugin", str(plugins / f"{plugin}.py"), "--dtype", "float32", "--timeout", "8", "--json"]
    code, out, err = cli(capsys, *argv)
    results = {r["check"]: r for r in json.loads(out)}
    assert code == 1 and results[failed]["status"] == "fail" and why in results[failed]["detail"], out + err
    assert "Traceback" not in err


TRAIN = ["train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny"]


def _checkpoint_of_a_stopped_run(out: Path, monkeypatch) -> Path:
    """Train (TRAIN's run, in this process) until the second checkpoint, then stop as a kill would: the
    first checkpoint stays on disk."""
    from attnbench.suite.training import loop
    from attnbench.suite.training.jobs import TrainJob
    from attnbench.suite.training.runs import train_here

    real = loop.batches

    def stop_at_15(n, batch_size, seed, step):
        if step == 15:
            raise KeyboardInterrupt
        return real(n, batch_size, seed, step)

    monkeypatch.setattr(loop, "batches", stop_at_15)
    with pytest.raises(KeyboardInterrupt):
        train_here(TrainJob("mqar", "sdpa", 0, "tiny", "cpu", str(out.resolve())).to_dict(), "local")
    monkeypatch.setattr(loop, "batches", real)
    (checkpoint,) = (out / "checkpoints").glob("*.pt")
    return checkpoint


def test_a_kill_while_a_checkpoint_is_written_leaves_a_run_that_finishes(tmp_path, capsys, monkeypatch):
    checkpoint = _checkpoint_of_a_stopped_run(tmp_path, monkeypatch)
    # What a kill -9 in the middle of the next save leaves: the checkpoint before it, and half a temporary file.
    (checkpoint.parent / f".{checkpoint.name}.x1y2.tmp").write_bytes(b"PK\x03\x04 half a zip")
    code, out, _ = cli(capsys, *TRAIN, "--out", str(tmp_path))
    assert code == 0 and "test accuracy" in out
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["steps"] == 30 and record["curve"][0]["step"] == 10  # resumed at 10
    assert not list((tmp_path / "checkpoints").iterdir())  # checkpoint and temporary file gone with the run


def test_an_unreadable_checkpoint_is_one_warning_and_training_starts_again(tmp_path, capsys, monkeypatch):
    checkpoint = _checkpoint_of_a_stopped_run(tmp_path, monkeypatch)
    checkpoint.write_bytes(b"")  # what a kill while an older attnbench wrote it in place left
    with pytest.warns(UserWarning, match="unreadable checkpoint .*; training starts again"):
        code, _, _ = cli(capsys, *TRAIN, "--out", str(tmp_path))
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert code == 0 and record["status"] == "ok" and record["steps"] == 30
    reference = tmp_path / "reference"
    assert cli(capsys, *TRAIN, "--out", str(reference))[0] == 0
    (again,) = [json.loads(line) for line in (reference / "records.jsonl").read_text().splitlines()]
    assert record["curve"] == again["curve"]  # started again from step 0: the run an untouched one makes


def test_a_loss_that_is_not_finite_ends_the_run_as_diverged(plugins, tmp_path, capsys):
    argv = ["train", "--task", "mqar", "--variant", "nan-output", "--preset", "tiny"]
    code, out, _ = cli(capsys, *argv, "--plugin", str(plugins / "nan_output.py"), "--out", str(tmp_path))
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert code == 1 and record["status"] == "diverged" and record["reason"] == "loss nan at step 1", out
    assert "diverged: loss nan at step 1" in out
    code, out, _ = cli(capsys, *argv, "--plugin", str(plugins / "nan_output.py"), "--out", str(tmp_path))
    assert "already recorded" in out  # a result, kept: the same seed diverges the same way


def test_sigterm_stops_train_in_one_line_with_no_process_left_and_the_rerun_resumes(tmp_path):
    argv = [*TRAIN, "--set", "train.steps=400", "--set", "train.eval_every=20", "--out", str(tmp_path / "run")]
    command = [sys.executable, "-m", "attnbench", *argv]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.exists() and list(checkpoints.glob("*.pt"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert (out + err).strip().splitlines()[-1].startswith("interrupted: training stopped; rerun the same command")
    assert _group_ends(proc.pid)  # nothing of its process group is left
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert done.returncode == 0 and record["status"] == "ok" and record["curve"][0]["step"] == 20, done.stderr


@pytest.mark.parametrize("delay", [0.4, 1.2, 3.0])
def test_sigterm_at_any_moment_of_a_command_is_one_line_and_exit_130(tmp_path, delay):
    """While torch is still being imported, or while the command runs its worker (`check`, about 5 s here):
    one line, exit 130, and no process of the command left."""
    command = [sys.executable, "-m", "attnbench", "check", "naive", "--dtype", "float32"]
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "start_new_session": True}
    proc = subprocess.Popen(command, cwd=tmp_path, **options)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0 and "passed" in out:
        pytest.skip(f"`check` finished within {delay} s here, before the signal")
    assert proc.returncode == 130 and "Traceback" not in err, err
    lines = (out + err).strip().splitlines()
    assert "interrupted" in lines[-1] and "interrupted" not in "".join(lines[:-1]), out + err
    assert _group_ends(proc.pid)


SLOW_IMPORT = """
import os, signal, time
os.kill(os.getpid(), signal.SIGTERM)
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:  # Python code running inside the import, where the handler looks
    pass
DONE = True
"""
PROBE = """
import sys
from attnbench.suite.cli import signals
signals.IMPORT_GRACE_S = {grace}
signals.install()
try:
    import slow_module
    import time
    time.sleep(5)
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted; slow_module imported:", "slow_module" in sys.modules)
"""


@pytest.mark.parametrize(("seconds", "grace", "said"), [(0.5, 5.0, True), (3.0, 0.3, False)])
def test_a_signal_inside_an_import_waits_for_the_import_unless_it_is_stuck(tmp_path, seconds, grace, said):
    """A KeyboardInterrupt raised inside an import can be swallowed by the library or turned into another
    error: it comes once the import is done; an import that takes longer than the grace is interrupted."""
    (tmp_path / "slow_module.py").write_text(SLOW_IMPORT.format(seconds=seconds))
    (tmp_path / "probe.py").write_text(PROBE.format(grace=grace))
    done = subprocess.run([sys.executable, "probe.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"interrupted; slow_module imported: {said}", done.stdout + done.stderr


def test_a_signal_after_the_exit_code_is_decided_leaves_it_as_it_is(tmp_path):
    """Python restores the default handlers while it shuts down: a SIGTERM then would kill the process
    instead of letting it exit with its code."""
    probe = (
        "import os, signal, sys\n"
        "from attnbench.suite.cli import signals\n"
        "signals.install()\n"
        "signals.settle()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and not done.stderr, done.stderr


def _group_ends(group: int, seconds: float = 10) -> bool:
    """Whether every process of the process group is gone within `seconds` (a fork server exits once its
    command has)."""
    deadline = time.monotonic() + seconds
    while subprocess.run(["pgrep", "-g", str(group)], capture_output=True).stdout:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_an_unknown_baseline_is_refused_before_any_work(tmp_path, capsys):
    argv = ["bench", "--variants", "naive", "--seq", "64", "--baseline", "nosuch", "--out", str(tmp_path / "run")]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "unknown --baseline 'nosuch'" in err and not (tmp_path / "run").exists()


def test_a_suite_worker_that_crashes_is_recorded_as_its_runs_error(plugins, tmp_path, capsys):
    argv = ["suite", "--tasks", "mqar", "--variants", "segfaults,sdpa", "--seeds", "0", "--preset", "tiny"]
    code, out, _ = cli(capsys, *argv, "--plugin", str(plugins / "segfaults.py"), "--out", str(tmp_path))
    records = {r["variant"]: r for r in map(json.loads, (tmp_path / "records.jsonl").read_text().splitlines())}
    assert code == 1 and "1 of 2 runs ended in error" in out
    assert records["segfaults"]["status"] == "error" and "killed by SIGSEGV" in records["segfaults"]["reason"]
    assert records["segfaults"]["command"].startswith("attnbench train --task mqar --variant segfaults")
    assert records["sdpa"]["status"] == "ok"
    assert "segfaults" in (tmp_path / "accuracy.md").read_text()  # the report shows the run that has no result


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB file system (tmpfs), where this machine lets the tests mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip() or 'mount failed'})")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_is_one_line_and_the_records_already_written_stay_whole(small_disk, tmp_path):
    run = small_disk / "run"
    argv = ["bench", "--variants", "naive,sdpa", "--seq", "64,128", *FAST, "--out", str(run)]
    code, _, err = attnbench(*argv, cwd=tmp_path)
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err and "No space left" in err, err
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)  # every point, each line whole


def test_the_next_command_removes_the_temporary_folders_a_killed_one_left(tmp_path, small_run):
    dead = "999999999"  # no such pid: the command that made these was killed
    stale_fork = tmp_path / f"attnbench-fork-{dead}-x1"
    stale_fork.mkdir()
    live_fork = tmp_path / f"attnbench-fork-{os.getpid()}-x2"  # a running command's: kept
    live_fork.mkdir()
    env = os.environ | {"TMPDIR": str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "attnbench", "list", "--json"], env=env, capture_output=True)
    assert listed.returncode == 0 and not stale_fork.exists() and live_fork.exists()
    stale_site = tmp_path / f".site.{dead}-abc"
    stale_site.mkdir()
    code, _, err = attnbench("site", str(small_run), "--out", str(tmp_path / "site"), cwd=tmp_path)
    assert code == 0 and not stale_site.exists() and (tmp_path / "site" / "index.html").exists(), err


@pytest.fixture(scope="module")
def on_cue_run(tmp_path_factory) -> Path:
    """A tiny MQAR model on the on-cue plugin, trained while it behaves."""
    run = tmp_path_factory.mktemp("on-cue") / "run"
    plugins = Path(__file__).parent / "plugins"
    argv = ["train", "--task", "mqar", "--variant", "on-cue", "--preset", "tiny"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--plugin", str(plugins / "on_cue.py"), "--out", str(run)])
    assert info.value.code in (0, None)
    return run


FAULTS = {
    "exit": "exited with 0 before it finished (sys.exit or os._exit",
    "segfault": "killed by SIGSEGV",
    "interrupt": "exited with 1 before it finished: KeyboardInterrupt",
    "hang": "no result within 6 s",
}
# Each command meets each fault in the slow run; the default run has each fault and each command once.
FAST_PAIRS = {("heads", "segfault"), ("heads-mask", "exit"), ("heatmap", "hang"), ("heatmap", "interrupt")}


@pytest.mark.parametrize("fault", FAULTS)
def test_train_records_a_plugin_that_exits_crashes_interrupts_or_hangs(plugins, tmp_path, capsys, monkeypatch, fault):
    why = FAULTS[fault]
    monkeypatch.setenv("ATTNBENCH_TEST_FAULT", fault)
    argv = ["train", "--task", "mqar", "--variant", "on-cue", "--preset", "tiny", "--timeout", "6"]
    code, out, err = cli(capsys, *argv, "--plugin", str(plugins / "on_cue.py"), "--out", str(tmp_path))
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert code == 1 and why in record["reason"] and "Traceback" not in err, out + err
    assert record["status"] == ("timeout" if fault == "hang" else "error")
    assert record["command"].startswith("attnbench train --task mqar --variant on-cue")


@pytest.mark.parametrize(
    "command, fault",
    [
        pytest.param(command, fault, marks=() if (command, fault) in FAST_PAIRS else pytest.mark.slow)
        for command in ("heads", "heads-mask", "heatmap")
        for fault in FAULTS
    ],
)
def test_heads_and_heatmap_fail_in_one_line_for_a_plugin_that_exits_crashes_interrupts_or_hangs(
    plugins, on_cue_run, tmp_path, capsys, monkeypatch, command, fault
):
    why = FAULTS[fault]
    monkeypatch.setenv("ATTNBENCH_TEST_FAULT", fault)
    plugin = ["--plugin", str(plugins / "on_cue.py"), "--timeout", "6"]
    argv = {
        "heads": ["heads", str(on_cue_run), "--prune-seeds", "1", "--examples", "8"],
        "heads-mask": ["heads", str(on_cue_run), "--mask", "1.1"],
        "heatmap": ["heatmap", "--task", "mqar", "--variant", "on-cue", "--run", str(on_cue_run),
                    "--out", str(tmp_path / "map.png")],
    }[command]  # fmt: skip
    code, out, err = cli(capsys, *argv, *plugin)
    assert code == 2 and err.count("\n") == 1 and why in err and "Traceback" not in err, out + err
    assert not (on_cue_run / "heads.jsonl").exists() and not (tmp_path / "map.png").exists()


@pytest.mark.slow
def test_kill_9_at_chosen_moments_of_train_then_the_rerun_finishes_ok(tmp_path):
    """kill -9 of `attnbench train` three times, at moments spread over its checkpoint writes (one every
    two steps here), then the same command again: it resumes or restarts, and its run is `ok`."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "attnbench", *TRAIN, "--set", "train.steps=150", "--set", "train.eval_every=2",
               "--out", str(run)]  # fmt: skip

    def last_write() -> float:
        return max((p.stat().st_mtime for p in (run / "checkpoints").glob("*.pt")), default=0.0)

    for delay in (0.0, 0.05, 0.15):
        before = last_write()
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while last_write() == before and time.monotonic() < deadline:  # this run has written a checkpoint
            time.sleep(0.01)
        time.sleep(delay)
        proc.kill()
        proc.wait()
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    (record,) = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert done.returncode == 0 and record["status"] == "ok" and record["steps"] == 150, done.stderr
    assert not list((run / "checkpoints").iterdir())
