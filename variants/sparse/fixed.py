"""fixed: the Sparse Transformer's fixed pattern (Child, Gray, Radford & Sutskever 2019).

Positions are cut into blocks of `stride`. A query sees its own block (i // stride == j // stride)
and the last `summary` positions of every block (j mod stride >= stride - summary), which carry
information between blocks. Suited to data without a period (text).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


def fixed(stride: int, summary: int) -> Pattern:
    """Keep the own block and the last `summary` positions of every block."""

    def fixed_pattern(q_pos, kv_idx):
        return (q_pos // stride == kv_idx // stride) | (kv_idx % stride >= stride - summary)

    return fixed_pattern


class FixedOptions(SparseOptions):
    stride: int = Field(64, gt=0, description="block length")
    summary: int = Field(8, gt=0, description="summary positions at the end of each block (c)")

    @model_validator(mode="after")
    def _summary_fits(self) -> FixedOptions:
        if self.summary > self.stride:
            raise ValueError(f"summary ({self.summary}) must not exceed stride ({self.stride})")
        return self


class FixedAttention(SparseAttention):
    """Sparse Transformer fixed attention: own block plus every block's summary positions."""

    info = VariantInfo(
        name="fixed",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax, keep i // l == j // l or j mod l >= l - c",
        summary="Sparse Transformer fixed pattern (FlexAttention)",
        paper="Child et al. 2019, Generating Long Sequences with Sparse Transformers",
        lengths=True,  # a position-only pattern: padding after a sequence leaves it as it is
    )
    Options = FixedOptions

    def pattern(self, num_keys, device):
        return fixed(self.options.stride, self.options.summary)
