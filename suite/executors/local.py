"""The `local` executor: one fresh worker process per point, on this machine, one at a time.

Points run one at a time: two measurements sharing a device would time each other.

Each worker is forked from a fork server (multiprocessing's ``forkserver``) that imported torch
and the worker once and never initialised CUDA: a point gets a fresh process, so its peak memory
and any crash stay its own, without paying Python's and torch's start-up (~2 s on 2 CPU cores)
every time. The worker takes the caller's environment as it is at the call, not the server's.

A worker never outlives the command that started it: the fork server exits when that command dies
and the worker is killed with the fork server (the kernel's parent-death signal); it is killed with
its process group on its timeout. Its result and stderr come back through pipes, so nothing is left
on disk when either side is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.util
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from multiprocessing.connection import Connection
from typing import Any

from ..core.errors import UserError
from ..core.leftovers import FORK_DIR_PREFIX, remove_stale_fork_dirs, tagged
from ..measure.point import Point
from ..training.jobs import TrainJob

PR_SET_PDEATHSIG = 1  # prctl option, from linux/prctl.h
# Workers running now (their pids), so runs trained in parallel can be stopped together.
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


WARNING = "attnbench: warning: "


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"{WARNING}{message}\n"


def _pass_warnings_on(stderr: str) -> None:
    """Warn here what a worker warned (its stderr is a pipe the user does not see)."""
    for line in stderr.splitlines():
        if line.startswith(WARNING):
            warnings.warn(line.removeprefix(WARNING), stacklevel=2)


def _die_with_parent() -> None:
    """In a worker: SIGKILL it when its parent dies (Linux), so a killed sweep leaves no worker."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _read_all(fd: int, chunks: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)


def _serve(args: list[str], results: Connection, errors: Connection, environ: dict[str, str]) -> None:
    """A worker forked from the server: the caller's environment, stderr down a pipe, then the worker's main."""
    os.setsid()  # its own process group, so a timeout kills its children too
    # multiprocessing hands each child the fork server's keep-alive pipe: held here, it would keep the
    # server (and so this worker) alive after the command that started them is killed.
    alive = getattr(multiprocessing.forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
    _die_with_parent()  # its parent is the fork server, which exits when the command that started it dies
    os.environ.clear()
    os.environ.update(environ)  # the server's environment is the one it started with, not the caller's now
    os.dup2(errors.fileno(), 2)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    warnings.formatwarning = _one_line_warning  # so the command can pass a training run's warnings on
    from .entry import main  # preloaded by the fork server; the command that starts workers needs none of it

    code = main([*args, str(results.fileno())])
    sys.stderr.flush()
    os._exit(code)  # no multiprocessing exit handlers: they would flush the server's inherited state


def _fork_server_dir() -> None:
    """Name the folder of the fork server's socket for this command, and remove those of commands killed before.

    multiprocessing makes it on first use and removes it at exit, so a `kill -9` leaves it behind;
    it is named for its command's pid so a later command can tell a dead one's and remove it.
    """
    config = multiprocessing.current_process()._config  # where multiprocessing.util.get_temp_dir() looks
    if config.get("tempdir") is not None:
        return
    remove_stale_fork_dirs()
    folder = tempfile.mkdtemp(prefix=tagged(FORK_DIR_PREFIX))
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=-100)
    config["tempdir"] = folder


def _context() -> multiprocessing.context.ForkServerContext:
    """The fork server: started once per command, it has imported torch and the worker (never CUDA)."""
    _fork_server_dir()
    context = multiprocessing.get_context("forkserver")
    # torch._dynamo: imported lazily by the SDPA-backend trace and by flex, ~4 s on 2 cores, once here.
    context.set_forkserver_preload(
        [
            "torch._dynamo",
            "attnbench.suite.executors.entry",
            "attnbench.suite.executors.local",
        ]
    )
    return context


def ended_without_result(who: str, code: int | None, timeout_s: float | None, stderr: str) -> str:
    """Why a worker that ran a variant's code sent no result, in one line: a hang past `timeout_s` (exit
    code None), a crash (a signal), or an exit (SystemExit or os._exit in the variant's code)."""
    if code is None:
        return f"no result within {timeout_s:g} s; {who} killed (a hang in the variant?)"
    if code < 0:
        return f"{who} killed by {signal.Signals(-code).name} (a crash in the variant's code?)"
    last = _last_line(stderr)
    return f"{who} exited with {code} before it finished" + (
        f": {last}" if last else " (sys.exit or os._exit in the variant's code?)"
    )


def call_isolated(target: str, job: dict[str, Any], timeout_s: float | None, what: str) -> Any:
    """`target` ("module:function", called with `job`) run in a fresh worker, as untrusted code is: its
    return value, or UserError naming `what` and why there is none (it raised, crashed, hung past
    `timeout_s`, or exited)."""
    code, result, stderr = spawn_worker(["--call", target, json.dumps(job)], timeout_s)
    if result is not None and "error" in result:
        raise UserError(f"{what}: {result['error']}")
    if result is None or code != 0:
        raise UserError(f"{what}: {ended_without_result('worker', code, timeout_s, stderr)}")
    return result["value"]


def spawn_worker(args: list[str], timeout_s: float | None) -> tuple[int | None, dict[str, Any] | None, str]:
    """Run the worker's main(ARGS + [FD]) in a process forked from the fork server.

    Returns (exit code, negative for a signal, or None on timeout; the last whole result line; stderr).
    """
    code, results, stderr = spawn_worker_lines(args, timeout_s)
    return code, (results[-1] if results else None), stderr


def spawn_worker_lines(args: list[str], timeout_s: float | None) -> tuple[int | None, list[dict[str, Any]], str]:
    """`spawn_worker`, returning every whole JSON line the worker sent (a worker killed mid-write leaves a
    partial last one, which is left out)."""
    with _LIVE_LOCK:  # the fork server is started once, by whichever caller comes first
        context = _context()
    result_read, result_write = context.Pipe(duplex=False)
    err_read, err_write = context.Pipe(duplex=False)
    chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=_read_all, args=(os.dup(conn.fileno()), out), daemon=True)
        for conn, out in ((result_read, chunks), (err_read, err_chunks))
    ]
    result_read.close()
    err_read.close()
    for reader in readers:
        reader.start()
    proc = context.Process(target=_serve, args=(args, result_write, err_write, dict(os.environ)), daemon=False)
    try:
        with _LIVE_LOCK:
            proc.start()
            _LIVE.add(proc.pid)
    finally:
        result_write.close()
        err_write.close()
    try:
        proc.join(timeout_s)
        code = proc.exitcode
    except BaseException:
        _kill_group(proc.pid)
        proc.join()
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc.pid)
    if code is None:
        _kill_group(proc.pid)
        proc.join()
    for reader in readers:
        reader.join(timeout=10)
    proc.close()
    results = []
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            results.append(json.loads(line))
    return code, results, b"".join(err_chunks).decode(errors="replace")


def _kill_group(pid: int | None) -> None:
    """SIGKILL the worker and whatever it started (its process group), if still there."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    # A worker only just forked may not have made its group yet (os.setsid in _serve): kill it by pid too.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class LocalExecutor:
    """Runs each point in a fresh worker process forked from the fork server, with a timeout."""

    name = "local"
    schedules = False

    stopping = False  # set by stop(): a run killed then was interrupted, not lost

    def stop(self) -> None:
        """Kill every worker running now (training runs in parallel, on an interrupt)."""
        self.stopping = True
        with _LIVE_LOCK:
            for pid in _LIVE:
                _kill_group(pid)

    def run(self, point: Point) -> dict[str, Any]:
        code, result, stderr = spawn_worker([json.dumps(point.to_dict())], point.timeout_s)
        if result is not None:
            if code != 0:  # the measurement was sent, then the worker died (in the float64 reference)
                result["error_note"] = f"worker died after measuring (exit {code})"
            return result
        if code is None:
            return {"status": "timeout", "reason": f"no result within {point.timeout_s:g} s; worker killed"}
        if code == -signal.SIGKILL:
            return {
                "status": "oom",
                "reason": "worker killed by SIGKILL (the kernel's out-of-memory killer?)",
            }
        return {
            "status": "error",
            "reason": f"worker exited with {code}: {_last_line(stderr) or 'no message'}",
        }

    def train(self, job: TrainJob) -> dict[str, Any]:
        """Make one training run in a fresh worker (killed after `job.timeout_s`, if set); its record, or why
        there is none.

        The worker appends the record to the job's folder under the lock its driver holds; a refused
        run (bad input) comes back as an `error` with its one line and records nothing.
        """
        code, result, stderr = spawn_worker(["--train", json.dumps(job.to_dict())], job.timeout_s)
        _pass_warnings_on(stderr)  # an unreadable checkpoint, a skipped record line
        if result is not None:
            return result
        if self.stopping:  # killed by stop(): the rerun resumes it, so nothing is recorded
            return {"status": "error", "reason": "stopped", "refused": True}
        if code is None:
            return {"status": "timeout", "reason": ended_without_result("training worker", code, job.timeout_s, "")}
        if code == -signal.SIGKILL:
            return {"status": "oom", "reason": "training worker killed by SIGKILL (the out-of-memory killer?)"}
        return {"status": "error", "reason": ended_without_result("training worker", code, None, stderr)}

    def check(self, job: dict[str, Any], timeout_s: float) -> list[dict[str, Any]]:
        """The conformance checks of one variant in one dtype (checks/runner.py's job) in a fresh worker: each
        check's result, then, where the worker did not finish them, the check it was running failed with why
        (a crash, a hang past `timeout_s`, an exit from the variant's code; `worker` before any check)."""
        code, lines, stderr = spawn_worker_lines(["--check", json.dumps(job)], timeout_s)
        results = [line for line in lines if "check" in line]
        if any(line.get("done") for line in lines):
            return results
        running = [line["running"] for line in lines if "running" in line]
        why = ended_without_result("worker", code, timeout_s, stderr)
        return [*results, {"check": running[-1] if running else "worker", "status": "fail", "detail": why}]

    def calibrate(self, device: str, what: str, threads: int | None) -> float | None:
        """A measured ceiling of the device (measure/ceilings.py), or None if the calibration failed."""
        code, result, _ = spawn_worker(["--calibrate", device, what, str(threads or "none")], 120)
        return result["value"] if code == 0 and result else None
