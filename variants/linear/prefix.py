"""Linear attention with non-negative features: the quadratic form, and its O(N) evaluation.

For features fq = phi(q), fk = phi(k) the definition is the quadratic form

    A = fq @ fk^T  (masked causally)        out = (A @ v) / rowsum(A)

Non-causally the sums over keys fold into a state S = fk^T v (F x D) and z = sum_j fk_j, so
out = (fq @ S) / (fq @ z). Causally the state is a prefix sum: queries are processed in chunks,
exactly (quadratically) inside a chunk and through the running state across chunks, so there is
no per-token Python loop and no N x N tensor. Causal alignment is bottom-right: keys before the
first query's position start the state; queries before the first key see nothing and output 0.
Everything is accumulated in float32 (float64 stays float64): in half precision the denominator,
a sum over up to N positive terms, overflows.
"""

from __future__ import annotations

import torch

from ..masks import causal_mask


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, with 0 where no key was visible (den == 0)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)


def quadratic_form(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """The definition, materialised: fq (B, Hkv, G, Nq, F), fk (B, Hkv, Nk, F), v (B, Hkv, Nk, D)."""
    scores = fq @ fk[:, :, None].transpose(-2, -1)  # (B, Hkv, G, Nq, Nk)
    if causal:
        scores = scores * causal_mask(fq.shape[-2], fk.shape[-2], fq.device)
    return safe_divide(scores @ v[:, :, None], scores.sum(-1, keepdim=True))


def linear_attention(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, causal: bool, chunk: int) -> torch.Tensor:
    """O(N) evaluation of quadratic_form, same shapes and result."""
    if not causal:
        state = fk.transpose(-2, -1) @ v  # (B, Hkv, F, D)
        z = fk.sum(-2)  # (B, Hkv, F)
        return safe_divide(fq @ state[:, :, None], fq @ z[:, :, None, :, None])

    nq, nk = fq.shape[-2], fk.shape[-2]
    offset = nk - nq  # query i sits at key position i + offset
    prefix = max(offset, 0)
    state = fk[:, :, :prefix].transpose(-2, -1) @ v[:, :, :prefix]  # keys every query sees
    z = fk[:, :, :prefix].sum(-2)
    first = max(-offset, 0)  # queries before this one see no key at all
    outs = [fq.new_zeros(*fq.shape[:-2], first, v.shape[-1])]
    for start in range(first, nq, chunk):
        end = min(start + chunk, nq)
        qc = fq[..., start:end, :]  # (B, Hkv, G, C, F)
        kc = fk[:, :, start + offset : end + offset]  # (B, Hkv, C, F): the keys at the same positions
        vc = v[:, :, start + offset : end + offset]
        intra = (qc @ kc[:, :, None].transpose(-2, -1)).tril()  # (B, Hkv, G, C, C)
        num = qc @ state[:, :, None] + intra @ vc[:, :, None]
        den = qc @ z[:, :, None, :, None] + intra.sum(-1, keepdim=True)
        outs.append(safe_divide(num, den))
        state = state + kc.transpose(-2, -1) @ vc
        z = z + kc.sum(-2)
    return torch.cat(outs, dim=-2)  # (B, Hkv, G, Nq, D)
