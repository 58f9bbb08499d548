"""Timing one call: warm-up first, repeats to a count or a time budget, median with p20 / p80.

CPU: ``time.perf_counter`` around each call, with the thread count fixed by the worker.
CUDA: events recorded on the stream around each call, the L2 cache flushed before each repeat
(a 256 MB buffer is overwritten, as triton's do_bench does) so no repeat reads the previous one's
data from cache, and one synchronisation per repeat outside the timed region.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

L2_FLUSH_BYTES = 256 * 2**20
# Timed calls however short the budget: `compare`'s U test needs 4 or more a side to reach p < 0.05.
MIN_CALLS = 5


@dataclass(frozen=True)
class Timing:
    """Per-call times of one point, in milliseconds."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    repeats: int
    times_ms: tuple[float, ...] = ()

    def as_record(self) -> dict[str, Any]:
        # Every repeat is kept: `compare` judges a difference by a test over the repeats. The count made
        # is `timed_calls`, apart from a point's `repeats` (the most it asks for).
        return {"time_ms": self.median_ms, "time_p20_ms": self.p20_ms, "time_p80_ms": self.p80_ms,
                "timed_calls": self.repeats, "times_ms": list(self.times_ms)}  # fmt: skip


def clock_name(device: str) -> str:
    """The clock that times calls on `device`, as records name it."""
    return "cuda events" if device == "cuda" else "perf_counter"


def summarize(times_ms: list[float]) -> Timing:
    """Median and 20th / 80th percentiles of per-call times."""
    if len(times_ms) == 1:
        return Timing(times_ms[0], times_ms[0], times_ms[0], 1, tuple(times_ms))
    cuts = statistics.quantiles(times_ms, n=10, method="inclusive")  # deciles: cuts[1] = p20
    return Timing(statistics.median(times_ms), cuts[1], cuts[7], len(times_ms), tuple(times_ms))


def time_calls(
    fn: Callable[[Any], Any],
    setup: Callable[[], Any],
    device: str,
    repeats: int,
    budget_s: float,
) -> Timing:
    """Time `fn(setup())` up to `repeats` times or until `budget_s` is spent (at least `MIN_CALLS` calls).

    `setup` runs before each call, outside the timed region (the forward of a backward-only
    timing, for instance); its result is passed to `fn`.
    """
    cuda = device == "cuda"
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda") if cuda else None
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < MIN_CALLS or time.perf_counter() - started < budget_s):
        arg = setup()
        if cuda:
            flush.zero_()
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn(arg)
            end.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(arg)
            times.append((time.perf_counter() - t0) * 1e3)
        del arg
    return summarize(times)
