"""Accuracy over seeds: a mean with its 95% interval, and a verdict against a baseline variant.

The verdict compares two variants' test accuracies over their seeds by the 95% interval of the
difference in means, with a least effect `delta`, the smallest difference in points that matters. Where
both were trained with the same seeds, the runs are paired by seed (a seed fixes the data order and the
initial weights, so a variant and the baseline see the same draw) and the interval is the paired t's over
the per-seed differences; otherwise it is Welch's (independent runs, unequal spreads).

- `same`: the interval lies within +-delta (equivalent: two one-sided tests, each at 2.5%);
- `better` / `worse`: the interval excludes 0, and the difference in means is at least delta;
- `inconclusive`: anything else (too few seeds, or too much spread, to say either).

With no spread on either side (every seed scored alike, as a deterministic tie), the interval is the
difference itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from scipy import stats

from ..training.protocol import run_settings

LEVEL = 0.95
VERDICTS = ("same", "better", "worse", "inconclusive")


@dataclass(frozen=True)
class Interval:
    """A mean (or a difference of means) with the bounds of its interval at LEVEL; NaN bounds under 2 seeds."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 1) -> str:
        """'61.2 [55.0, 67.4]', or the mean alone where there is no interval."""
        if math.isnan(self.low):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of `values` with its Student-t interval at `level` (NaN bounds for fewer than 2 values)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sem = stats.sem(values)
    if sem == 0:
        return Interval(mean, mean, mean, n)
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n)


def difference_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL, paired: bool = False) -> Interval:
    """mean(a) - mean(b) with its interval at `level`: the paired t's over a[i] - b[i] where `paired`, else
    Welch's (NaN bounds with fewer than 2 values a side)."""
    if paired:
        if len(a) != len(b):
            raise ValueError("paired samples differ in length")
        return mean_interval([x - y for x, y in zip(a, b, strict=True)], level)
    diff = sum(a) / len(a) - sum(b) / len(b)
    n = min(len(a), len(b))
    if n < 2:
        return Interval(diff, math.nan, math.nan, n)
    va, vb = stats.tvar(a) / len(a), stats.tvar(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, n)
    # Welch-Satterthwaite degrees of freedom; one side without spread leaves the other's n - 1.
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf((1 + level) / 2, df) * se
    return Interval(diff, diff - half, diff + half, n)


def verdict(
    variant: Sequence[float], baseline: Sequence[float], least_effect: float, level: float = LEVEL, paired: bool = False
) -> str:
    """`variant` against `baseline` (accuracies over seeds, in the unit of `least_effect`; seed by seed where
    `paired`): same, better, worse or inconclusive (the module's rules)."""
    diff = difference_interval(variant, baseline, level, paired)
    if math.isnan(diff.low):
        return "inconclusive"
    if -least_effect <= diff.low and diff.high <= least_effect:
        return "same"
    if diff.low > 0 and diff.mean >= least_effect:
        return "better"
    if diff.high < 0 and diff.mean <= -least_effect:
        return "worse"
    return "inconclusive"


def sweep_edge(lr: float, lrs: Sequence[float]) -> str | None:
    """'largest' or 'smallest' where the chosen rate `lr` is at that edge of a sweep of several rates (the best
    may lie beyond it), else None."""
    if len(lrs) < 2:
        return None
    return "largest" if lr == max(lrs) else "smallest" if lr == min(lrs) else None


def chosen_text(lr: float, lrs: Sequence[float], wd: float | None = None) -> str:
    """'0.003', or '0.01 (largest swept)' where the chosen rate is at an edge of the sweep; ', wd 0.1' after it
    where the protocol swept weight decays."""
    edge = sweep_edge(lr, lrs)
    decay = "" if wd is None or pd.isna(wd) else f", wd {wd:g}"
    return f"{lr:g}" + (f" ({edge} swept)" if edge else "") + decay


def point_text(key: str) -> str:
    """A sweep point's key in protocol.json ('0.001', '0.001/0.1') as a table shows it ('0.001', '0.001 wd 0.1')."""
    lr, _, wd = key.partition("/")
    return f"{float(lr):g}" + (f" wd {float(wd):g}" if wd else "")


def final_runs(
    records: list[dict[str, Any]], protocol: dict[str, Any]
) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The protocol's final runs per (task, setting label, variant): its seeds at the chosen learning rate, with a
    result."""
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for choice in protocol["choices"]:
        if choice["chosen_lr"] is None:
            continue
        settings = run_settings(protocol["train"], choice["setting"], choice["chosen_lr"], choice.get("chosen_wd"))
        runs[choice["task"], choice["label"], choice["variant"]] = [
            r
            for r in records
            if r.get("kind") == "train"
            and r.get("status") == "ok"
            and (r["task"], r["variant"]) == (choice["task"], choice["variant"])
            and r["seed"] in protocol["seeds"]
            and r.get("settings") == settings
        ]
    return runs


def protocol_table(records: list[dict[str, Any]], protocol: dict[str, Any]) -> pd.DataFrame:
    """Per task, setting and variant under the protocol, in the order of the choices: the chosen learning rate,
    the seeds, test accuracy (%) with its 95% interval, the difference to the baseline (the baseline variant at
    the same setting, or the baseline setting at the same variant) with its interval, and the verdict."""
    runs = final_runs(records, protocol)
    delta, against = protocol["least_effect"], protocol.get("baseline_setting", "")
    rows = []
    for choice in protocol["choices"]:
        task, label, variant = choice["task"], choice["label"], choice["variant"]
        found = runs.get((task, label, variant))
        if found is None:
            continue
        accs = {r["seed"]: 100 * r["test_acc"] for r in found}
        row = {
            "task": task,
            "setting": label,
            "variant": variant,
            "lr": choice["chosen_lr"],
            "wd": choice.get("chosen_wd"),
            "seeds": len(accs),
        }
        if accs:
            acc = mean_interval(list(accs.values()))
            row |= {"test_acc": acc.mean, "low": acc.low, "high": acc.high}
        baseline = (task, against, variant) if against else (task, label, protocol["baseline"])
        base = {r["seed"]: 100 * r["test_acc"] for r in runs.get(baseline, [])}
        if accs and base and (task, label, variant) != baseline:
            paired = accs.keys() == base.keys()
            a, b = ([accs[s] for s in sorted(accs)], [base[s] for s in sorted(base)])
            diff = difference_interval(a, b, paired=paired)
            row |= {"diff": diff.mean, "diff_low": diff.low, "diff_high": diff.high, "paired": paired}
            row["verdict"] = verdict(a, b, delta, paired=paired)
        rows.append(row)
    return pd.DataFrame(rows)
