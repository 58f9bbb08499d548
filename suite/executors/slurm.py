"""The `slurm` executor: each point a submitit job, on SLURM or on submitit's local cluster.

Every job is a fresh `python -m submitit.core._submit` process that measures one point with the worker's code
and returns its result, so records are the same as the local executor's. Bench points run one at a time; a
grid's training runs are submitted all at once, for SLURM to place. The job folder (pickles and logs, needed
on a shared filesystem by SLURM) is the run's `.submitit/`; a job's log there says why it failed.
`cluster="local"` runs the same path without SLURM (tests, laptops).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from ..core.errors import UserError, one_line
from ..measure.ceilings import calibrate_here
from ..measure.point import Point
from ..measure.worker import measure_here
from ..training.jobs import TrainJob
from ..training.runs import train_here
from . import require


class SlurmExecutor:
    """Submits each point as a submitit job (array jobs of one: timing is serial)."""

    name = "slurm"
    schedules = True

    def __init__(
        self,
        folder: Path,
        cluster: str = "slurm",
        partition: str | None = None,
        account: str | None = None,
        time_min: int | None = None,
    ) -> None:
        self._submitit = require("submitit", "slurm")
        if cluster not in ("slurm", "local"):
            raise ValueError(f"unknown cluster {cluster!r}: slurm or local")
        try:
            self._executor = self._submitit.AutoExecutor(folder=folder, cluster=cluster)
        except RuntimeError as err:  # submitit's "Could not detect srun"
            raise UserError(f"no SLURM here ({err}): use --cluster local, or run where srun is") from None
        self._slurm = {"slurm_partition": partition, "slurm_account": account}
        self._time_min = time_min
        self._in_flight: set[Any] = set()  # training jobs submitted and not yet returned (stop() cancels them)
        # Submitting sets the executor's parameters, then submits: one thread at a time.
        self._lock = threading.Lock()
        self.stopping = False

    def _submit(self, fn: Any, *args: Any, device: str, timeout_s: float) -> Any:
        minutes = self._time_min or max(1, math.ceil(timeout_s / 60))
        extra = {k: v for k, v in self._slurm.items() if v is not None}
        with self._lock:
            self._executor.update_parameters(
                timeout_min=minutes, gpus_per_node=1 if device == "cuda" else 0, nodes=1, tasks_per_node=1, **extra
            )
            return self._executor.submit(fn, *args)

    def run(self, point: Point) -> dict[str, Any]:
        job = self._submit(measure_here, point.to_dict(), device=point.device, timeout_s=point.timeout_s)
        try:
            return job.result()
        except self._submitit.core.utils.UncompletedJobError as err:
            return {
                "status": "timeout" if "TIMEOUT" in str(err) else "error",
                "reason": f"job {job.job_id} did not finish: {one_line(err, 300, last=True)}",
            }
        except Exception as err:  # FailedJobError and whatever the job raised, with its log's last line
            return {"status": "error", "reason": f"job {job.job_id} failed: {one_line(err, 300, last=True)}"}

    def train(self, job: TrainJob) -> dict[str, Any]:
        """Make one training run as a job; it appends its record to the shared run folder."""
        submitted = self._submit(train_here, job.to_dict(), self.name, device=job.device, timeout_s=24 * 3600)
        with self._lock:
            self._in_flight.add(submitted)
        try:
            return submitted.result()
        except Exception as err:
            if self.stopping:  # cancelled by stop(): the rerun resumes it, so nothing is recorded
                return {"status": "error", "reason": "stopped", "refused": True}
            return {"status": "error", "reason": f"job {submitted.job_id} failed: {one_line(err, 300, last=True)}"}
        finally:
            with self._lock:
                self._in_flight.discard(submitted)

    def stop(self) -> None:
        """Cancel every training job in flight (on an interrupt)."""
        self.stopping = True
        with self._lock:
            for job in self._in_flight:
                job.cancel(check=False)

    def calibrate(self, device: str, what: str, threads: int | None) -> float | None:
        """A measured ceiling (measure/ceilings.py) in a job, or None if it failed."""
        job = self._submit(calibrate_here, device, what, threads, device=device, timeout_s=300)
        try:
            return job.result()
        except Exception:
            return None
