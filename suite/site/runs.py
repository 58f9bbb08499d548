"""The runs a site shows: each folder's records and environment, read once, with what the index lists."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..runs.records import ENV, RECORDS, read_env, read_records

# What a point's status counts as on the index: measured, or failed with a reason.
FAILED = ("oom", "error", "timeout")


@dataclass
class Run:
    """One run folder as the site shows it."""

    path: Path
    env: dict[str, Any]
    records: list[dict[str, Any]]
    slug: str = field(init=False)

    def __post_init__(self) -> None:
        self.slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.path.name).strip("-") or "run"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def device(self) -> str:
        """The device as the run names it: a GPU's name, else the CPU's."""
        return str(self.env.get("device_name") or self.env.get("cpu") or self.env.get("device") or "unknown")

    @property
    def date(self) -> str:
        return str(self.env.get("date") or "")[:10]

    @property
    def commit(self) -> str:
        commit = str(self.env.get("commit") or "")
        return commit[:7] + (" (dirty)" if self.env.get("dirty") else "")

    @property
    def kinds(self) -> list[str]:
        """bench and/or train: what the records are."""
        return sorted({str(r.get("kind", "bench")) for r in self.records})

    def count(self, *statuses: str) -> int:
        return sum(r.get("status") in statuses for r in self.records)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") in FAILED]


def load_run(path: Path) -> Run:
    """A run folder (UserError with one line when it is not one)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} is not a run folder (no such folder)")
    if not path.is_dir():
        raise UserError(f"{path} is not a run folder (a file: name the folder that holds it)")
    if not (path / RECORDS).exists():
        inside = find_runs(path)
        hint = f"; it holds {len(inside)} runs: name them ({path}/*) or give none for results/" if inside else ""
        raise UserError(f"{path} is not a run folder: it has no {RECORDS}{hint}")
    if not (path / ENV).exists():
        raise UserError(f"{path} is not a whole run folder: it has no {ENV}")
    records = read_records(path)
    if not records:
        raise UserError(f"{path} has no readable records ({RECORDS} is empty or every line is corrupt)")
    return Run(path, read_env(path), records)


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root` (a folder holding records.jsonl and env.json), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: name the runs to publish")
    return sorted(p.parent for p in root.glob(f"*/{RECORDS}") if (p.parent / ENV).exists())


def load_runs(paths: list[Path]) -> list[Run]:
    """The runs, in the order given; two folders of one name get distinct slugs."""
    runs = [load_run(p) for p in paths]
    if not runs:
        raise UserError("no runs to publish: name run folders, or measure one with `attnbench bench`")
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.slug] = seen.get(run.slug, 0) + 1
        if seen[run.slug] > 1:
            run.slug = f"{run.slug}-{seen[run.slug]}"
    return runs
