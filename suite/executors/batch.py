"""Training runs handed to an executor: one after another or `parallel` at a time (the local executor), or all
at once to an executor that schedules them itself (Ray, SLURM)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console

from ..runs.records import read_checked_env, run_lock
from ..training.jobs import TrainJob
from ..training.runs import outcome, record_lost_run
from . import Executor, make_executor


def train_all(
    jobs: list[TrainJob],
    out: Path,
    device: str,
    choice: tuple[str, dict[str, Any]],
    parallel: int,
    console: Console,
    report: Callable[[], None],
) -> int:
    """Train `jobs` into run folder `out` on the chosen executor (`choose_executor`'s), `parallel` at a time,
    under the folder's lock, then `report` (its tables) under it too; returns how many runs failed."""
    read_checked_env(out, device, choice[0])  # up front: each run would refuse the folder alike
    with run_lock(out):  # the runs write into the folder under this lock
        executor = make_executor(choice, out)
        # A cluster takes the whole grid at once and runs what its resources hold; threads here only wait.
        failed = train_each(jobs, executor, console, max(1, len(jobs)) if executor.schedules else parallel)
        report()
    return failed


def train_each(jobs: list[TrainJob], executor: Executor, console: Console, parallel: int = 1) -> int:
    """Each job on `executor`, `parallel` at a time; a failed run is reported and the rest go on. Returns
    how many failed (a variant that cannot run here is recorded `unavailable`, not failed). On an
    interrupt every run in flight is stopped, unrecorded, and KeyboardInterrupt is raised."""

    def start(i: int, job: TrainJob) -> dict[str, Any]:
        console.print(f"[{i}/{len(jobs)}] {describe(job)}", highlight=False)
        return train_recorded(job, executor)

    def report(i: int, record: dict[str, Any]) -> int:
        prefix = "" if parallel == 1 else f"[{i}/{len(jobs)}] "
        console.print(f"  {prefix}{outcome(record)}", markup=False, highlight=False)
        return record.get("status") not in ("ok", "unavailable", "diverged")

    if parallel == 1:  # in this thread: an interrupt reaches the executor's wait and ends its run
        return sum(report(i, start(i, job)) for i, job in enumerate(jobs, start=1))
    return _in_parallel(jobs, start, report, parallel, executor)


def describe(job: TrainJob) -> str:
    """'mqar / sdpa / N=256 / seed 1 / lr 0.003': the run, with its setting and learning rate where it has them."""
    lr = job.settings.get("train", {}).get("lr")
    parts = [job.task, job.variant, job.label, f"seed {job.seed}", f"lr {lr:g}" if lr is not None else ""]
    return " / ".join(part for part in parts if part)


def train_recorded(job: TrainJob, executor: Executor) -> dict[str, Any]:
    """`job` trained on `executor`: its record, which a worker that died before it could record the run (a
    crash, the out-of-memory killer, a timeout) gets recorded here; a refusal comes back `refused`."""
    record = executor.train(job)
    if "key" not in record and not record.get("refused"):
        record = record_lost_run(job, record.get("status", "error"), record.get("reason", ""), executor.name)
    return record


def _in_parallel(jobs: list[TrainJob], start: Callable, report: Callable, parallel: int, executor: Executor) -> int:
    """Threads only wait: each run trains in a worker process of its own, which appends its own record."""
    failed = 0
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {pool.submit(start, i, job): i for i, job in enumerate(jobs, start=1)}
        pending = set(futures)
        try:
            while pending:
                # A timeout, so this thread wakes to take a signal the kernel gave another thread.
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    failed += report(futures[future], future.result())
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            executor.stop()  # the runs in flight end now, unrecorded
            raise
    return failed
