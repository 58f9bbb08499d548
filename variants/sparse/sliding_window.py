"""sliding-window: local attention, each query sees the keys within `window` positions of its own.

The local attention of the Image Transformer (Parmar et al. 2018) and of Longformer's local part
(Beltagy et al. 2020); the "Local Attention" baseline of Long Range Arena (Tay et al. 2020).
Non-causal the window is symmetric, |i - j| < window; causal it is the last `window` keys.
"""

from __future__ import annotations

from pydantic import Field

from attnbench.variants.contract import VariantInfo
from attnbench.variants.sparse.base import SparseAttention, SparseOptions


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
    )
    Options = SlidingWindowOptions

    def pattern(self, num_keys, device):
        window = self.options.window
        return lambda q_pos, kv_idx: (q_pos - kv_idx).abs() < window
