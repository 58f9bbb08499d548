"""The site's tables across runs (pandas): each variant at a run's reference shapes, accuracy per
task, and one variant and shape on every run that measured it."""

from __future__ import annotations

import pandas as pd

from ..outputs.summary import SERIES, bench_frame, fit_exponent, series_title
from .figures import labelled_runs
from .runs import Run

# A shape, without the device: what two runs must share to be compared point for point.
SHAPE = [c for c in SERIES if c != "device"] + ["seq"]


def _reference_n(group: pd.DataFrame, baseline: str | None) -> int:
    """The largest N the baseline measured (else the largest N any variant measured) in a series."""
    ok = group[group["status"] == "ok"]
    base = ok[ok["variant"] == baseline] if baseline else ok.iloc[0:0]
    pool = base if not base.empty else (ok if not ok.empty else group)
    return int(pool["seq"].max())


def variant_table(runs: list[Run]) -> pd.DataFrame:
    """Per run, series and variant at the series' reference N: time, TFLOP/s, fraction of the measured
    peak, the memory growth exponent over the series, and the error against float64."""
    rows = []
    for run in runs:
        df = bench_frame(run.records)
        if df.empty:
            continue
        for key, group in df.groupby(SERIES, sort=True, dropna=False):
            group = group.drop_duplicates(["variant", "seq"], keep="last")
            n = _reference_n(group, run.env.get("baseline"))
            for variant, points in group.groupby("variant", sort=False):
                ok = points[points["status"] == "ok"]
                at = points[points["seq"] == n]
                if at.empty:
                    continue
                point = at.iloc[-1]
                measured = point["status"] == "ok"
                rows.append(
                    {
                        "run": run.name,
                        "device": run.device,
                        "series": series_title(key),
                        "N": n,
                        "variant": variant,
                        "status": point["status"],
                        "time (ms)": point["time_ms"] if measured else None,
                        "TFLOP/s": point["tflops"] if measured else None,
                        "% of peak": 100 * point["peak_fraction"] if measured else None,
                        "memory exponent": round(fit_exponent(ok["seq"], ok["peak_bytes"]), 2),
                        "error vs float64": point["error"] if measured else None,
                    }
                )
    return pd.DataFrame(rows)


def accuracy_rows(runs: list[Run]) -> pd.DataFrame:
    """Test accuracy (%) per run, task and variant (with a study's --set overrides, or under the protocol its
    setting): mean over seeds of the finished runs (under the protocol, its final runs)."""
    rows = [
        {"run": run.name, "device": run.device, "task": r["task"], "variant": label, "acc": 100 * r["test_acc"]}
        for run in runs
        for r, label in labelled_runs(run)
    ]
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby(["run", "device", "task", "variant"], sort=True)["acc"]
    return table.agg(["mean", "count"]).rename(columns={"mean": "test accuracy (%)", "count": "seeds"}).reset_index()


def cross_run(runs: list[Run]) -> pd.DataFrame:
    """One variant at one shape on every run that measured it: a row per (variant, shape), a time column
    per run (ms; the status where it failed). Only shapes measured by two runs or more."""
    frames = []
    for run in runs:
        df = bench_frame(run.records)
        if not df.empty:
            frames.append(df.assign(run=run.name))
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df["shape"] = [
        series_title(("*", *key[: len(SERIES) - 1])).removeprefix("* ") + f" N={key[-1]}"
        for key in df[SHAPE].itertuples(index=False, name=None)
    ]
    df = df.drop_duplicates(["run", "variant", "shape"], keep="last")
    df["cell"] = [f"{t:.4g}" if s == "ok" else s for t, s in zip(df["time_ms"], df["status"], strict=True)]
    shared = df.groupby(["variant", "shape"])["run"].transform("nunique") >= 2
    if not shared.any():
        return pd.DataFrame()
    return df[shared].pivot(index=["variant", "shape"], columns="run", values="cell").fillna("").reset_index()
