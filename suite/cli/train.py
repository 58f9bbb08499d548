"""`attnbench train` (one run), `attnbench suite` (task x variant x seed) and `attnbench study` (arms)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..core.config import parse_variant_options
from ..core.devices import resolve_device
from ..core.errors import UserError
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
    TrainTimeoutOpt,
    console,
    csv,
    exit_if_failed,
    interruptible,
    plugin_paths,
    registry,
)

if TYPE_CHECKING:
    from ..training.jobs import TrainJob
    from ..training.presets import Protocol, TrainPreset


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
    timeout: TrainTimeoutOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the preset's settings per task, with their sources; train nothing.")
    ] = False,
) -> None:
    """Train the task model with one variant; record accuracy, speed and memory (resumable).

    The run trains in a worker process (the variant's code may be a plugin's): a crash, or a hang past
    --timeout, is recorded as the run's status."""
    from ...tasks import get_task
    from ..executors.batch import train_recorded
    from ..executors.local import LocalExecutor
    from ..runs.folders import run_folder
    from ..runs.records import read_checked_env, run_lock
    from ..training.jobs import TrainJob
    from ..training.presets import load_setup, parse_settings
    from ..training.runs import check_run, outcome, recorded, run_key

    settings = parse_settings(setting)
    options = parse_variant_options(option)
    setups = load_setup(preset, options, task, settings)
    if dry_run:
        _print_preset(setups, task)
        return
    if task is None or variant is None:
        raise UserError("give --task and --variant (or --dry-run to print the preset)")
    variants = registry(plugin)
    device = resolve_device(device)
    check_run(variants, task, variant, setups, device)  # refused before the run folder is made
    if data_dir is not None and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a folder")
    out = run_folder(out, scratch, f"tasks-{setups.name}", device)
    # --data-dir feeds only the tasks read from files, as in a suite.
    job = TrainJob(
        task=task,
        variant=variant,
        seed=seed,
        preset=preset,
        device=device,
        out=str(out.resolve()),
        options=options,
        plugins=plugin_paths(plugin),
        data_dir=str(data_dir.resolve()) if data_dir and get_task(task).read else None,
        settings=settings,
        timeout_s=timeout,
    )
    key = run_key(task, variant, seed, setups.name, setups.tasks[task], Path(job.data_dir) if job.data_dir else None)
    message = f"interrupted: training stopped; rerun the same command to resume from its last checkpoint in {out}"
    with interruptible(message), run_lock(out):
        read_checked_env(out, device, "local")  # a folder of another machine is refused before its records are read
        if (record := recorded(out, key)) is not None:
            console.print(f"already recorded in {out}: {task} / {variant} / seed {seed}")
        else:
            record = train_recorded(job, LocalExecutor())
    if record.get("refused"):
        raise UserError(record["reason"])
    if record["status"] != "ok":
        console.print(f"{task} / {variant} / seed {seed}: {record['status']}: {record.get('reason', '')}")
        raise typer.Exit(1)
    console.print(f"{task} / {variant} / seed {seed}: {outcome(record)} -> {out}", highlight=False)


def _print_preset(preset: TrainPreset, task: str | None) -> None:
    """A training preset as tables: every setting of each task (or of `task`), its source, and the
    preset's declared departures."""
    from ..training.presets import preset_rows

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
        console.print(f"departure: {line}", highlight=False, markup=False)


def suite_command(
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated tasks (default: the preset's suite_tasks, else all its tasks).")
    ] = None,
    variants: Annotated[
        str, typer.Option(help="Comma-separated variants.")
    ] = "sdpa,linear-elu,performer,sliding-window",
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds (default 0,1; under the protocol, its seeds).")
    ] = None,
    lrs: Annotated[
        str | None,
        typer.Option(
            help="Learning rates to sweep: trains under the accuracy protocol (sweep, choice on validation, seeds at "
            "the choice, verdicts); a preset that lists protocol.lrs runs it without this."
        ),
    ] = None,
    weight_decays: Annotated[
        str | None,
        typer.Option(
            help="Weight decays to sweep with every learning rate (MAD's grid: 0,0.1); default: the preset's."
        ),
    ] = None,
    lengths: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated sequence lengths to train each task at, by its length rule (MQAR: key-value pairs "
            "grow with N; ListOps: its shortest expression): accuracy against N (default: the preset's lengths)."
        ),
    ] = None,
    widths: Annotated[
        str | None, typer.Option(help="Comma-separated model widths (model.dim) to train at each length.")
    ] = None,
    preset: TrainPresetOpt = "cpu",
    out: TaskOutOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    option: OptionOpt = None,
    plugin: PluginOpt = None,
    executor: ExecutorChoice = ("local", {}),
    parallel: ParallelOpt = 1,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the runs and an estimate of their hours here (each step timed); train nothing."
        ),
    ] = False,
) -> None:
    """Train every task x variant x seed, each run in its own process; write the accuracy table. Under the
    protocol: each task x variant at every learning rate, then every seed at the rate best on validation;
    the table gives 95% intervals and verdicts against the baseline. With --lengths (or a preset's lengths),
    each task at every length, and a chart of accuracy against N beside the time and memory of those runs."""
    from ..outputs.report import write_accuracy
    from ..runs.folders import default_run_folder
    from ..runs.records import read_records
    from ..training.jobs import sharing_cores, suite_jobs
    from ..training.presets import load_setup, preset_reference
    from ..training.sweeps import task_settings

    variant_registry = registry(plugin)
    options = parse_variant_options(option)
    setups = load_setup(preset, options, None, {})
    device = resolve_device(device)
    out = out or default_run_folder(f"tasks-{setups.name}", device)
    protocol = _protocol(setups.protocol, lrs, seeds, weight_decays)
    grid = (
        csv(tasks) if tasks else setups.default_tasks(),
        csv(variants),
        protocol.seeds if protocol.lrs else csv(seeds or "0,1", int),
    )
    reference = preset_reference(preset)
    sweep_lengths, sweep_widths = csv(lengths, int), csv(widths, int)
    # A task the preset lacks is named by suite_jobs.
    sweeps = {t: task_settings(setups, t, sweep_lengths, sweep_widths) for t in grid[0] if t in setups.tasks}
    jobs = suite_jobs(
        setups, reference, *grid, variant_registry, device, out, options, plugin_paths(plugin), data_dir, sweeps
    )
    if executor[0] == "local":  # Ray and SLURM give each run the cores its threads ask for
        jobs = [sharing_cores(job, parallel) for job in jobs]

    def accuracy_table() -> None:
        if (out / "records.jsonl").exists():
            console.print(write_accuracy(out, read_records(out)), markup=False, highlight=False)

    if protocol.lrs:
        from ..training.protocol import checked

        checked(protocol, setups, grid[0], grid[1])
    if dry_run:
        _print_plan(jobs, protocol, setups)
        return
    if not protocol.lrs:
        exit_if_failed(_train_all(jobs, out, device, executor, parallel, accuracy_table), len(jobs))
        return
    exit_if_failed(*_train_protocol(protocol, jobs, out, device, executor, parallel, accuracy_table))


def _train_protocol(
    protocol: Protocol,
    jobs: list[TrainJob],
    out: Path,
    device: str,
    executor: ExecutorChoice,
    parallel: int,
    report: Callable[[], None],
) -> tuple[int, int]:
    """The protocol's two stages on the grid `jobs`: the sweep, protocol.json with its choices, then the seeds at
    each choice, then `report`; returns the runs that failed and the runs trained."""
    from ..runs.records import read_records
    from ..training.protocol import choose, seed_jobs, sweep_jobs, write_protocol

    sweep = sweep_jobs(protocol, jobs)
    swept = _swept(protocol)
    console.print(f"protocol, stage 1: {len(sweep)} runs, each task x setting x variant at learning rates {swept}")
    failed = _train_all(sweep, out, device, executor, parallel, lambda: None)
    choices = choose(protocol, jobs, read_records(out))
    write_protocol(out, protocol, choices)
    final = seed_jobs(protocol, jobs, choices)
    console.print(f"protocol, stage 2: {len(final)} runs, seeds {protocol.seeds} at each chosen rate")
    failed += _train_all(final, out, device, executor, parallel, report)
    return failed, len(sweep) + len(final)


def _print_plan(jobs: list[TrainJob], protocol: Protocol, setups: TrainPreset) -> None:
    """The runs of `jobs` (under `protocol` where it sweeps) per task, setting and variant, with the seconds of a
    training step timed here and the hours the runs take at their step cap."""
    from ..executors.local import call_isolated
    from ..training.presets import with_settings
    from ..training.protocol import cells, points, run_settings

    seeds = sorted(protocol.seeds) if protocol.lrs else sorted({job.seed for job in jobs})
    # Under the protocol the sweep seed's run at the chosen point is one of the seeds: it is not trained twice.
    per_pair = len(points(protocol)) + len(seeds) - (protocol.sweep_seed in seeds) if protocol.lrs else len(seeds)
    labelled = any(job.label for job in jobs)
    table = Table(
        "task", *(["setting"] if labelled else []), "variant", "runs", "learning rates", "seeds",
        "s / step (timed here)", "step cap", "hours",
    )  # fmt: skip
    total_runs, total_h = 0, 0.0
    for job in cells(jobs):
        task, variant = job.task, job.variant
        settings = run_settings(protocol.train, job.settings, protocol.lrs[0]) if protocol.lrs else job.settings
        cap = with_settings(setups, task, settings).tasks[task].train.steps
        probe = {**job.to_dict(), "settings": settings}
        what = f"timing a training step of {task} {job.label} / {variant}".replace("  ", " ")
        step_s = call_isolated("attnbench.suite.training.estimate:step_seconds_job", probe, 600, what)
        run_h = step_s * cap * per_pair / 3600
        total_runs, total_h = total_runs + per_pair, total_h + run_h
        lrs = _swept(protocol) + " (sweep)" if protocol.lrs else f"{setups.tasks[task].train.lr:g}"
        table.add_row(
            task, *([job.label] if labelled else []), variant, str(per_pair), lrs, ", ".join(map(str, seeds)),
            f"{step_s:.3f}", str(cap), f"{run_h:.2f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{total_runs} runs, about {total_h:.1f} hours on this machine, one at a time: each at its step cap (patience "
        "on validation may stop it sooner), evaluations not counted. Nothing was trained.",
        highlight=False,
    )


def _swept(protocol: Protocol) -> str:
    """'0.001, 0.003' (the learning rates), and ' x weight decays 0, 0.1' where the protocol sweeps them."""
    text = ", ".join(f"{lr:g}" for lr in protocol.lrs)
    if protocol.weight_decays:
        text += " x weight decays " + ", ".join(f"{wd:g}" for wd in protocol.weight_decays)
    return text


def _protocol(protocol: Protocol, lrs: str | None, seeds: str | None, weight_decays: str | None = None) -> Protocol:
    """A preset's or study's protocol with --lrs, --seeds and --weight-decays applied (it runs where it has
    learning rates)."""
    from pydantic import ValidationError

    from ..core.errors import first_problem
    from ..training.presets import Protocol

    changed = {}
    if lrs is not None:
        changed["lrs"] = csv(lrs, float)
    if seeds is not None and (protocol.lrs or lrs is not None):
        changed["seeds"] = csv(seeds, int)
    if weight_decays is not None:
        changed["weight_decays"] = csv(weight_decays, float)
    try:
        return Protocol.model_validate(protocol.model_dump() | changed)
    except ValidationError as err:
        raise UserError(f"protocol: {first_problem(err)}") from None


def study(
    name: Annotated[
        str, typer.Argument(help="Study: head-count, head-time, hybrids, kv-sharing, scale, or a YAML file.")
    ],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: results/<study>-<device>).")] = None,
    lrs: Annotated[
        str | None,
        typer.Option(
            help="Learning rates to sweep: each task x arm x variant under the accuracy protocol, verdicts against "
            "the first arm (a study whose protocol lists lrs runs it without this)."
        ),
    ] = None,
    weight_decays: Annotated[
        str | None,
        typer.Option(
            help="Weight decays to sweep with every learning rate (MAD's grid: 0,0.1); default: the preset's."
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds of the protocol's second stage (default: its own).")
    ] = None,
    device: DeviceOpt = None,
    plugin: PluginOpt = None,
    executor: ExecutorChoice = ("local", {}),
    parallel: ParallelOpt = 1,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated tasks of the study to train (default: all of its tasks).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the runs and an estimate of their hours here (each step timed); train nothing."
        ),
    ] = False,
) -> None:
    """Train every arm x task x variant x seed of a study (resumable); write its table, chart and README. Under
    the protocol: each arm at every learning rate, then its seeds at the best on validation; the table gives
    95% intervals and verdicts against the first arm."""
    from ..outputs.study_report import write_study
    from ..runs.folders import default_run_folder
    from ..training.jobs import sharing_cores
    from ..training.presets import load_train_preset
    from ..training.study import load_study, of_tasks, study_command, study_jobs, study_protocol

    plan = of_tasks(load_study(name), csv(tasks))
    device = resolve_device(device)
    out = out or default_run_folder(plan.name, device)
    protocol = study_protocol(plan, _protocol(plan.base_protocol(), lrs, seeds, weight_decays))
    if seeds is not None and not protocol.lrs:
        raise UserError("--seeds are the protocol's: give --lrs too (a study's own seeds are in its YAML)")
    jobs = study_jobs(plan, registry(plugin), device, out, plugin_paths(plugin))
    if executor[0] == "local":
        jobs = [sharing_cores(job, parallel) for job in jobs]
    if dry_run:
        _print_plan(jobs, protocol, load_train_preset(plan.preset))
        return
    flags = (("--tasks", tasks), ("--lrs", lrs), ("--seeds", seeds), ("--weight-decays", weight_decays))
    given = [a for flag, value in flags if value is not None for a in (flag, value)]
    command = study_command(name, out, device, parallel, given)

    def study_report() -> None:
        console.print(write_study(plan, out, command), markup=False, highlight=False)

    if protocol.lrs:
        failed, trained = _train_protocol(protocol, jobs, out, device, executor, parallel, study_report)
    else:
        failed, trained = _train_all(jobs, out, device, executor, parallel, study_report), len(jobs)
    console.print(f"wrote {out / 'README.md'}")
    exit_if_failed(failed, trained)


def _train_all(
    jobs: list[TrainJob], out: Path, device: str, executor: ExecutorChoice, parallel: int, report: Callable[[], None]
) -> int:
    """executors.batch.train_all, ended by Ctrl-C or SIGTERM with the line saying what is kept."""
    from ..executors.batch import train_all

    with interruptible(f"interrupted: finished runs are kept in {out}; rerun the same command to resume"):
        return train_all(jobs, out, device, executor, parallel, console, report)
