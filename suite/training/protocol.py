"""The accuracy protocol, as Zoology (Arora et al. 2023) and MAD (Poli et al. 2024) run theirs: per task,
setting (a sequence length, a model width, a study arm) and variant, a learning-rate sweep at one seed (with
every weight decay of the protocol's, where it lists them, as MAD sweeps its grid), the best point chosen on
validation accuracy only (never on test), then every seed of the protocol at that point. Each run is an
ordinary training run with `train.lr` (`train.weight_decay`, and the protocol's step cap and patience) set,
so it has its own record and key and a stopped protocol resumes where it stopped; the sweep run of the
chosen point is one of the seeds.

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
    """The sweep of one task, setting and variant: each point's best validation accuracy (None where its run has
    no result; keyed by `point_key`) and the point chosen, the best of them (ties: the lower rate, then the lower
    decay; None where none ran)."""

    model_config = ConfigDict(extra="forbid")

    task: str
    variant: str
    label: str = ""
    setting: dict[str, dict[str, Any]] = Field(default_factory=dict)
    val_acc: dict[str, float | None]
    chosen_lr: float | None
    chosen_wd: float | None = None  # where the protocol sweeps weight decays


Point = tuple[float, float | None]  # a learning rate, and a weight decay where the protocol sweeps them


def points(protocol: Protocol | dict[str, Any]) -> list[Point]:
    """The sweep's (learning rate, weight decay) points: every rate with every decay, or None for the decay."""
    fields = protocol if isinstance(protocol, dict) else protocol.model_dump()
    return [(lr, wd) for lr in fields["lrs"] for wd in (fields.get("weight_decays") or [None])]


def point_key(lr: float, wd: float | None) -> str:
    """'0.001', or '0.001/0.1' where a weight decay is swept: a key of Choice.val_acc."""
    return repr(lr) if wd is None else f"{lr!r}/{wd!r}"


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
    if any(wd < 0 for wd in protocol.weight_decays):
        raise UserError("the protocol's weight decays must each be >= 0")
    if protocol.baseline_setting:
        if protocol.baseline_setting not in labels:
            raise UserError(f"the protocol's verdicts are against {protocol.baseline_setting!r}, not a setting here")
    elif protocol.baseline not in variants:
        raise UserError(f"the protocol's verdicts are against {protocol.baseline}: add it to --variants")
    for task in tasks:
        with_settings(preset, task, {"train": {**protocol.train, "lr": protocol.lrs[0]}})
    return protocol


def run_settings(
    train: dict[str, Any], setting: dict[str, dict[str, Any]], lr: float, wd: float | None = None
) -> dict[str, dict[str, Any]]:
    """The overrides of a protocol run: its setting's (a length, a study arm), the protocol's training settings
    `train` over the setting's own (its step cap and patience), the learning rate and a swept weight decay."""
    decay = {} if wd is None else {"weight_decay": wd}
    return {**setting, "train": {**setting.get("train", {}), **train, "lr": lr, **decay}}


def sweep_jobs(protocol: Protocol, grid: list[TrainJob]) -> list[TrainJob]:
    """Stage one: each task x setting x variant of `grid` (jobs of any seed) at every point of the sweep, the
    sweep seed."""
    return [_at(job, protocol.sweep_seed, protocol, *point) for job in cells(grid) for point in points(protocol)]


def cells(grid: list[TrainJob]) -> list[TrainJob]:
    """One job per task x setting x variant of `grid`, in its order."""
    first: dict[tuple[str, str, str], TrainJob] = {}
    for job in grid:
        first.setdefault((job.task, job.label, job.variant), job)
    return list(first.values())


def _at(job: TrainJob, seed: int, protocol: Protocol, lr: float, wd: float | None) -> TrainJob:
    settings = run_settings(protocol.train, job.settings, lr, wd)
    return TrainJob(**{**job.to_dict(), "seed": seed, "settings": settings})


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
        val_acc, scored = {}, []
        for lr, wd in points(protocol):
            settings = run_settings(protocol.train, job.settings, lr, wd)
            record = done.get(_identity(job.task, job.variant, protocol.sweep_seed, settings))
            val_acc[point_key(lr, wd)] = record["best_val_acc"] if record else None
            if record:
                scored.append((record["best_val_acc"], -lr, -(wd or 0.0), lr, wd))
        best = max(scored) if scored else None
        choices.append(
            Choice(
                task=job.task,
                variant=job.variant,
                label=job.label,
                setting=job.settings,
                val_acc=val_acc,
                chosen_lr=best[3] if best else None,
                chosen_wd=best[4] if best else None,
            )
        )
    return choices


def seed_jobs(protocol: Protocol, grid: list[TrainJob], choices: list[Choice]) -> list[TrainJob]:
    """Stage two: every seed of the protocol at each task, setting and variant's chosen rate (none where none
    was)."""
    chosen = {(c.task, c.label, c.variant): c for c in choices}
    jobs = []
    for job in cells(grid):
        choice = chosen.get((job.task, job.label, job.variant))
        if choice is not None and choice.chosen_lr is not None:
            jobs += [_at(job, seed, protocol, choice.chosen_lr, choice.chosen_wd) for seed in protocol.seeds]
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
