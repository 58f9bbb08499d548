"""`attnbench rerun RUN`: re-measure recorded points into a fresh folder and judge them against the run.

The points are rebuilt from their records (every field that says what and how to measure), so a
rerun measures what the run measured, with the code checked out now. The new records go to a
scratch folder; the run itself is only read. Each point is then judged by `compare` against its
own recorded repeats: a difference beyond the run's spread means the number did not reproduce.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from ..core.devices import resolve_device
from ..core.env import device_name
from ..core.errors import UserError
from ..core.registry import load_registry
from ..measure.point import RAGGED_DEFAULTS, WHERE_FIELDS, Point
from .records import read_env, read_records, require_run, run_lock
from .sweep import PointExecutor, run_sweep


def parse_where(text: str | None) -> dict[str, str]:
    """'variant=chunked,seq=4096' -> {'variant': 'chunked', 'seq': '4096'} (fields of a point's identity)."""
    conditions: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        field, sep, value = part.partition("=")
        field = field.strip()
        if not sep or field not in WHERE_FIELDS:
            raise UserError(
                f"--where {part.strip()!r}: expected FIELD=VALUE with FIELD one of {', '.join(WHERE_FIELDS)}"
            )
        conditions[field] = value.strip()
    return conditions


def _matches(record: dict[str, Any], conditions: dict[str, str]) -> bool:
    def same(value: Any, wanted: str) -> bool:
        return str(value).lower() == wanted.lower()

    return all(same(record.get(field, RAGGED_DEFAULTS.get(field)), wanted) for field, wanted in conditions.items())


def point_of(record: dict[str, Any]) -> Point:
    """The point a bench record measured (the how-to fields it lacks take the defaults)."""
    fields = {name: record[name] for name in Point.model_fields if record.get(name) is not None}
    return Point.from_dict(fields)


def select(records: list[dict[str, Any]], conditions: dict[str, str]) -> list[Point]:
    """The measured (ok) bench points of a run that match every condition, each once."""
    chosen = [r for r in records if r.get("kind") == "bench" and r["status"] == "ok" and _matches(r, conditions)]
    points = {point_of(r).key(): point_of(r) for r in chosen}
    return list(points.values())


def rerun_points(run: Path, where: str | None) -> tuple[list[Point], list[dict[str, Any]]]:
    """The measured points of `run` that match `where`, and their records; UserError when none matches or
    one was measured on a device this machine lacks (a CUDA run where torch sees no GPU)."""
    conditions = parse_where(where)
    recorded = read_records(require_run(run))
    points = select(recorded, conditions)
    if not points:
        raise UserError(f"{run}: no measured (ok) bench point matches {where or 'anything'}")
    for device in {p.device for p in points}:
        resolve_device(device)
    keys = {p.key() for p in points}
    return points, [r for r in recorded if r.get("key") in keys]


def machine_note(run: Path, points: list[Point]) -> str | None:
    """A line saying the run was measured on another machine than this one, or None."""
    here, there = device_name(points[0].device), read_env(run).get("device_name")
    if there and here != there:
        return f"note: {run} was measured on {there}, this is {here}: the ratios compare machines"
    return None


def remeasure(
    run: Path, points: list[Point], executor: PointExecutor, console: Console
) -> tuple[Path, list[dict[str, Any]]]:
    """`points` of `run` measured again into a new scratch folder (kept: it is the evidence); the folder and
    its records."""
    registry = load_registry(sorted({path for p in points for path in p.plugins}))
    scratch = Path(tempfile.mkdtemp(prefix="attnbench-rerun-"))
    console.print(f"re-measuring {len(points)} points of {run} into {scratch}")
    with run_lock(scratch):
        run_sweep(points, scratch, executor, console, points[0].device, points[0].threads, registry)
    return scratch, read_records(scratch)
