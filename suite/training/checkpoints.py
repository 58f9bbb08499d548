"""A training run's checkpoint: model, optimizer, schedule, random state and the loop's own state,
saved at every evaluation so a stopped run continues where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..runs.records import replaced_atomically


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
) -> None:
    """Write the checkpoint to a temporary file beside `path`, then rename it into place: a run killed
    while saving leaves the previous checkpoint, never half of one (and the temporary file, removed here
    the next time: a run folder has one writer)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    with replaced_atomically(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "state": state,
            },
            tmp,
        )


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore model, optimizer, schedule and random state from `path`; returns the loop's state."""
    saved = torch.load(path, weights_only=False)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    return saved["state"]
