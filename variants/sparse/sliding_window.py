"""sliding-window: local attention, each query sees the keys within window / 2 positions of its own.

`window` has one meaning across attnbench's variants: the width of the band, w / 2 keys on each
side of the query (|i - j| <= w // 2), Longformer's w. Under causality a query sees itself and the
w // 2 keys before it (Mistral's sliding window of W keys is window = 2 (W - 1)). This is the
local part of Longformer (Beltagy et al. 2020) and the 1-D local attention of the Image
Transformer (Parmar et al. 2018). It is not Long Range Arena's "Local Attention", which is
block-local (each query sees the keys of its own block of 20).
"""

from __future__ import annotations

from pydantic import Field

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


def sliding_window(window: int) -> Pattern:
    """Keep |i - j| <= window // 2."""
    half = window // 2

    def sliding_window_pattern(h, q_pos, kv_idx):
        return (q_pos - kv_idx).abs() <= half

    return sliding_window_pattern


class SlidingWindowOptions(SparseOptions):
    window: int = Field(512, gt=0, description="band width w: keep |i - j| <= w // 2 (w // 2 keys back if causal)")


class SlidingWindowAttention(SparseAttention):
    """Softmax attention over a band of w // 2 keys on each side (w // 2 back under causality)."""

    info = VariantInfo(
        compiles=True,
        name="sliding-window",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax, keep |i - j| <= w // 2",
        summary="local attention, band |i - j| <= window / 2 (FlexAttention)",
        paper="Beltagy et al. 2020 (Longformer's sliding window); Parmar et al. 2018 (1-D local attention)",
        source="allenai/longformer, longformer/sliding_chunks.py (the band, without dilation)",
        departures=(
            "no dilation (Longformer's dilated windows on some heads are left out)",
            "one window for every layer (Longformer grows it with depth)",
        ),
        lengths=True,  # a position-only pattern: padding after a sequence leaves it as it is
    )
    Options = SlidingWindowOptions

    def pattern(self, num_keys, device):
        return sliding_window(self.options.window)
