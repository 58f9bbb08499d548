"""diff: differential attention, the difference of two softmax maps, then a per-head RMSNorm.

Ye et al. 2025, "Differential Transformer" (Microsoft; ICLR 2025). Each head splits its query and key
into halves (q1, q2), (k1, k2) of D / 2; with the scale 1 / sqrt(D / 2),
``o = (softmax(q1 k1^T) - lambda softmax(q2 k2^T)) v``, then RMSNorm over the head (a learned weight),
times (1 - lambda_init). lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, from four learned
vectors of D / 2 shared by the layer's heads, lambda_init = 0.8 - 0.6 exp(-0.3 (layer - 1)).

Under GQA the original (microsoft/unilm, Diff-Transformer/multihead_flashdiff_*.py) lays the halves
out as 2H query heads and 2H_kv key heads and repeats the keys: a query's second half then meets its
group's first key half whenever a group holds more than one query head. Here each half meets its own
half of its group's key head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..contract import Options, Unsupported, Variant, VariantInfo, check_qkv
from ..masks import causal_mask
from ..softmax import softmax_weights


class DiffOptions(Options):
    layer: int = Field(1, ge=1, description="the layer's depth l in lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1))")


class DiffAttention(Variant):
    """Two SDPA calls on the halves, subtracted with lambda, RMSNorm per head, times (1 - lambda_init)."""

    info = VariantInfo(
        name="diff",
        family="modified",
        exact=False,
        definition="RMSNorm((softmax(q1 k1^T) - lambda softmax(q2 k2^T)) v) (1 - lambda_init), scale sqrt(2/D)",
        summary="Differential Transformer: two softmax maps subtracted, a learned lambda, per-head RMSNorm",
        paper="Ye et al. 2025, Differential Transformer (ICLR 2025)",
        source="microsoft/unilm, Diff-Transformer/multihead_diffattn.py",
        departures=(
            "grouped K/V heads are repeated by torch: SDPA with q and k half as wide as v runs on its math path",
            "the halves share the head's value of D (the original doubles the value's head dim and halves the "
            "heads): q and k split in two, v whole, the contract's one head dim",
            "under GQA each query half meets its own half of its group's key head; the original's repeat pairs "
            "the second query half with the wrong key head when a group holds more than one query head",
        ),
    )
    Options = DiffOptions

    def __init__(self, spec) -> None:
        super().__init__(spec)
        if spec.head_dim % 2:
            raise Unsupported("diff splits each head in two: the head dim must be even")
        half = spec.head_dim // 2
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * (self.options.layer - 1))
        generator = torch.Generator().manual_seed(0)  # the original's normal(0, 0.1) initialisation, seeded
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.randn(half, generator=generator) * 0.1) for _ in range(4)
        )
        self.subln = nn.RMSNorm(spec.head_dim, eps=1e-5)

    def lam(self, dtype: torch.dtype) -> torch.Tensor:
        one = torch.exp(torch.dot(self.lambda_q1, self.lambda_k1).to(dtype))
        two = torch.exp(torch.dot(self.lambda_q2, self.lambda_k2).to(dtype))
        return one - two + self.lambda_init

    def _finish(self, mixed: torch.Tensor) -> torch.Tensor:
        weight = self.subln.weight.to(mixed.dtype)
        return F.rms_norm(mixed, (mixed.shape[-1],), weight, eps=1e-5) * (1 - self.lambda_init)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, h, hkv, nq, nk, d = check_qkv(q, k, v)
        half = d // 2
        kwargs: dict = {"scale": half**-0.5, "enable_gqa": hkv != h}
        if self.spec.causal:
            if nq == nk:
                kwargs["is_causal"] = True
            else:
                kwargs["attn_mask"] = causal_mask(nq, nk, q.device)
        one = F.scaled_dot_product_attention(q[..., :half], k[..., :half], v, **kwargs)
        two = F.scaled_dot_product_attention(q[..., half:], k[..., half:], v, **kwargs)
        if self.spec.causal and nq > nk:  # queries before every key: zeros, not what SDPA fills in
            one, two = (x.masked_fill(~causal_mask(nq, nk, q.device).any(-1)[:, None], 0.0) for x in (one, two))
        return self._finish(one - self.lam(one.dtype) * two).to(q.dtype)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The two maps written out, subtracted, normalised."""
        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        half = d // 2
        scale = half**-0.5
        one = softmax_weights(q[..., :half], k[..., :half], causal=self.spec.causal, scale=scale)
        two = softmax_weights(q[..., half:], k[..., half:], causal=self.spec.causal, scale=scale)
        mixed = (one - self.lam(q.dtype) * two).view(b, hkv, (h // hkv) * nq, nk) @ v
        return self._finish(mixed.view(b, h, nq, d))
