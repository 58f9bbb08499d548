"""fixed: the Sparse Transformer's fixed pattern (Child, Gray, Radford & Sutskever 2019).

Positions are cut into blocks of `stride` (l). A query sees its own block (i // l == j // l) and
`summary` (c) positions of every block, which carry information between blocks. The paper found it
better for heads to use distinct summary positions ("attend to distinct subblocks of length c
within the block of size l"): with `distinct_heads` (the default) head h uses the c positions of
sub-block p = h mod (l // c) counted from the block's end, j mod l in [l - (p + 1) c, l - p c);
without it every head uses the last c positions. Suited to data without a period (text).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


def fixed(stride: int, summary: int, distinct_heads: bool) -> Pattern:
    """Keep the own block and each head's summary positions of every block."""
    patterns = stride // summary if distinct_heads else 1

    def fixed_pattern(h, q_pos, kv_idx):
        end = stride - (h % patterns) * summary  # this head's summary sub-block: [end - c, end)
        col = kv_idx % stride
        return (q_pos // stride == kv_idx // stride) | ((col >= end - summary) & (col < end))

    return fixed_pattern


class FixedOptions(SparseOptions):
    stride: int = Field(64, gt=0, description="block length l")
    summary: int = Field(8, gt=0, description="summary positions c of each block")
    distinct_heads: bool = Field(True, description="heads use distinct summary sub-blocks (the paper's choice)")

    @model_validator(mode="after")
    def _summary_fits(self) -> FixedOptions:
        if self.summary > self.stride:
            raise ValueError(f"summary ({self.summary}) must not exceed stride ({self.stride})")
        return self


class FixedAttention(SparseAttention):
    """Sparse Transformer fixed attention: own block plus every block's summary positions."""

    info = VariantInfo(
        compiles=True,
        name="fixed",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax, keep i // l == j // l or j mod l in head h's summary sub-block",
        summary="Sparse Transformer fixed pattern, distinct summary columns per head (FlexAttention)",
        paper="Child et al. 2019, Generating Long Sequences with Sparse Transformers (section 4.3)",
        source="the paper's definition (openai/sparse_attention ships only the local and strided masks); "
        "per-head sub-blocks as in DeepSpeed's FixedSparsityConfig (num_different_global_patterns)",
        departures=(
            "the own block and the summary columns are merged into one mask (the paper also interleaves them "
            "over layers)",
            "non-causal specs keep the summary positions of later blocks too (the paper's pattern is causal)",
        ),
        lengths=True,  # a position-only pattern: padding after a sequence leaves it as it is
    )
    Options = FixedOptions

    @property
    def per_head(self) -> bool:
        return self.options.distinct_heads and self.options.stride // self.options.summary > 1

    def pattern(self, num_keys, device):
        return fixed(self.options.stride, self.options.summary, self.per_head)
