"""The site's HTML pages: plain templates, every link relative, every script and style shipped.

A chart is a `<div class="chart">` filled by its own data script (data/<id>.js, which calls
`attnbench.chart(id, figure)`), so a page works from file:// (no fetch, which file:// refuses) and a
missing data file is a script that fails to load: a console error, and a chart with no traces.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..outputs.summary import (
    accuracy_table,
    bench_frame,
    points_table,
    protocol_caption,
    protocol_frame,
    series_tables,
    train_frame,
)
from ..training.protocol import read_protocol
from .figures import arm_label
from .runs import Run

# Shown side by side on a run page: correctness travels with speed.
PAIR = ("time (ms)", "error vs float64 definition")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(df: pd.DataFrame, caption: str = "", index: bool = False) -> str:
    """A sortable table (a click on a header sorts by that column; numbers sort as numbers)."""
    if df.empty:
        return ""
    df = df.reset_index() if index else df
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(_number(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False, name=None)
    )
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<table class="sortable">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def page(title: str, root: str, body: str, scripts: Iterable[str] = ()) -> str:
    """A whole page; `root` is the relative way back to the site's top ('' or '../')."""
    tail = "".join(f'<script src="{esc(s)}"></script>' for s in scripts)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} - attnbench</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="stylesheet" href="{root}assets/site.css">'
        f'<script src="{root}assets/plotly.min.js"></script><script src="{root}assets/site.js"></script></head>'
        f'<body><nav><a href="{root}index.html">runs</a><a href="{root}cross.html">across runs</a></nav>'
        f"<main><h1>{esc(title)}</h1>{body}</main>{tail}</body></html>"
    )


def chart_div(chart_id: str, title: str) -> str:
    """A chart and, under it, the line that holds the hovered point's command (to copy)."""
    return (
        f'<figure><div class="chart" id="{esc(chart_id)}" data-title="{esc(title)}"></div>'
        '<pre class="hovered">hover a point: the command that re-measures it appears here</pre></figure>'
    )


def runs_table(runs: list[Run]) -> str:
    """The index's list of runs: device, date, commit, and how many points ended how."""
    rows = []
    for run in runs:
        failed = run.count("oom", "error", "timeout")
        rows.append(
            f'<tr><td><a href="runs/{esc(run.slug)}.html">{esc(run.name)}</a></td><td>{esc(run.device)}</td>'
            f"<td>{esc(run.date)}</td><td><code>{esc(run.commit)}</code></td><td>{esc(', '.join(run.kinds))}</td>"
            f"<td>{run.count('ok')}</td><td>{failed}</td>"
            f"<td>{len(run.records) - run.count('ok') - failed}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("run", "device", "date", "commit", "kind", "ok", "failed", "other"))
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def environment(env: dict[str, Any]) -> str:
    """env.json as a two-column table, nested values flattened to `a.b`."""
    flat: dict[str, Any] = {}
    for key, value in sorted(env.items()):
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in sorted(value.items()) if v is not None})
        elif value is not None:
            flat[key] = value
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_number(v))}</td></tr>" for k, v in flat.items())
    return f'<table class="env">{rows}</table>'


def failures(run: Run) -> str:
    """The points that did not measure, with their reasons and the command that retries each."""
    rows = [
        {
            "variant": r.get("variant"),
            "N": r.get("seq", r.get("task")),
            "status": r.get("status"),
            "reason": r.get("reason", ""),
            "command": r.get("command", ""),
        }
        for r in run.records
        if r.get("status") not in ("ok",)
    ]
    if not rows:
        return "<p>Every point measured.</p>"
    return table(pd.DataFrame(rows))


def bench_tables(run: Run) -> str:
    """Per series: time beside the error against float64, then memory, TFLOP/s, speedup and growth."""
    df = bench_frame(run.records)
    if df.empty:
        return ""
    parts = []
    series = series_tables(df, run.env.get("baseline"))
    if not series:  # a single shape, or a sweep over heads: every point as a row
        return table(points_table(df), "every measured point")
    for title, tables in series:
        side = [f"<div>{table(tables[name], name, index=True)}</div>" for name in PAIR if name in tables]
        rest = "".join(table(t, name, index=True) for name, t in tables.items() if name not in PAIR)
        parts.append(
            f"<section><h3>{esc(title)}</h3><div class='pair'>{''.join(side)}</div>"
            f"<details><summary>memory, TFLOP/s, speedup, growth</summary>{rest}</details></section>"
        )
    return "".join(parts)


def train_tables(run: Run) -> str:
    """Test accuracy per task and variant, a study's arms apart (the variant with its --set overrides); under
    the protocol, its intervals and verdicts."""
    df = train_frame(run.records)
    if df.empty or (df["status"] == "ok").sum() == 0:
        return ""
    protocol = read_protocol(run.path)
    if protocol is not None:
        return table(protocol_frame(run.records, protocol), protocol_caption(protocol))
    df = df.assign(variant=[arm_label(r) for r in df.to_dict("records")])
    caption = "test accuracy (%), mean and std over seeds; majority: the majority-class baseline"
    return table(accuracy_table(df), caption, index=True)


def files_list(files: list[str]) -> str:
    """Links to the run's static charts and README, copied beside its page."""
    if not files:
        return ""
    items = "".join(f'<li><a href="{esc(f)}">{esc(f.split("/", 2)[-1])}</a></li>' for f in files)
    return f"<ul class='files'>{items}</ul>"
