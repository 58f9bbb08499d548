"""Naive attention that breaks on cue: with ATTNBENCH_TEST_FAULT set in its environment its forward exits
(sys.exit(0)), crashes (SIGSEGV), hangs or raises KeyboardInterrupt. Unset, it trains like naive, so a
run can be trained first and its model broken later (heads, heatmap)."""

import ctypes
import os
import sys
import time
from dataclasses import replace

from attnbench.variants.exact.naive import NaiveAttention


def on_cue() -> None:
    fault = os.environ.get("ATTNBENCH_TEST_FAULT")
    if fault == "exit":
        sys.exit(0)
    if fault == "segfault":
        ctypes.string_at(0)
    if fault == "interrupt":
        raise KeyboardInterrupt
    while fault == "hang":
        time.sleep(1)


class OnCue(NaiveAttention):
    info = replace(NaiveAttention.info, name="on-cue")

    def forward(self, *args, **kwargs):
        on_cue()
        return super().forward(*args, **kwargs)

    def attention_weights(self, *args, **kwargs):
        on_cue()
        return super().attention_weights(*args, **kwargs)
