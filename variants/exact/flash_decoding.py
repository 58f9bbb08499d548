"""Flash-decoding in plain torch: split the keys, attend to each split in parallel, merge by log-sum-exp.

Dao, Haziza, Massa & Sizov 2023 ("Flash-Decoding for long-context inference"). When a few queries
(Nq = 1 in decoding) meet a long K/V cache, a kernel that walks the keys in one loop per query
leaves most of a GPU idle; flash-decoding splits the keys into S chunks, computes each chunk's
partial softmax (its max ``m_s``, its sum ``l_s`` of exp(score - m_s) and its unnormalised output
``o_s``) all at once, then merges them exactly:

    M = max_s m_s        out = sum_s exp(m_s - M) o_s / sum_s exp(m_s - M) l_s

Here the whole splits are one batched tensor op on a view of the cache (no loop, no copy) and the
keys left over form one shorter split; the query heads of a K/V group are folded into the query
axis (K and V are read once, never repeated). Causality is bottom-right. Scores and sums are in
float32 for half inputs, which costs a float32 copy of the cache there (a fused kernel converts
in registers). It
equals softmax attention (naive.py is its reference); its cost is the (S, chunk) scores of every
query, so it is a decoding variant: with many queries use `chunked`, its prefill counterpart.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..contract import Options, Variant, VariantInfo, accumulate_dtype, check_qkv, softmax_scale


class FlashDecodingOptions(Options):
    split_size: int = Field(1024, gt=0, description="keys per split (the keys left over form one shorter split)")


def _partials(
    qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, first_key: int, nq: int, nk: int, g: int, causal: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per split of k, v (B, Hkv, S, C, D): the max m, the sum l of exp(score - m) and the unnormalised
    output o of each query row, for splits starting at key `first_key`."""
    scores = torch.einsum("bhqd,bhscd->bhsqc", qg, k)  # (B, Hkv, S, G*Nq, C)
    if causal:
        splits, size = k.shape[2], k.shape[3]
        key = first_key + torch.arange(splits * size, device=k.device).view(splits, 1, size)
        query = torch.arange(nq, device=k.device).repeat(g).view(1, g * nq, 1)
        scores = scores.masked_fill(key > query + (nk - nq), float("-inf"))
    m = scores.amax(dim=-1, keepdim=True)  # -inf for a split a query cannot see
    p = torch.exp(scores - m.nan_to_num(neginf=0.0))
    return m, p.sum(dim=-1, keepdim=True), torch.einsum("bhsqc,bhscd->bhsqd", p, v)


def split_k_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, split: int) -> torch.Tensor:
    """Softmax attention over key splits of `split` keys, merged by log-sum-exp (module docstring)."""
    b, h, hkv, nq, nk, d = check_qkv(q, k, v)
    g, acc = h // hkv, accumulate_dtype(q.dtype)
    qg = (q.to(acc) * softmax_scale(d)).reshape(b, hkv, g * nq, d)  # (B, Hkv, G*Nq, D)
    k, v = k.to(acc), v.to(acc)  # no copy for float32 and float64
    whole = nk // split * split
    parts = []
    if whole:
        view = (b, hkv, whole // split, split, d)
        parts.append(_partials(qg, k[:, :, :whole].view(view), v[:, :, :whole].view(view), 0, nq, nk, g, causal))
    if whole < nk:  # the keys left over: one shorter split
        tail = (t[:, :, whole:, None].transpose(2, 3) for t in (k, v))  # (B, Hkv, 1, nk - whole, D)
        parts.append(_partials(qg, *tail, whole, nq, nk, g, causal))
    m, partial_sum, partial_out = (torch.cat(x, dim=2) for x in zip(*parts, strict=True))
    top = m.amax(dim=2, keepdim=True)  # (B, Hkv, 1, G*Nq, 1)
    weight = torch.exp(m - top.nan_to_num(neginf=0.0))  # 0 for unseen splits; all 0 for a query that sees nothing
    num = (weight * partial_out).sum(dim=2)
    den = (weight * partial_sum).sum(dim=2)
    out = torch.where(den > 0, num / den.clamp_min(torch.finfo(acc).tiny), 0.0)
    return out.view(b, h, nq, d).to(q.dtype)


class FlashDecodingAttention(Variant):
    """Split-K (flash-decoding) exact attention for few queries against many keys."""

    info = VariantInfo(
        name="flash-decoding",
        family="exact",
        exact=True,
        gqa_native=True,
        score_buffers=2,  # the scores and probabilities of every split, all at once
        upcasts_kv=True,
        summary="flash-decoding's split-K softmax merged by log-sum-exp, in plain torch (decoding shapes)",
        paper="Dao, Haziza, Massa & Sizov 2023, Flash-Decoding for long-context inference",
        source="the flash-decoding blog post's algorithm (Dao-AILab/flash-attention's splitkv kernels), in torch",
    )
    Options = FlashDecodingOptions

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return split_k_attention(q, k, v, self.spec.causal, self.options.split_size)
