"""Charts rebuilt from a run's records alone (matplotlib, headless): PNG and SVG.

Bench runs, per series (device, dtype, mode, mask, shape): time and peak memory against N on
log-log axes with O(N) and O(N^2) guide slopes and each variant's fitted exponent in the legend,
points that failed (oom, timeout, ...) marked where the line stops; TFLOP/s against N with the
device's measured matmul peak; speedup against the baseline; a roofline per dtype (every point's
TFLOP/s against its arithmetic intensity, under the measured matmul peak and memory bandwidth).
Heads sweeps: time by head count at a fixed width. Task runs: accuracy per task and variant with
the spread over seeds, and the Long Range Arena chart (speed relative to exact attention,
accuracy, memory as bubble area); trained at several lengths, accuracy against N with its interval
beside the time and memory of the same runs; under the protocol, intervals and verdicts.
Every chart gives a variant the same colour (styles.py), and its title names device, dtype and shape.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker

from ..analysis.accuracy import final_runs, protocol_table
from ..core.errors import UserError
from ..measure.roofline import ridge_intensity
from ..runs.records import read_env, read_records
from ..training.protocol import read_protocol
from .styles import line_style, variant_color
from .summary import (
    FIT_POINTS,
    RAGGED,
    SERIES,
    accuracy_table,
    bench_frame,
    fit_exponent,
    heads_groups,
    length_frame,
    lengths_vary,
    ragged_title,
    series_title,
    train_frame,
)

FAILED_STYLE = {"marker": "x", "s": 60, "linewidths": 2, "zorder": 5}
WRONG_STYLE = {"marker": "o", "s": 140, "facecolors": "none", "edgecolors": "red", "linewidths": 2, "zorder": 6}


def _is_exact(rows: pd.DataFrame) -> bool:
    return bool(rows["exact"].fillna(True).iloc[0]) if "exact" in rows else True


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """`fig` as NAME.png and NAME.svg in `out_dir` (one line naming the file when the disk refuses it)."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.tight_layout()
    try:
        fig.savefig(paths[0], dpi=130)
        # No date and fixed element ids: the same records give the same file, so a re-plot leaves git clean.
        with matplotlib.rc_context({"svg.hashsalt": "attnbench"}):
            fig.savefig(paths[1], metadata={"Date": None})
    except OSError as err:
        raise UserError(f"{out_dir / name}.png/.svg: cannot write the chart ({err.strerror or err})") from None
    finally:
        plt.close(fig)
    return paths


def _outside_legend(ax, title: str | None = None) -> None:
    """Legend to the right of the axes: with a dozen variants, one inside would hide lines."""
    ax.legend(fontsize=8, title=title, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def _guides(ax, ns: np.ndarray, anchor: float) -> None:
    """Dashed O(N) and O(N^2) lines through `anchor` at the smallest N."""
    n0 = ns.min()
    for power, label in ((1, "O(N)"), (2, "O(N²)")):
        ax.plot(ns, anchor * (ns / n0) ** power, ls="--", lw=1, color="0.6" if power == 1 else "0.35", label=label)


def _growth_chart(group: pd.DataFrame, column: str, scale: float, ylabel: str, title: str) -> plt.Figure:
    """Log-log y against N, a line per variant, failures marked where the line stops."""
    fig, ax = plt.subplots(figsize=(9.5, 5))
    ok = group[(group["status"] == "ok") & group[column].notna()]
    for index, (variant, rows) in enumerate(group.groupby("variant", sort=False)):
        good = ok[ok["variant"] == variant].sort_values("seq")
        failed = rows[rows["status"] != "ok"].sort_values("seq")
        style = line_style(variant, _is_exact(rows))
        color = style["color"]
        slope = fit_exponent(good["seq"], good[column])
        label = variant + (f" (N^{slope:.2f})" if not np.isnan(slope) else "")
        if not failed.empty:
            label += "; " + ", ".join(f"{st} at N={n}" for st, n in failed.groupby("status")["seq"].min().items())
        wrong = good[good["correct"] == False]  # noqa: E712 - None (not judged) is not wrong
        if not wrong.empty:
            label += f"; WRONG at N={','.join(str(n) for n in wrong['seq'])}"
        if not good.empty:
            ax.plot(good["seq"], good[column] / scale, label=label, **style)
        if not wrong.empty:  # a fast wrong answer is no answer: ringed in red where it is drawn
            ax.scatter(wrong["seq"], wrong[column] / scale, **WRONG_STYLE)
            for n, y in zip(wrong["seq"], wrong[column] / scale, strict=True):
                ax.annotate("WRONG", (n, y), textcoords="offset points", xytext=(6, -10), fontsize=7, color="red")
        if not failed.empty:
            # Where the line stops: at the last measured height (the axis bottom if nothing was measured),
            # joined to it by a dotted line; a label per variant, offset so that labels do not collide.
            y = good[column].iloc[-1] / scale if not good.empty else ok[column].min() / scale
            if not good.empty:
                ax.plot([good["seq"].iloc[-1], failed["seq"].iloc[-1]], [y, y], ls=":", color=color)
            ax.scatter(
                failed["seq"], [y] * len(failed), color=color, label=None if not good.empty else label, **FAILED_STYLE
            )
            for n, status in zip(failed["seq"], failed["status"], strict=True):
                ax.annotate(
                    status, (n, y), textcoords="offset points", xytext=(5, 4 + 9 * index), fontsize=7, color=color
                )
    if not ok.empty:
        ns = np.array(sorted(ok["seq"].unique()), dtype=float)
        first = ok[ok["seq"] == ns.min()][column]
        first = first[first > 0]  # a 0-byte peak (nothing allocated) has no place on a log axis
        if not first.empty:
            _guides(ax, ns, float(np.exp(np.log(first / scale).mean())))
    ax.set_xscale("log", base=2)
    if (ok[column] > 0).any():  # all zero (nothing allocated): a linear axis shows it
        ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _outside_legend(ax, title=f"exponent fitted\nover the largest {FIT_POINTS} N")
    return fig


def _tflops_chart(group: pd.DataFrame, peak: float | None, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9.5, 5))
    ok = group[(group["status"] == "ok") & group["tflops"].notna()]
    for variant, rows in ok.groupby("variant", sort=False):
        rows = rows.sort_values("seq")
        ax.plot(rows["seq"], rows["tflops"], label=variant, **line_style(variant, _is_exact(rows)))
    if peak:
        ax.axhline(peak, color="k", ls=":", label=f"measured dense matmul peak ({peak:.2f} TFLOP/s)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("TFLOP/s (one FLOP count for all; sparse: kept pairs)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _outside_legend(ax)
    return fig


def _roofline_chart(rows: pd.DataFrame, peak: float | None, bandwidth_gbs: float | None, title: str) -> plt.Figure:
    """Achieved TFLOP/s against FLOPs per byte, under min(peak, intensity x bandwidth): the roofline."""
    fig, ax = plt.subplots(figsize=(9.5, 5.5))
    markers = {"fwd": "o", "bwd": "s", "fwd_bwd": "^"}
    for (variant, mode), group in rows.groupby(["variant", "mode"], sort=False):
        style = line_style(variant, _is_exact(group))
        ax.scatter(
            group["intensity"],
            group["tflops"],
            color=style["color"],
            marker=markers.get(mode, "o"),
            label=f"{variant} {mode}",
            s=28,
            zorder=3,
        )
    lo, hi = rows["intensity"].min() / 4, rows["intensity"].max() * 4
    if bandwidth_gbs:
        ridge = ridge_intensity(peak, bandwidth_gbs) if peak else None
        if ridge:  # the bend in view: where the bandwidth stops being the limit
            lo, hi = min(lo, ridge / 4), max(hi, ridge * 4)
        x = np.geomspace(lo, hi, 200)
        roof = x * bandwidth_gbs * 1e9 / 1e12
        if peak:
            roof = np.minimum(roof, peak)
        ax.plot(x, roof, color="k", lw=1.5, label=f"roofline: {bandwidth_gbs:.0f} GB/s, {peak or 0:.3g} TFLOP/s")
        if ridge:
            ax.axvline(ridge, color="k", ls=":", lw=1, label=f"ridge: {ridge:.3g} FLOPs/byte")
    elif peak:
        ax.axhline(peak, color="k", ls=":", label=f"measured dense matmul peak ({peak:.2f} TFLOP/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte of q, k, v, output and gradients)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(title + "\n(linear and low-rank variants have no softmax FLOP count: not placed)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _outside_legend(ax, title="marker: o fwd, ^ fwd_bwd, s bwd")
    return fig


def _speedup_chart(group: pd.DataFrame, baseline: str, title: str) -> plt.Figure | None:
    ok = group[group["status"] == "ok"]
    base = ok[ok["variant"] == baseline].set_index("seq")["time_ms"]
    if base.empty:
        return None
    fig, ax = plt.subplots(figsize=(9.5, 5))
    for variant, rows in ok.groupby("variant", sort=False):
        rows = rows.sort_values("seq")
        speed = rows["seq"].map(base) / rows["time_ms"]
        ax.plot(rows["seq"], speed, label=variant, **line_style(variant, _is_exact(rows)))
    ax.axhline(1.0, color="k", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel(f"speedup over {baseline} (> 1: faster)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _outside_legend(ax)
    return fig


def _heads_chart(group: pd.DataFrame, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9.5, 5))
    width = int(group["heads"].iloc[0] * group["head_dim"].iloc[0])
    heads = sorted(group["heads"].unique())
    for variant, rows in group.groupby("variant", sort=False):
        style = line_style(variant, _is_exact(rows))
        rows = rows.set_index("heads").reindex(heads)
        ax.plot(range(len(heads)), rows["time_ms"], label=variant, **style)
    ax.set_xticks(range(len(heads)), [f"{h} x {width // h}" for h in heads])
    ax.set_xlabel(f"heads x head dim (width {width}: same FLOPs)")
    ax.set_ylabel("time per call (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _outside_legend(ax)
    return fig


def _ragged_chart(group: pd.DataFrame, title: str) -> plt.Figure:
    """Time and peak memory against N of one ragged batch, packed (solid) beside padded (dashed)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, column, scale, ylabel in (
        (axes[0], "time_ms", 1.0, "time per call (ms)"),
        (axes[1], "peak_bytes", 2**20, "peak memory (MiB)"),
    ):
        for (variant, layout), rows in group.groupby(["variant", "layout"], sort=False):
            rows = rows[rows[column] > 0].sort_values("seq")
            style = line_style(variant, _is_exact(rows)) | {"ls": "-" if layout == "packed" else "--"}
            ax.plot(rows["seq"], rows[column] / scale, label=f"{variant} {layout}", **style)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("padded length N (sequence lengths drawn per batch)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    waste = group.groupby("seq")["padding_waste"].first()
    axes[0].set_title(
        "padding share of the padded batch's pairs: " + ", ".join(f"N={n}: {w:.0%}" for n, w in waste.items()),
        fontsize=8,
    )
    fig.suptitle(title, fontsize=10)
    _outside_legend(axes[1], title="solid: packed, dashed: padded")
    return fig


def bench_charts(df: pd.DataFrame, env: dict[str, Any], out_dir: Path, baseline: str | None) -> list[Path]:
    """Every bench chart of a run."""
    paths: list[Path] = []
    device = env.get("device_name", "")
    for key, group in df.groupby(SERIES, sort=True, dropna=False):
        group = group.drop_duplicates(["variant", "seq"], keep="last")
        if group["seq"].nunique() < 2 or not (group["status"] == "ok").any():
            continue  # nothing grows in N, or nothing was measured (the summary lists why)
        title = f"{device}\n{series_title(key)}"
        slug = _slug(series_title(key))
        paths += save_figure(_growth_chart(group, "time_ms", 1.0, "time per call (ms)", title), out_dir, f"{slug}-time")
        paths += save_figure(
            _growth_chart(group, "peak_bytes", 2**20, "peak memory (MiB)", title), out_dir, f"{slug}-memory"
        )
        if group["tflops"].notna().any():
            peak = env.get("matmul_tflops", {}).get(dict(zip(SERIES, key, strict=True))["dtype"])
            paths += save_figure(_tflops_chart(group, peak, title), out_dir, f"{slug}-tflops")
        if baseline and (fig := _speedup_chart(group, baseline, title)) is not None:
            paths += save_figure(fig, out_dir, f"{slug}-speedup")
    placed = df[(df["status"] == "ok") & (df["intensity"] > 0) & (df["tflops"] > 0)]
    for (dev, dtype), rows in placed.groupby(["device", "dtype"], sort=True):
        peak = env.get("matmul_tflops", {}).get(dtype)
        title = f"{device}\nroofline, {dev} {dtype}: {len(rows)} points"
        paths += save_figure(
            _roofline_chart(rows, peak, env.get("bandwidth_gbs"), title), out_dir, _slug(f"roofline {dev} {dtype}")
        )
    ragged = df[df["status"] == "ok"]
    for key, group in ragged.groupby(RAGGED, sort=True, dropna=False):
        if set(group["layout"]) == {"padded", "packed"}:
            paths += save_figure(
                _ragged_chart(group, f"{device}\n{ragged_title(key)}"), out_dir, _slug(f"ragged {ragged_title(key)}")
            )
    for title, group in heads_groups(df):
        paths += save_figure(_heads_chart(group, f"{device}\n{title}"), out_dir, _slug(f"heads {title}"))
    return paths


def train_charts(df: pd.DataFrame, env_device: str, out_dir: Path, reference: str = "sdpa") -> list[Path]:
    """Accuracy bars with spread, and the LRA-style speed / accuracy / memory chart."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return []
    paths: list[Path] = []
    table = accuracy_table(df).reset_index()
    tasks, variants = list(dict.fromkeys(table["task"])), list(dict.fromkeys(table["variant"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) * len(variants) / 2), 5))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        rows = table[table["variant"] == variant].set_index("task").reindex(tasks)
        xs = np.arange(len(tasks)) + (i - (len(variants) - 1) / 2) * width
        ax.bar(
            xs, rows["mean"], width, yerr=rows["std"].fillna(0), capsize=3, color=variant_color(variant), label=variant
        )
    for j, task in enumerate(tasks):
        majority = table[table["task"] == task]["majority"].iloc[0]
        ax.hlines(majority, j - 0.45, j + 0.45, colors="k", linestyles=":", label="majority class" if j == 0 else None)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    seeds = int(table["seeds"].max())
    ax.set_title(
        f"{env_device}: accuracy per task, same model and data, attention swapped ({seeds} seeds)", fontsize=10
    )
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    paths += save_figure(fig, out_dir, "accuracy")

    per_variant = ok.groupby("variant", sort=False).agg(
        acc=("test_acc", lambda s: 100 * s.mean()), speed=("steps_per_s", "mean"), memory=("peak_bytes", "mean")
    )
    if reference in per_variant.index:
        # Speed relative to exact attention within each task, then averaged over tasks.
        by_task = ok.groupby(["task", "variant"])["steps_per_s"].mean().unstack("variant")
        relative = by_task.div(by_task[reference], axis=0).mean()
        fig, ax = plt.subplots(figsize=(7, 5))
        area = 2000 * per_variant["memory"] / per_variant["memory"].max()
        for variant in per_variant.index:
            ax.scatter(
                relative[variant],
                per_variant.loc[variant, "acc"],
                s=area[variant],
                alpha=0.6,
                color=variant_color(variant),
                edgecolors="k",
            )
            # Above the bubble (its radius in points is sqrt(area) / 2), readable on any bubble colour.
            ax.annotate(
                f"{variant}\n{per_variant.loc[variant, 'memory'] / 2**20:.0f} MiB",
                (relative[variant], per_variant.loc[variant, "acc"]),
                textcoords="offset points",
                xytext=(0, np.sqrt(area[variant]) / 2 + 3),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xlabel(f"training speed relative to {reference} (steps/s ratio, mean over tasks)")
        ax.set_ylabel("test accuracy (%), mean over tasks and seeds")
        ax.set_title(f"{env_device}: speed, accuracy and memory (bubble area: peak training memory)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.margins(0.25)
        paths += save_figure(fig, out_dir, "lra-speed-accuracy-memory")
    return paths


def protocol_chart(records: list[dict[str, Any]], protocol: dict[str, Any], device: str, out_dir: Path) -> list[Path]:
    """Per task, each variant's mean test accuracy with its 95% interval over seeds under the protocol, and
    its verdict against the baseline."""
    table = protocol_table(records, protocol)
    if table.empty or "test_acc" not in table:
        return []
    table = table.dropna(subset=["test_acc"])
    tasks = list(dict.fromkeys(table["task"]))
    height = max(3.0, 0.45 * table.groupby("task").size().max() + 1.6)
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(7.5, 5.5 * len(tasks)), height), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = table[table["task"] == task].reset_index(drop=True)
        for y, row in rows.iterrows():
            spread = [[row["test_acc"] - row["low"]], [row["high"] - row["test_acc"]]]
            ax.errorbar(
                row["test_acc"], y, xerr=np.nan_to_num(spread), fmt="o", capsize=4, color=variant_color(row["variant"])
            )
        labels = [
            (f"{r['setting']}  " if r.get("setting") else "")
            + f"{r['variant']} ({r['verdict'] if isinstance(r.get('verdict'), str) else 'baseline'})"
            for r in rows.to_dict("records")
        ]
        ax.set_yticks(range(len(rows)), labels)
        ax.invert_yaxis()
        ax.set_title(task)
        ax.set_xlabel("test accuracy (%), mean and 95% interval over seeds")
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(
        f"{device}\naccuracy under the protocol; verdicts against {protocol['baseline']}, least effect "
        f"{protocol['least_effect']:g} points",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, out_dir, "accuracy-protocol")


def length_chart(df: pd.DataFrame, device: str, out_dir: Path) -> list[Path]:
    """Accuracy against sequence length: per task (and model width), a row of three panels against N, a line
    per variant: test accuracy with its 95% interval over seeds, the training step's time, and peak training
    memory, all from the same runs; where no run at an N has a result, its status is marked."""
    table = length_frame(df)
    groups = list(table.groupby(["task", "dim"], sort=False))
    fig, axes = plt.subplots(len(groups), 3, figsize=(15, 4.2 * len(groups)), squeeze=False)
    panels = (
        ("test_acc", "test accuracy (%), mean and 95% interval over seeds"),
        ("step_ms", "training step (ms), median over the runs"),
        ("peak_mib", "peak training memory (MiB), median"),
    )
    for row_axes, ((task, dim), rows) in zip(axes, groups, strict=True):
        for ax, (column, ylabel) in zip(row_axes, panels, strict=True):
            for variant, lines in rows.groupby("variant", sort=False):
                good = lines.dropna(subset=[column]) if column in lines else lines.iloc[:0]
                color = variant_color(variant)
                if column == "test_acc":
                    spread = np.nan_to_num([good[column] - good["low"], good["high"] - good[column]])
                    ax.errorbar(good["N"], good[column], yerr=spread, capsize=3, marker="o", color=color, label=variant)
                else:
                    ax.plot(good["N"], good[column], marker="o", color=color, label=variant)
                failed = lines[lines["seeds"] == 0]
                # At the line's last height; on the accuracy panel at 0 where the variant has no result at all.
                y = float(good[column].iloc[-1]) if not good.empty else 0.0 if column == "test_acc" else None
                if not failed.empty and y is not None:
                    ax.scatter(failed["N"], [y] * len(failed), color=color, **FAILED_STYLE)
                    for n, status in zip(failed["N"], failed["failed"], strict=True):
                        ax.annotate(status, (n, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
            ax.set_xscale("log", base=2)
            ns = sorted(rows["N"].unique())
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            if column == "test_acc":
                ax.set_ylim(-3, 103)  # a t-interval over a few seeds can pass 0 or 100: its bar runs off the axis
            else:
                ax.set_yscale("log")
                # Plain numbers; within a decade or two the minor ticks are labelled too.
                ax.yaxis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
                ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
            ax.set_xlabel("sequence length N")
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(f"{task}, width {dim}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        row_axes[0].legend(fontsize=8)
    fig.suptitle(f"{device}: accuracy against sequence length, with the time and memory of the same runs", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_dir, "accuracy-vs-length")


def plot_run(run_dir: Path, baseline: str | None = None) -> list[Path]:
    """All charts of a run folder, written into it; returns their paths."""
    run_dir = Path(run_dir)
    records, env = read_records(run_dir), read_env(run_dir)
    paths = []
    bench = bench_frame(records)
    if not bench.empty:
        paths += bench_charts(bench, env, run_dir, baseline or env.get("baseline") or "sdpa")
    protocol = read_protocol(run_dir)
    if protocol is not None:
        # The charts show the protocol's final runs, not its sweep at other learning rates.
        final = {id(r) for runs in final_runs(records, protocol).values() for r in runs}
        records = [r for r in records if r.get("kind") != "train" or id(r) in final]
    trained = train_frame(records)
    if not trained.empty:
        device = env.get("device_name") or str(trained["device"].iloc[0])
        # Several lengths of a task: against N; the per-task charts would mix them.
        paths += (
            length_chart(trained, device, run_dir) if lengths_vary(trained) else train_charts(trained, device, run_dir)
        )
        if protocol is not None:
            paths += protocol_chart(records, protocol, device, run_dir)
    return paths
