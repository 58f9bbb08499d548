"""`attnbench rerun RUN`: re-measure recorded points into a fresh folder and judge them against the run.

The points are rebuilt from their records (every field that says what and how to measure), so a
rerun measures what the run measured, with the code checked out now. The new records go to a
scratch folder; the run itself is only read. Each point is then judged by `compare` against its
own recorded repeats: a difference beyond the run's spread means the number did not reproduce.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .points import RAGGED_DEFAULTS, WHERE_FIELDS, Point

POINT_FIELDS = [f.name for f in dataclasses.fields(Point)]


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
    fields = {name: record[name] for name in POINT_FIELDS if record.get(name) is not None}
    return Point.from_dict(fields)


def select(records: list[dict[str, Any]], conditions: dict[str, str]) -> list[Point]:
    """The measured (ok) bench points of a run that match every condition, each once."""
    chosen = [r for r in records if r.get("kind") == "bench" and r["status"] == "ok" and _matches(r, conditions)]
    points = {point_of(r).key(): point_of(r) for r in chosen}
    return list(points.values())


def scratch_folder() -> Path:
    """A new folder for re-measured records (kept: it is the evidence)."""
    return Path(tempfile.mkdtemp(prefix="attnbench-rerun-"))
