"""The `naive` variant: softmax attention exactly as its definition (variants/softmax.py) writes it.

A packed batch (cu_seqlens) is each sequence run alone, the outputs laid end to end. It holds the
full score and probability matrices, the O(N^2) memory that the other variants exist to avoid.
"""

from __future__ import annotations

import torch

from ..contract import Variant, VariantInfo, accumulate_dtype, per_sequence
from ..softmax import softmax_attention


class NaiveAttention(Variant):
    """softmax_attention run as a variant, in float32 for half inputs (float64 stays float64)."""

    info = VariantInfo(
        name="naive",
        family="exact",
        exact=True,
        gqa_native=True,
        summary="the readable reference: full scores, softmax, weighted sum",
        lengths=True,
        packed=True,
        score_buffers=2,
        upcasts_kv=True,
    )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_lengths: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if cu_seqlens is not None:
            return per_sequence(self.forward, q, k, v, cu_seqlens)
        acc = accumulate_dtype(q.dtype)
        out = softmax_attention(q.to(acc), k.to(acc), v.to(acc), causal=self.spec.causal, key_lengths=key_lengths)
        return out.to(q.dtype)
