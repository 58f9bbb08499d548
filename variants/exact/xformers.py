"""xformers.ops.memory_efficient_attention (Rabe & Staats 2021; the xformers CUTLASS/Flash kernels).

Layouts, as xformers documents them: (B, M, H, K) for multi-head inputs, and (B, M, G, H, K) for
grouped K/V heads (G groups of H query heads sharing one K/V head, K and V broadcast along H with
``expand``, a view). xformers computes the 5-D form in the forward pass only, so when gradients are
wanted with grouped heads K and V are repeated to every query head and the 4-D form is used.
Causality uses xformers' bottom-right mask. A packed batch is one row of all the tokens under a
block-diagonal bias (``BlockDiagonalMask``, or ``BlockDiagonalCausalMask``: causal within each
sequence) built from the sequence lengths. xformers has no CPU operator for this function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..contract import Variant, VariantInfo, check_qkv, softmax_scale


def xformers_layout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, needs_grad: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """q, k, v in xformers' layout, and the function that turns its output back into (B, H, Nq, D).

    Equal head counts, or grouped heads when gradients are wanted: 4-D (B, N, H, D). Grouped heads
    in a forward-only call: 5-D (B, N, Hkv, G, D), K/V expanded (not copied) over G.
    """
    b, h, hkv, nq, nk, d = check_qkv(q, k, v)
    if hkv == h or needs_grad:
        if hkv != h:
            k, v = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), lambda out: out.transpose(1, 2)
    g = h // hkv
    qx = q.reshape(b, hkv, g, nq, d).permute(0, 3, 1, 2, 4)
    kx = k.permute(0, 2, 1, 3)[:, :, :, None].expand(b, nk, hkv, g, d)
    vx = v.permute(0, 2, 1, 3)[:, :, :, None].expand(b, nk, hkv, g, d)
    return qx, kx, vx, lambda out: out.permute(0, 2, 3, 1, 4).reshape(b, h, nq, d)


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

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None = None
    ) -> torch.Tensor:
        import xformers.ops as xops
        from xformers.ops.fmha import attn_bias

        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        qx, kx, vx, restore = xformers_layout(q, k, v, needs_grad)
        if cu_seqlens is not None:
            lengths = cu_seqlens.diff().tolist()
            kind = attn_bias.BlockDiagonalCausalMask if self.spec.causal else attn_bias.BlockDiagonalMask
            bias = kind.from_seqlens(lengths)
        else:
            bias = attn_bias.LowerTriangularFromBottomRightMask() if self.spec.causal else None
        out = xops.memory_efficient_attention(qx, kx, vx, attn_bias=bias, scale=softmax_scale(q.shape[-1]))
        return restore(out)
