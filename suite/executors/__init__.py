"""Executors: each turns a job (a bench point, a training run) into its result, one at a time, in a fresh process.

`local` forks workers on this machine; `ray` runs each point as a Ray task, `slurm` as a submitit
job (on SLURM, or on submitit's local cluster). All run the same worker code, so their records
have one format and differ only in `executor` and `host`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..core.errors import UserError
from ..runs.points import Point
from ..training.train import TrainJob

NAMES = ("local", "ray", "slurm")


class Executor(Protocol):
    """Anything that turns a point into its result, and measures the device's ceilings."""

    name: str

    def run(self, point: Point) -> dict[str, Any]: ...

    def train(self, job: TrainJob) -> dict[str, Any]: ...

    def calibrate(self, device: str, what: str, threads: int | None) -> float | None:
        """A ceiling of the device measured in a fresh process: the matmul TFLOP/s of dtype `what`, or
        the memory bandwidth in GB/s for `what` = "bandwidth"; None if it failed."""


def make_executor(name: str, run_dir: Path, options: dict[str, Any] | None = None) -> Executor:
    """The executor called `name`; `options` are its settings (Ray's address, SLURM's partition...)."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from .ray import RayExecutor

        return RayExecutor(**options)
    if name == "slurm":
        from .slurm import SlurmExecutor

        return SlurmExecutor(run_dir / ".submitit", **options)
    raise UserError(f"unknown executor {name!r}: choose one of {', '.join(NAMES)}")


def require(module: str, extra: str) -> Any:
    """Import an optional package an executor needs, or stop with one line naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"the {extra} executor needs {module} ({err}): pip install 'attnbench[{extra}]'") from None
