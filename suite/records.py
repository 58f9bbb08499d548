"""Run folders: ``records.jsonl`` (one JSON object per point, appended and flushed as each point
ends) and ``env.json`` (where and how the run was made). Records are plain data: every chart and
table is rebuilt from them alone.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from attnbench.suite.errors import UserError

RECORDS = "records.jsonl"
ENV = "env.json"
# Statuses after which a point is not measured again when its run is resumed.
FINAL = ("ok", "oom", "error", "timeout", "unsupported", "unavailable")


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one record and make sure it is on disk before the next point starts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / RECORDS, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """All records of a run; a corrupt line is skipped with a warning naming it."""
    path = Path(run_dir) / RECORDS
    if not path.exists():
        return []
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                warnings.warn(f"{path}:{lineno}: skipped corrupt record ({err})", stacklevel=2)
                continue
            records.append(record)
    return records


def read_env(run_dir: Path) -> dict[str, Any]:
    """The run's env.json ({} when absent)."""
    path = Path(run_dir) / ENV
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def write_env(run_dir: Path, env: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / ENV).write_text(json.dumps(env, indent=2, sort_keys=True) + "\n")


def require_run(run_dir: Path) -> Path:
    """`run_dir` if it holds records, else a one-line error."""
    run_dir = Path(run_dir)
    if not (run_dir / RECORDS).exists():
        raise UserError(f"{run_dir}: no {RECORDS} here (not a run folder)")
    return run_dir
