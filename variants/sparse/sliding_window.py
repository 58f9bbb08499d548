"""sliding-window: local attention, each query sees the keys within `window` positions of its own.

The local attention of the Image Transformer (Parmar et al. 2018) and of Longformer's local part
(Beltagy et al. 2020); the "Local Attention" baseline of Long Range Arena (Tay et al. 2020).
Non-causal the window is symmetric, |i - j| < window; causal it is the last `window` keys.
"""

from __future__ import annotations

from pydantic import Field

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


def sliding_window(window: int) -> Pattern:
    """Keep |i - j| < window."""

    def sliding_window_pattern(q_pos, kv_idx):
        return (q_pos - kv_idx).abs() < window

    return sliding_window_pattern


class SlidingWindowOptions(SparseOptions):
    window: int = Field(256, gt=0, description="keep |i - j| < window")


class SlidingWindowAttention(SparseAttention):
    """Softmax attention over a band of width 2*window - 1 (window under causality)."""

    info = VariantInfo(
        name="sliding-window",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax, keep |i - j| < window",
        summary="local attention, band |i - j| < window (FlexAttention)",
        paper="Parmar et al. 2018; Beltagy et al. 2020 (local part)",
        lengths=True,  # a position-only pattern: padding after a sequence leaves it as it is
    )
    Options = SlidingWindowOptions

    def pattern(self, num_keys, device):
        return sliding_window(self.options.window)
