"""xformers.ops.memory_efficient_attention (Rabe & Staats 2021; the xformers CUTLASS/Flash kernels).

Causality uses xformers' bottom-right mask; grouped K/V heads use its 5-D (B, N, G, H, D) layout,
so K and V are broadcast, not repeated. A packed batch is one row of all the tokens under a
block-diagonal bias (``BlockDiagonalMask``, or ``BlockDiagonalCausalMask``: causal within each
sequence) built from the sequence lengths. xformers has no CPU operator for this function.
"""

from __future__ import annotations

import torch

from ..contract import Variant, VariantInfo, check_qkv, softmax_scale


class XformersAttention(Variant):
    """memory_efficient_attention from the installed xformers."""

    info = VariantInfo(
        name="xformers",
        family="exact",
        exact=True,
        gqa_native=True,
        devices=("cuda",),
        dtypes=(torch.float16, torch.bfloat16, torch.float32),
        packages=("xformers",),
        summary="xformers memory_efficient_attention",
        paper="Rabe & Staats 2021, Self-attention Does Not Need O(n^2) Memory",
        source="facebookresearch/xformers, xformers.ops.memory_efficient_attention",
        packed=True,
    )

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """xformers' kernels are CUDA only; say so rather than failing on CPU."""
        if device not in cls.info.devices:
            return "xformers has no CPU operator for memory_efficient_attention (NotImplementedError)"
        return super().unavailable_reason(device, dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        import xformers.ops as xops
        from xformers.ops.fmha import attn_bias

        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        g = h // hkv
        # (B, N, Hkv, G, D): query heads grouped under their K/V head; K/V expanded as views.
        qx = q.reshape(b, hkv, g, nq, d).permute(0, 3, 1, 2, 4)
        kx = k.permute(0, 2, 1, 3)[:, :, :, None].expand(b, nk, hkv, g, d)
        vx = v.permute(0, 2, 1, 3)[:, :, :, None].expand(b, nk, hkv, g, d)
        if cu_seqlens is not None:
            lengths = cu_seqlens.diff().tolist()
            kind = attn_bias.BlockDiagonalCausalMask if self.spec.causal else attn_bias.BlockDiagonalMask
            bias = kind.from_seqlens(lengths)
        else:
            bias = attn_bias.LowerTriangularFromBottomRightMask() if self.spec.causal else None
        out = xops.memory_efficient_attention(qx, kx, vx, attn_bias=bias, scale=softmax_scale(d))
        return out.permute(0, 2, 3, 1, 4).reshape(b, h, nq, d)
