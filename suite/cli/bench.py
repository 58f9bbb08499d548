"""`attnbench bench` (a sweep, or its plan with --dry-run) and `attnbench gpu-check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..core.config import BenchConfig, load_config, load_preset, parse_variant_options, with_command_line
from ..core.devices import dtype_name, host_preset, parse_dtype, resolve_device
from ..core.errors import UserError
from .common import (
    DeviceOpt,
    ExecutorChoice,
    OptionOpt,
    PluginOpt,
    console,
    csv,
    interruptible,
    plugin_paths,
    registry,
)


def bench(
    preset: Annotated[
        str | None,
        typer.Option(
            help="Shipped config: cpu, gpu, gpt2-small, llama2-7b, ...; auto: gpu where torch sees CUDA, else cpu."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or TOML config file.")] = None,
    variants: Annotated[str | None, typer.Option(help="Comma-separated variant names.")] = None,
    seq: Annotated[str | None, typer.Option(help="Sequence lengths N, e.g. 256,512,1024.")] = None,
    q_len: Annotated[str | None, typer.Option(help="Query lengths (default: equal to N).")] = None,
    batch: Annotated[str | None, typer.Option(help="Batch sizes.")] = None,
    heads: Annotated[str | None, typer.Option(help="Query heads.")] = None,
    kv_heads: Annotated[str | None, typer.Option(help="K/V heads (GQA/MQA; default: equal to heads).")] = None,
    head_dim: Annotated[str | None, typer.Option(help="Head dims D.")] = None,
    width: Annotated[int | None, typer.Option(help="Model width: head dim = width / heads.")] = None,
    dtype: Annotated[str | None, typer.Option(help="dtypes: float32, float16, bfloat16.")] = None,
    causal: Annotated[
        bool | None, typer.Option("--causal/--no-causal", help="Causal mask (default: config's).")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="fwd, bwd, fwd_bwd (comma-separated).")] = None,
    lengths: Annotated[
        str | None,
        typer.Option(
            help="Sequence lengths in a batch: fixed, uniform:LO:HI (fractions of N), list:L1,L2,... "
            "Several separated by ';'."
        ),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(help="padded (B x N, key lengths masked), packed (end to end), or both: padded,packed."),
    ] = None,
    device: DeviceOpt = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up calls before timing.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Timed calls at most.")] = None,
    budget: Annotated[float | None, typer.Option(help="Seconds of timed calls per point at most.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds before a point is killed.")] = None,
    baseline: Annotated[str | None, typer.Option(help="Variant the speedups are against.")] = None,
    option: OptionOpt = None,
    plugin: PluginOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: results/<config>-<device>).")] = None,
    scratch: Annotated[
        bool, typer.Option("--scratch", help="Measure into a new temporary folder (printed); never resume a run.")
    ] = False,
    write_charts: Annotated[
        bool, typer.Option("--report/--no-report", help="Write the charts and README.md at the end.")
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan and measure nothing: the points, which variants run here (and why not), "
            "predicted out-of-memory points and the estimated wall time.",
        ),
    ] = False,
    budget_minutes: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Minutes for the whole sweep: the most informative points run first, the rest are skipped "
            "and listed in env.json (a rerun measures them).",
        ),
    ] = None,
    executor: ExecutorChoice = ("local", {}),
) -> None:
    """Measure time, memory, TFLOP/s and error over a grid; one fresh worker per point; resumable.

    Exits 1 after recording everything if any point's output is off its definition beyond the
    variant's tolerance (marked `correct: false` in its record, the summary and the charts).
    """
    from ..executors import make_executor
    from ..outputs.plan_report import plan_text
    from ..outputs.report import write_report, write_summary, wrong_points
    from ..runs.folders import run_folder
    from ..runs.plan import dry_run as plan_run
    from ..runs.records import run_lock
    from ..runs.sweep import run_bench

    if preset == "auto":
        preset = host_preset()
        console.print(f"device detected: running the {preset} preset")
    if preset and config:
        raise UserError("give --preset or --config, not both")
    if scratch and out:
        raise UserError("give --out or --scratch, not both")
    base: BenchConfig | None = load_preset(preset) if preset else load_config(config) if config else None
    grid = {
        "variants": csv(variants),
        "seq": csv(seq, int),
        "q_len": csv(q_len, int),
        "batch": csv(batch, int),
        "heads": csv(heads, int),
        "kv_heads": csv(kv_heads, int),
        "head_dim": csv(head_dim, int),
        "width": width,
        "dtype": [dtype_name(parse_dtype(d)) for d in csv(dtype)] if dtype else None,
        "causal": None if causal is None else [causal],
        "mode": csv(mode),
        "lengths": lengths.split(";") if lengths is not None else None,
        "layout": csv(layout),
    }
    settings = {
        "warmup": warmup,
        "repeats": repeats,
        "budget_s": budget,
        "timeout_s": timeout,
        "threads": threads,
        "baseline": baseline,
    }
    source = preset or (config.name if config else "command line")
    cfg = with_command_line(base, grid, settings, parse_variant_options(option), source)

    variant_registry = registry(plugin)
    variant_registry.check_config(cfg)
    plugins = plugin_paths(plugin)
    budget_s = budget_minutes * 60 if budget_minutes else None
    if dry_run:
        planned, target, recorded = plan_run(cfg, variant_registry, device or cfg.device, plugins, out)
        console.print(f"dry run of {cfg.name}: nothing is measured", highlight=False)
        console.print(plan_text(planned, target, recorded, budget_s), markup=False, highlight=False)
        return
    device = resolve_device(None if cfg.device == "auto" and device is None else device or cfg.device)
    run_dir = run_folder(out, scratch, cfg.name, device)
    message = f"interrupted: finished points are kept in {run_dir}; rerun the same command to resume"
    with interruptible(message), run_lock(run_dir):
        records = run_bench(
            cfg, variant_registry, device, plugins, run_dir, make_executor(executor, run_dir), console, budget_s
        )
        if not records:
            console.print(f"no point was measured (see {run_dir}/env.json); nothing to summarise")
            return
        console.print(write_summary(run_dir, records, cfg.baseline), markup=False, highlight=False)
        if write_charts and not scratch:
            console.print(f"charts and report: {write_report(run_dir)}")
    wrong = wrong_points(records)
    if wrong:
        console.print(f"{wrong}: see {run_dir}/summary.md")
        raise typer.Exit(1)


def gpu_check(
    budget_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Minutes for the preset's sweep (most informative points first).")
    ] = None,
) -> None:
    """The gpu-marked tests, then the `gpu` preset, into results/gpu-<device>/ (the tests' report beside the
    run); exit 1 if either fails. `make gpu-check` runs it after setting up the GPU kernels."""
    from ..runs.folders import default_run_folder

    if host_preset() != "gpu":
        raise UserError("no GPU visible: torch sees no CUDA device and nvidia-smi lists none; run it on a CUDA machine")
    run_dir = default_run_folder("gpu", "cuda")
    run_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"gpu-marked tests -> {run_dir}/gpu-tests.xml")
    report = f"--junitxml={run_dir / 'gpu-tests.xml'}"
    tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", report])
    try:
        bench(preset="gpu", out=run_dir, budget_minutes=budget_minutes)
        bench_failed = False
    except typer.Exit as exit_:
        bench_failed = exit_.exit_code != 0
    if tests.returncode != 0 or bench_failed:
        console.print(f"gpu-check: tests exit {tests.returncode}, bench {'failed' if bench_failed else 'ok'}")
        raise typer.Exit(1)
