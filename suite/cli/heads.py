"""`attnbench heads`: what each head of a run's trained models does, and how much it matters."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import PluginOpt, RunArg, WorkerTimeoutOpt, console, plugin_paths, registry


def heads(
    run: RunArg,
    task: Annotated[str | None, typer.Option(help="Only the runs of this task.")] = None,
    variant: Annotated[str | None, typer.Option(help="Only the runs of this variant.")] = None,
    seed: Annotated[int | None, typer.Option(help="Only the runs of this seed.")] = None,
    mask: Annotated[
        str | None, typer.Option(help="Only print test accuracy with these heads masked, LAYER.HEAD from 1: '1.2,2.4'.")
    ] = None,
    prune_seeds: Annotated[int, typer.Option(min=1, help="Random pruning orders beside the importance order.")] = 5,
    examples: Annotated[int, typer.Option(min=1, help="Validation examples the head statistics read.")] = 256,
    plugin: PluginOpt = None,
    timeout: WorkerTimeoutOpt = 3600,
) -> None:
    """Head importance, pruning curves and per-head statistics of a run's trained models: records in
    heads.jsonl, charts in heads/, a section in the run README."""
    from ..analysis.heads import model_name
    from ..analysis.trained import finished_runs
    from ..executors.local import call_isolated
    from ..outputs.heads_report import record_heads, update_readme
    from ..runs.records import run_lock

    chosen = finished_runs(run, task, variant, seed)
    variants = registry(plugin)
    for r in chosen:
        variants.entry(r["variant"])  # an unknown one is refused before any work
    # Each model runs its variant's code, maybe a plugin's: in a worker of its own, so that a crash, a hang
    # or an exit fails the command in one line.
    jobs = [
        {
            "run": str(run),
            "record": r,
            "plugins": plugin_paths(plugin),
            "prune_seeds": prune_seeds,
            "examples": examples,
            "mask": mask,
        }
        for r in chosen
    ]
    if mask is not None:
        for job in jobs:
            r = job["record"]
            every, masked = call_isolated("attnbench.suite.analysis.heads:mask_job", job, timeout, model_name(r))
            console.print(
                f"{r['task']} / {r['variant']} / seed {r['seed']} ({r['kv_layout'] or 'MHA'}): test accuracy "
                f"{every:.4f} with every head, {masked:.4f} with {mask} masked",
                highlight=False,
            )
        return
    with run_lock(run):
        for job in jobs:
            name = model_name(job["record"])
            console.print(f"analysing {name}: importance, {prune_seeds} random pruning orders, statistics")
            record = call_isolated("attnbench.suite.analysis.heads:head_job", job, timeout, name)
            record_heads(run, record)
            half = record["half"]
            console.print(
                f"  {half['heads_masked']} least important heads masked: test accuracy {half['full']:.4f} -> "
                f"{half['importance']:.4f}; a random {half['heads_masked']}: {half['random_mean']:.4f} "
                f"(mean of {prune_seeds}, {half['random_min']:.4f}-{half['random_max']:.4f})",
                highlight=False,
            )
        readme = update_readme(run)
    console.print(f"wrote {run / 'heads.jsonl'}, charts in {run / 'heads'}, linked from {readme}")
