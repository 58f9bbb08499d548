"""The `attnbench` command line. Each command is a thin layer over a suite module."""

from __future__ import annotations

import json
import shutil
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON results.")] = False,
) -> None:
    """Run the conformance checks; exit 1 if any check fails."""
    from attnbench.suite.conformance import Checker

    registry = _registry(plugin)
    device = resolve_device(device)
    dtypes = [parse_dtype(d) for d in (dtype or ["float32"])]
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
            for result in Checker(registry.get(name), device, dt, seed).results():
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
        console.print(
            ", ".join(f"{n} {word}" for word, n in zip(SUMMARY_WORDS, counts.values(), strict=True))
        )
    if counts["fail"]:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors end in one line on stderr and exit code 2."""
    try:
        app(args=argv)
    except UserError as err:
        print(f"attnbench: error: {err}", file=sys.stderr)
        sys.exit(2)
