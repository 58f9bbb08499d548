"""Softmax attention written out: the readable definition every exact variant must equal.

    scores = (q / sqrt(D)) @ k^T          (B, H, Nq, Nk)
    scores[~mask] = -inf                 causal: bottom-right, key j visible to query i iff j <= i + Nk - Nq;
                                         key lengths: key j of sequence b visible iff j < key_lengths[b]
    probs  = softmax(scores, dim=-1)     a query that sees no key gets zeros, not NaN
    out    = probs @ v                   (B, H, Nq, D)

It materialises the full score and probability matrices: two (B, H, Nq, Nk) tensors, the O(N^2)
memory that the other variants exist to avoid. The `naive` variant (exact/naive.py) runs it as a
variant; the contract's default `reference` is it; sparse patterns are it under their dense mask.
"""

from __future__ import annotations

import torch

from .inputs import check_qkv, softmax_scale
from .masks import causal_mask, key_mask


def softmax_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    key_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """The attention weights softmax(q k^T * scale) under the mask, (B, H, Nq, Nk); empty rows are 0.

    `mask` is (Nq, Nk), or (H, Nq, Nk) for a pattern that differs per query head; `key_lengths` (B,)
    masks each sequence's padding keys on top of it.
    """
    b, h, hkv, nq, nk, d = check_qkv(q, k, k)
    g = h // hkv
    if mask is not None and mask.dim() == 3:  # per head: laid out like the (Hkv, G) view of the scores below
        mask = mask.reshape(hkv, g, nq, nk)
    scale = softmax_scale(d) if scale is None else scale
    if causal:
        cm = causal_mask(nq, nk, q.device)
        mask = cm if mask is None else mask & cm
    if key_lengths is not None:  # (B, 1, 1, 1, Nk) against the (B, Hkv, G, Nq, Nk) view below
        keys = key_mask(key_lengths, nk)[:, None, None, None, :]
        mask = keys if mask is None else mask & keys
    # The G query heads of a group share one K/V head: fold them into the query axis so K and V
    # are used as they are, never repeated.
    qg = (q * scale).reshape(b, hkv, g * nq, d)  # (B, Hkv, G*Nq, D)
    scores = qg @ k.transpose(-2, -1)  # (B, Hkv, G*Nq, Nk)
    if mask is not None:
        scores.view(b, hkv, g, nq, nk).masked_fill_(~mask, float("-inf"))
    probs = scores.softmax(dim=-1)  # (B, Hkv, G*Nq, Nk)
    if mask is not None:
        empty = ~mask.any(dim=-1)  # queries that see no key: (Nq,), or (B, 1, 1, Nq) with key lengths
        if bool(empty.any()):
            probs = probs.view(b, hkv, g, nq, nk).masked_fill(empty[..., None], 0.0)
    return probs.view(b, h, nq, nk)


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    key_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled dot-product softmax attention; `mask` (Nq, Nk) or (H, Nq, Nk) bool keeps True pairs;
    `key_lengths` (B,) hides each sequence's padding keys."""
    b, h, hkv, nq, nk, d = check_qkv(q, k, v)
    probs = softmax_weights(q, k, causal=causal, mask=mask, scale=scale, key_lengths=key_lengths)  # (B, H, Nq, Nk)
    out = probs.view(b, hkv, (h // hkv) * nq, nk) @ v  # (B, Hkv, G*Nq, D)
    return out.view(b, h, nq, d)
