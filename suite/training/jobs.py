"""A training run as a job: plain JSON-able data any executor can carry to a worker, and the one
`attnbench train` command that makes it alone."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ...tasks import get_task
from ..core.errors import UserError
from ..core.registry import Registry
from .presets import TrainPreset, load_train_preset, with_options, with_settings
from .sweeps import Setting


@dataclass(frozen=True)
class TrainJob:
    """One training run to make: plain JSON-able data, so any executor can carry it to a worker."""

    task: str
    variant: str
    seed: int
    preset: str
    device: str
    out: str | None  # the run folder the record and model go into (shared with the driver); None: a scratch one
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # {variant: {key: value}}
    plugins: tuple[str, ...] = ()
    data_dir: str | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # {model|train|params: {key: value}}
    timeout_s: float | None = None  # the local worker is killed after this long (None: no limit)
    label: str = ""  # the name of `settings` in tables and charts (a length, a study arm); '' for the preset's own

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainJob:
        return cls(**{**data, "plugins": tuple(data.get("plugins", ()))})

    def argv(self) -> list[str]:
        """`attnbench train` arguments that make this run into `out` (or `--scratch`): the one place they are built."""
        args = [
            "train",
            "--task",
            self.task,
            "--variant",
            self.variant,
            "--preset",
            self.preset,
            "--seed",
            str(self.seed),
            "--device",
            self.device,
        ]
        for variant, values in sorted(self.options.items()):
            for key, value in sorted(values.items()):
                args += ["--option", f"{variant}.{key}={json.dumps(value)}"]
        for section, values in sorted(self.settings.items()):
            args += [
                a for key, value in sorted(values.items()) for a in ("--set", f"{section}.{key}={json.dumps(value)}")
            ]
        args += [a for plugin in self.plugins for a in ("--plugin", plugin)]
        args += ["--data-dir", self.data_dir] if self.data_dir else []
        args += ["--timeout", f"{self.timeout_s:g}"] if self.timeout_s else []
        return args + (["--out", self.out] if self.out else ["--scratch"])


def job_preset(job: TrainJob) -> TrainPreset:
    """`job`'s training preset as its run sees it: variant options merged, its task's --set overrides applied."""
    return with_settings(with_options(load_train_preset(job.preset), job.options), job.task, job.settings)


def job_threads(job: TrainJob) -> int | None:
    """The CPU threads `job`'s run trains with (its setup's train.threads; None: torch's default, every core)."""
    return job_preset(job).tasks[job.task].train.threads


def sharing_cores(job: TrainJob, parallel: int) -> TrainJob:
    """`job` with train.threads set to this machine's cores over `parallel` where its setup leaves threads to
    torch: `parallel` CPU runs at once, each taking every core, slow one another (2 cores: up to 20x a step)."""
    if parallel == 1 or job.device != "cpu" or job_threads(job) is not None:
        return job
    train = {**job.settings.get("train", {}), "threads": max(1, (os.cpu_count() or 1) // parallel)}
    return replace(job, settings={**job.settings, "train": train})


def train_command(
    task: str,
    variant: str,
    preset: str,
    seed: int,
    data_dir: Path | None,
    device: str,
    plugins: tuple[str, ...],
    options: dict[str, Any],
    settings: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The `attnbench train` command that reruns one training run alone, into a fresh scratch folder."""
    job = TrainJob(
        task,
        variant,
        seed,
        preset,
        device,
        None,
        {variant: options} if options else {},
        plugins,
        str(data_dir) if data_dir is not None else None,
        settings or {},
    )
    return shlex.join(["attnbench", *job.argv()])


def suite_jobs(
    preset: TrainPreset,
    reference: str,
    tasks: list[str],
    variants: list[str],
    seeds: list[int],
    registry: Registry,
    device: str,
    out: Path,
    options: dict[str, dict[str, Any]],
    plugins: tuple[str, ...],
    data_dir: Path | None,
    settings: dict[str, list[Setting]] | None = None,
) -> list[TrainJob]:
    """Every task x setting x variant x seed of `attnbench suite` as a job, checked up front (one line before
    anything trains). `reference` is how the workers load `preset` (preset_reference); `settings` are each
    task's (sweeps.task_settings; the preset's own setup where not given). --data-dir feeds the tasks read
    from release files; synthetic ones are generated as ever."""
    for variant in variants:
        registry.entry(variant)
    missing = [t for t in tasks if t not in preset.tasks]
    if missing:
        raise UserError(f"preset {preset.name} has no setup for task {missing[0]!r} (it has {', '.join(preset.tasks)})")
    if data_dir is not None and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a folder")
    data = {t: str(data_dir.resolve()) if data_dir and get_task(t).read else None for t in tasks}
    settings = settings or {}
    return [
        TrainJob(t, v, s, reference, device, str(out.resolve()), options, plugins, data[t], at.settings, label=at.label)
        for t in tasks
        for at in settings.get(t, [Setting()])
        for v in variants
        for s in seeds
    ]
