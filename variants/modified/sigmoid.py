"""sigmoid: attention whose weights are sigmoid(q . k / sqrt(D) + b), each on its own, with no normalisation.

Ramapuram et al. 2024, "Theory, Analysis, and Best Practices for Sigmoid Self-Attention" (Apple; ICLR
2025): ``o_i = sum_j sigmoid(q_i . k_j / sqrt(D) + b) v_j`` over the keys query i may see, with the
bias b = -log(n), n the sequence length, which keeps the weights' sum near one at initialisation.
Here n is Nk (the keys of the call). Fast form: queries in chunks, the weights dense within a chunk
(O(N^2) work, a chunk's rows of memory); FlashSigmoid, the paper's kernel, is not written here.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ..contract import Options, Variant, VariantInfo, accumulate_dtype, check_qkv, softmax_scale
from ..masks import causal_mask

# Query rows per chunk of the fast form.
CHUNK_ROWS = 512


class SigmoidOptions(Options):
    bias: float | None = Field(None, description="b added to every score (default -log Nk, the paper's)")


def sigmoid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, bias: float) -> torch.Tensor:
    """sum_j sigmoid(q_i . k_j / sqrt(D) + bias) v_j over the visible keys (K/V heads repeated to the query heads)."""
    _, h, hkv, nq, nk, d = check_qkv(q, k, v)
    k, v = k.repeat_interleave(h // hkv, dim=1), v.repeat_interleave(h // hkv, dim=1)
    weights = torch.sigmoid(q @ k.transpose(-1, -2) * softmax_scale(d) + bias)
    if causal:
        weights = weights.masked_fill(~causal_mask(nq, nk, q.device), 0.0)
    return weights @ v


class SigmoidAttention(Variant):
    """Sigmoid attention with the -log n bias, queries in chunks."""

    info = VariantInfo(
        name="sigmoid",
        family="modified",
        exact=False,
        definition="sum_j sigmoid(q . k_j / sqrt(D) - log Nk) v_j, unnormalised",
        summary="sigmoid attention: no softmax, each weight sigmoid(score - log n) (Apple, 2024)",
        paper="Ramapuram et al. 2024, Theory, Analysis, and Best Practices for Sigmoid Self-Attention (ICLR 2025)",
        source="apple/ml-sigmoid-attention (FlashSigmoid; the bias b = -log n)",
        departures=(
            "n in b = -log n is the call's key count Nk (the paper's sequence length)",
            "the fast form is pure torch, queries in chunks of 512 (O(N^2) work): FlashSigmoid is not built",
            "no hybrid-norm or LayerScale around it: the paper's stabilisers belong to the model",
        ),
    )
    Options = SigmoidOptions

    def bias(self, num_keys: int) -> float:
        return -math.log(num_keys) if self.options.bias is None else self.options.bias

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, _, _, nq, nk, _ = check_qkv(q, k, v)
        acc = accumulate_dtype(q.dtype)
        k_, v_, bias = k.to(acc), v.to(acc), self.bias(nk)
        parts = []
        for start in range(0, nq, CHUNK_ROWS):
            rows = q[:, :, start : start + CHUNK_ROWS].to(acc)
            stop = start + rows.shape[2]
            # Under causality the chunk's last query sees keys up to its own position: the rest is cut.
            keys = nk - (nq - stop) if self.spec.causal else nk
            if keys <= 0:
                parts.append(torch.zeros_like(rows))
                continue
            parts.append(sigmoid_attention(rows, k_[:, :, :keys], v_[:, :, :keys], self.spec.causal, bias))
        return torch.cat(parts, dim=2).to(q.dtype)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The weights dense over the whole call."""
        return sigmoid_attention(q, k, v, self.spec.causal, self.bias(k.shape[2]))
