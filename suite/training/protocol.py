"""The accuracy protocol, as Zoology (Arora et al. 2023) and MAD (Poli et al. 2024) run theirs: per task and
variant, a learning-rate sweep at one seed, the best rate chosen on validation accuracy only (never on
test), then every seed of the protocol at that rate. Each run is an ordinary training run with
`train.lr` (and the protocol's step cap and patience) set, so it has its own record and key and a
stopped protocol resumes where it stopped; the sweep run of the chosen rate is one of the seeds.

What was swept and chosen is written to the run folder's protocol.json, which the reports read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core.errors import UserError, first_problem
from ..runs.records import write_atomic
from .jobs import TrainJob
from .presets import Protocol, TrainPreset, with_settings

PROTOCOL_FILE = "protocol.json"


def checked(protocol: Protocol, preset: TrainPreset, tasks: list[str], variants: list[str]) -> Protocol:
    """`protocol`, refused in one line when it sweeps nothing, its baseline is not trained, or its settings
    do not fit a task's setup."""
    if not protocol.lrs or any(lr <= 0 for lr in protocol.lrs):
        raise UserError("the protocol needs learning rates to sweep, each > 0 (--lrs 1e-3,3e-3)")
    if protocol.baseline not in variants:
        raise UserError(f"the protocol's verdicts are against {protocol.baseline}: add it to --variants")
    for task in tasks:
        with_settings(preset, task, {"train": {**protocol.train, "lr": protocol.lrs[0]}})
    return protocol


def _settings(protocol: Protocol, lr: float) -> dict[str, dict[str, Any]]:
    return {"train": {**protocol.train, "lr": lr}}


def sweep_jobs(protocol: Protocol, grid: list[TrainJob]) -> list[TrainJob]:
    """Stage one: each task x variant of `grid` (jobs of any seed) at every learning rate, the sweep seed."""
    return [_at(job, protocol.sweep_seed, protocol, lr) for job in _first_of_each_pair(grid) for lr in protocol.lrs]


def _first_of_each_pair(grid: list[TrainJob]) -> list[TrainJob]:
    """One job per task x variant of `grid`, in its order."""
    first: dict[tuple[str, str], TrainJob] = {}
    for job in grid:
        first.setdefault((job.task, job.variant), job)
    return list(first.values())


def _at(job: TrainJob, seed: int, protocol: Protocol, lr: float) -> TrainJob:
    return TrainJob(**{**job.to_dict(), "seed": seed, "settings": _settings(protocol, lr)})


def _identity(task: str, variant: str, seed: int, settings: dict[str, Any]) -> str:
    return json.dumps([task, variant, seed, settings], sort_keys=True)


def choose(sweep: list[TrainJob], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep's outcome per task and variant: each learning rate's best validation accuracy (None where its
    run has no result) and the chosen rate, the best of them (ties: the lower rate); None where none ran."""
    done = {
        _identity(r["task"], r["variant"], r["seed"], r.get("settings") or {}): r
        for r in records
        if r.get("kind") == "train" and r.get("status") == "ok"
    }
    choices: dict[str, dict[str, Any]] = {}
    for job in sweep:
        record = done.get(_identity(job.task, job.variant, job.seed, job.settings))
        entry = choices.setdefault(job.task, {}).setdefault(job.variant, {"val_acc": {}, "chosen_lr": None})
        entry["val_acc"][repr(job.settings["train"]["lr"])] = record["best_val_acc"] if record else None
    for variants in choices.values():
        for entry in variants.values():
            scored = [(acc, -float(lr)) for lr, acc in entry["val_acc"].items() if acc is not None]
            entry["chosen_lr"] = -max(scored)[1] if scored else None
    return choices


def seed_jobs(protocol: Protocol, grid: list[TrainJob], choices: dict[str, Any]) -> list[TrainJob]:
    """Stage two: every seed of the protocol at each task and variant's chosen rate (none where none was)."""
    jobs = []
    for job in _first_of_each_pair(grid):
        lr = choices.get(job.task, {}).get(job.variant, {}).get("chosen_lr")
        if lr is not None:
            jobs += [_at(job, seed, protocol, lr) for seed in protocol.seeds]
    return jobs


def write_protocol(out: Path, protocol: Protocol, choices: dict[str, Any]) -> None:
    """protocol.json: the protocol as run, and per task and variant the sweep and its chosen rate."""
    write_atomic(out / PROTOCOL_FILE, json.dumps({**protocol.model_dump(), "choices": choices}, indent=2) + "\n")


def read_protocol(out: Path) -> dict[str, Any] | None:
    """The run folder's protocol.json, or None where the run was not made under the protocol."""
    path = out / PROTOCOL_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({type(err).__name__})") from None
    choices = data.pop("choices", None) if isinstance(data, dict) else None
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{path}: {first_problem(err)}") from None
    if not isinstance(choices, dict) or not all(
        isinstance(variants, dict)
        and all(
            isinstance(c, dict) and isinstance(c.get("val_acc"), dict) and "chosen_lr" in c for c in variants.values()
        )
        for variants in choices.values()
    ):
        raise UserError(f"{path}: 'choices' is not the sweep per task and variant that suite writes")
    return {**protocol.model_dump(), "choices": choices}
