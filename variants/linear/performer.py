"""performer: FAVOR+ with positive orthogonal random features.

Choromanski et al. 2021, "Rethinking Attention with Performers". With x' = x / D^(1/4) and rows
w_f of an orthogonal random matrix W (m x D), the positive features

    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)

give E[phi(q) . phi(k)] = exp(q . k / sqrt(D)), the softmax kernel. The definition this variant
must equal is the quadratic form of that kernel: out_i = sum_j K_ij v_j / sum_j K_ij with
K_ij = phi(q_i) . phi(k_j), masked causally.

Numerical stabilisers. Query features are divided by their own max (a per-query constant: it
cancels). The reference implementation divides key features by the max over *all* keys, which
under causality lets a future key change (through rounding and underflow) what an earlier query
sees. Here each key keeps its own max m_j, and a query at position i rescales every visible key
by exp(m_j - r_i) with r_i the running max over keys up to i only, exactly as online softmax
does; the chunked prefix scan carries its state at the running max of the keys it holds. Every
factor cancels in the ratio, so the output is the definition, and nothing depends on the future.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ..contract import Options, Variant, VariantInfo, accumulate_dtype, check_qkv
from ..masks import causal_mask, key_mask
from .prefix import safe_divide

NEG_INF = float("-inf")


def orthogonal_features(num_features: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """W (m x D): blocks of D orthogonal Gaussian directions, rows scaled to chi(D) norms."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        blocks.append(q.T)
    directions = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)
    return directions * norms[:, None]


def log_features(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log phi(x) up to a constant: W x' - |x'|^2 / 2 with x' = x / D^(1/4); (..., N, m)."""
    x = x * x.shape[-1] ** -0.25
    return x @ w.T - (x * x).sum(-1, keepdim=True) / 2


class PerformerOptions(Options):
    features: int = Field(256, gt=0, description="random features m")
    seed: int = Field(0, description="seed of the random feature matrix")
    chunk_size: int = Field(64, gt=0, description="queries per chunk of the causal prefix scan")


class PerformerAttention(Variant):
    """FAVOR+ (positive orthogonal random features), O(N), causal through a stabilised prefix scan."""

    info = VariantInfo(
        name="performer",
        family="linear",
        exact=False,
        gqa_native=True,
        definition="quadratic form of the FAVOR+ kernel phi(q) . phi(k) with positive random features",
        summary="Performer FAVOR+, positive orthogonal random features",
        paper="Choromanski et al. 2021, Rethinking Attention with Performers",
        lengths=True,  # padding keys get zero weight in the sums
    )
    Options = PerformerOptions

    def __init__(self, spec) -> None:
        super().__init__(spec)
        gen = torch.Generator().manual_seed(self.options.seed)
        self.register_buffer("w", orthogonal_features(self.options.features, spec.head_dim, gen).float())

    def _log_features(self, q, k, v):
        b, h, hkv, nq, _, _ = check_qkv(q, k, v)
        acc = accumulate_dtype(q.dtype)
        w = self.w.to(acc)
        lq = log_features(q.to(acc), w).reshape(b, hkv, h // hkv, nq, -1)  # (B, Hkv, G, Nq, m)
        return lq, log_features(k.to(acc), w), v.to(acc)  # (B, Hkv, Nk, m), (B, Hkv, Nk, D)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_lengths: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        lq, lk, vv = self._log_features(q, k, v)
        fq = torch.exp(lq - lq.amax(-1, keepdim=True))  # query stabiliser: per query, cancels
        key_max = lk.amax(-1)  # m_j: (B, Hkv, Nk)
        fk = torch.exp(lk - key_max[..., None])  # each key by its own max: in (0, 1]
        if key_lengths is not None:  # a padding key's weight exp(m_j - ...) becomes exp(-inf) = 0 in both forms
            key_max = key_max.masked_fill(~key_mask(key_lengths, key_max.shape[-1])[:, None], NEG_INF)
        if self.spec.causal:
            out = _causal_scan(fq, fk, key_max, vv, self.options.chunk_size)
        else:
            scale = torch.exp(key_max - key_max.amax(-1, keepdim=True))[..., None]  # every key is visible
            state = (fk * scale).transpose(-2, -1) @ vv  # (B, Hkv, m, D)
            z = (fk * scale).sum(-2)  # (B, Hkv, m)
            out = safe_divide(fq @ state[:, :, None], fq @ z[:, :, None, :, None])
        return out.reshape(q.shape).to(q.dtype)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  key_lengths: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The kernel's quadratic form: weights K_ij / sum_j K_ij, computed as a softmax of log K."""
        lq, lk, vv = self._log_features(q, k, v)
        cq, ck = lq.amax(-1, keepdim=True), lk.amax(-1, keepdim=True)
        kernel = torch.exp(lq - cq) @ torch.exp(lk - ck)[:, :, None].transpose(-2, -1)  # (B, Hkv, G, Nq, Nk)
        log_kernel = torch.log(kernel) + cq + ck[:, :, None].transpose(-2, -1)
        if key_lengths is not None:  # padding keys get no weight, in either mode
            log_kernel = log_kernel.masked_fill(~key_mask(key_lengths, lk.shape[-2])[:, None, None, None], NEG_INF)
        if self.spec.causal:
            mask = causal_mask(lq.shape[-2], lk.shape[-2], lq.device)
            log_kernel = log_kernel.masked_fill(~mask, NEG_INF)
            empty = ~mask.any(-1)[:, None]
            weights = log_kernel.masked_fill(empty, 0.0).softmax(-1).masked_fill(empty, 0.0)
        else:
            weights = log_kernel.softmax(-1)
        return (weights @ vv[:, :, None]).reshape(q.shape)


def _causal_scan(
    fq: torch.Tensor, fk: torch.Tensor, key_max: torch.Tensor, v: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Causal FAVOR+ by chunks; keys rescaled by exp(m_j - r_i), r_i the running key max up to i."""
    nq, nk = fq.shape[-2], fk.shape[-2]
    offset = nk - nq
    prefix = max(offset, 0)
    # State over the keys before the first query, held at their max c.
    c = key_max[:, :, :prefix].amax(-1) if prefix else key_max.new_full(key_max.shape[:2], NEG_INF)
    weights = torch.exp(key_max[:, :, :prefix] - c[..., None])[..., None]
    state = (fk[:, :, :prefix] * weights).transpose(-2, -1) @ v[:, :, :prefix]  # (B, Hkv, m, D)
    z = (fk[:, :, :prefix] * weights).sum(-2)  # (B, Hkv, m)
    first = max(-offset, 0)
    outs = [fq.new_zeros(*fq.shape[:-2], first, v.shape[-1])]
    for start in range(first, nq, chunk):
        end = min(start + chunk, nq)
        qc, kc, vc = (
            fq[..., start:end, :],
            fk[:, :, start + offset : end + offset],
            v[:, :, start + offset : end + offset],
        )
        mc = key_max[:, :, start + offset : end + offset]  # (B, Hkv, C)
        running = torch.maximum(c[..., None], mc.cummax(-1).values)  # r_i over keys up to i: (B, Hkv, C)
        visible = torch.ones(end - start, end - start, dtype=torch.bool, device=fq.device).tril()
        # exp(m_j - r_i) for j <= i (<= 1 by construction); -inf before exp elsewhere, so no overflow
        rescale = torch.exp(torch.where(visible, mc[..., None, :] - running[..., :, None], NEG_INF))
        intra = (qc @ kc[:, :, None].transpose(-2, -1)) * rescale[:, :, None]  # (B, Hkv, G, C, C)
        carried = torch.exp(c[..., None] - running)[:, :, None, :, None]  # state at c -> at r_i
        num = carried * (qc @ state[:, :, None]) + intra @ vc[:, :, None]
        den = carried * (qc @ z[:, :, None, :, None]) + intra.sum(-1, keepdim=True)
        outs.append(safe_divide(num, den))
        c_new = torch.maximum(c, mc.amax(-1))
        keep = torch.exp(c - c_new)[..., None]
        added = torch.exp(mc - c_new[..., None])[..., None] * kc  # (B, Hkv, C, m)
        state = state * keep[..., None] + added.transpose(-2, -1) @ vc
        z = z * keep + added.sum(-2)
        c = c_new
    return torch.cat(outs, dim=-2)
