"""SDPA pinned to torch's FLASH_ATTENTION backend.

FlashAttention kernel inside torch (FA2 on CUDA; a tiled C++ kernel on CPU).
"""

from __future__ import annotations

from dataclasses import replace

from torch.nn.attention import SDPBackend

from .sdpa import SdpaAttention


class SdpaFlashAttention(SdpaAttention):
    """scaled_dot_product_attention with only the FLASH_ATTENTION backend allowed."""

    backend = SDPBackend.FLASH_ATTENTION
    info = replace(
        SdpaAttention.info,
        name="sdpa-flash",
        gqa_native=True,
        summary="FlashAttention kernel inside torch (FA2 on CUDA; a tiled C++ kernel on CPU)",
    )
