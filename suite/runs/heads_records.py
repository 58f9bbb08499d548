"""heads.jsonl: one record per analysed model of a run (`attnbench heads`), beside records.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .records import json_lines, warn_once

HEADS = "heads.jsonl"


def read_heads(run_dir: Path) -> list[dict[str, Any]]:
    """The run's head analyses, in the order first made; a corrupt line is skipped with a warning."""
    path = Path(run_dir) / HEADS
    records = []
    for lineno, record in json_lines(path):
        if isinstance(record, dict) and record.get("kind") == "heads" and "name" in record:
            records.append(record)
        else:
            warn_once(f"{path}:{lineno}: not a heads record, skipped")
    return records


def write_heads_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Add `record`, replacing an earlier analysis of the same model; the file is replaced whole
    (written beside it first), so a crash leaves the old one."""
    kept = [r for r in read_heads(run_dir) if r["name"] != record["name"]] + [record]
    path = Path(run_dir) / HEADS
    partial = path.with_suffix(".jsonl.partial")
    partial.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    os.replace(partial, path)
