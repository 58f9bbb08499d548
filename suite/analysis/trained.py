"""Trained task models rebuilt from their run: the finished training runs a command names, each with
its best weights and its task's data (for `attnbench heads`), or one model by its run key (for
`attnbench heatmap`)."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...tasks import load_task
from ...tasks.base import TaskData
from ..core.errors import UserError, one_line
from ..core.registry import Registry
from ..runs.records import read_records, require_run
from ..training.model import ModelConfig, TaskModel
from ..training.presets import TrainPreset
from ..training.runs import run_key


@dataclass
class Trained:
    """A trained model rebuilt from its training record, with its task's data."""

    record: dict[str, Any]
    model: TaskModel
    data: TaskData

    @property
    def shape(self) -> tuple[int, int]:
        return self.model.cfg.depth, self.model.cfg.heads


def load_trained(run: Path, record: dict[str, Any], registry: Registry) -> Trained:
    """The model of a training record with its best weights (UserError when they are not in the run)."""
    what = f"{record['task']} / {record['variant']} / seed {record['seed']}"
    weights = run / record["model_path"] if record.get("model_path") else None
    if weights is None or not weights.is_file():
        missing = f" ({weights} is missing)" if weights is not None else ""
        raise UserError(f"{run}: no trained weights for {what}{missing}; train it with `attnbench train --out {run}`")
    data_dir = json.loads(record["key"]).get("data") if record.get("key") else None
    data = load_task(record["task"], record["task_params"], Path(data_dir) if data_dir else None)
    torch.manual_seed(record["seed"])  # as at training: variants with random features draw them at build
    model = TaskModel.for_task(
        data,
        ModelConfig.model_validate(record["model"]),
        registry,
        record["variant"],
        record.get("options"),
        record.get("layer_options"),
    )
    try:
        model.load_state_dict(torch.load(weights, weights_only=True))
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{weights}: not the weights of {what}: {one_line(err)}") from None
    model.eval()
    return Trained(record, model, data)


def finished_runs(run: Path, task: str | None, variant: str | None, seed: int | None) -> list[dict[str, Any]]:
    """The finished (ok) training records of `run` matching the filters (None: any); UserError when none does."""
    chosen = [
        r
        for r in read_records(require_run(run))
        if r.get("kind") == "train"
        and r.get("status") == "ok"
        and task in (None, r["task"])
        and variant in (None, r["variant"])
        and seed in (None, r["seed"])
    ]
    if not chosen:
        raise UserError(
            f"{run}: no finished training run matches (task {task or 'any'}, variant "
            f"{variant or 'any'}, seed {'any' if seed is None else seed}); train one with "
            f"`attnbench train --out {run}`"
        )
    return chosen


def model_for(
    task: str, variant: str, preset: TrainPreset, seed: int, run: Path | None, data_dir: Path | None, registry: Registry
) -> tuple[TaskModel, TaskData, str]:
    """The task model of `preset` for `task` and `variant`, seeded; with `run`, the weights that run trained
    (UserError when it holds none). Returns the model, the task's data and "untrained" or "trained (run)"."""
    if task not in preset.tasks:
        raise UserError(f"preset {preset.name} has no setup for task {task!r}")
    setup = preset.tasks[task]
    registry.entry(variant)
    data = load_task(task, setup.params, data_dir)
    torch.manual_seed(seed)
    model = TaskModel.for_task(data, setup.model, registry, variant, setup.options.get(variant), setup.options)
    if run is None:
        return model, data, "untrained"
    digest = hashlib.sha1(run_key(task, variant, seed, preset.name, setup, data_dir).encode()).hexdigest()[:16]
    weights = run / "models" / f"{digest}.pt"
    if not weights.exists():
        raise UserError(f"no trained weights for {task} / {variant} / seed {seed} / {preset.name} in {run}/models")
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model, data, f"trained ({run.name})"
