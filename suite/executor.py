"""Executors run points and return their results. The local one: one fresh worker process per point.

The sweep only calls ``executor.run(point) -> result dict``, so a cluster executor (a Ray task or
a submitit SLURM job running ``python -m attnbench.suite.worker``) can replace this one without
the sweep changing. Points run one at a time: two measurements sharing a device would time each
other.

A worker never outlives the command that started it: it is killed with it (the kernel's
parent-death signal), and killed on its timeout. Its result comes back through a pipe, so nothing
is left on disk when either side is killed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any, Protocol

from attnbench.suite.points import Point

PR_SET_PDEATHSIG = 1  # prctl option, from linux/prctl.h


class Executor(Protocol):
    """Anything that turns a point into its result, and measures the device's matmul peak."""

    name: str

    def run(self, point: Point) -> dict[str, Any]: ...

    def calibrate(self, device: str, dtype: str, threads: int | None) -> float | None: ...


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the parent dies (Linux), so a killed sweep leaves no worker."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _read_all(fd: int, chunks: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)


def spawn_worker(args: list[str], timeout_s: float) -> tuple[int | None, dict[str, Any] | None, str]:
    """Run `python -m attnbench.suite.worker ARGS FD`; (exit code or None on timeout, last result, stderr)."""
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(read_fd, chunks), daemon=True)
    reader.start()
    with tempfile.TemporaryFile(mode="w+") as err:  # unlinked at once: nothing to clean up
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "attnbench.suite.worker", *args, str(write_fd)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(write_fd,),
                start_new_session=True,  # its own process group, so a timeout kills its children too
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            os.close(write_fd)
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if code is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
        err.seek(0)
        stderr = err.read()
    lines = [line for line in b"".join(chunks).decode(errors="replace").splitlines() if line.strip()]
    result = None
    for line in reversed(lines):  # the last whole line: a worker killed mid-write leaves a partial one
        try:
            result = json.loads(line)
            break
        except ValueError:
            continue
    return code, result, stderr


class LocalExecutor:
    """Runs each point in a fresh `python -m attnbench.suite.worker` process, with a timeout."""

    name = "local"

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

    def calibrate(self, device: str, dtype: str, threads: int | None) -> float | None:
        """Measured matmul TFLOP/s for device/dtype, or None if the calibration failed."""
        code, result, _ = spawn_worker(["--calibrate", device, dtype, str(threads or "none")], 120)
        return result["tflops"] if code == 0 and result else None
