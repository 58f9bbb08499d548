"""`attnbench list` and `attnbench check`: the variants, and their conformance checks."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ..core.config import parse_variant_options
from ..core.devices import dtype_name, parse_dtype, resolve_device
from ..core.errors import UserError
from ..core.registry import Registry
from .common import DeviceOpt, OptionOpt, PluginOpt, console, interruptible, plugin_paths, registry

STYLES = {"pass": "green", "fail": "bold red", "skip": "yellow", "report": "cyan"}


def list_variants(
    plugin: PluginOpt = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    details: Annotated[
        bool, typer.Option("--details", help="Also print each variant's definition, paper, source and departures.")
    ] = False,
) -> None:
    """List the variants: family, exactness, support, and whether each runs here (or why not)."""
    variants = registry(plugin)
    device = resolve_device(device)
    rows = [variants.describe(name, device) for name in variants.names()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"attnbench variants (availability on {device})")
    for col in ("name", "family", "exact", "causal", "gqa", "ragged", "devices"):
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
            "+".join(form for form, key in (("padded", "lengths"), ("packed", "packed")) if r.get(key)) or "no",
            ",".join(r.get("devices", [])),
            "[green]available[/]" if r["available"] else f"[yellow]unavailable:[/] {r['reason']}",
        )
    console.print(table)
    if details:
        for r in rows:
            _print_details(r)


def _print_details(row: dict[str, Any]) -> None:
    """One variant's definition, paper, original source and declared departures from them."""
    console.print(f"\n[bold]{row['name']}[/]  {row.get('summary', '')}", highlight=False)
    for label in ("definition", "paper", "source"):
        console.print(f"  {label + ':':<12}{row.get(label) or '-'}", highlight=False, soft_wrap=True)
    departures = row.get("departures") or []
    console.print(f"  {'departures:':<12}{'none declared' if not departures else ''}", highlight=False)
    for line in departures:
        console.print(f"    - {line}", highlight=False, soft_wrap=True)


def check(
    names: Annotated[
        list[str] | None, typer.Argument(help="Variants to check (default: the --plugin ones, else all).")
    ] = None,
    plugin: PluginOpt = None,
    device: DeviceOpt = None,
    dtype: Annotated[
        list[str] | None,
        typer.Option(help="dtype(s) to check: float32, float16, bfloat16, float64 (default: each variant's own)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    option: OptionOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON results.")] = False,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds for one variant's checks in one dtype before its worker is killed.")
    ] = 1200.0,
) -> None:
    """Run the conformance checks; exit 1 if any check fails.

    Each variant and dtype runs in a worker of its own: a variant that crashes, hangs or exits its worker
    fails the check it was running."""
    from ..checks.checker import CheckResult
    from ..checks.runner import Tally, check_job, check_plan
    from ..executors.local import LocalExecutor

    variants = registry(plugin)
    device = resolve_device(device)
    asked = [parse_dtype(d) for d in dtype or []]
    options = parse_variant_options(option)
    # With --plugin and no names, the plugin's own variants are the ones to check.
    names = names or variants.plugin_file_names() or variants.names()
    for name in names:
        variants.entry(name)  # unknown names fail before any work
    variants.check_options(options)
    tally = Tally()
    printed = set()
    plugins = plugin_paths(plugin)
    executor = LocalExecutor()  # each variant and dtype in a worker: its code may crash, hang or exit
    with interruptible("interrupted: the checks above were made, the rest were not"):
        for name, dt, reason in check_plan(variants, names, device, asked):
            if not as_json and name not in printed:
                _print_departures(variants, name)
                printed.add(name)
            header = f"{name} · {device} · {dtype_name(dt)}"
            if reason is not None:
                tally.add(name, dt, CheckResult("available", "skip", reason))
                if not as_json:
                    console.print(f"[bold]{header}[/]  [yellow]skip[/] unavailable: {reason}")
                continue
            if not as_json:
                console.print(f"[bold]{header}[/]")
            for found in executor.check(check_job(name, dt, device, seed, options.get(name, {}), plugins), timeout):
                result = CheckResult(**found)
                tally.add(name, dt, result)
                if not as_json:
                    label = result.status.upper() if result.status == "fail" else result.status
                    console.print(
                        f"  [{STYLES[result.status]}]{label:<6}[/] {result.check:<18} {result.detail}", highlight=False
                    )
    if as_json:
        print(json.dumps(tally.records, indent=2))
    else:
        console.print(tally.summary())
    if tally.counts["fail"]:
        raise typer.Exit(1)


def _print_departures(variants: Registry, name: str) -> None:
    """The variant's declared departures from its sources, before its checks (nothing when it declares none)."""
    try:
        info = variants.get(name).info
    except UserError:  # cannot load: its checks report why
        return
    for line in info.departures:
        console.print(
            f"[dim]{name} departs from {info.source or info.paper or 'its source'}:[/] {line}",
            highlight=False,
            soft_wrap=True,
        )
