"""linear-elu: linear attention with the feature map phi(x) = elu(x) + 1.

Katharopoulos, Vyas, Pappas & Fleuret 2020, "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention". The definition is the quadratic form of prefix.py with
phi = elu + 1 (strictly positive, so every visible row has a positive denominator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..contract import Options, Variant, VariantInfo, accumulate_dtype, check_qkv
from ..masks import causal_mask, key_mask
from .prefix import linear_attention, quadratic_form


def elu_features(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1


class LinearEluOptions(Options):
    chunk_size: int = Field(64, gt=0, description="queries per chunk of the causal prefix scan")


class LinearEluAttention(Variant):
    """Katharopoulos et al. linear attention, O(N) in time and memory, causal by chunked prefix sums."""

    info = VariantInfo(
        name="linear-elu",
        family="linear",
        exact=False,
        gqa_native=True,
        scaled=False,
        definition="quadratic form phi(q) phi(k)^T v / rowsum, phi = elu + 1",
        summary="linear attention, phi = elu + 1 (chunked causal scan)",
        paper="Katharopoulos et al. 2020, Transformers are RNNs",
        source="idiap/fast-transformers, fast_transformers/attention/{linear,causal_linear}_attention.py",
        departures=(
            "no eps (1e-6) added to the denominator: the original adds it; elu + 1 features keep the denominator "
            "positive, and a query with no visible key outputs 0",
        ),
        lengths=True,  # padding keys get zero features: they add nothing to the sums
    )
    Options = LinearEluOptions

    def _features(self, q, k, v, key_lengths=None):
        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        acc = accumulate_dtype(q.dtype)
        fq = elu_features(q.to(acc)).reshape(b, hkv, h // hkv, nq, d)  # (B, Hkv, G, Nq, D)
        fk = elu_features(k.to(acc))
        if key_lengths is not None:
            fk = fk * key_mask(key_lengths, nk)[:, None, :, None]
        return fq, fk, v.to(acc)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        fq, fk, vv = self._features(q, k, v, key_lengths)
        out = linear_attention(fq, fk, vv, self.spec.causal, self.options.chunk_size)
        return out.reshape(q.shape).to(q.dtype)

    def attention_weights(
        self, q: torch.Tensor, k: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """phi(q) phi(k)^T normalised per row (causally masked, padding keys zeroed): what the quadratic
        form applies to v."""
        fq, fk, _ = self._features(q, k, k, key_lengths)
        scores = fq @ fk[:, :, None].transpose(-2, -1)  # (B, Hkv, G, Nq, Nk)
        if self.spec.causal:
            scores = scores * causal_mask(q.shape[-2], k.shape[-2], q.device)
        return (scores / scores.sum(-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)).flatten(1, 2)

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The quadratic form with phi = elu + 1."""
        fq, fk, vv = self._features(q, k, v, key_lengths)
        return quadratic_form(fq, fk, vv, self.spec.causal).reshape(q.shape)
