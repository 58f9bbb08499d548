"""Timing one call: warm-up first, repeats to a count or a time budget, median with p20 / p80.

CPU: ``time.perf_counter`` around each call, with the thread count fixed by the worker, and a
fixed 256x256 matmul (the machine probe) timed just before each call. A shared CPU's speed swings
within seconds (on the 2-core CI VM one matmul took 4.2 ms and 7.3 ms in the same process, 2 s
apart, with nothing else running), so every call's time is kept beside the probe's (`machine_ms`)
and `compare` can judge a call relative to the machine's speed at that moment.
CUDA: events recorded on the stream around each call, the L2 cache flushed before each repeat
(a 256 MB buffer is overwritten, as triton's do_bench does) so no repeat reads the previous one's
data from cache, and one synchronisation per repeat outside the timed region. Between the flush and
the start event the GPU spins for about a millisecond (``torch.cuda._sleep``): Python has queued
the whole call before the start event is reached, so the time of launching a small call's kernels
(tens to hundreds of microseconds, more than the flush takes) is not counted as the GPU's.
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
PROBE_SIZE = 256
# GPU clock cycles spun before each timed call: about 1 ms at the 1.5-2 GHz of H100/H200 SMs.
LAUNCH_LEAD_CYCLES = 2_000_000


@dataclass(frozen=True)
class Timing:
    """Per-call times of one point, in milliseconds."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    repeats: int
    times_ms: tuple[float, ...] = ()
    machine_ms: tuple[float, ...] = ()  # the machine probe's time just before each call (CPU only)

    def as_record(self) -> dict[str, Any]:
        # Every repeat is kept: `compare` judges a difference by a test over the repeats. The count made
        # is `timed_calls`, apart from a point's `repeats` (the most it asks for).
        record = {
            "time_ms": self.median_ms,
            "time_p20_ms": self.p20_ms,
            "time_p80_ms": self.p80_ms,
            "timed_calls": self.repeats,
            "times_ms": list(self.times_ms),
        }
        if self.machine_ms:
            record["machine_ms"] = list(self.machine_ms)
        return record


def clock_name(device: str) -> str:
    """The clock that times calls on `device`, as records name it."""
    return "cuda events" if device == "cuda" else "perf_counter"


def summarize(times_ms: list[float], machine_ms: list[float] | None = None) -> Timing:
    """Median and 20th / 80th percentiles of per-call times (and the machine probe's times, kept as given)."""
    machine = tuple(machine_ms or ())
    if len(times_ms) == 1:
        return Timing(times_ms[0], times_ms[0], times_ms[0], 1, tuple(times_ms), machine)
    cuts = statistics.quantiles(times_ms, n=10, method="inclusive")  # deciles: cuts[1] = p20
    return Timing(statistics.median(times_ms), cuts[1], cuts[7], len(times_ms), tuple(times_ms), machine)


def machine_probe() -> Callable[[], float]:
    """A timer of a fixed CPU workload (256x256 float32 matmul, ~0.6 ms on 2 EPYC cores): ms per run."""
    a = torch.randn(PROBE_SIZE, PROBE_SIZE)

    def probe() -> float:
        t0 = time.perf_counter()
        torch.mm(a, a)
        return (time.perf_counter() - t0) * 1e3

    probe()
    return probe


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
    probe = None if cuda else machine_probe()
    times: list[float] = []
    machine: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < MIN_CALLS or time.perf_counter() - started < budget_s):
        arg = setup()
        if cuda:
            flush.zero_()
            torch.cuda._sleep(LAUNCH_LEAD_CYCLES)
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn(arg)
            end.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            machine.append(probe())
            t0 = time.perf_counter()
            fn(arg)
            times.append((time.perf_counter() - t0) * 1e3)
        del arg
    return summarize(times, machine)
