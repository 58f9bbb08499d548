"""longformer: a sliding window plus global tokens (Beltagy, Peters & Cohan 2020).

Each query sees the keys within w / 2 positions on either side (`window` = w, the band width, as
in every attnbench variant: |i - j| <= w // 2); the first `global_tokens` positions (a CLS token, a
question) attend to every position and every position attends to them.
"""

from __future__ import annotations

from pydantic import Field

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


def longformer(window: int, global_tokens: int) -> Pattern:
    """Keep |i - j| <= window // 2, and every pair with a global token on either side."""
    half = window // 2

    def longformer_pattern(h, q_pos, kv_idx):
        return ((q_pos - kv_idx).abs() <= half) | (q_pos < global_tokens) | (kv_idx < global_tokens)

    return longformer_pattern


class LongformerOptions(SparseOptions):
    window: int = Field(256, gt=0, description="band width w: keep |i - j| <= w // 2")
    global_tokens: int = Field(1, ge=0, description="leading positions with global attention")


class LongformerAttention(SparseAttention):
    """Longformer attention: sliding window plus symmetric global attention on leading tokens."""

    info = VariantInfo(
        compiles=True,
        name="longformer",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax, keep |i - j| <= w // 2 or i < g or j < g",
        summary="Longformer window + global tokens (FlexAttention)",
        paper="Beltagy et al. 2020, Longformer: The Long-Document Transformer",
        source="allenai/longformer, longformer/longformer.py (LongformerSelfAttention)",
        departures=(
            "global tokens use the same Q/K/V projections as the window: Longformer has separate ones "
            "(query_global, key_global, value_global); an attention variant receives q, k, v already projected, "
            "so the extra projections would belong to the model",
            "global tokens are the first g positions (Longformer marks any positions global through its mask)",
            "no dilation, one window for every layer",
        ),
        lengths=True,  # a position-only pattern: padding after a sequence leaves it as it is
    )
    Options = LongformerOptions

    def pattern(self, num_keys, device):
        return longformer(self.options.window, self.options.global_tokens)
