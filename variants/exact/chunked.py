"""The FlashAttention algorithm in plain torch: online softmax over key blocks.

Dao et al. 2022, "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness";
the loop order and the backward follow FlashAttention-2 (Dao 2023). Keys are visited one block
at a time; each query row keeps a running max ``m``, a running sum ``row_sum`` of exp(score - m) and an
unnormalised output ``acc``, rescaled whenever the max grows. Extra memory is O(Nq * block), not
O(Nq * Nk). Queries are not tiled, so under causality the masked part of each block is still
computed (no 2x saving). The backward recomputes each block's probabilities from the saved log-sum-exp instead
of storing them, so training memory stays linear in N as well. No kernel fusion: this is the
algorithm made readable, and its speed is torch's matmuls plus Python overhead per block.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..contract import (
    Options,
    Variant,
    VariantInfo,
    accumulate_dtype,
    check_qkv,
    softmax_scale,
)

NEG_INF = float("-inf")


def _visible_until(nq: int, nk: int, groups: int, device: torch.device) -> torch.Tensor:
    """Last key index each grouped query row may see under bottom-right causality: (G*Nq, 1)."""
    return (torch.arange(nq, device=device) + (nk - nq)).repeat(groups)[:, None]


def _block_scores(qg: torch.Tensor, kj: torch.Tensor, start: int, last_visible: torch.Tensor | None) -> torch.Tensor:
    """Scaled scores of all query rows against one key block, causally masked: (B, Hkv, G*Nq, blk)."""
    scores = qg @ kj.transpose(-2, -1)
    if last_visible is not None:
        cols = torch.arange(start, start + kj.shape[-2], device=qg.device)
        scores.masked_fill_(cols[None, :] > last_visible, NEG_INF)
    return scores


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, block: int):
        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        g = h // hkv
        acc_dtype = accumulate_dtype(q.dtype)
        qg = (q.to(acc_dtype) * softmax_scale(d)).reshape(b, hkv, g * nq, d)  # (B, Hkv, G*Nq, D)
        last_visible = _visible_until(nq, nk, g, q.device) if causal else None

        m = torch.full((b, hkv, g * nq, 1), NEG_INF, dtype=acc_dtype, device=q.device)  # running max
        row_sum = torch.zeros_like(m)  # running sum of exp(score - m)
        acc = torch.zeros((b, hkv, g * nq, d), dtype=acc_dtype, device=q.device)
        for start in range(0, nk, block):
            kj = k[:, :, start : start + block].to(acc_dtype)  # (B, Hkv, blk, D)
            vj = v[:, :, start : start + block].to(acc_dtype)
            scores = _block_scores(qg, kj, start, last_visible)
            m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
            # Rows that have seen no visible key yet have m = -inf: shift them by 0 so that
            # exp(-inf - shift) is 0 rather than NaN.
            shift = m_new.masked_fill(m_new == NEG_INF, 0.0)
            p = scores.sub_(shift).exp_()  # in place: (B, Hkv, G*Nq, blk)
            rescale = torch.exp(m - shift)
            row_sum.mul_(rescale).add_(p.sum(dim=-1, keepdim=True))
            acc.mul_(rescale).add_(p @ vj)
            m = m_new
            del scores, p  # freed before the next block's scores: one (G*Nq, blk) buffer at a time
        seen = row_sum > 0  # false only for queries that see no key at all (causal, Nq > Nk)
        out = torch.where(seen, acc / row_sum.clamp_min(torch.finfo(acc_dtype).tiny), 0.0)
        # +inf log-sum-exp makes exp(score - lse) = 0 in the backward for rows with no key.
        lse = torch.where(seen, m + torch.log(row_sum.clamp_min(torch.finfo(acc_dtype).tiny)), float("inf"))
        ctx.save_for_backward(qg, k, v, out, lse)
        ctx.shape = (b, h, hkv, nq, nk, d)
        ctx.causal, ctx.block = causal, block
        return out.view(b, h, nq, d).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        qg, k, v, out, lse = ctx.saved_tensors
        b, h, hkv, nq, nk, d = ctx.shape
        g = h // hkv
        acc_dtype = qg.dtype
        do = grad_out.to(acc_dtype).reshape(b, hkv, g * nq, d)  # (B, Hkv, G*Nq, D)
        delta = (do * out).sum(dim=-1, keepdim=True)  # rowsum(dO * O): (B, Hkv, G*Nq, 1)
        last_visible = _visible_until(nq, nk, g, qg.device) if ctx.causal else None

        dq = torch.zeros_like(qg)
        dk = torch.zeros((b, hkv, nk, d), dtype=acc_dtype, device=qg.device)
        dv = torch.zeros_like(dk)
        for start in range(0, nk, ctx.block):
            end = min(start + ctx.block, nk)
            kj = k[:, :, start:end].to(acc_dtype)
            vj = v[:, :, start:end].to(acc_dtype)
            p = _block_scores(qg, kj, start, last_visible).sub_(lse).exp_()  # (B, Hkv, G*Nq, blk)
            dv[:, :, start:end] = p.transpose(-2, -1) @ do
            ds = (do @ vj.transpose(-2, -1)).sub_(delta).mul_(p)  # gradient of the (scaled) scores
            dq += ds @ kj
            dk[:, :, start:end] = ds.transpose(-2, -1) @ qg  # qg already carries the scale
            del p, ds  # freed before the next block's: two (G*Nq, blk) buffers at a time
        dq = (dq * softmax_scale(d)).view(b, h, nq, d)
        return dq.to(grad_out.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


class ChunkedOptions(Options):
    block_size: int = Field(128, gt=0, description="keys per block")


class ChunkedAttention(Variant):
    """Exact attention by online softmax over key blocks, with a recomputing backward."""

    info = VariantInfo(
        name="chunked",
        family="exact",
        exact=True,
        gqa_native=True,
        summary="FlashAttention's online softmax in plain torch, O(N) extra memory",
        paper="Dao et al. 2022 (FlashAttention), Dao 2023 (FlashAttention-2)",
    )
    Options = ChunkedOptions

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        check_qkv(q, k, v)
        return _ChunkedAttention.apply(q, k, v, self.spec.causal, self.options.block_size)
