"""The `attnbench` command line. Each command is a thin layer over a suite module."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from attnbench.suite.devices import dtype_name, parse_dtype, resolve_device
from attnbench.suite.errors import UserError
from attnbench.suite.registry import Registry, load_registry

app = typer.Typer(
    help="attnbench: attention variants on one harness (speed, memory, correctness, accuracy).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Wide enough for the tables when output is piped (rich would fall back to 80 columns).
console = Console(width=max(shutil.get_terminal_size((150, 24)).columns, 100))

PluginOpt = Annotated[
    list[Path] | None,
    typer.Option("--plugin", help="Python file defining extra variants (repeatable)."),
]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present).")]


SUMMARY_WORDS = ("passed", "failed", "skipped", "reported")


def _registry(plugins: list[Path] | None) -> Registry:
    return load_registry(plugins or [])


@app.command("list")
def list_variants(
    plugin: PluginOpt = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the variants: family, exactness, support, and whether each runs here (or why not)."""
    registry = _registry(plugin)
    device = resolve_device(device)
    rows = []
    for name in registry.names():
        reason = registry.unavailable_reason(name, device)
        row = {
            "name": name,
            "origin": registry.entry(name).origin,
            "available": reason is None,
            "reason": reason,
        }
        if reason is None or not reason.startswith("variant "):  # its class loaded
            info = registry.get(name).info
            row |= {
                "family": info.family,
                "exact": info.exact,
                "causal": info.causal,
                "non_causal": info.non_causal,
                "gqa": "native" if info.gqa_native else ("expanded" if info.gqa else "no"),
                "backward": [d for d in info.devices if info.has_backward(d)],
                "devices": list(info.devices),
                "dtypes": [dtype_name(d) for d in info.dtypes],
                "summary": info.summary,
            }
        rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"attnbench variants (availability on {device})")
    for col in ("name", "family", "exact", "causal", "gqa", "devices"):
        table.add_column(col, no_wrap=True)
    table.add_column(f"on {device}", overflow="fold")
    for r in rows:
        causal = "yes" if r.get("causal") and r.get("non_causal") else ("only" if r.get("causal") else "no")
        table.add_row(
            r["name"],
            r.get("family", "?"),
            "yes" if r.get("exact") else "no",
            causal if "causal" in r else "?",
            r.get("gqa", "?"),
            ",".join(r.get("devices", [])),
            "[green]available[/]" if r["available"] else f"[yellow]unavailable:[/] {r['reason']}",
        )
    console.print(table)


@app.command()
def check(
    names: Annotated[
        list[str] | None, typer.Argument(help="Variants to check (default: the --plugin ones, else all).")
    ] = None,
    plugin: PluginOpt = None,
    device: DeviceOpt = None,
    dtype: Annotated[
        list[str] | None, typer.Option(help="dtype(s) to check: float32, float16, bfloat16, float64.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    option: Annotated[list[str] | None, typer.Option(help="Variant option VARIANT.KEY=VALUE (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON results.")] = False,
) -> None:
    """Run the conformance checks; exit 1 if any check fails."""
    from attnbench.suite.conformance import Checker

    registry = _registry(plugin)
    device = resolve_device(device)
    dtypes = [parse_dtype(d) for d in (dtype or ["float32"])]
    options = _options(option)
    # With --plugin and no names, the plugin's own variants are the ones to check.
    names = names or registry.plugin_file_names() or registry.names()
    for name in names:
        registry.entry(name)  # unknown names fail before any work
    counts = dict.fromkeys(("pass", "fail", "skip", "report"), 0)
    records = []
    styles = {"pass": "green", "fail": "bold red", "skip": "yellow", "report": "cyan"}
    for name in names:
        for dt in dtypes:
            header = f"{name} · {device} · {dtype_name(dt)}"
            reason = registry.unavailable_reason(name, device, dt)
            if reason is not None:
                counts["skip"] += 1
                records.append(
                    {
                        "variant": name,
                        "dtype": dtype_name(dt),
                        "check": "available",
                        "status": "skip",
                        "detail": reason,
                    }
                )
                if not as_json:
                    console.print(f"[bold]{header}[/]  [yellow]skip[/] unavailable: {reason}")
                continue
            if not as_json:
                console.print(f"[bold]{header}[/]")
            cls = registry.get(name)
            try:
                cls.parse_options(options.get(name, {}))
            except ValueError as err:
                raise UserError(str(err)) from None
            for result in Checker(cls, device, dt, seed, options.get(name)).results():
                counts[result.status] += 1
                records.append({"variant": name, "dtype": dtype_name(dt), **result.__dict__})
                if not as_json:
                    label = result.status.upper() if result.status == "fail" else result.status
                    console.print(
                        f"  [{styles[result.status]}]{label:<6}[/] {result.check:<18} {result.detail}",
                        highlight=False,
                    )
    if as_json:
        print(json.dumps(records, indent=2))
    else:
        console.print(", ".join(f"{n} {word}" for word, n in zip(SUMMARY_WORDS, counts.values(), strict=True)))
    if counts["fail"]:
        raise typer.Exit(1)


def _csv(text: str | None, cast=str) -> list | None:
    """'256,512' -> [256, 512]; None stays None."""
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def _options(pairs: list[str] | None) -> dict[str, dict]:
    """['chunked.block_size=64'] -> {'chunked': {'block_size': 64}} (values read as YAML scalars)."""
    import yaml

    options: dict[str, dict] = {}
    for pair in pairs or []:
        target, sep, value = pair.partition("=")
        variant, dot, key = target.partition(".")
        if not (sep and dot and variant and key):
            raise UserError(f"--option {pair!r}: expected VARIANT.KEY=VALUE, e.g. chunked.block_size=64")
        options.setdefault(variant, {})[key] = yaml.safe_load(value)
    return options


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _device_slug(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    return "-".join(torch.cuda.get_device_name(0).lower().replace("nvidia", "").split()) or "cuda"


@app.command()
def bench(
    preset: Annotated[str | None, typer.Option(help="Shipped config: cpu, gpu, gpt2-small, llama2-7b, ...")] = None,
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
    device: DeviceOpt = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up calls before timing.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Timed calls at most.")] = None,
    budget: Annotated[float | None, typer.Option(help="Seconds of timed calls per point at most.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds before a point is killed.")] = None,
    baseline: Annotated[str | None, typer.Option(help="Variant the speedups are against.")] = None,
    option: Annotated[list[str] | None, typer.Option(help="Variant option VARIANT.KEY=VALUE (repeatable).")] = None,
    plugin: PluginOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: results/<config>-<device>).")] = None,
) -> None:
    """Measure time, memory, TFLOP/s and error over a grid; one fresh worker per point; resumable."""
    from attnbench.suite.config import BenchConfig, load_config, load_preset, validate
    from attnbench.suite.executor import LocalExecutor
    from attnbench.suite.points import expand
    from attnbench.suite.records import require_run
    from attnbench.suite.summary import bench_frame, markdown
    from attnbench.suite.sweep import run_sweep

    if preset and config:
        raise UserError("give --preset or --config, not both")
    base: BenchConfig | None = load_preset(preset) if preset else load_config(config) if config else None
    grid = {
        "variants": _csv(variants), "seq": _csv(seq, int), "q_len": _csv(q_len, int), "batch": _csv(batch, int),
        "heads": _csv(heads, int), "kv_heads": _csv(kv_heads, int), "head_dim": _csv(head_dim, int),
        "width": width, "dtype": [dtype_name(parse_dtype(d)) for d in _csv(dtype)] if dtype else None,
        "causal": None if causal is None else [causal], "mode": _csv(mode),
    }  # fmt: skip
    grid = {k: v for k, v in grid.items() if v is not None}
    if "width" in grid:
        grid["head_dim"] = None
    elif "head_dim" in grid:
        grid["width"] = None
    settings = {"warmup": warmup, "repeats": repeats, "budget_s": budget, "timeout_s": timeout,
                "threads": threads, "baseline": baseline}  # fmt: skip
    settings = {k: v for k, v in settings.items() if v is not None}
    if base is None:
        if "variants" not in grid or "seq" not in grid:
            raise UserError("give --preset, --config, or at least --variants and --seq")
        data: dict = {"sweeps": [grid]}
    else:
        data = base.model_dump()
        data["sweeps"] = [sweep | grid for sweep in data["sweeps"]]
    data |= settings
    data["options"] = data.get("options", {}) | _options(option)
    cfg = validate(data, preset or (config.name if config else "command line"))

    registry = _registry(plugin)
    for name in {v for sweep in cfg.sweeps for v in sweep.variants}:
        registry.entry(name)
    for name, values in cfg.options.items():
        try:
            registry.get(name).parse_options(values)
        except ValueError as err:
            raise UserError(str(err)) from None
    device = resolve_device(None if cfg.device == "auto" and device is None else device or cfg.device)
    run_dir = out or Path("results") / f"{cfg.name}-{_device_slug(device)}"
    plugins = tuple(str(Path(p).resolve()) for p in plugin or [])
    points = expand(cfg, device, plugins)
    console.print(f"{len(points)} points -> {run_dir}")
    # A polite kill stops like Ctrl-C: the running worker is killed, finished points are kept.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        records = run_sweep(points, run_dir, LocalExecutor(), console, device, cfg.threads)
    except KeyboardInterrupt:
        console.print(f"interrupted: finished points are kept in {run_dir}; rerun the same command to resume")
        raise typer.Exit(130) from None
    text = markdown(bench_frame(records), cfg.baseline)
    (require_run(run_dir) / "summary.md").write_text(text)
    console.print(text, markup=False, highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors end in one line on stderr and exit code 2."""
    try:
        app(args=argv)
    except UserError as err:
        print(f"attnbench: error: {err}", file=sys.stderr)
        sys.exit(2)
