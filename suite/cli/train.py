"""`attnbench train` (one run), `attnbench suite` (task x variant x seed) and `attnbench study` (arms)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..core.config import parse_variant_options
from ..core.devices import resolve_device
from ..core.errors import UserError
from ..executors import make_executor
from ..executors.batch import train_each
from ..outputs.report import write_accuracy
from ..outputs.study_report import write_study
from ..runs.folders import default_run_folder, run_folder
from ..runs.records import read_checked_env, read_records, run_lock
from ..training.jobs import TrainJob, suite_jobs
from ..training.presets import TrainPreset, load_setup, parse_settings, preset_rows
from ..training.runs import check_run, outcome, run_training
from ..training.study import load_study, study_jobs
from .common import (
    TASK_HELP,
    DataDirOpt,
    DeviceOpt,
    ExecutorChoice,
    OptionOpt,
    ParallelOpt,
    PluginOpt,
    SetOpt,
    TaskOutOpt,
    TrainPresetOpt,
    console,
    csv,
    exit_if_failed,
    interruptible,
    plugin_paths,
    registry,
)


def train(
    task: Annotated[str | None, typer.Option(help=TASK_HELP)] = None,
    variant: Annotated[str | None, typer.Option(help="Attention variant for every layer.")] = None,
    preset: TrainPresetOpt = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = 0,
    out: TaskOutOpt = None,
    scratch: Annotated[
        bool, typer.Option("--scratch", help="Train into a new temporary folder (printed); never resume a run.")
    ] = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    option: OptionOpt = None,
    setting: SetOpt = None,
    plugin: PluginOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the preset's settings per task, with their sources; train nothing.")
    ] = False,
) -> None:
    """Train the task model with one variant; record accuracy, speed and memory (resumable)."""
    settings = parse_settings(setting)
    setups = load_setup(preset, parse_variant_options(option), task, settings)
    if dry_run:
        _print_preset(setups, task)
        return
    if task is None or variant is None:
        raise UserError("give --task and --variant (or --dry-run to print the preset)")
    variants = registry(plugin)
    device = resolve_device(device)
    check_run(variants, task, variant, setups, device)  # refused before the run folder is made
    out = run_folder(out, scratch, f"tasks-{setups.name}", device)
    with run_lock(out):
        record = run_training(
            task,
            variant,
            setups,
            seed,
            variants,
            device,
            out,
            data_dir,
            plugin_paths(plugin),
            console,
            settings=settings,
        )
    if record["status"] != "ok":
        console.print(f"{task} / {variant} / seed {seed}: {record['status']}: {record.get('reason', '')}")
        raise typer.Exit(1)
    console.print(f"{task} / {variant} / seed {seed}: {outcome(record)} -> {out}", highlight=False)


def _print_preset(preset: TrainPreset, task: str | None) -> None:
    """A training preset as tables: every setting of each task (or of `task`), its source, and the
    preset's declared departures."""
    if task is not None and task not in preset.tasks:
        raise UserError(f"preset {preset.name} has no setup for task {task!r} (it has {', '.join(preset.tasks)})")
    console.print(f"[bold]training preset {preset.name}[/]: {preset.description}", highlight=False)
    for name, setup in preset.tasks.items():
        if task is not None and name != task:
            continue
        console.print(f"\n[bold]{name}[/]" + (f"  source: {setup.source}" if setup.source else ""), highlight=False)
        table = Table()
        table.add_column("setting", no_wrap=True)
        table.add_column("value")
        for key, value in preset_rows(setup):
            table.add_row(key, value)
        console.print(table)
    for line in preset.departures:
        console.print(f"departure: {line}", highlight=False)


def suite_command(
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks.")] = "mqar,listops",
    variants: Annotated[
        str, typer.Option(help="Comma-separated variants.")
    ] = "sdpa,linear-elu,performer,sliding-window",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1",
    preset: TrainPresetOpt = "cpu",
    out: TaskOutOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    option: OptionOpt = None,
    plugin: PluginOpt = None,
    executor: ExecutorChoice = ("local", {}),
    parallel: ParallelOpt = 1,
) -> None:
    """Train every task x variant x seed, each run in its own process; write the accuracy table."""
    variant_registry = registry(plugin)
    options = parse_variant_options(option)
    setups = load_setup(preset, options, None, {})
    variant_list = csv(variants)
    for name in variant_list:
        variant_registry.entry(name)
    device = resolve_device(device)
    out = out or default_run_folder(f"tasks-{setups.name}", device)
    jobs = suite_jobs(
        setups, csv(tasks), variant_list, csv(seeds, int), device, out, options, plugin_paths(plugin), data_dir
    )

    def accuracy_table() -> None:
        if (out / "records.jsonl").exists():
            console.print(write_accuracy(out, read_records(out)), markup=False, highlight=False)

    exit_if_failed(_train_all(jobs, out, device, executor, parallel, accuracy_table), len(jobs))


def study(
    name: Annotated[str, typer.Argument(help="Study: head-count, kv-sharing, scale, head-time, or a YAML file.")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: results/<study>-<device>).")] = None,
    device: DeviceOpt = None,
    plugin: PluginOpt = None,
    executor: ExecutorChoice = ("local", {}),
    parallel: ParallelOpt = 1,
) -> None:
    """Train every arm x task x variant x seed of a study (resumable); write its table, chart and README."""
    plan = load_study(name)
    device = resolve_device(device)
    out = out or default_run_folder(plan.name, device)
    jobs = study_jobs(plan, registry(plugin), device, out, plugin_paths(plugin))
    # --parallel is kept: runs sharing the cores make their steps/s, which a remake should match.
    command = shlex.join(
        ["attnbench", "study", name, "--out", str(out), "--device", device]
        + (["--parallel", str(parallel)] if parallel > 1 else [])
    )

    def study_report() -> None:
        console.print(write_study(plan, out, command), markup=False, highlight=False)

    failed = _train_all(jobs, out, device, executor, parallel, study_report)
    console.print(f"wrote {out / 'README.md'}")
    exit_if_failed(failed, len(jobs))


def _train_all(
    jobs: list[TrainJob],
    out: Path,
    device: str,
    executor: ExecutorChoice,
    parallel: int,
    report: Callable[[], None],
) -> int:
    """Train `jobs` into `out` under its lock on the chosen executor, then `report`; returns how many failed."""
    read_checked_env(out, device, executor[0])  # up front: each run would refuse the folder alike
    message = f"interrupted: finished runs are kept in {out}; rerun the same command to resume"
    with interruptible(message), run_lock(out):  # the runs write into the folder under this lock
        failed = train_each(jobs, make_executor(executor, out), console, parallel)
        report()
    return failed
