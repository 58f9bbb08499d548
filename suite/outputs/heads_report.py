"""`attnbench heads` outputs: the importance grid, pruning curves and head statistics charts of one
trained model, its table, and the section of the run README that links them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.heads import CLASSES, STATS
from ..runs.heads_records import read_heads, write_heads_record
from .plots import save_figure

HEADS_DIR = "heads"
SECTION_START, SECTION_END = "<!-- attnbench heads -->", "<!-- /attnbench heads -->"
CLASS_COLORS = dict(zip(CLASSES, ("tab:purple", "tab:green", "tab:orange", "tab:gray"), strict=True))


def _title(r: dict[str, Any]) -> str:
    return (
        f"{r['task']} / {r['variant']} / seed {r['seed']} ({r['kv_layout']}, {r['layers']} layers x {r['heads']} heads)"
    )


def importance_figure(r: dict[str, Any]) -> plt.Figure:
    """Layer x head grid of normalised importance, each cell labelled."""
    scores = np.array(r["importance"])
    fig, ax = plt.subplots(figsize=(2.4 + 0.7 * r["heads"], 1.6 + 0.6 * r["layers"]))
    image = ax.imshow(scores, cmap="viridis", vmin=0, vmax=max(1.0, scores.max()), aspect="auto")
    for (layer, head), value in np.ndenumerate(scores):
        ax.text(
            head,
            layer,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value < 0.6 * scores.max() else "black",
        )
    ax.set_xticks(range(r["heads"]), [str(h + 1) for h in range(r["heads"])])
    ax.set_yticks(range(r["layers"]), [str(layer + 1) for layer in range(r["layers"])])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, label="importance (per-layer L2-normalised)")
    ax.set_title(f"{_title(r)}\nhead importance E|dL/d gate| on validation", fontsize=9)
    return fig


def pruning_figure(r: dict[str, Any]) -> plt.Figure:
    """Test accuracy against heads masked: by importance (least first) and random orders (mean, range)."""
    curves = r["pruning"]
    total = len(curves["importance"]) - 1
    xs = np.arange(total + 1)
    randoms = np.array(list(curves["random"].values())) * 100
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, 100 * np.array(curves["importance"]), "o-", color="tab:blue", label="least important first")
    ax.plot(xs, randoms.mean(0), "s--", color="tab:red", label=f"random order (mean of {len(randoms)} seeds)")
    ax.fill_between(xs, randoms.min(0), randoms.max(0), color="tab:red", alpha=0.15, label="random: min-max")
    half = r["half"]
    ax.axvline(half["heads_masked"], color="k", linestyle=":", linewidth=1)
    ax.annotate(
        f"half masked: {100 * half['importance']:.1f}% vs random {100 * half['random_mean']:.1f}%",
        (half["heads_masked"], 100 * half["importance"]),
        textcoords="offset points",
        xytext=(6, 8),
        fontsize=8,
    )
    ax.set_xlabel(f"heads masked (of {total})")
    ax.set_ylabel("test accuracy %")
    ax.set_xticks(xs)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{_title(r)}\npruning curve", fontsize=9)
    return fig


def statistics_figure(r: dict[str, Any]) -> plt.Figure:
    """One panel per statistic, a bar per head coloured by its class."""
    labels = [f"{layer + 1}.{head + 1}" for layer in range(r["layers"]) for head in range(r["heads"])]
    classes = [c for row in r["classes"] for c in row]
    colors = [CLASS_COLORS[c.split(" ")[0]] for c in classes]
    names = {
        "entropy": "entropy / log(keys seen)",
        "distance": "mean distance / uniform's",
        "previous": "mass on previous token",
        "first": "mass on first token",
        "self": "mass on itself",
    }
    fig, axes = plt.subplots(1, len(STATS), figsize=(max(12, 0.35 * len(labels) * len(STATS)), 3.8), sharex=True)
    for ax, stat in zip(axes, STATS, strict=True):
        values = [s[stat] for row in r["stats"] for s in row]
        ax.bar(range(len(labels)), values, color=colors)
        ax.set_title(names[stat], fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_xlabel("layer.head")
    handles = [plt.Rectangle((0, 0), 1, 1, color=CLASS_COLORS[c]) for c in CLASSES]
    share = ", ".join(f"{c} {100 * r['shares'][c]:.0f}%" for c in CLASSES)
    fig.legend(handles, CLASSES, loc="upper right", fontsize=8, ncol=4)
    fig.suptitle(
        f"{_title(r)}: per-head statistics on {r['stats_examples']} validation examples ({share})",
        fontsize=9,
        x=0.01,
        ha="left",
    )
    return fig


def head_table(r: dict[str, Any]) -> pd.DataFrame:
    """One row per head: importance, its place in the pruning order, statistics, class."""
    order = r["pruning"]["order"]
    rows = []
    for layer in range(r["layers"]):
        for head in range(r["heads"]):
            name = f"{layer + 1}.{head + 1}"
            row = {
                "head": name,
                "importance": round(r["importance"][layer][head], 3),
                "pruned at": order.index(name) + 1,
            }
            if r["stats"] is not None:
                row |= {s: round(r["stats"][layer][head][s], 3) for s in STATS} | {"class": r["classes"][layer][head]}
            rows.append(row)
    return pd.DataFrame(rows)


def record_heads(run_dir: Path, r: dict[str, Any]) -> list[Path]:
    """One analysed model's record into RUN/heads.jsonl (replacing the model's earlier one) and its three
    charts (PNG and SVG) into RUN/heads/; returns the charts."""
    write_heads_record(run_dir, r)
    out = run_dir / HEADS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stem = r["name"]
    paths = save_figure(importance_figure(r), out, f"{stem}-importance")
    paths += save_figure(pruning_figure(r), out, f"{stem}-pruning")
    if r["stats"] is not None:
        paths += save_figure(statistics_figure(r), out, f"{stem}-statistics")
    return paths


def heads_section(run_dir: Path, records: list[dict[str, Any]]) -> str:
    """The run README's section: per analysed model, the half-pruning result, class shares, charts, table."""
    parts = [
        SECTION_START,
        "## Heads (`attnbench heads`)\n",
        "Importance: Michel et al. (2019), E|dL/d gate| over the validation split, L2-normalised per layer. "
        "Pruning: test accuracy with heads masked least important first, against random orders. Head "
        "classes and their thresholds: [docs/heads.md](../../docs/heads.md).\n",
    ]
    for r in records:
        half = r["half"]
        k = half["heads_masked"]
        parts += [
            f"### {_title(r)}\n",
            f"Command: `{r['command']}`\n",
            f"Masking the least important {k} heads: test accuracy {100 * half['full']:.1f}% -> "
            f"{100 * half['importance']:.1f}%; a random {k}: {100 * half['random_mean']:.1f}% (mean of "
            f"{r['pruning_seeds']} seeds, {100 * half['random_min']:.1f}-"
            f"{100 * half['random_max']:.1f}%).\n",
        ]
        if r["shares"]:
            parts.append("Head classes: " + ", ".join(f"{c} {100 * r['shares'][c]:.0f}%" for c in CLASSES) + ".\n")
        else:
            parts.append(f"No head statistics: {r['stats_missing']}.\n")
        for kind in ("importance", "pruning", "statistics"):
            chart = run_dir / HEADS_DIR / f"{r['name']}-{kind}.png"
            if chart.exists():
                parts.append(f"![{kind}]({chart.relative_to(run_dir)})")
        parts += ["", head_table(r).to_markdown(index=False, disable_numparse=True), ""]
    parts.append(SECTION_END)
    return "\n".join(parts)


def update_readme(run_dir: Path) -> Path:
    """Put the heads section of every model in RUN/heads.jsonl into the run README (replacing an earlier
    one; a README is made if none)."""
    section = heads_section(run_dir, read_heads(run_dir))
    readme = run_dir / "README.md"
    text = readme.read_text() if readme.exists() else f"# attnbench run `{run_dir.name}`\n"
    pattern = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    readme.write_text(text.rstrip("\n") + "\n")
    return readme
