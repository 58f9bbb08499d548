"""strided: the Sparse Transformer's strided pattern (Child, Gray, Radford & Sutskever 2019).

Two components merged into one mask (the paper's "merged head"): the previous `stride` positions
(|i - j| < stride, openai's "local" mask) and every stride-th position ((i - j) mod stride == 0, its
"strided" mask). Each query sees O(N / stride + stride) keys, so stride ~ sqrt(N) gives
O(N sqrt(N)) work. Suited to data with a period (images, audio).
"""

from __future__ import annotations

from pydantic import Field

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


def strided(stride: int) -> Pattern:
    """Keep the previous `stride` positions and every stride-th one."""

    def strided_pattern(h, q_pos, kv_idx):
        return ((q_pos - kv_idx).abs() < stride) | ((q_pos - kv_idx) % stride == 0)

    return strided_pattern


class StridedOptions(SparseOptions):
    stride: int = Field(64, gt=0, description="local span and step of the strided columns")


class StridedAttention(SparseAttention):
    """Sparse Transformer strided attention: a local band plus every stride-th key."""

    info = VariantInfo(
        compiles=True,
        name="strided",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax, keep |i - j| < stride or (i - j) mod stride == 0",
        summary="Sparse Transformer strided pattern, merged head (FlexAttention)",
        paper="Child et al. 2019, Generating Long Sequences with Sparse Transformers (section 4.3)",
        source="openai/sparse_attention, attention.py (get_attn_mask: 'local' and 'strided' masks)",
        departures=(
            "the two masks are merged into one head's mask (the paper also interleaves them over layers or heads)",
            "non-causal specs use the symmetric form (the original masks are causal)",
        ),
        lengths=True,  # a position-only pattern: padding after a sequence leaves it as it is
    )
    Options = StridedOptions

    def pattern(self, num_keys, device):
        return strided(self.options.stride)
