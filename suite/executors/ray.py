"""The `ray` executor: each point a Ray task in a fresh worker process, on a local Ray or a cluster.

Bench points are submitted one at a time (timing is serial; a cluster runs many sweeps, not many points of
one). Training runs are submitted all at once and Ray places them: a grid spreads over the cluster. A task
asks for one GPU on CUDA, and on CPU for every core of the smallest node, so no other task shares the cores it
is timed on; a training run whose setup sets `train.threads` asks for that many cores. `max_calls=1` gives
each task a fresh worker process, as the local executor does, so peak memory and a crash stay the point's own:
a task whose worker dies (a segfault, `os.abort()`) is recorded `error`, and the sweep goes on.
"""

from __future__ import annotations

import threading
from typing import Any

from ..core.errors import one_line
from ..measure.ceilings import calibrate_here
from ..measure.point import Point
from ..measure.worker import measure_here
from ..training.jobs import TrainJob, job_threads
from ..training.runs import train_here
from . import require


class RayExecutor:
    """Runs each point as a Ray task; `address` None starts (or joins) a local Ray."""

    name = "ray"
    schedules = True

    def __init__(self, address: str | None = None) -> None:
        self._ray = require("ray", "ray")
        if not self._ray.is_initialized():
            self._ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self._measure = self._ray.remote(max_calls=1, max_retries=0)(measure_here)
        self._calibrate = self._ray.remote(max_calls=1, max_retries=0)(calibrate_here)
        self._train = self._ray.remote(max_calls=1, max_retries=0)(train_here)
        self._in_flight: set[Any] = set()  # training tasks submitted and not yet returned (stop() cancels them)
        self._lock = threading.Lock()
        self.stopping = False

    def _resources(self, device: str) -> dict[str, Any]:
        if device == "cuda":
            return {"num_gpus": 1, "num_cpus": 1}
        cores = [node["Resources"].get("CPU", 1) for node in self._ray.nodes() if node.get("Alive")]
        return {"num_cpus": min(cores, default=1)}

    def run(self, point: Point) -> dict[str, Any]:
        ref = self._measure.options(**self._resources(point.device)).remote(point.to_dict())
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(ref, timeout=point.timeout_s)
        except exceptions.GetTimeoutError:
            self._ray.cancel(ref, force=True)
            return {"status": "timeout", "reason": f"no result within {point.timeout_s:g} s; Ray task cancelled"}
        except exceptions.OutOfMemoryError as err:
            return {"status": "oom", "reason": one_line(err, 300)}
        except exceptions.RayError as err:
            return {"status": "error", "reason": f"Ray task failed: {one_line(err, 300)}"}

    def train_resources(self, job: TrainJob) -> dict[str, Any]:
        """What a training run's task asks Ray for: the point's resources, or on CPU the run's own threads."""
        threads = job_threads(job) if job.device != "cuda" else None
        return {"num_cpus": threads} if threads is not None else self._resources(job.device)

    def train(self, job: TrainJob) -> dict[str, Any]:
        """Make one training run in a Ray task; it appends its record to the shared run folder. Called from
        several threads at once: each waits on its own task."""
        ref = self._train.options(**self.train_resources(job)).remote(job.to_dict(), self.name)
        with self._lock:
            self._in_flight.add(ref)
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as err:
            if self.stopping:  # cancelled by stop(): the rerun resumes it, so nothing is recorded
                return {"status": "error", "reason": "stopped", "refused": True}
            return {"status": "error", "reason": f"Ray task failed: {one_line(err, 300)}"}
        finally:
            with self._lock:
                self._in_flight.discard(ref)

    def stop(self) -> None:
        """Cancel every training task in flight (on an interrupt)."""
        self.stopping = True
        with self._lock:
            for ref in self._in_flight:
                self._ray.cancel(ref, force=True)

    def calibrate(self, device: str, what: str, threads: int | None) -> float | None:
        """A measured ceiling (measure/ceilings.py) on a worker, or None if it failed."""
        ref = self._calibrate.options(**self._resources(device)).remote(device, what, threads)
        try:
            return self._ray.get(ref, timeout=300)
        except self._ray.exceptions.RayError:
            return None
