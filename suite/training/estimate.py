"""How long a grid of training runs takes on this machine, before any of it is trained (`suite --dry-run`).

Each task x variant's training step is timed here (three steps after one untimed, in a worker: the variant
may be a plugin's), and a run is estimated at its step cap: an upper bound where patience on validation
stops it early, and without its evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...tasks import load_task
from ..core.registry import load_registry
from .loop import seconds_per_step
from .presets import load_setup


def step_seconds_job(job: dict[str, Any]) -> float:
    """The seconds of one training step of job's task and variant under its preset (with its settings),
    measured in the worker that `executors.local.call_isolated` runs it in."""
    setups = load_setup(job["preset"], job["options"], job["task"], job["settings"])
    setup = setups.tasks[job["task"]]
    data = load_task(job["task"], setup.params, Path(job["data_dir"]) if job["data_dir"] else None)
    registry = load_registry(job["plugins"])
    return seconds_per_step(data, job["variant"], setup, registry, job["device"])
