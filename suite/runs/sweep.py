"""The bench sweep: hand every point to an executor, append each record as it ends, resume on rerun.

A run folder is append-only. Rerunning the same command skips every point that already has a
record (whatever its status), so a sweep stopped by Ctrl-C, a crash or a reboot continues where it
stopped. The run's ceilings, the matmul peak of each dtype and the memory bandwidth, are measured once
per run and kept in env.json; every record is placed against them (measure/roofline.py).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from ..core import env as environment
from ..core.config import BenchConfig
from ..core.errors import UserError
from ..core.progress import progress_bar
from ..core.registry import Registry
from ..measure.ceilings import BANDWIDTH
from ..measure.point import Point
from ..measure.roofline import roofline_record
from .plan import Budget, device_from_env, informative_order, plan_points
from .points import expand
from .records import FINAL, append_record, read_checked_env, read_env, read_records, repair_tail, write_env


class PointExecutor(Protocol):
    """What the sweep asks of an executor (executors/): a point's result, and the device's ceilings."""

    name: str

    def run(self, point: Point) -> dict[str, Any]: ...

    def calibrate(self, device: str, what: str, threads: int | None) -> float | None:
        """A ceiling of the device measured in a fresh process: the matmul TFLOP/s of dtype `what`, or
        the memory bandwidth in GB/s for `what` = "bandwidth"; None if it failed."""


def prepare_env(
    run_dir: Path, env: dict, points: list[Point], executor: PointExecutor, device: str, threads: int | None
) -> dict:
    """Create or extend env.json (`env`, as read): environment, command, the matmul peak per dtype and the
    memory bandwidth."""
    now = environment.capture(device, threads)
    if not env:
        env = now | {"matmul_tflops": {}}
    else:
        env.setdefault("resumed", []).append({"date": now["date"], "command": now["command"], "commit": now["commit"]})
    env.setdefault("matmul_tflops", {})  # a folder a training run made has none yet
    for dtype in sorted({p.dtype for p in points}):
        if env["matmul_tflops"].get(dtype) is None:
            env["matmul_tflops"][dtype] = executor.calibrate(device, dtype, threads)
    if env.get("bandwidth_gbs") is None:
        env["bandwidth_gbs"] = executor.calibrate(device, BANDWIDTH, threads)
    write_env(run_dir, env)
    return env


def make_record(point: Point, result: dict[str, Any], run_dir: Path, env: dict, stamp: dict) -> dict[str, Any]:
    """The JSON line for one point: the point, its result, its reproduction command, and `stamp`
    (the code, variant source, executor and host that made it)."""
    record = {
        "kind": "bench",
        "run_id": run_dir.name,
        **point.to_dict(),
        **stamp,
        **result,  # after the stamp: the host that measured the point, where the worker names it
        "key": point.key(),
        "command": point.command(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return record | roofline_record(record, env.get("matmul_tflops", {}).get(point.dtype), env.get("bandwidth_gbs"))


def _describe(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"[yellow]{record['status']}[/]: {record.get('reason', '')}"
    text = f"{record['time_ms']:.3f} ms, {record['peak_bytes'] / 2**20:.1f} MiB"
    return text + (f", {record['tflops']:.3f} TFLOP/s" if record.get("tflops") else "")


def _stamps(points: list[Point], registry: Registry, executor: PointExecutor) -> dict[str, dict[str, Any]]:
    """Per variant: the provenance its records carry."""
    common = environment.provenance() | {"executor": executor.name}
    stamps = {}
    for name in {p.variant for p in points}:
        try:
            source = registry.entry(name).source()
        except UserError:  # it cannot load: its points are recorded unavailable, with no source to name
            source = None
        stamps[name] = common | {"source": source}
    return stamps


def run_sweep(
    points: list[Point],
    run_dir: Path,
    executor: PointExecutor,
    console: Console,
    device: str,
    threads: int | None,
    registry: Registry,
    budget_s: float | None = None,
) -> list[dict[str, Any]]:
    """Measure every point not yet recorded in `run_dir`; returns all of the run's records.

    With `budget_s`, the points run most informative first (plan.informative_order) and a point whose
    estimated time no longer fits what is left is skipped; env.json's `budget` lists the skipped points
    (a rerun measures them)."""
    started = time.perf_counter()  # a budget counts the whole sweep, calibration included
    # A folder holds one machine's numbers: never resume (or skip points) from another's.
    recorded = read_checked_env(run_dir, device, executor.name)
    repair_tail(run_dir)
    done = {r.get("key") for r in read_records(run_dir) if r.get("status") in FINAL}
    todo = [p for p in points if p.key() not in done]
    if len(todo) < len(points):
        console.print(f"resuming {run_dir}: {len(points) - len(todo)} of {len(points)} points already recorded")
    if todo:
        env = prepare_env(run_dir, recorded, points, executor, device, threads)
        stamps = _stamps(todo, registry, executor)
        budget, skipped = None, []
        if budget_s is not None:
            planned = plan_points(todo, registry, device_from_env(env), probe=False)
            budget = Budget({pp.point.key(): pp.seconds for pp in planned}, budget_s, started)
            todo = informative_order(todo)
        with progress_bar(console) as progress:
            task = progress.add_task("bench", total=len(todo))
            for point in todo:
                if budget is not None and not budget.fits(point):
                    skipped.append(point)
                    progress.advance(task)
                    continue
                progress.update(task, description=point.label())
                began = time.perf_counter()
                result = executor.run(point) | {"wall_s": time.perf_counter() - began}
                if budget is not None:
                    budget.record(point, result["wall_s"])
                record = append_record(run_dir, make_record(point, result, run_dir, env, stamps[point.variant]))
                progress.console.print(f"{point.label():<60} {_describe(record)}", highlight=False)
                progress.advance(task)
        if budget_s is not None:
            env["budget"] = {"minutes": budget_s / 60, "skipped": [p.label() for p in skipped]}
            write_env(run_dir, env)
            if skipped:
                console.print(
                    f"budget of {budget_s / 60:g} min: {len(skipped)} points skipped (listed in env.json's "
                    "budget; rerun the command to measure them)"
                )
    records = read_records(run_dir)
    _settle_budget(run_dir, points, records)
    return records


def run_bench(
    cfg: BenchConfig,
    registry: Registry,
    device: str,
    plugins: tuple[str, ...],
    run_dir: Path,
    executor: PointExecutor,
    console: Console,
    budget_s: float | None = None,
) -> list[dict[str, Any]]:
    """The sweep of `cfg` on `device` into `run_dir` (whose lock the caller holds); env.json names the
    config and the baseline of its summary. Returns all of the run's records."""
    points = expand(cfg, device, plugins)
    console.print(f"{len(points)} points -> {run_dir}")
    records = run_sweep(points, run_dir, executor, console, device, cfg.threads, registry, budget_s)
    if records:
        write_env(run_dir, read_env(run_dir) | {"baseline": cfg.baseline, "config": cfg.name})
    return records


def _settle_budget(run_dir: Path, points: list[Point], records: list[dict[str, Any]]) -> None:
    """Drop from env.json's list of points a budget skipped those this command has now measured."""
    env = read_env(run_dir)
    skipped = (env.get("budget") or {}).get("skipped")
    if not skipped:
        return
    measured = {r.get("key") for r in records}
    keys = {p.label(): p.key() for p in points}  # labels of other commands' points keep no key: they stay
    left = [label for label in skipped if keys.get(label) not in measured]
    if left != skipped:
        env["budget"]["skipped"] = left
        write_env(run_dir, env)
