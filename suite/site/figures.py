"""Interactive charts of a run (Plotly figures as plain JSON): every point carries its record.

Hovering a point shows its status, time with its spread, memory, error against float64, the commit
that measured it and the command that re-measures it alone; the legend toggles variants; the axes
are log-log like the static charts. Failed points sit on a row above the lines, marked x, so a
series that stops is seen stopping, with the reason in the hover.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..analysis.accuracy import final_runs
from ..outputs.styles import variant_color
from ..outputs.summary import SERIES, bench_frame, series_title
from ..training.protocol import read_protocol
from .runs import Run

HOVER = (
    "<b>%{fullData.name}</b>  N=%{x}<br>status %{customdata[0]}<br>time %{customdata[1]}<br>"
    "memory %{customdata[2]}<br>error vs float64 %{customdata[3]}<br>commit %{customdata[4]}<br>"
    "<span style='font-family:monospace'>%{customdata[5]}</span><extra></extra>"
)
# A command's hover line breaks every WRAP characters (a hover label cannot wrap); the last element of
# a point's details is the command whole, which the page shows under the chart to copy.
WRAP = 72
# Arm colours in a study (its arms share one variant's colour otherwise): matplotlib's tab10.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
TRAIN_HOVER = (
    "<b>%{fullData.name}</b>  %{x}<br>test accuracy %{y:.2f}%<br>status %{customdata[0]}<br>seed %{customdata[1]}"
    "<br>%{customdata[2]}<br>commit %{customdata[3]}<br><span style='font-family:monospace'>%{customdata[4]}</span>"
    "<extra></extra>"
)


def wrapped(command: str) -> str:
    """The command in lines of about WRAP characters, broken between arguments, for a hover label."""
    lines, line = [], ""
    for word in command.split(" "):
        if line and len(line) + 1 + len(word) > WRAP:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join([*lines, line])


def _hex(name: str) -> str:
    from matplotlib.colors import to_hex

    return to_hex(variant_color(name))


def _commit(record: dict[str, Any], run: Run) -> str:
    code = record.get("code") or {}
    commit = str(code.get("commit") or run.env.get("commit") or "")
    return commit[:7] + (" (dirty)" if code.get("dirty") else "")


def point_details(row: pd.Series, run: Run) -> list[str]:
    """What a bench point's hover shows: status, time (p20-p80), memory, error, commit, the command wrapped;
    then the command whole."""
    ok = row["status"] == "ok"
    time = f"{row['time_ms']:.4g} ms (p20 {row['time_p20_ms']:.4g}, p80 {row['time_p80_ms']:.4g})" if ok else "-"
    memory = "-" if pd.isna(row["peak_bytes"]) else f"{row['peak_bytes'] / 2**20:.1f} MiB"
    if not ok:
        status = f"{row['status']}: {row.get('reason') or 'no reason recorded'}"
    else:
        status = "ok" if row["correct"] is not False else "ok, but beyond tolerance (wrong)"
    error = "-" if pd.isna(row["error"]) else f"{row['error']:.1e}"
    command = str(row.get("command") or "")
    return [status, time, memory, error, _commit(row.to_dict(), run), wrapped(command), command]


def _layout(title: str, ytitle: str, log_x: bool = True) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 14}},
        "xaxis": {"title": {"text": "sequence length N"}, "type": "log" if log_x else "category"},
        "yaxis": {"title": {"text": ytitle}, "type": "log"},
        "hovermode": "closest",
        "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
        "legend": {"itemclick": "toggle", "itemdoubleclick": "toggleothers"},
    }


def growth_figure(group: pd.DataFrame, run: Run, column: str, scale: float, ytitle: str, title: str) -> dict:
    """Log-log `column` against N, a line per variant, failed points marked x above the lines."""
    traces = []
    ok = group[(group["status"] == "ok") & group[column].notna()]
    for variant, rows in ok.groupby("variant", sort=False):
        rows = rows.sort_values("seq")
        trace = {
            "type": "scatter",
            "mode": "lines+markers",
            "name": variant,
            "x": rows["seq"].tolist(),
            "y": (rows[column] / scale).tolist(),
            "line": {"color": _hex(str(rows["variant_name"].iloc[0]))},
            "customdata": [point_details(r, run) for _, r in rows.iterrows()],
            "hovertemplate": HOVER,
        }
        if column == "time_ms":
            trace["error_y"] = {
                "type": "data",
                "symmetric": False,
                "thickness": 1,
                "array": (rows["time_p80_ms"] - rows["time_ms"]).clip(lower=0).fillna(0).tolist(),
                "arrayminus": (rows["time_ms"] - rows["time_p20_ms"]).clip(lower=0).fillna(0).tolist(),
            }
        traces.append(trace)
    failed = group[group["status"] != "ok"]
    if not failed.empty:
        top = (ok[column] / scale).max() if not ok.empty else 1.0
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "not measured (oom, error, ...)",
                "x": failed["seq"].tolist(),
                "y": [top * 2 if math.isfinite(top) else 1.0] * len(failed),
                "marker": {"symbol": "x", "size": 10, "color": "#c0392b"},
                "text": failed["variant"].tolist(),
                "hovertemplate": HOVER.replace("%{fullData.name}", "%{text}"),
                "customdata": [point_details(r, run) for _, r in failed.iterrows()],
            }
        )
    return {"data": traces, "layout": _layout(title, ytitle)}


def bench_figures(run: Run) -> list[tuple[str, dict]]:
    """(title, figure) for each series in N of a bench run: time and peak memory against N."""
    df = bench_frame(run.records)
    if df.empty:
        return []
    out = []
    for key, group in df.groupby(SERIES, sort=True, dropna=False):
        group = group.drop_duplicates(["variant", "seq"], keep="last")
        if group["seq"].nunique() < 2:
            continue
        title = series_title(key)
        out.append((f"time: {title}", growth_figure(group, run, "time_ms", 1.0, "time (ms)", f"time, {title}")))
        if group["peak_bytes"].notna().any():
            out.append(
                (
                    f"memory: {title}",
                    growth_figure(group, run, "peak_bytes", 2**20, "peak memory (MiB)", f"peak memory, {title}"),
                )
            )
    return out


def arm_label(record: dict[str, Any]) -> str:
    """A training run's variant with its --set overrides (a study's arm)."""
    settings = record.get("settings") or {}
    extra = " ".join(f"{s}.{k}={v}" for s, values in sorted(settings.items()) for k, v in sorted(values.items()))
    return f"{record['variant']} {extra}".strip()


def labelled_runs(run: Run) -> list[tuple[dict[str, Any], str]]:
    """A run's finished training records with the label its charts and tables give them: under the protocol
    its final runs only (not the sweep's other learning rates), as 'variant setting'; otherwise every one, as
    the variant with its --set overrides."""
    protocol = read_protocol(run.path)
    if protocol is not None:
        return [
            (r, f"{variant} {label}".strip())
            for (_, label, variant), found in final_runs(run.records, protocol).items()
            for r in found
        ]
    return [(r, arm_label(r)) for r in run.records if r.get("kind") == "train" and r.get("status") == "ok"]


def accuracy_figure(run: Run) -> dict | None:
    """Test accuracy of every finished training run (under the protocol, its final runs), a point per seed,
    grouped by task; None without any."""
    labelled = labelled_runs(run)
    if not labelled:
        return None
    df = pd.DataFrame([r for r, _ in labelled]).assign(arm=[label for _, label in labelled])
    arms = list(dict.fromkeys(df["arm"]))
    # A study's arms share a variant: then each arm takes a colour of its own.
    by_arm = len(arms) > df["variant"].nunique()
    traces = []
    for arm, rows in df.groupby("arm", sort=False):
        color = PALETTE[arms.index(arm) % len(PALETTE)] if by_arm else _hex(str(rows["variant"].iloc[0]))
        details = [
            [
                "ok",
                r["seed"],
                f"{r.get('steps', '?')} steps, {r.get('steps_per_s', float('nan')):.2f} steps/s",
                _commit(r, run),
                wrapped(r.get("command") or ""),
                r.get("command") or "",
            ]
            for r in rows.to_dict("records")
        ]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": arm,
                "x": rows["task"].tolist(),
                "y": (100 * rows["test_acc"]).tolist(),
                "marker": {"size": 9, "color": color},
                "customdata": details,
                "hovertemplate": TRAIN_HOVER,
            }
        )
    layout = _layout("test accuracy per task (a point per seed)", "test accuracy (%)", log_x=False)
    layout["xaxis"]["title"]["text"] = "task"
    layout["yaxis"]["type"] = "linear"
    layout["scattermode"] = "group"  # each arm's seeds side by side within a task
    layout["legend"] |= {"orientation": "h", "y": -0.2, "font": {"size": 10}}  # long arm names under the plot
    layout["height"] = 420 + 18 * len(arms)
    return {"data": traces, "layout": layout}
