"""A study's table, chart and README, drawn from its training records alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.accuracy import Interval, chosen_text, final_runs, protocol_table
from ..runs.records import read_env, read_records
from ..training.protocol import read_protocol
from ..training.study import Study, arm_of
from .plots import save_figure
from .report import environment_table
from .summary import protocol_caption

FLOAT32_BYTES = 4


def study_frame(study: Study, records: list[dict[str, Any]], protocol: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per training record of the study (status ok or not), with its arm; under `protocol`, of its
    results only the final runs (the seeds at each chosen learning rate), not the sweep's other rates."""
    final = {id(r) for runs in final_runs(records, protocol).values() for r in runs} if protocol else set()
    seeds = protocol["seeds"] if protocol else study.seeds
    rows = []
    for r in records:
        label = arm_of(study, r, protocol) if r.get("kind") == "train" else None
        if protocol and r.get("status") == "ok" and id(r) not in final:
            continue
        if label is not None and r.get("variant") in study.variants and (r.get("seed") in seeds or protocol):
            rows.append(r | {"arm": label})
    return pd.DataFrame(rows)


def study_table(
    study: Study, df: pd.DataFrame, task: str, verdicts: pd.DataFrame | None = None, lrs: list[float] | None = None
) -> pd.DataFrame:
    """Per arm (and variant): shape, cache size, accuracy over seeds, speed, and the step time against the same
    variant's first arm, from the finished runs of `task`; under the protocol (`verdicts`, its table), accuracy
    with its 95% interval and the verdict against the baseline arm instead of the range (`lrs`: its sweep)."""
    ok = df[(df["task"] == task) & (df["status"] == "ok")]
    rows = []
    first: dict[str, float] = {}  # per variant: the step time of its first arm
    for arm in study.arms:
        for variant in study.variants:
            runs = ok[(ok["arm"] == arm.label) & (ok["variant"] == variant)]
            if runs.empty:
                continue
            model = runs["model"].iloc[0]
            heads = model["heads"]
            width = model.get("qkv_dim") or model["dim"]
            step_s = float((1 / runs["steps_per_s"]).mean())
            first.setdefault(variant, step_s)
            acc = 100 * runs["test_acc"]
            last = [c[-1] for c in runs["curve"] if c]
            rows.append(
                {
                    "arm": arm.label,
                    **({"variant": variant} if len(study.variants) > 1 else {}),
                    "heads x dim": f"{heads} x {width // heads}",
                    "K/V": runs["kv_layout"].iloc[0],
                    "parameters": int(runs["parameters"].iloc[0]),
                    "KV cache B/token": int(runs["kv_cache_values_per_token"].iloc[0]) * FLOAT32_BYTES,
                    **(
                        _verdict_cells(verdicts, lrs or [], task, arm.label, variant)
                        if verdicts is not None
                        else {"test acc %": round(acc.mean(), 2), "min-max %": f"{acc.min():.1f}-{acc.max():.1f}"}
                    ),
                    "seeds": len(runs),
                    "steps": int(runs["steps"].mean()),
                    "steps/s": round(runs["steps_per_s"].mean(), 2),
                    "tokens/s": int(runs["tokens_per_s"].mean()),
                    "step time vs first": f"{step_s / first[variant]:.3f}",
                    "final loss": round(float(np.mean([c["loss"] for c in last])), 4) if last else None,
                    "grad norm (last)": round(float(np.mean([c.get("grad_norm", np.nan) for c in last])), 3)
                    if last
                    else None,
                }
            )
    return pd.DataFrame(rows)


def _verdict_cells(verdicts: pd.DataFrame, lrs: list[float], task: str, arm: str, variant: str) -> dict[str, Any]:
    """The protocol's cells of one arm: its learning rate, accuracy and difference with their intervals, verdict."""
    match = verdicts[(verdicts["task"] == task) & (verdicts["setting"] == arm) & (verdicts["variant"] == variant)]
    if match.empty:
        return {}
    row = match.iloc[0]
    diff = "-"
    if not pd.isna(row.get("diff", float("nan"))):
        diff = Interval(row["diff"], row["diff_low"], row["diff_high"], row["seeds"]).text()
    return {
        "lr chosen": chosen_text(row["lr"], lrs, row.get("wd")),
        "test acc [95% CI]": Interval(row["test_acc"], row["low"], row["high"], row["seeds"]).text(),
        "vs first arm [95% CI]": diff,
        "verdict": row["verdict"] if isinstance(row.get("verdict"), str) else "-",
    }


def _arm_colors(study: Study) -> dict[str, Any]:
    cmap = plt.get_cmap("viridis")
    n = len(study.arms)
    return {arm.label: cmap(i / max(n - 1, 1) * 0.9) for i, arm in enumerate(study.arms)}


def study_figure(study: Study, df: pd.DataFrame, device: str, seeds: list[int]) -> plt.Figure:
    """Row 1: test accuracy (each seed, and the mean), tokens/s and KV-cache bytes per token by arm.
    One row per task below: the training loss, the gradient norm and the validation accuracy over steps."""
    ok = df[df["status"] == "ok"]
    tasks = [t for t in study.tasks if t in set(ok["task"])]
    labels, colors = [a.label for a in study.arms], _arm_colors(study)
    fig, axes = plt.subplots(1 + len(tasks), 3, figsize=(15, 4 * (1 + len(tasks))), squeeze=False)
    xs = np.arange(len(labels))
    for t, task in enumerate(tasks):
        rows = ok[ok["task"] == task]
        marker = "os^D"[t % 4]
        means = [100 * rows[rows["arm"] == a]["test_acc"].mean() for a in labels]
        axes[0][0].plot(xs, means, marker=marker, label=f"{task} (mean)")
        for i, a in enumerate(labels):
            accs = 100 * rows[rows["arm"] == a]["test_acc"]
            axes[0][0].scatter([i] * len(accs), accs, color="k", s=10, alpha=0.5, zorder=3)
        speed = [rows[rows["arm"] == a]["tokens_per_s"].mean() for a in labels]
        axes[0][1].plot(xs, speed, marker=marker, label=task)
        cache = [rows[rows["arm"] == a]["kv_cache_values_per_token"].mean() * FLOAT32_BYTES for a in labels]
        axes[0][2].bar(xs + (t - (len(tasks) - 1) / 2) * 0.8 / len(tasks), cache, 0.8 / len(tasks), label=task)
        for arm in labels:
            for _, run in rows[rows["arm"] == arm].iterrows():
                curve = pd.DataFrame(run["curve"])
                style = {
                    "color": colors[arm],
                    "alpha": 0.9 if run["seed"] == seeds[0] else 0.45,
                    "linestyle": "-" if run["seed"] == seeds[0] else "--",
                }
                label = arm if run["seed"] == seeds[0] else None
                axes[t + 1][0].plot(curve["step"], curve["loss"], label=label, **style)
                if "grad_norm" in curve:
                    axes[t + 1][1].plot(curve["step"], curve["grad_norm"], **style)
                axes[t + 1][2].plot(curve["step"], 100 * curve["val_acc"], **style)
        for ax, what in zip(
            axes[t + 1], ("training loss", "gradient norm (before clipping)", "validation accuracy %"), strict=True
        ):
            ax.set_title(f"{task}: {what}", fontsize=9)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
        axes[t + 1][1].set_yscale("log")
        axes[t + 1][0].legend(fontsize=7)
    for ax, what in zip(
        axes[0],
        ("test accuracy % (dots: seeds)", "training tokens/s", "KV-cache bytes per token (float32, all layers)"),
        strict=True,
    ):
        ax.set_xticks(xs, labels, rotation=20, fontsize=8)
        ax.set_title(what, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    variants = ", ".join(study.variants)
    fig.suptitle(f"{device}: study {study.name} ({variants}, seeds {', '.join(map(str, seeds))})", fontsize=10)
    fig.tight_layout()
    return fig


def _arms_table(study: Study) -> str:
    """Each arm's overrides of the preset, as Markdown."""
    rows = []
    for arm in study.arms:
        sections = (("model", arm.model), ("train", study.train | arm.train))
        rows.append(
            {"arm": arm.label, "overrides": ", ".join(f"{s}.{k}={v}" for s, vs in sections for k, v in vs.items())}
        )
    return pd.DataFrame(rows).to_markdown(index=False)


def write_study(study: Study, run_dir: Path, command: str) -> str:
    """Write the study's tables (study.md), chart and README.md into the run folder; returns the tables."""
    records = read_records(run_dir)
    env = read_env(run_dir)
    protocol = read_protocol(run_dir)
    df = study_frame(study, records, protocol)
    if df.empty:
        return "No finished runs of this study yet.\n"
    device = env.get("device_name") or str(df["device"].iloc[0])
    verdicts = protocol_table(records, protocol) if protocol else None
    parts = [protocol_caption(protocol) + "\n"] if protocol else []
    for task in study.tasks:
        table = study_table(study, df, task, verdicts, protocol["lrs"] if protocol else None)
        if not table.empty:
            parts += [f"### {task}\n", table.to_markdown(index=False), ""]
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        columns = ["task", "arm", "variant", "seed", "status", "reason"]
        parts += ["### runs without a result\n", failed[columns].to_markdown(index=False), ""]
    tables = "\n".join(parts)
    (run_dir / "study.md").write_text(tables)
    seeds = protocol["seeds"] if protocol else study.seeds
    fig = study_figure(study, df, device, seeds)
    chart = save_figure(fig, run_dir, f"study-{study.name}")[0]
    readme = [
        f"# Study `{study.name}`\n",
        study.description.strip() + "\n",
        *([f"Claim tested: {study.claim.strip()}\n"] if study.claim else []),
        f"Remake it (resumes this folder; each run's own `attnbench train` command is in records.jsonl):\n\n"
        f"```\n{command}\n```\n",
        f"Preset `{study.preset}`; tasks {', '.join(study.tasks)}; variants {', '.join(study.variants)}; "
        f"seeds {', '.join(map(str, seeds))}"
        + (
            f" (under the protocol, at the best of learning rates {', '.join(f'{lr:g}' for lr in protocol['lrs'])})"
            if protocol
            else ""
        )
        + ". Arms (`--set` overrides of the preset):\n",
        _arms_table(study),
        "",
        *([f"- {note}" for note in study.notes] + [""] if study.notes else []),
        "## Results\n",
        "Step time vs first: mean seconds per training step against the same variant's first arm (1.37 would "
        "be the seed article's +37%). KV-cache bytes: what an inference cache keeps per token over all layers "
        "in float32 (K and V per K/V head, or the MLA latent).\n",
        tables,
        f"![study chart]({chart.name})\n",
        "## Environment\n",
        environment_table(env),
        "",
    ]
    (run_dir / "README.md").write_text("\n".join(readme))
    return tables
