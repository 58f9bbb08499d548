"""`attnbench report`: a run folder's README.md (and accuracy.md for task runs), readable on GitHub as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.records import read_env, read_records, require_run, write_atomic
from ..training.protocol import read_protocol
from .plots import plot_run
from .summary import accuracy_markdown, bench_frame, markdown, train_frame

ENV_ROWS = (
    ("device", "device_name"),
    ("driver", "driver"),
    ("CPU", "cpu"),
    ("threads", "threads"),
    ("CUDA", "cuda"),
    ("python", "python"),
    ("platform", "platform"),
    ("attnbench commit", "commit"),
    ("date", "date"),
    ("command", "command"),
)


def environment_table(env: dict) -> str:
    """The environment as a two-column Markdown table."""
    rows = [(label, env.get(key)) for label, key in ENV_ROWS if env.get(key) is not None]
    if env.get("dirty"):
        rows.append(("working tree", "had uncommitted changes"))
    rows += [(f"{name} version", version) for name, version in env.get("versions", {}).items() if version]
    rows += [
        (f"measured matmul peak, {dtype}", f"{v:.3f} TFLOP/s") for dtype, v in env.get("matmul_tflops", {}).items() if v
    ]
    if env.get("bandwidth_gbs"):
        rows.append(("measured memory bandwidth (copy)", f"{env['bandwidth_gbs']:.1f} GB/s"))
    return pd.DataFrame(rows, columns=["", "value"]).to_markdown(index=False)


def _images(paths: list[Path], run_dir: Path, suffix: str) -> list[str]:
    return [f"![{p.stem}]({p.relative_to(run_dir)})" for p in paths if p.suffix == ".png" and p.stem.endswith(suffix)]


def write_accuracy(run_dir: Path, records: list[dict[str, Any]]) -> str:
    """Write the task run's accuracy table to accuracy.md; returns its Markdown."""
    text = accuracy_markdown(records, protocol=read_protocol(run_dir))
    (run_dir / "accuracy.md").write_text(text)
    return text


def write_summary(run_dir: Path, records: list[dict[str, Any]], baseline: str | None) -> str:
    """Write a bench run's summary tables to summary.md; returns its Markdown."""
    text = markdown(bench_frame(records), baseline)
    write_atomic(run_dir / "summary.md", text)
    return text


def wrong_points(records: list[dict[str, Any]]) -> str | None:
    """A line naming the points whose output is off their definition beyond tolerance, or None."""
    wrong = [r for r in records if r.get("correct") is False]
    if not wrong:
        return None
    names = ", ".join(sorted({r["variant"] for r in wrong}))
    return f"FAILED CORRECTNESS in {len(wrong)} of {len(records)} points ({names})"


def departures_markdown(records: list[dict[str, Any]]) -> str:
    """What each variant of the run declared it does differently from its paper or original code
    (as recorded with its source); empty when none declared any."""
    declared: dict[str, list[str]] = {}
    for r in records:
        lines = (r.get("source") or {}).get("departures") or []
        if r.get("variant") and lines:
            declared.setdefault(r["variant"], lines)
    if not declared:
        return ""
    parts = [
        "## Departures from the sources\n",
        "Declared by each variant (`attnbench list --details`): where it differs from its paper or code.\n",
    ]
    for name in sorted(declared):
        parts += [f"- **{name}**"] + [f"  - {line}" for line in declared[name]]
    return "\n".join(parts) + "\n"


def write_report(run_dir: Path) -> Path:
    """Charts, then README.md, in `run_dir`; returns the README's path."""
    run_dir = require_run(Path(run_dir))
    records, env = read_records(run_dir), read_env(run_dir)
    charts = plot_run(run_dir)
    parts = [f"# attnbench run `{run_dir.name}`\n"]
    if env:
        parts += ["## Environment\n", environment_table(env), ""]
    bench, trained = bench_frame(records), train_frame(records)
    if not bench.empty:
        statuses = bench["status"].value_counts().to_dict()
        parts += [
            "## Speed and memory\n",
            f"{len(bench)} points: " + ", ".join(f"{n} {status}" for status, n in statuses.items()) + ". "
            "Each record in `records.jsonl` carries the command that measures its point alone.\n",
        ]
        for suffix in ("-time", "-memory", "-tflops", "-speedup"):
            parts += _images(charts, run_dir, suffix)
        for prefix in ("roofline-", "ragged-", "heads-"):
            parts += [
                f"![{p.stem}]({p.relative_to(run_dir)})"
                for p in charts
                if p.suffix == ".png" and p.stem.startswith(prefix)
            ]
        parts += ["", markdown(bench, env.get("baseline") or "sdpa")]
        skipped = (env.get("budget") or {}).get("skipped")
        if skipped:
            parts += [f"### skipped by the {env['budget']['minutes']:g}-minute budget (a rerun measures them)\n"]
            parts += [f"- {label}" for label in skipped] + [""]
    if not trained.empty:
        parts += ["## Accuracy on long-range tasks\n"]
        parts += _images(charts, run_dir, "accuracy") + _images(charts, run_dir, "accuracy-protocol")
        parts += _images(charts, run_dir, "accuracy-vs-length")
        parts += _images(charts, run_dir, "memory")
        parts += ["", write_accuracy(run_dir, records)]
    departures = departures_markdown(records)
    if departures:
        parts += [departures]
    heatmaps = sorted((run_dir / "heatmaps").glob("*.png"))
    if heatmaps:
        parts += ["## Attention heatmaps (`attnbench heatmap`)\n"]
        parts += [f"![{p.stem}]({p.relative_to(run_dir)})" for p in heatmaps]
    path = run_dir / "README.md"
    path.write_text("\n".join(parts) + "\n")
    return path
