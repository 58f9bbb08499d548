"""`attnbench compare A B`: per-point ratios between two bench runs, regressions flagged for CI.

Points are matched by what they measure (variant, shape, dtype, mask, mode, device). A point is
a regression when B is slower than A by more than `threshold` and the two runs' p20-p80 ranges do
not overlap (B's p20 above A's p80): a change inside the measured spread is noise, not a finding.
Peak memory regresses when it grows by more than `memory_threshold`. Improvements are reported
the same way. The command exits 1 if anything regressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attnbench.suite.points import IDENTITY
from attnbench.suite.records import read_records, require_run
from attnbench.suite.summary import bench_frame


@dataclass
class Comparison:
    """The matched points and which of them regressed."""

    table: pd.DataFrame
    only_a: int
    only_b: int

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["verdict"].str.contains("regression")]


def _identity(row: pd.Series) -> str:
    return " ".join(f"{f}={row[f]}" for f in IDENTITY if f not in ("options",) and f in row)


def compare_runs(a: Path, b: Path, threshold: float = 0.05, memory_threshold: float = 0.10) -> Comparison:
    """Match the ok points of two runs and judge each."""
    frames = []
    for path in (a, b):
        df = bench_frame(read_records(require_run(path)))
        df = df[df["status"] == "ok"] if not df.empty else df
        frames.append(
            df.assign(point=df.apply(_identity, axis=1)).drop_duplicates("point", keep="last") if not df.empty else df
        )
    if frames[0].empty or frames[1].empty:
        return Comparison(pd.DataFrame(columns=["point", "verdict"]), len(frames[0]), len(frames[1]))
    cols = ["point", "variant", "seq", "time_ms", "time_p20_ms", "time_p80_ms", "peak_bytes"]
    merged = frames[0][cols].merge(frames[1][cols], on=["point", "variant", "seq"], suffixes=("_a", "_b"))
    merged["time_ratio"] = merged["time_ms_b"] / merged["time_ms_a"]
    merged["memory_ratio"] = merged["peak_bytes_b"] / merged["peak_bytes_a"].clip(lower=1)

    def verdict(r: pd.Series) -> str:
        out = []
        if r["time_ratio"] > 1 + threshold and r["time_p20_ms_b"] > r["time_p80_ms_a"]:
            out.append("time regression")
        elif r["time_ratio"] < 1 - threshold and r["time_p80_ms_b"] < r["time_p20_ms_a"]:
            out.append("faster")
        if r["memory_ratio"] > 1 + memory_threshold:
            out.append("memory regression")
        elif r["memory_ratio"] < 1 - memory_threshold:
            out.append("less memory")
        return ", ".join(out) or "same"

    merged["verdict"] = merged.apply(verdict, axis=1)
    only_a = len(set(frames[0]["point"]) - set(merged["point"]))
    only_b = len(set(frames[1]["point"]) - set(merged["point"]))
    return Comparison(merged, only_a, only_b)
