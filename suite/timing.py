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


@dataclass(frozen=True)
class Timing:
    """Per-call times of one point, in milliseconds."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    repeats: int

    def as_record(self) -> dict[str, float | int]:
        return {"time_ms": self.median_ms, "time_p20_ms": self.p20_ms, "time_p80_ms": self.p80_ms,
                "repeats": self.repeats}  # fmt: skip


def summarize(times_ms: list[float]) -> Timing:
    """Median and 20th / 80th percentiles of per-call times."""
    if len(times_ms) == 1:
        return Timing(times_ms[0], times_ms[0], times_ms[0], 1)
    cuts = statistics.quantiles(times_ms, n=10, method="inclusive")  # deciles: cuts[1] = p20
    return Timing(statistics.median(times_ms), cuts[1], cuts[7], len(times_ms))


def time_calls(
    fn: Callable[[Any], Any],
    setup: Callable[[], Any],
    device: str,
    repeats: int,
    budget_s: float,
) -> Timing:
    """Time `fn(setup())` up to `repeats` times or until `budget_s` is spent (at least 3 calls).

    `setup` runs before each call, outside the timed region (the forward of a backward-only
    timing, for instance); its result is passed to `fn`.
    """
    cuda = device == "cuda"
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda") if cuda else None
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - started < budget_s):
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
