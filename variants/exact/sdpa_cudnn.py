"""SDPA pinned to torch's CUDNN_ATTENTION backend.

CuDNN fused attention (no GQA: K/V repeated).
"""

from __future__ import annotations

from dataclasses import replace

from torch.nn.attention import SDPBackend

from .sdpa import SdpaAttention


class SdpaCudnnAttention(SdpaAttention):
    """scaled_dot_product_attention with only the CUDNN_ATTENTION backend allowed."""

    backend = SDPBackend.CUDNN_ATTENTION
    accepts_enable_gqa = False
    info = replace(
        SdpaAttention.info,
        name="sdpa-cudnn",
        gqa_native=False,
        summary="cuDNN fused attention (no GQA: K/V repeated)",
    )
