"""longformer: a sliding window plus global tokens (Beltagy, Peters & Cohan 2020).

Each query sees the keys within window / 2 positions on either side; the first `global_tokens`
positions (a CLS token, a question) attend to every position and every position attends to them.
"""

from __future__ import annotations

from pydantic import Field

from attnbench.variants.contract import VariantInfo
from attnbench.variants.sparse.base import SparseAttention, SparseOptions


class LongformerOptions(SparseOptions):
    window: int = Field(256, gt=0, description="total width of the sliding window (w/2 each side)")
    global_tokens: int = Field(1, ge=0, description="leading positions with global attention")


class LongformerAttention(SparseAttention):
    """Longformer attention: sliding window plus symmetric global attention on leading tokens."""

    info = VariantInfo(
        name="longformer",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax, keep |i - j| <= w/2 or i < g or j < g",
        summary="Longformer window + global tokens (FlexAttention)",
        paper="Beltagy et al. 2020, Longformer: The Long-Document Transformer",
    )
    Options = LongformerOptions

    def pattern(self, num_keys, device):
        half, g = self.options.window // 2, self.options.global_tokens
        return lambda q_pos, kv_idx: ((q_pos - kv_idx).abs() <= half) | (q_pos < g) | (kv_idx < g)
