"""The FlashAttention algorithm in plain torch: online softmax over key blocks.

Dao et al. 2022, "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness";
the loop order and the backward follow FlashAttention-2 (Dao 2023). Keys are visited one block
at a time; each query row keeps a running max ``m``, a running sum ``row_sum`` of exp(score - m) and an
unnormalised output ``acc``, rescaled whenever the max grows. Extra memory is O(Nq * block), not
O(Nq * Nk). Under causality each key block meets only the query rows that can see it (the tiles
above the diagonal are skipped, as FlashAttention skips them) and only the rows the diagonal
crosses are masked. A packed batch (cu_seqlens) visits, for each key block, only the query rows of
the sequences that block holds, and masks only the pairs across a boundary. The backward recomputes
each block's probabilities from the saved log-sum-exp instead of storing them, so training memory
stays linear in N as well. No kernel fusion: this is the
algorithm made readable, and its speed is torch's matmuls plus Python overhead per block.
"""

from __future__ import annotations

import bisect

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
from ..masks import document_ids

NEG_INF = float("-inf")


def _rows(nq: int, nk: int, start: int, end: int, causal: bool) -> tuple[int, int]:
    """Queries [first, masked_until) for the key block [start, end) under bottom-right causality.

    Queries before `first` see none of the block and are skipped, as FlashAttention skips the tiles
    above the diagonal; queries from `masked_until` on see all of it and need no mask.
    """
    if not causal:
        return 0, 0
    offset = nk - nq  # query i sits at key position i + offset
    return min(max(start - offset, 0), nq), min(max(end - 1 - offset, 0), nq)


class _Packing:
    """A packed batch's boundaries as Python ints (read once per call), and its (N,) sequence ids."""

    def __init__(self, cu_seqlens: torch.Tensor, device: torch.device) -> None:
        self.bounds = cu_seqlens.tolist()
        self.doc = document_ids(cu_seqlens.to(device), self.bounds[-1])

    def rows(self, start: int, end: int, first: int) -> tuple[int, int, bool]:
        """Queries [lo, hi) of the sequences that keys [start, end) belong to (none before `first`), and
        whether the block or those rows cross a boundary (then pairs across it need a mask)."""
        s0 = bisect.bisect_right(self.bounds, start) - 1
        s1 = bisect.bisect_right(self.bounds, end - 1) - 1
        lo, hi = max(first, self.bounds[s0]), self.bounds[s1 + 1]
        return lo, hi, s0 != s1

    def mask(self, lo: int, hi: int, start: int, end: int, groups: int) -> torch.Tensor:
        """(rows, blk) bool, True across a boundary, for query rows lo..hi laid out by position."""
        return self.doc[lo:hi].repeat_interleave(groups)[:, None] != self.doc[start:end][None, :]


def _by_position(x: torch.Tensor, hkv: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, Hkv, N*G, D), row i*G + g: the G query heads that share a K/V head, one
    position after another, so the queries from any position on are one contiguous slice."""
    b, h, n, d = x.shape
    return x.view(b, hkv, h // hkv, n, d).transpose(2, 3).reshape(b, hkv, n * (h // hkv), d)


def _by_head(x: torch.Tensor, h: int) -> torch.Tensor:
    """The inverse of `_by_position`: (B, Hkv, N*G, D) -> (B, H, N, D)."""
    b, hkv, rows, d = x.shape
    g = h // hkv
    return x.view(b, hkv, rows // g, g, d).transpose(2, 3).reshape(b, h, rows // g, d)


def _block_scores(
    qi: torch.Tensor,
    kj: torch.Tensor,
    first: int,
    masked_until: int,
    start: int,
    offset: int,
    groups: int,
    lengths: torch.Tensor | None,
    across: torch.Tensor | None,
) -> torch.Tensor:
    """Scaled scores of the query rows of positions first.. against one key block, masked by causality
    and, where given, by each sequence's key length and by the pairs `across` packed sequences."""
    scores = qi @ kj.transpose(-2, -1)  # (B, Hkv, rows, blk)
    cols = torch.arange(start, start + kj.shape[-2], device=qi.device)[None, :]
    if masked_until > first:  # the positions the diagonal crosses
        pos = torch.arange(first, masked_until, device=qi.device).repeat_interleave(groups)[:, None] + offset
        scores[..., : (masked_until - first) * groups, :].masked_fill_(cols > pos, NEG_INF)
    if lengths is not None:  # given only for the blocks some sequence ends in
        scores.masked_fill_((cols >= lengths[:, None])[:, None, None, :], NEG_INF)
    if across is not None:
        scores.masked_fill_(across, NEG_INF)
    return scores


def _visible_rows(
    packing: _Packing | None, start: int, end: int, first: int, nq: int, groups: int
) -> tuple[int, int, torch.Tensor | None]:
    """Query positions [first, last) that may see keys [start, end), and the mask of pairs across packed
    sequences among them (None when the block and its rows lie in one sequence)."""
    if packing is None:
        return first, nq, None
    first, last, crosses = packing.rows(start, end, first)
    return first, last, packing.mask(first, last, start, end, groups) if crosses else None


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, block: int, lengths: torch.Tensor | None, cu_seqlens: torch.Tensor | None):
        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        packing = None if cu_seqlens is None else _Packing(cu_seqlens, q.device)
        # Key blocks past the longest sequence are padding for every query: skipped like hidden ones.
        nk_real = nk if lengths is None else int(lengths.max())
        # Blocks ending before the shortest sequence does need no length mask; read once, not per block.
        shortest = nk if lengths is None else int(lengths.min())
        g = h // hkv
        acc_dtype = accumulate_dtype(q.dtype)
        qg = _by_position(q.to(acc_dtype) * softmax_scale(d), hkv)  # (B, Hkv, Nq*G, D)

        m = torch.full((b, hkv, nq * g, 1), NEG_INF, dtype=acc_dtype, device=q.device)  # running max
        row_sum = torch.zeros_like(m)  # running sum of exp(score - m)
        acc = torch.zeros((b, hkv, nq * g, d), dtype=acc_dtype, device=q.device)
        for start in range(0, nk_real, block):
            end = min(start + block, nk)
            first, masked_until = _rows(nq, nk, start, end, causal)
            if first == nq:
                break  # no query sees this block, nor any later one
            first, last, across = _visible_rows(packing, start, end, first, nq, g)
            kj = k[:, :, start:end].to(acc_dtype)  # (B, Hkv, blk, D)
            vj = v[:, :, start:end].to(acc_dtype)
            rows = slice(first * g, last * g)  # the other rows see nothing of this block
            cut = lengths if end > shortest else None
            scores = _block_scores(qg[..., rows, :], kj, first, masked_until, start, nk - nq, g, cut, across)
            m_rows, sum_rows, acc_rows = m[..., rows, :], row_sum[..., rows, :], acc[..., rows, :]
            m_new = torch.maximum(m_rows, scores.amax(dim=-1, keepdim=True))
            # Rows that have seen no visible key yet have m = -inf: shift them by 0 so that
            # exp(-inf - shift) is 0 rather than NaN.
            shift = m_new.masked_fill(m_new == NEG_INF, 0.0)
            p = scores.sub_(shift).exp_()  # in place: (B, Hkv, rows, blk)
            rescale = torch.exp(m_rows - shift)
            sum_rows.mul_(rescale).add_(p.sum(dim=-1, keepdim=True))  # views: row_sum and acc change in place
            acc_rows.mul_(rescale).add_(p @ vj)
            m_rows.copy_(m_new)
            del scores, p  # freed before the next block's scores: one (G*Nq, blk) buffer at a time
        seen = row_sum > 0  # false only for queries that see no key at all (causal, Nq > Nk)
        out = torch.where(seen, acc / row_sum.clamp_min(torch.finfo(acc_dtype).tiny), 0.0)
        # +inf log-sum-exp makes exp(score - lse) = 0 in the backward for rows with no key.
        lse = torch.where(seen, m + torch.log(row_sum.clamp_min(torch.finfo(acc_dtype).tiny)), float("inf"))
        ctx.save_for_backward(qg, k, v, out, lse)
        ctx.shape = (b, h, hkv, nq, nk, d)
        ctx.causal, ctx.block, ctx.lengths, ctx.nk_real, ctx.shortest = causal, block, lengths, nk_real, shortest
        ctx.packing = packing
        return _by_head(out, h).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        qg, k, v, out, lse = ctx.saved_tensors
        b, h, hkv, nq, nk, d = ctx.shape
        g = h // hkv
        acc_dtype = qg.dtype
        do = _by_position(grad_out.to(acc_dtype), hkv)  # (B, Hkv, Nq*G, D)
        delta = (do * out).sum(dim=-1, keepdim=True)  # rowsum(dO * O): (B, Hkv, Nq*G, 1)

        dq = torch.zeros_like(qg)
        dk = torch.zeros((b, hkv, nk, d), dtype=acc_dtype, device=qg.device)
        dv = torch.zeros_like(dk)
        for start in range(0, ctx.nk_real, ctx.block):
            end = min(start + ctx.block, nk)
            first, masked_until = _rows(nq, nk, start, end, ctx.causal)
            if first == nq:
                break  # keys no query sees: their gradients stay zero
            first, last, across = _visible_rows(ctx.packing, start, end, first, nq, g)
            kj = k[:, :, start:end].to(acc_dtype)
            vj = v[:, :, start:end].to(acc_dtype)
            rows = slice(first * g, last * g)
            q_rows, do_rows = qg[..., rows, :], do[..., rows, :]
            cut = ctx.lengths if end > ctx.shortest else None
            scores = _block_scores(q_rows, kj, first, masked_until, start, nk - nq, g, cut, across)
            p = scores.sub_(lse[..., rows, :]).exp_()
            dv[:, :, start:end] = p.transpose(-2, -1) @ do_rows
            ds = (do_rows @ vj.transpose(-2, -1)).sub_(delta[..., rows, :]).mul_(p)  # grad of the scaled scores
            dq[..., rows, :] += ds @ kj
            dk[:, :, start:end] = ds.transpose(-2, -1) @ q_rows  # q_rows already carry the scale
            del p, ds  # freed before the next block's: two (G*Nq, blk) buffers at a time
        dq = _by_head(dq * softmax_scale(d), h)
        return dq.to(grad_out.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


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
        source="FlashAttention-2's Algorithm 1 (forward) and 2 (backward), in pure torch",
        lengths=True,
        packed=True,
    )
    Options = ChunkedOptions

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_lengths: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_qkv(q, k, v)
        block = self.options.block_size
        return _ChunkedAttention.apply(q, k, v, self.spec.causal, block, key_lengths, cu_seqlens)
