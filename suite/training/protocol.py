"""The accuracy protocol, as Zoology (Arora et al. 2023) and MAD (Poli et al. 2024) run theirs: per task,
setting (a sequence length, a model width, a study arm) and variant, a learning-rate sweep at one seed, the
best rate chosen on validation accuracy only (never on test), then every seed of the protocol at that rate.
Each run is an ordinary training run with `train.lr` (and the protocol's step cap and patience) set, so it
has its own record and key and a stopped protocol resumes where it stopped; the sweep run of the chosen
rate is one of the seeds.

What was swept and chosen is written to the run folder's protocol.json, which the reports read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import UserError, first_problem
from ..runs.records import write_atomic
from .jobs import TrainJob
from .presets import Protocol, TrainPreset, with_settings

PROTOCOL_FILE = "protocol.json"


class Choice(BaseModel):
    """The sweep of one task, setting and variant: each learning rate's best validation accuracy (None where its
    run has no result) and the rate chosen, the best of them (ties: the lower rate; None where none ran)."""

    model_config = ConfigDict(extra="forbid")

    task: str
    variant: str
    label: str = ""
    setting: dict[str, dict[str, Any]] = Field(default_factory=dict)
    val_acc: dict[str, float | None]
    chosen_lr: float | None


class ProtocolFile(Protocol):
    """protocol.json: the protocol and its choices."""

    choices: list[Choice]


def checked(
    protocol: Protocol, preset: TrainPreset, tasks: list[str], variants: list[str], labels: tuple[str, ...] = ()
) -> Protocol:
    """`protocol`, refused in one line when it sweeps nothing, its baseline (a variant, or a setting among
    `labels`) is not trained, or its settings do not fit a task's setup."""
    if not protocol.lrs or any(lr <= 0 for lr in protocol.lrs):
        raise UserError("the protocol needs learning rates to sweep, each > 0 (--lrs 1e-3,3e-3)")
    if protocol.baseline_setting:
        if protocol.baseline_setting not in labels:
            raise UserError(f"the protocol's verdicts are against {protocol.baseline_setting!r}, not a setting here")
    elif protocol.baseline not in variants:
        raise UserError(f"the protocol's verdicts are against {protocol.baseline}: add it to --variants")
    for task in tasks:
        with_settings(preset, task, {"train": {**protocol.train, "lr": protocol.lrs[0]}})
    return protocol


def run_settings(train: dict[str, Any], setting: dict[str, dict[str, Any]], lr: float) -> dict[str, dict[str, Any]]:
    """The overrides of a protocol run: its setting's (a length, a study arm), the protocol's training settings
    `train` over the setting's own (its step cap and patience), and the learning rate."""
    return {**setting, "train": {**setting.get("train", {}), **train, "lr": lr}}


def sweep_jobs(protocol: Protocol, grid: list[TrainJob]) -> list[TrainJob]:
    """Stage one: each task x setting x variant of `grid` (jobs of any seed) at every learning rate, the sweep
    seed."""
    return [_at(job, protocol.sweep_seed, protocol, lr) for job in cells(grid) for lr in protocol.lrs]


def cells(grid: list[TrainJob]) -> list[TrainJob]:
    """One job per task x setting x variant of `grid`, in its order."""
    first: dict[tuple[str, str, str], TrainJob] = {}
    for job in grid:
        first.setdefault((job.task, job.label, job.variant), job)
    return list(first.values())


def _at(job: TrainJob, seed: int, protocol: Protocol, lr: float) -> TrainJob:
    return TrainJob(**{**job.to_dict(), "seed": seed, "settings": run_settings(protocol.train, job.settings, lr)})


def _identity(task: str, variant: str, seed: int, settings: dict[str, Any]) -> str:
    return json.dumps([task, variant, seed, settings], sort_keys=True)


def choose(protocol: Protocol, grid: list[TrainJob], records: list[dict[str, Any]]) -> list[Choice]:
    """The sweep's outcome per task, setting and variant of `grid`, from the records of its runs."""
    done = {
        _identity(r["task"], r["variant"], r["seed"], r.get("settings") or {}): r
        for r in records
        if r.get("kind") == "train" and r.get("status") == "ok"
    }
    choices = []
    for job in cells(grid):
        val_acc = {}
        for lr in protocol.lrs:
            record = done.get(
                _identity(job.task, job.variant, protocol.sweep_seed, run_settings(protocol.train, job.settings, lr))
            )
            val_acc[repr(lr)] = record["best_val_acc"] if record else None
        scored = [(acc, -float(lr)) for lr, acc in val_acc.items() if acc is not None]
        chosen = -max(scored)[1] if scored else None
        choices.append(
            Choice(
                task=job.task,
                variant=job.variant,
                label=job.label,
                setting=job.settings,
                val_acc=val_acc,
                chosen_lr=chosen,
            )
        )
    return choices


def seed_jobs(protocol: Protocol, grid: list[TrainJob], choices: list[Choice]) -> list[TrainJob]:
    """Stage two: every seed of the protocol at each task, setting and variant's chosen rate (none where none
    was)."""
    chosen = {(c.task, c.label, c.variant): c.chosen_lr for c in choices}
    jobs = []
    for job in cells(grid):
        lr = chosen.get((job.task, job.label, job.variant))
        if lr is not None:
            jobs += [_at(job, seed, protocol, lr) for seed in protocol.seeds]
    return jobs


def write_protocol(out: Path, protocol: Protocol, choices: list[Choice]) -> None:
    """protocol.json: the protocol as run, and per task, setting and variant the sweep and its chosen rate."""
    data = {**protocol.model_dump(), "choices": [c.model_dump() for c in choices]}
    write_atomic(out / PROTOCOL_FILE, json.dumps(data, indent=2) + "\n")


def read_protocol(out: Path) -> dict[str, Any] | None:
    """The run folder's protocol.json (its choices a list of Choice dicts), or None where the run was not made
    under the protocol."""
    path = out / PROTOCOL_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({type(err).__name__})") from None
    try:
        made = ProtocolFile.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{path}: {first_problem(err)}") from None
    return made.model_dump()
