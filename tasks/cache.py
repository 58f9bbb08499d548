"""On-disk cache of generated datasets: a generator runs once per (task, parameters, seed)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from .base import Split, TaskData


def default_cache_dir() -> Path:
    """$ATTNBENCH_CACHE, else ~/.cache/attnbench/tasks."""
    return Path(os.environ.get("ATTNBENCH_CACHE", Path.home() / ".cache" / "attnbench" / "tasks"))


def cached(name: str, params: dict, seed: int, build: Callable[[], TaskData], cache_dir: Path | None) -> TaskData:
    """Load the dataset for (name, params, seed) from the cache, or build and store it."""
    key = hashlib.sha1(json.dumps([name, params, seed], sort_keys=True).encode()).hexdigest()[:16]
    path = (cache_dir or default_cache_dir()) / f"{name}-{key}.pt"
    if path.exists():
        try:
            stored = torch.load(path, weights_only=False)
            splits = {s: Split(**stored.pop(s)) for s in ("train", "val", "test")}
            return TaskData(**stored, **splits)
        except Exception:  # a truncated or stale file: rebuild it
            path.unlink(missing_ok=True)
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    # One temporary file per writer: parallel runs building the same dataset each rename a whole file
    # into place, where a shared temporary name let one rename away the file another was about to rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(asdict(data), tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return data
