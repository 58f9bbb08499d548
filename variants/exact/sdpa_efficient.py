"""SDPA pinned to torch's EFFICIENT_ATTENTION backend.

Memory-efficient kernel from xformers, inside torch (no GQA: K/V repeated).
"""

from __future__ import annotations

from dataclasses import replace

from torch.nn.attention import SDPBackend

from .sdpa import SdpaAttention


class SdpaEfficientAttention(SdpaAttention):
    """scaled_dot_product_attention with only the EFFICIENT_ATTENTION backend allowed."""

    backend = SDPBackend.EFFICIENT_ATTENTION
    accepts_enable_gqa = False
    info = replace(
        SdpaAttention.info,
        name="sdpa-efficient",
        gqa_native=False,
        summary="memory-efficient kernel from xformers, inside torch (no GQA: K/V repeated)",
    )
