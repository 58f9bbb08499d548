"""Studies: one training preset, trained again with the model or schedule changed per arm.

A study names a training preset, tasks, variants and seeds, and its arms: each arm is a set of
`--set` overrides (model.heads=8, model.kv_latent=32, model.score_scale=1, ...). Every (task, arm,
variant, seed) is one ordinary training run (a record in the run folder with the `attnbench train`
command that remakes it alone); the study's table and chart are drawn from those records.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.errors import UserError
from ..core.registry import Registry
from .jobs import TrainJob
from .presets import Protocol, load_named_yaml, load_train_preset, with_settings
from .protocol import checked, points, run_settings
from .runs import check_fits

STUDIES = Path(__file__).parents[1] / "presets" / "studies"


class Arm(BaseModel):
    """One setting of the studied factor: overrides of the preset's model and training fields."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


class Study(BaseModel):
    """A named comparison of arms on a training preset."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    claim: str = Field("", description="the claim the study tests (the seed article's, quoted)")
    preset: str = "cpu"
    tasks: list[str] = Field(min_length=1)
    variants: list[str] = Field(default_factory=lambda: ["sdpa"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="task parameters per task")
    train: dict[str, Any] = Field(default_factory=dict, description="training overrides of every arm")
    arms: list[Arm] = Field(min_length=2)
    notes: list[str] = Field(default_factory=list, description="where the study departs from the preset, and why")
    protocol: Protocol | None = Field(
        None,
        description="the accuracy protocol per task x arm x variant (default: the preset's), run where it lists lrs "
        "(or `study --lrs`); its verdicts are against the first arm unless baseline_setting names another",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Study:
        labels = [arm.label for arm in self.arms]
        if len(set(labels)) != len(labels):
            raise ValueError(f"arm labels repeat: {labels}")
        return self

    def settings(self, task: str, arm: Arm) -> dict[str, dict[str, Any]]:
        """The `--set` overrides of one arm on one task (empty sections left out)."""
        sections = {"model": arm.model, "train": self.train | arm.train, "params": self.params.get(task, {})}
        return {name: values for name, values in sections.items() if values}

    def base_protocol(self) -> Protocol:
        """The study's own protocol, or its preset's."""
        return self.protocol or load_train_preset(self.preset).protocol


def load_study(name: str) -> Study:
    """A shipped study by name, or a YAML file by path."""
    return load_named_yaml(name, STUDIES, "study", Study)


def of_tasks(study: Study, tasks: list[str] | None) -> Study:
    """`study` restricted to `tasks` (None: all of its own); a task it lacks is refused in one line."""
    if tasks is None:
        return study
    unknown = [task for task in tasks if task not in study.tasks]
    if unknown or not tasks:
        raise UserError(f"study {study.name} has tasks {', '.join(study.tasks)}; not {', '.join(unknown) or 'none'}")
    return study.model_copy(update={"tasks": [task for task in study.tasks if task in tasks]})


def study_jobs(study: Study, registry: Registry, device: str, out: Path, plugins: tuple[str, ...]) -> list[TrainJob]:
    """Every run of the study, checked up front: each arm's settings and each variant's K/V layout
    (UserError with one line before anything trains)."""
    preset = load_train_preset(study.preset)
    jobs = []
    for task in study.tasks:
        if task not in preset.tasks:
            raise UserError(f"study {study.name}: preset {preset.name} has no task {task!r}")
        for arm in study.arms:
            settings = study.settings(task, arm)
            try:
                setup = with_settings(preset, task, settings).tasks[task]
            except UserError as err:
                raise UserError(f"study {study.name}, arm {arm.label!r}: {err}") from None
            for variant in study.variants:
                check_fits(registry, variant, setup.model, device)
                jobs += [
                    TrainJob(
                        task, variant, seed, study.preset, device, str(out.resolve()), {}, plugins, None, settings,
                        label=arm.label,
                    )
                    for seed in study.seeds
                ]  # fmt: skip
    return jobs


def study_protocol(study: Study, protocol: Protocol) -> Protocol:
    """`protocol` (the study's, with --lrs and --seeds applied) with its verdicts against the first arm, unless it
    names another, and checked (one line where it cannot run)."""
    if protocol.lrs and not protocol.baseline_setting:
        protocol = protocol.model_copy(update={"baseline_setting": study.arms[0].label})
    if protocol.lrs:
        labels = tuple(arm.label for arm in study.arms)
        checked(protocol, load_train_preset(study.preset), study.tasks, study.variants, labels)
    return protocol


def study_command(name: str, out: Path, device: str, parallel: int, args: list[str] | None = None) -> str:
    """The command that remakes a study into `out`; `--parallel` is kept, since runs sharing the cores make
    their steps/s, which a remake should match, and so are `args` (its --tasks, --lrs and --seeds)."""
    return shlex.join(
        ["attnbench", "study", name, "--out", str(out), "--device", device]
        + (["--parallel", str(parallel)] if parallel > 1 else [])
        + (args or [])
    )


def arm_of(study: Study, record: dict[str, Any], protocol: dict[str, Any] | None = None) -> str | None:
    """The label of the arm a training record belongs to (by its overrides, under `protocol` at any of its
    learning rates), or None."""
    made = record.get("settings") or {}
    # `--parallel` adds train.threads to runs whose arm leaves it to torch: the arm is the same.
    train = {k: v for k, v in made.get("train", {}).items() if k != "threads"}
    unthreaded = {k: v for k, v in made.items() if k != "train"} | ({"train": train} if train else {})
    made_text, unthreaded_text = json.dumps(made, sort_keys=True), json.dumps(unthreaded, sort_keys=True)
    for arm in study.arms:
        settings = study.settings(record.get("task", ""), arm)
        candidates = (
            [run_settings(protocol["train"], settings, lr, wd) for lr, wd in points(protocol)]
            if protocol
            else [settings]
        )
        for candidate in candidates:
            ours = made_text if "threads" in candidate.get("train", {}) else unthreaded_text
            if json.dumps(candidate, sort_keys=True) == ours:
                return arm.label
    return None
