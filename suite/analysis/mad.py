"""The MAD score (Poli et al. 2024): per task, the mean over its settings of the test score at each setting's
chosen point (MAD takes each setting's best run of its grid; here the point best on validation, its seeds'
mean), and per variant the mean over MAD's six tasks, beside the published scores (mad_published.yaml).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .accuracy import protocol_table

PUBLISHED = Path(__file__).with_name("mad_published.yaml")
COLUMNS = {
    "mad-compression": "Compress",
    "mad-fuzzy-in-context-recall": "Fuzzy Recall",
    "mad-in-context-recall": "In-Context Recall",
    "mad-memorization": "Memorize",
    "mad-noisy-in-context-recall": "Noisy Recall",
    "mad-selective-copying": "Selective Copy",
}


@cache
def published() -> dict[str, Any]:
    """The published tables: their sources, what differs from attnbench's run, and their rows."""
    return yaml.safe_load(PUBLISHED.read_text())


def setting_scores(records: list[dict[str, Any]], protocol: dict[str, Any] | None) -> pd.DataFrame:
    """Per MAD task, setting and variant: the mean test score (%) over seeds at the chosen point (under the
    protocol), else over every finished run of the task (one setting)."""
    if protocol is not None:
        table = protocol_table(records, protocol)
        if table.empty or "test_acc" not in table:
            return pd.DataFrame(columns=["task", "setting", "variant", "score"])
        table = table[table["task"].isin(COLUMNS) & table["test_acc"].notna()]
        return table.rename(columns={"test_acc": "score"})[["task", "setting", "variant", "score"]]
    runs = [r for r in records if r.get("kind") == "train" and r.get("status") == "ok" and r["task"] in COLUMNS]
    frame = pd.DataFrame([{"task": r["task"], "variant": r["variant"], "score": 100 * r["test_acc"]} for r in runs])
    if frame.empty:
        return pd.DataFrame(columns=["task", "setting", "variant", "score"])
    return frame.groupby(["task", "variant"], as_index=False)["score"].mean().assign(setting="")


def mad_table(records: list[dict[str, Any]], protocol: dict[str, Any] | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Variants x the MAD tasks run (their published names): each task's mean over its settings, and the
    average over the six tasks where a variant has all six (else NaN); and the settings per task."""
    scores = setting_scores(records, protocol)
    if scores.empty:
        return pd.DataFrame(), {}
    per_task = scores.groupby(["variant", "task"])["score"].mean().unstack("task")
    average = per_task.reindex(columns=list(COLUMNS)).mean(axis=1, skipna=False)
    table = per_task[[t for t in COLUMNS if t in per_task.columns]].assign(Average=average)
    settings = scores.groupby("task")["setting"].nunique()
    return table.rename(columns=COLUMNS).rename_axis(columns=None), {COLUMNS[t]: n for t, n in settings.items()}


def mad_markdown(records: list[dict[str, Any]], protocol: dict[str, Any] | None) -> str:
    """accuracy.md's MAD section: the run's scores, then each published table's rows of the same variants
    (and its others), with what differs; empty when the run has no MAD task."""
    table, settings = mad_table(records, protocol)
    if table.empty:
        return ""
    counts = ", ".join(f"{task} {n}" for task, n in settings.items())
    parts = [
        "### MAD score (%): each task's mean over its settings, the average over the six tasks\n",
        "MAD's macro accuracy on the scored positions; each setting's score is the mean test score of its seeds at "
        "the point best on validation (MAD: each setting's best run of its grid, on test). Settings per task: "
        f"{counts}. The average needs all six tasks.\n",
        table.round(1).astype(object).where(table.notna(), "-").reset_index().to_markdown(index=False),
        "",
    ]
    data = published()
    names = [COLUMNS[t] for t in data["tasks"]]
    ours = set(table.index)
    for source in data["sources"]:
        rows = []
        for name, row in source["rows"].items():
            scores = dict(zip(names, row["scores"], strict=True))
            mark = f" (= {row['variant']})" if row.get("variant") in ours else ""
            rows.append({"published": name + mark, **scores, "Average": sum(row["scores"]) / len(row["scores"])})
        parts += [
            f"Published, {source['name']} ({source['cite']}). What differs: {source['differs']}\n",
            pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"),
            "",
        ]
    return "\n".join(parts) + "\n"
