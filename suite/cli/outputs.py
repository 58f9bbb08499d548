"""`attnbench plot`, `report`, `rerun`, `compare` and `heatmap`: what is made from recorded runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.config import parse_variant_options
from ..core.errors import UserError
from .common import (
    DataDirOpt,
    OptionOpt,
    PluginOpt,
    RunArg,
    SetOpt,
    TaskOpt,
    TrainPresetOpt,
    WorkerTimeoutOpt,
    console,
    interruptible,
    plugin_paths,
    registry,
)


def plot(
    run: RunArg,
    baseline: Annotated[str | None, typer.Option(help="Variant the speedup chart is against.")] = None,
) -> None:
    """Draw every chart of a run from its records alone (PNG and SVG, into the run folder)."""
    from ..outputs.plots import plot_run
    from ..runs.records import require_run

    paths = plot_run(require_run(run), baseline)
    console.print(f"{len(paths)} files written to {run}")


def report(runs: Annotated[list[Path], typer.Argument(help="Run folders.")]) -> None:
    """Write README.md (environment, tables, charts) into each run folder."""
    from ..outputs.report import write_report

    for run in runs:
        console.print(f"wrote {write_report(run)}")


def rerun(
    run: RunArg,
    where: Annotated[
        str | None, typer.Option(help="Only points matching FIELD=VALUE pairs, e.g. variant=chunked,seq=4096.")
    ] = None,
) -> None:
    """Re-measure a run's points into a fresh folder; print recorded vs new; exit 1 beyond the run's spread."""
    from ..executors.local import LocalExecutor
    from ..outputs.compare import compare_records
    from ..runs.rerun import machine_note, remeasure, rerun_points

    points, recorded = rerun_points(run, where)
    note = machine_note(run, points)
    if note:
        console.print(note)
    with interruptible("interrupted: nothing was judged; the re-measured points so far are in the scratch folder"):
        _, remeasured = remeasure(run, points, LocalExecutor(), console)
    result = compare_records(recorded, remeasured)
    text, _ = result.report("recorded", "new")
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if result.moved:
        names = ", ".join(sorted({p.label for p in result.moved}))
        console.print(
            f"NOT REPRODUCED: {len(result.moved)} of {len(result.points)} points moved beyond the run's "
            f"spread ({names})"
        )
        raise typer.Exit(1)


def compare(
    run_a: Annotated[Path, typer.Argument(help="Reference run folder.")],
    run_b: Annotated[Path, typer.Argument(help="Run folder to judge against it.")],
    threshold: Annotated[
        float | None,
        typer.Option(help="Least relative change of the median time that counts (by default 10% on CPU, 5% on CUDA)."),
    ] = None,
    memory_threshold: Annotated[
        float, typer.Option(help="Least relative change of peak memory that counts (beyond its spread).")
    ] = 0.10,
    alpha: Annotated[float, typer.Option(help="Significance level of the U test over the repeats.")] = 0.05,
) -> None:
    """A verdict per point of B against A (U test over the repeats, as benchstat); exit 1 if anything regressed."""
    from ..outputs.compare import compare_runs, render

    result = compare_runs(run_a, run_b, threshold, memory_threshold, alpha)
    if not result.points:
        raise UserError(f"no points in common between {run_a} and {run_b}")
    text, code = render(result, str(run_a), str(run_b))
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if code:
        raise typer.Exit(code)


def heatmap(
    task: TaskOpt,
    variant: Annotated[str, typer.Option(help="Attention variant.")],
    preset: TrainPresetOpt = "tiny",
    seed: Annotated[int, typer.Option(help="Seed (of the trained run, or of a fresh model).")] = 0,
    run: Annotated[Path | None, typer.Option(help="Run folder of a trained model (`attnbench train`).")] = None,
    example: Annotated[int, typer.Option(help="Index of the test example shown.")] = 0,
    data_dir: DataDirOpt = None,
    option: OptionOpt = None,
    setting: SetOpt = None,
    plugin: PluginOpt = None,
    out: Annotated[Path, typer.Option(help="PNG file to write (an SVG is written beside it).")] = Path("heatmap.png"),
    timeout: WorkerTimeoutOpt = 1200,
) -> None:
    """Draw the attention weights of every head, per layer, for one input."""
    from ..executors.local import call_isolated
    from ..training.presets import load_setup, parse_settings, preset_reference

    options = parse_variant_options(option)
    settings = parse_settings(setting)  # a run trained with --set is found by the same overrides
    load_setup(preset, options, task, settings)  # a bad preset, task or setting is refused here, in one line
    registry(plugin).entry(variant)
    job = {
        "task": task,
        "variant": variant,
        "preset": preset_reference(preset),
        "settings": settings,
        "seed": seed,
        "run": str(run) if run else None,
        "example": example,
        "data_dir": str(data_dir) if data_dir else None,
        "options": options,
        "plugins": plugin_paths(plugin),
        "out": str(out),
    }
    # The model runs the variant's code, maybe a plugin's: in a worker, so a crash or a hang is one line.
    drawn = call_isolated("attnbench.suite.outputs.heatmap:heatmap_job", job, timeout, f"heatmap of {variant}")
    console.print(f"wrote {drawn}")
