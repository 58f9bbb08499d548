"""Executors run points and return their results. The local one: one fresh worker process per point.

The sweep only calls ``executor.run(point) -> result dict``, so a cluster executor (a Ray task or
a submitit SLURM job running ``python -m attnbench.suite.worker``) can replace this one without
the sweep changing. Points run one at a time: two measurements sharing a device would time each
other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

from attnbench.suite.points import Point


class Executor(Protocol):
    """Anything that turns a point into its result."""

    def run(self, point: Point) -> dict[str, Any]: ...


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


class LocalExecutor:
    """Runs each point in a fresh `python -m attnbench.suite.worker` process, with a timeout."""

    def _spawn(self, args: list[str], timeout_s: float) -> tuple[int | None, str]:
        """Run a worker; (return code or None on timeout, stderr)."""
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "attnbench.suite.worker", *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # its own process group, so a timeout kills its children too
            )
            try:
                code: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            except KeyboardInterrupt:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            if code is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            err.seek(0)
            return code, err.read()

    def run(self, point: Point) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="attnbench-") as tmp:
            path = Path(tmp) / "result.json"
            code, stderr = self._spawn([json.dumps(point.to_dict()), str(path)], point.timeout_s)
            result = json.loads(path.read_text()) if path.exists() else None
        if result is not None:
            if code != 0:  # the measurement was written, then the worker died (in the float64 reference)
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
        with tempfile.TemporaryDirectory(prefix="attnbench-") as tmp:
            path = Path(tmp) / "peak.json"
            code, _ = self._spawn(["--calibrate", device, dtype, str(threads or "none"), str(path)], 120)
            return json.loads(path.read_text())["tflops"] if code == 0 and path.exists() else None
