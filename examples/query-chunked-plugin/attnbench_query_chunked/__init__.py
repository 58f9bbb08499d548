"""Exact attention a block of queries at a time: peak memory O(chunk * Nk) instead of O(Nq * Nk).

The idea of Rabe & Staats 2021 ("Self-attention Does Not Need O(n^2) Memory") in its simplest form:
each block of queries is an independent SDPA call, so only that block's scores exist at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from attnbench.variants.contract import Options, Variant, VariantInfo, check_qkv
from attnbench.variants.masks import causal_mask


class QueryChunkedOptions(Options):
    chunk_size: int = Field(256, gt=0, description="queries per SDPA call")


class QueryChunkedAttention(Variant):
    """Softmax attention over query blocks, each through scaled_dot_product_attention."""

    info = VariantInfo(
        name="query-chunked",
        family="exact",
        exact=True,
        gqa_native=True,
        summary="SDPA over blocks of queries (example plugin)",
        paper="Rabe & Staats 2021",
    )
    Options = QueryChunkedOptions

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, h, hkv, nq, nk, _ = check_qkv(q, k, v)
        # The bottom-right causal mask, sliced per block: block rows keep their absolute positions.
        mask = causal_mask(nq, nk, q.device) if self.spec.causal else None
        blocks = []
        for start in range(0, nq, self.options.chunk_size):
            stop = min(start + self.options.chunk_size, nq)
            blocks.append(
                F.scaled_dot_product_attention(
                    q[:, :, start:stop],  # (B, H, chunk, D)
                    k,
                    v,
                    attn_mask=None if mask is None else mask[start:stop],
                    enable_gqa=hkv != h,
                )
            )
        return torch.cat(blocks, dim=2)  # (B, H, Nq, D)
