"""SDPA pinned to torch's MATH backend.

Torch's math kernel (materialises scores; repeats K/V for GQA inside torch).
"""

from __future__ import annotations

from dataclasses import replace

from torch.nn.attention import SDPBackend

from .sdpa import SdpaAttention


class SdpaMathAttention(SdpaAttention):
    """scaled_dot_product_attention with only the MATH backend allowed."""

    backend = SDPBackend.MATH
    info = replace(
        SdpaAttention.info,
        name="sdpa-math",
        gqa_native=False,
        score_buffers=2,
        summary="torch's math kernel (materialises scores; repeats K/V for GQA inside torch)",
    )
