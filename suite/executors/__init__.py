"""Executors: each turns a job (a bench point, a training run) into its result, one at a time, in a fresh process.

`local` forks workers on this machine; `ray` runs each point as a Ray task, `slurm` as a submitit
job (on SLURM, or on submitit's local cluster). All run the same worker code, so their records
have one format and differ only in `executor` and `host`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..core.errors import UserError
from ..runs.sweep import PointExecutor
from ..training.jobs import TrainJob

NAMES = ("local", "ray", "slurm")


class Executor(PointExecutor, Protocol):
    """What the sweep asks of an executor (a point's result, the device's ceilings), and a training run's record.

    `schedules`: the executor places runs itself (Ray, SLURM), so a grid's runs are all submitted at once and
    run as its resources allow; the local executor runs `--parallel` at a time. `stop` ends the runs in flight
    (on an interrupt), unrecorded: a rerun resumes them."""

    schedules: bool

    def train(self, job: TrainJob) -> dict[str, Any]: ...

    def stop(self) -> None: ...


def choose_executor(
    executor: str,
    address: str | None = None,
    cluster: str = "slurm",
    partition: str | None = None,
    account: str | None = None,
    time_min: int | None = None,
    parallel: int = 1,
) -> tuple[str, dict[str, Any]]:
    """The executor's name and its options, checked before any work (one line on a bad name or mix)."""
    name = executor
    if name not in NAMES:
        raise UserError(f"unknown executor {name!r}: choose one of {', '.join(NAMES)}")
    if parallel > 1 and name != "local":
        raise UserError(f"--parallel is for the local executor: {name} schedules its runs itself")
    if cluster not in ("slurm", "local"):
        raise UserError(f"unknown --cluster {cluster!r}: slurm or local")
    slurm = {"cluster": cluster, "partition": partition, "account": account, "time_min": time_min}
    return name, {"ray": {"address": address}, "slurm": slurm}.get(name, {})


def make_executor(choice: tuple[str, dict[str, Any]], run_dir: Path) -> Executor:
    """The executor `choice` names (`choose_executor`'s name and settings: Ray's address, SLURM's
    partition...), for a run into `run_dir`."""
    name, options = choice[0], {k: v for k, v in choice[1].items() if v is not None}
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
