"""linear-fla: the flash-linear-attention (fla) Triton kernel for linear-elu's definition.

Yang, Wang, Shen, Panda & Kim 2024 (Gated Linear Attention Transformers with Hardware-Efficient
Training): chunked linear attention in Triton. The feature map phi = elu + 1 is applied here; fla's
`chunk_linear_attn` then evaluates the causal form with its own normalisation. Causal only, Nq = Nk
only, CUDA only; grouped K/V heads are repeated (the kernel takes equal head counts).
"""

from __future__ import annotations

import torch

from ..contract import Unsupported, VariantInfo, check_qkv
from .elu import LinearEluAttention, elu_features


class FlaLinearAttention(LinearEluAttention):
    """linear-elu through fla.ops.linear_attn.chunk_linear_attn."""

    info = VariantInfo(
        name="linear-fla",
        family="linear",
        exact=False,
        non_causal=False,
        gqa_native=False,
        scaled=False,
        devices=("cuda",),
        dtypes=(torch.float16, torch.bfloat16, torch.float32),
        packages=("fla",),
        definition="quadratic form phi(q) phi(k)^T v / rowsum, phi = elu + 1 (causal)",
        summary="linear-elu on the flash-linear-attention Triton kernel",
        paper="Yang et al. 2024 (fla); Katharopoulos et al. 2020",
        source="fla-org/flash-linear-attention, fla.ops.linear_attn",
    )

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from fla.ops.linear_attn import chunk_linear_attn

        _, h, hkv, nq, nk, _ = check_qkv(q, k, v)
        if nq != nk:
            raise Unsupported("fla's chunk kernel needs as many queries as keys")
        fk, vv = elu_features(k), v
        if hkv != h:
            fk, vv = fk.repeat_interleave(h // hkv, 1), vv.repeat_interleave(h // hkv, 1)
        # fla takes (B, N, H, D); scale 1: the feature map already is the kernel.
        out, _ = chunk_linear_attn(
            elu_features(q).transpose(1, 2), fk.transpose(1, 2), vv.transpose(1, 2), scale=1.0, normalize=True
        )
        return out.transpose(1, 2).to(q.dtype)
