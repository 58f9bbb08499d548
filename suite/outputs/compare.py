"""`attnbench compare A B`: a verdict per point between two bench runs, regressions flagged for CI.

Points are matched by their identity (`points.identity_of`: the variant and its options, the shape,
dtype, mask, mode and device, and a ragged batch's lengths and layout), so the two settings of an
option sweep never collapse into one.

Time is judged as Go's benchstat does, over every repeat each run recorded (`times_ms`): a
two-sided Mann-Whitney U test (rank sums; normal approximation with tie and continuity
corrections) and a minimum effect size, the difference of the medians:

- ``~``: the medians moved by `threshold` or less (significant or not): no change;
- ``+12.3%`` / ``-12.3%``: the test rejects "same distribution" at `alpha` and the medians moved
  by more than `threshold`: a time regression (B slower), or B faster;
- ``noisy``: no verdict is possible: the medians moved by more than `threshold` but the test
  cannot tell that from the spread of the repeats; or a side has fewer than `MIN_REPEATS` (4)
  repeats, or too few for the test ever to reach `alpha` (3 against 3 give p >= 0.08 however far
  apart); or a record holds no per-repeat times (made before they were kept: remeasure it; the
  rule used before, B's p20 above A's p80, flagged 3 of 16 points of an unchanged sweep).

Peak memory is judged against its own spread: every measured call's peak (`peak_bytes_samples`)
is recorded, and a change counts when it exceeds `memory_threshold`, the spread of both runs'
samples added, and on CPU `CPU_MEMORY_FLOOR` (the page-granular CPU method moves by up to ~0.3 MiB
between processes at any size). A change beyond the threshold but within the spread is ``noisy``.

The repeats of one point are made within a second or so, while a shared CPU's speed swings over
seconds: on the 2-core CI VM a fixed matmul took 4.2 ms and 7.3 ms in one process 2 s apart, and
two back-to-back runs of an unchanged sweep gave 10 of 16 points "moved" by 35-110%. So where both
records carry the machine probe's time before each call (`machine_ms`, CPU), each call is judged
relative to it (`times_ms[i] / machine_ms[i]`): the ratio, the test and the verdict are of the
calls against the machine's speed at that moment, and the `machine` column shows how far the
machine itself moved (B / A). This cancels the swings that slow a matmul and the variant alike; it
cannot cancel what slows one and not the other (page faults of large fresh buffers), so memory-
bound points stay noisier. Without probes (CUDA, older records) the raw times are judged.

`Comparison.report` gives the table, a summary line and the exit code: 1 if any point regressed
(in time or memory), 0 otherwise; noisy points never fail the comparison and are counted apart.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from ..measure.point import identity_of
from ..runs.records import read_records, require_run
from .summary import variant_label

ALPHA = 0.05
# Fewer repeats a side give no verdict: the U test's normal approximation, and a median, need more.
MIN_REPEATS = 4
# Least change of the median time that counts, by device: a shared CPU's relative times still move by
# up to ~7% between processes (sdpa N=512 against the probe on the CI VM), a GPU's by far less.
TIME_THRESHOLD = {"cpu": 0.10, "cuda": 0.05}
CPU_MEMORY_FLOOR = 2**20  # bytes: CPU peaks of one point move by up to ~0.3 MiB across processes
# Identity fields shown in a point's name when they differ between points (variant and N always
# are shown, and Nq where it is not N).
SHAPE_FIELDS = {
    "batch": "B",
    "heads": "H",
    "kv_heads": "Hkv",
    "head_dim": "D",
    "dtype": "",
    "causal": "causal",
    "mode": "",
    "device": "",
    "lengths": "lengths",
    "layout": "",
}


@dataclass(frozen=True)
class UTest:
    """A two-sided Mann-Whitney U test: the statistic of the first sample and the p-value."""

    u: float
    p: float


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> UTest:
    """Two-sided Mann-Whitney U test of `a` against `b` (scipy.stats.mannwhitneyu), normal approximation with tie
    and continuity corrections: U counts the pairs (x in a, y in b) with x > y, ties counting one half."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("the U test needs at least one value on each side")
    result = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
    p = float(result.pvalue)
    return UTest(float(result.statistic), 1.0 if math.isnan(p) else p)  # every value equal: nothing tells them apart


def least_p(n_a: int, n_b: int) -> float:
    """The smallest p-value `mann_whitney` can give samples of these sizes (all of one above all of the other)."""
    return mann_whitney(range(n_a), range(n_a, n_a + n_b)).p


@dataclass(frozen=True)
class Judgement:
    """One quantity's verdict: the short mark (`~`, `+12.3%`, `noisy`), its kind, and why if noisy."""

    mark: str
    kind: str  # "same", "regression", "better", "noisy"
    why: str = ""


def judge_time(
    a: Sequence[float] | None, b: Sequence[float] | None, threshold: float, alpha: float
) -> tuple[Judgement, float | None]:
    """Verdict on B's per-repeat times against A's, and the test's p-value (None where no test ran)."""
    if not a or not b:
        side = "A" if not a else "B"
        return Judgement("noisy", "noisy", f"{side} has no per-repeat times, an older run: remeasure it"), None
    if min(len(a), len(b)) < MIN_REPEATS or least_p(len(a), len(b)) >= alpha:
        return Judgement("noisy", "noisy", f"{len(a)} vs {len(b)} repeats: too few for a verdict"), None
    delta = statistics.median(b) / statistics.median(a) - 1
    p = mann_whitney(a, b).p
    if abs(delta) <= threshold:
        return Judgement("~", "same"), p
    if p >= alpha:
        return Judgement("noisy", "noisy", f"medians {delta:+.1%} apart, but p = {p:.2f}"), p
    return Judgement(f"{delta:+.1%}", "regression" if delta > 0 else "better"), p


def judge_memory(a: Sequence[int] | None, b: Sequence[int] | None, threshold: float, floor: int) -> Judgement | None:
    """Verdict on B's peak-memory samples against A's (the peak is the least sample); None if either has none."""
    if not a or not b:
        return None
    peak_a, peak_b = min(a), min(b)
    change = peak_b - peak_a
    if abs(change) <= max(threshold * peak_a, floor):
        return Judgement("~", "same")
    spread = (max(a) - peak_a) + (max(b) - peak_b)
    mark = f"{change / max(peak_a, 1):+.1%}"
    if abs(change) <= spread:
        return Judgement("noisy", "noisy", f"memory {mark}, within the samples' spread")
    return Judgement(mark, "regression" if change > 0 else "better")


def relative_times(record: dict[str, Any]) -> list[float] | None:
    """Each call's time over the machine probe's just before it, or None where the record has no probes."""
    times, machine = record.get("times_ms"), record.get("machine_ms")
    if not times or not machine or len(machine) != len(times) or min(machine) <= 0:
        return None
    return [t / m for t, m in zip(times, machine, strict=True)]


def machine_moved(a: dict[str, Any], b: dict[str, Any], time: Judgement, threshold: float) -> Judgement:
    """`time`, or `noisy` where the machine probe moved beyond `threshold` and could explain a change found.

    The relative times cancel a machine's swing only as far as the variant slows with the probe, and
    memory-bound variants do not (naive N=512 on the CI VM: probe 0.49x, naive 1.35x). So when the
    machine itself moved, a change counts only if the raw times moved beyond the machine's own swing.
    """
    if time.kind not in ("regression", "better") or not a.get("machine_ms") or not b.get("machine_ms"):
        return time
    machine = statistics.median(b["machine_ms"]) / statistics.median(a["machine_ms"])
    if abs(math.log(machine)) <= math.log1p(threshold):
        return time
    raw = statistics.median(b["times_ms"]) / statistics.median(a["times_ms"])
    if abs(math.log(raw)) > abs(math.log(machine)) + math.log1p(threshold):
        return time
    return Judgement("noisy", "noisy", f"the machine itself ran {machine - 1:+.0%}")


def timed_samples(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[float] | None, list[float] | None]:
    """What the time verdict compares: calls relative to the machine probe when both have it, else raw times."""
    rel_a, rel_b = relative_times(a), relative_times(b)
    if rel_a is not None and rel_b is not None:
        return rel_a, rel_b
    return a.get("times_ms"), b.get("times_ms")


def _machine_ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    """How much slower the machine itself ran for B than for A at this point (median probe time, B / A)."""
    if not a.get("machine_ms") or not b.get("machine_ms"):
        return ""
    return f"{statistics.median(b['machine_ms']) / statistics.median(a['machine_ms']):.2f}x"


def identity(record: dict[str, Any]) -> str:
    """Stable JSON of what a record measures, options included (the same fields as its `key`)."""
    fields = identity_of(record)
    fields["options"] = fields["options"] or {}  # older records may lack options: the same as none
    return json.dumps(fields, sort_keys=True)


def _memory_samples(record: dict[str, Any]) -> list[int] | None:
    samples = record.get("peak_bytes_samples")
    if samples:
        return list(samples)
    return [record["peak_bytes"]] if record.get("peak_bytes") is not None else None


@dataclass(frozen=True)
class PointComparison:
    """One point measured in both runs, and the verdicts on it."""

    a: dict[str, Any]
    b: dict[str, Any]
    time: Judgement
    p: float | None
    memory: Judgement | None

    @property
    def kinds(self) -> set[str]:
        return {self.time.kind} | ({self.memory.kind} if self.memory else set())

    @property
    def regressed(self) -> bool:
        return "regression" in self.kinds

    @property
    def noisy(self) -> bool:
        return "noisy" in self.kinds

    @property
    def label(self) -> str:
        return variant_label(self.a["variant"], self.a.get("options"))

    def verdict(self) -> str:
        """The point's verdict in words."""
        words = []
        for name, j in (("time", self.time), ("memory", self.memory)):
            if j is None or j.kind == "same":
                continue
            if j.kind == "noisy":
                words.append(f"noisy ({j.why})")
            elif j.kind == "regression":
                words.append(f"{name} regression")
            else:
                words.append("faster" if name == "time" else "less memory")
        return ", ".join(words) or "same"


def _ratio(new: float | None, old: float | None) -> str:
    """new / old as `1.23x` (empty when either is missing)."""
    return f"{new / old:.2f}x" if new is not None and old else ""


def _mib(record: dict[str, Any]) -> float | None:
    return None if record.get("peak_bytes") is None else record["peak_bytes"] / 2**20


@dataclass
class Comparison:
    """The points both runs measured, judged, and the count of those only one of them has."""

    points: list[PointComparison]
    only_a: int
    only_b: int

    @property
    def regressions(self) -> list[PointComparison]:
        return [p for p in self.points if p.regressed]

    @property
    def noisy(self) -> list[PointComparison]:
        return [p for p in self.points if p.noisy and not p.regressed]

    @property
    def moved(self) -> list[PointComparison]:
        """Points that changed beyond the spread either way: a rerun that does not reproduce its number."""
        return [p for p in self.points if p.kinds & {"regression", "better"}]

    def table(self, name_a: str = "A", name_b: str = "B") -> pd.DataFrame:
        """One row per point: name, N, medians, time verdict and p, peaks, memory verdict, verdict."""
        varying = [f for f in SHAPE_FIELDS if len({json.dumps(identity_of(p.a).get(f)) for p in self.points}) > 1]
        rows = []
        for p in self.points:
            shape = " ".join(_shape_word(f, identity_of(p.a).get(f)) for f in varying)
            if p.a.get("q_len", p.a["seq"]) != p.a["seq"]:
                shape += f" Nq={p.a['q_len']}"
            rows.append(
                {
                    "point": f"{p.label} {shape}".strip(),
                    "N": p.a["seq"],
                    f"time {name_a} (ms)": p.a.get("time_ms"),
                    f"time {name_b} (ms)": p.b.get("time_ms"),
                    "ratio": _ratio(p.b.get("time_ms"), p.a.get("time_ms")),
                    "machine": _machine_ratio(p.a, p.b),
                    "time": p.time.mark,
                    "p": "" if p.p is None else "<0.001" if p.p < 0.001 else f"{p.p:.3f}",
                    f"memory {name_a} (MiB)": _mib(p.a),
                    f"memory {name_b} (MiB)": _mib(p.b),
                    "memory": p.memory.mark if p.memory else "",
                    "verdict": p.verdict(),
                }
            )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """One line: the regressions (and which variants), else how many points were judged the same."""
        n = len(self.points)
        noisy = f"{len(self.noisy)} noisy (no verdict possible)"
        if self.regressions:
            names = ", ".join(sorted({p.label for p in self.regressions}))
            return f"REGRESSION in {len(self.regressions)} of {n} points ({names}); {noisy}"
        same = sum(1 for p in self.points if p.kinds == {"same"})
        better = sum(1 for p in self.points if "better" in p.kinds and not p.noisy)
        return f"no regression over {n} points: {same} the same, {better} better, {noisy}"

    def report(self, name_a: str = "A", name_b: str = "B") -> tuple[str, int]:
        """The table, the unmatched counts and the summary line, and the exit code (1 on a regression)."""
        if not self.points:
            return f"no points in common between {name_a} and {name_b}", 1
        # Run folders are long paths: the columns say A and B unless the names are short words.
        short = (name_a, name_b) if name_a != name_b and max(len(name_a), len(name_b)) <= 10 else ("A", "B")
        parts = [self.table(*short).to_markdown(index=False, floatfmt=".3f", missingval="")]
        if self.only_a or self.only_b:
            parts.append(f"unmatched points: {self.only_a} only in {name_a}, {self.only_b} only in {name_b}")
        parts.append(self.summary())
        return "\n".join(parts), 1 if self.regressions else 0


def render(comparison: Comparison, name_a: str = "A", name_b: str = "B") -> tuple[str, int]:
    """What `attnbench compare` prints for `comparison`, and its exit code (see `Comparison.report`)."""
    return comparison.report(name_a, name_b)


def _shape_word(field: str, value: Any) -> str:
    if field == "causal":
        return "causal" if value else "non-causal"
    prefix = SHAPE_FIELDS[field]
    return f"{prefix}={value}" if prefix else str(value)


def ok_points(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The measured (status ok) bench records by identity; a point measured twice keeps its last record."""
    return {identity(r): r for r in records if r.get("kind", "bench") == "bench" and r.get("status") == "ok"}


def compare_records(
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    threshold: float | None = None,
    memory_threshold: float = 0.10,
    alpha: float = ALPHA,
) -> Comparison:
    """Match the ok points of two lists of records and judge each (`threshold` None: by device, `TIME_THRESHOLD`)."""
    points_a, points_b = ok_points(a), ok_points(b)
    judged = []
    for key, ra in points_a.items():
        rb = points_b.get(key)
        if rb is None:
            continue
        least = TIME_THRESHOLD.get(ra.get("device"), 0.05) if threshold is None else threshold
        time, p = judge_time(*timed_samples(ra, rb), least, alpha)
        time = machine_moved(ra, rb, time, least)
        floor = CPU_MEMORY_FLOOR if ra.get("device") == "cpu" else 0
        memory = judge_memory(_memory_samples(ra), _memory_samples(rb), memory_threshold, floor)
        judged.append(PointComparison(ra, rb, time, p, memory))
    return Comparison(judged, len(points_a.keys() - points_b.keys()), len(points_b.keys() - points_a.keys()))


def compare_runs(
    a: Path, b: Path, threshold: float | None = None, memory_threshold: float = 0.10, alpha: float = ALPHA
) -> Comparison:
    """Read two run folders and compare their points (see `compare_records`)."""
    return compare_records(
        read_records(require_run(a)), read_records(require_run(b)), threshold, memory_threshold, alpha
    )
