"""performer: FAVOR+ with positive orthogonal random features (Choromanski et al. 2021).

With x' = x / D^(1/4) and rows w_f of an orthogonal random matrix W (m x D), the positive features

    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)

give E[phi(q) . phi(k)] = exp(q . k / sqrt(D)), the softmax kernel. As in the original code a
small epsilon (`feature_eps`, 1e-4 as in performer-pytorch; google-research's fast attention passes
1e-6) is added to every feature after the stabilising max is taken out: a query's features by its
own max, a key's by the max over the keys the query sees (see below), so

    K_ij = sum_f (exp(lq_if - c_i) + eps) (exp(lk_jf - r_i) + eps)

and the definition is the quadratic form out_i = sum_j K_ij v_j / sum_j K_ij over visible keys.

Stabilisers. The original code divides key features by the max over *all* keys, which under
causality lets a future key change (through the epsilon and through underflow) what an earlier
query sees. Here r_i is the running max over the keys up to i only, exactly as online softmax
does; the chunked prefix scan keeps each key at its own max m_j and rescales by exp(m_j - r_i), so
the output is the definition and nothing depends on the future. Non-causally r_i is the max over
all (real) keys, which is the original's.

Random features. W is drawn from torch's generator when the module is built, so each layer of a
model seeded once draws its own features (as nn.Linear draws its weights); or from a generator
seeded with `seed` (then every layer given that seed starts from the same features, and redraws
continue that generator's stream). Each D x D block is orthogonalised by QR with the signs of R's diagonal moved into Q,
which makes the directions Haar-distributed; rows are scaled to chi(D) norms. `redraw_interval`
k > 0 draws new features every k forward calls in training mode (off by default: a model stays
deterministic).

`kernel: relu` gives the generalized ReLU kernel of the Performer paper and of Long Range Arena's
published Performer runs (its default "generalized" attention): phi(x) = relu(W x) + 1e-3, or with
`features: 0`, LRA's deterministic features relu(x) + 1e-3 (no random projection). LRA used the
softmax kernel only on ListOps.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from ..contract import Options, Variant, VariantInfo, accumulate_dtype, check_qkv
from ..masks import causal_mask, key_mask
from .prefix import linear_attention, quadratic_form, safe_divide

NEG_INF = float("-inf")
RELU_EPS = 1e-3  # the original's generalized (ReLU) kernel_epsilon


def orthogonal_features(num_features: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """W (m x D): blocks of D Haar-orthogonal Gaussian directions, rows scaled to chi(D) norms."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        # QR alone leaves the signs to the algorithm: moving sign(diag R) into Q makes Q Haar-distributed.
        blocks.append((q * torch.sign(torch.diagonal(r))).T)
    directions = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)
    return directions * norms[:, None]


def log_features(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log phi(x) up to a constant: W x' - |x'|^2 / 2 with x' = x / D^(1/4); (..., N, m)."""
    x = x * x.shape[-1] ** -0.25
    return x @ w.T - (x * x).sum(-1, keepdim=True) / 2


class PerformerOptions(Options):
    features: int = Field(256, ge=0, description="random features m (0: relu kernel on x itself, as LRA)")
    kernel: Literal["softmax", "relu"] = Field("softmax", description="positive softmax features, or relu")
    feature_eps: float = Field(1e-4, ge=0, description="added to each softmax feature (google-research: 1e-6)")
    seed: int | None = Field(None, description="seed of the features (default: torch's generator at build)")
    redraw_interval: int = Field(0, ge=0, description="draw new features every k training calls (0: never)")
    chunk_size: int = Field(64, gt=0, description="queries per chunk of the causal prefix scan")

    @model_validator(mode="after")
    def _softmax_needs_features(self) -> PerformerOptions:
        if self.kernel == "softmax" and self.features == 0:
            raise ValueError("the softmax kernel needs random features (features > 0)")
        return self


class PerformerAttention(Variant):
    """FAVOR+ (positive orthogonal random features), O(N), causal through a stabilised prefix scan."""

    info = VariantInfo(
        name="performer",
        family="linear",
        exact=False,
        gqa_native=True,
        definition="quadratic form of the FAVOR+ kernel (phi(q) + eps) . (phi(k) + eps), or of relu features",
        summary="Performer FAVOR+, positive orthogonal random features (or the relu kernel)",
        paper="Choromanski et al. 2021, Rethinking Attention with Performers",
        source="google-research/google-research, performer/fast_attention (as vendored in LRA: "
        "lra_benchmarks/models/performer/performer_attention.py)",
        departures=(
            "key stabiliser: the max over the keys each query sees (the original's max over all keys lets a "
            "future key change an earlier query's output under causality)",
            "QR blocks are sign-corrected so the directions are Haar-distributed (the original omits it)",
            "features are not redrawn unless redraw_interval is set (the original softmax attention redraws "
            "at every call): a trained model stays deterministic",
            "feature epsilon 1e-4 by default, performer-pytorch's (google-research's fast attention passes 1e-6: "
            "set feature_eps)",
        ),
        lengths=True,  # padding keys get zero weight in the sums
    )
    Options = PerformerOptions

    def __init__(self, spec) -> None:
        super().__init__(spec)
        seed = self.options.seed
        self._generator = None if seed is None else torch.Generator().manual_seed(seed)  # kept: redraws go on
        self.register_buffer("w", self._draw(), persistent=True)
        self._calls = 0

    def _draw(self) -> torch.Tensor:
        o = self.options
        if o.features == 0:  # the deterministic relu kernel: no projection
            return torch.zeros(0, self.spec.head_dim)
        return orthogonal_features(o.features, self.spec.head_dim, self._generator).float()

    def _maybe_redraw(self) -> None:
        interval = self.options.redraw_interval
        if not (interval and self.training):
            return
        self._calls += 1
        if self._calls >= interval:
            self._calls = 0
            self.w = self._draw().to(self.w.device)

    def _relu_features(self, q, k, v, key_lengths):
        b, h, hkv, nq, nk, _ = check_qkv(q, k, v)
        acc = accumulate_dtype(q.dtype)
        w = self.w.to(acc)
        project = (lambda x: x) if self.options.features == 0 else (lambda x: x @ w.T)
        fq = (torch.relu(project(q.to(acc))) + RELU_EPS).reshape(b, hkv, h // hkv, nq, -1)
        fk = torch.relu(project(k.to(acc))) + RELU_EPS
        if key_lengths is not None:
            fk = fk * key_mask(key_lengths, nk)[:, None, :, None]
        return fq, fk, v.to(acc)

    def _softmax_features(self, q, k, v, key_lengths):
        """Query features (+ eps), each key's features at its own max m_j, m_j (-inf for padding), v."""
        b, h, hkv, nq, _, _ = check_qkv(q, k, v)
        acc = accumulate_dtype(q.dtype)
        w = self.w.to(acc)
        lq = log_features(q.to(acc), w).reshape(b, hkv, h // hkv, nq, -1)  # (B, Hkv, G, Nq, m)
        fq = torch.exp(lq - lq.amax(-1, keepdim=True)) + self.options.feature_eps  # per query, as the original
        lk = log_features(k.to(acc), w)  # (B, Hkv, Nk, m)
        key_max = lk.amax(-1)  # m_j: (B, Hkv, Nk)
        fk = torch.exp(lk - key_max[..., None])  # each key by its own max: in (0, 1]
        if key_lengths is not None:  # a padding key's weight exp(m_j - ...) becomes exp(-inf) = 0
            key_max = key_max.masked_fill(~key_mask(key_lengths, key_max.shape[-1])[:, None], NEG_INF)
        return fq, fk, key_max, v.to(acc)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        self._maybe_redraw()
        causal = self.spec.causal
        if self.options.kernel == "relu":
            fq, fk, vv = self._relu_features(q, k, v, key_lengths)
            return linear_attention(fq, fk, vv, causal, self.options.chunk_size).reshape(q.shape).to(q.dtype)
        fq, fk, key_max, vv = self._softmax_features(q, k, v, key_lengths)
        real = torch.isfinite(key_max)[..., None].to(vv.dtype)  # (B, Hkv, Nk, 1)
        if causal:
            num, den = _causal_scan(fq, fk, key_max, vv, self.options.chunk_size)
            # The epsilon part: eps * sum_f fq_if times the sums of the visible real values and keys.
            nq, nk = fq.shape[-2], fk.shape[-2]
            pos = torch.arange(nq, device=vv.device) + (nk - nq)
            seen = (pos >= 0).to(vv.dtype)[:, None]
            at = pos.clamp_min(0)
            v_sum = (vv * real).cumsum(-2)[:, :, at] * seen  # (B, Hkv, Nq, D)
            count = real.cumsum(-2)[:, :, at] * seen  # (B, Hkv, Nq, 1)
        else:
            scale = torch.exp(key_max - key_max.amax(-1, keepdim=True))[..., None]  # every key is visible
            num = fq @ ((fk * scale).transpose(-2, -1) @ vv)[:, :, None]
            den = fq @ (fk * scale).sum(-2)[:, :, None, :, None]
            v_sum, count = (vv * real).sum(-2, keepdim=True), real.sum(-2, keepdim=True)
        s = self.options.feature_eps * fq.sum(-1, keepdim=True)  # (B, Hkv, G, Nq, 1)
        out = safe_divide(num + s * v_sum[:, :, None], den + s * count[:, :, None])
        return out.reshape(q.shape).to(q.dtype)

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The kernel's quadratic form, materialised: K_ij = fq_i . (exp(lk_j - r_i) + eps) over visible keys,
        r_i the max over the keys query i sees."""
        if self.options.kernel == "relu":
            fq, fk, vv = self._relu_features(q, k, v, key_lengths)
            return quadratic_form(fq, fk, vv, self.spec.causal).reshape(q.shape)
        fq, fk, key_max, vv = self._softmax_features(q, k, v, key_lengths)
        nq, nk = fq.shape[-2], fk.shape[-2]
        visible = torch.isfinite(key_max)[:, :, None, :].expand(-1, -1, nq, -1)  # (B, Hkv, Nq, Nk)
        if self.spec.causal:
            visible = visible & causal_mask(nq, nk, fq.device)
        seen_max = key_max[:, :, None, :].masked_fill(~visible, NEG_INF).amax(-1, keepdim=True)  # r_i
        rescale = torch.exp((key_max[:, :, None, :] - seen_max).masked_fill(~visible, NEG_INF))  # (B, Hkv, Nq, Nk)
        kernel = (fq @ fk[:, :, None].transpose(-2, -1)) * rescale[:, :, None]  # (B, Hkv, G, Nq, Nk)
        eps = self.options.feature_eps
        kernel = kernel + eps * fq.sum(-1, keepdim=True) * visible[:, :, None].to(kernel.dtype)
        return safe_divide(kernel @ vv[:, :, None], kernel.sum(-1, keepdim=True)).reshape(q.shape)


def _causal_scan(
    fq: torch.Tensor, fk: torch.Tensor, key_max: torch.Tensor, v: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal FAVOR+ by chunks: numerator and denominator of each query, keys rescaled by exp(m_j - r_i),
    r_i the running key max up to i."""
    nq, nk = fq.shape[-2], fk.shape[-2]
    offset = nk - nq
    prefix = max(offset, 0)
    # State over the keys before the first query, held at their max c.
    c = key_max[:, :, :prefix].amax(-1) if prefix else key_max.new_full(key_max.shape[:2], NEG_INF)
    weights = torch.exp(key_max[:, :, :prefix] - c[..., None])[..., None]
    state = (fk[:, :, :prefix] * weights).transpose(-2, -1) @ v[:, :, :prefix]  # (B, Hkv, m, D)
    z = (fk[:, :, :prefix] * weights).sum(-2)  # (B, Hkv, m)
    first = max(-offset, 0)
    nums = [fq.new_zeros(*fq.shape[:-2], first, v.shape[-1])]
    dens = [fq.new_zeros(*fq.shape[:-2], first, 1)]
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
        nums.append(carried * (qc @ state[:, :, None]) + intra @ vc[:, :, None])
        dens.append(carried * (qc @ z[:, :, None, :, None]) + intra.sum(-1, keepdim=True))
        c_new = torch.maximum(c, mc.amax(-1))
        keep = torch.exp(c - c_new)[..., None]
        added = torch.exp(mc - c_new[..., None])[..., None] * kc  # (B, Hkv, C, m)
        state = state * keep[..., None] + added.transpose(-2, -1) @ vc
        z = z * keep + added.sum(-2)
        c = c_new
    return torch.cat(nums, dim=-2), torch.cat(dens, dim=-2)
