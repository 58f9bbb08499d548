"""Correct, and slow on request: torch's SDPA made (1 + $ATTNBENCH_SLOWDOWN) times slower, for testing `compare`.

The slowdown comes from the environment (the bench's workers inherit it), not from an option: an
option is part of a point's identity, so a slowed run would not match the one it is compared
with. An environment variable changes the code's speed and nothing else, as a regression does.
"""

import os
import time

import torch

from attnbench.variants.contract import VariantInfo
from attnbench.variants.exact.sdpa import SdpaAttention

SLOWDOWN_ENV = "ATTNBENCH_SLOWDOWN"
# A fixed delay per call (ms), far beyond what a busy machine adds to a small call: for tests that
# need a change no load can hide.
DELAY_ENV = "ATTNBENCH_DELAY_MS"


class SlowedSdpa(SdpaAttention):
    info = VariantInfo(name="slowed-sdpa", family="exact", exact=True, gqa_native=True)

    def forward(self, q, k, v):
        slowdown = float(os.environ.get(SLOWDOWN_ENV, "0"))
        started = time.perf_counter()
        out = super().forward(q, k, v)
        if out.is_cuda:
            torch.cuda.synchronize()
        # Proportional to this call's own time, so the whole distribution scales by (1 + slowdown);
        # a spin, because a sleep overshoots by a scheduler tick, which is much of a short call.
        until = started + (1 + slowdown) * (time.perf_counter() - started)
        while time.perf_counter() < until:
            pass
        time.sleep(float(os.environ.get(DELAY_ENV, "0")) / 1000)
        return out
