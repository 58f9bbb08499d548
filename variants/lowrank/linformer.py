"""linformer: keys and values projected along the sequence to k rows (Wang et al. 2020).

    out = softmax(q (E k)^T / sqrt(D)) (F v)        E, F: (k x n) learned projections

E and F are parameters sized for the spec's max_seq_len n: shorter inputs use their first Nk
columns (the same as zero-padding to n), longer ones are unsupported. Linformer mixes keys from
every position into each projected row, so it cannot be causal: causal specs are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..contract import Options, Unsupported, Variant, VariantInfo, check_qkv
from ..masks import key_mask
from ..softmax import softmax_attention


class LinformerOptions(Options):
    rank: int = Field(256, gt=0, description="projected length k")


class LinformerAttention(Variant):
    """Linformer attention: sequence-projected K and V, O(N k) time and memory."""

    info = VariantInfo(
        name="linformer",
        family="low-rank",
        exact=False,
        causal=False,
        gqa_native=True,
        definition="softmax(q (E k)^T / sqrt(D)) (F v) with the variant's projections E, F",
        summary="Linformer: K, V projected to k rows along the sequence (non-causal, fixed max length)",
        paper="Wang et al. 2020, Linformer: Self-Attention with Linear Complexity",
        source="facebookresearch/fairseq, examples/linformer (linformer_src/modules/multihead_linear_attention.py)",
        departures=(
            "E and F are shared by all heads and separate for keys and values: the paper's 'headwise' sharing "
            "(it also offers key-value sharing, E = F, and layerwise sharing across layers)",
            "inputs shorter than max_seq_len use the first Nk columns of E and F, the same as zero-padding to n "
            "(the original projects inputs padded to its fixed length)",
        ),
        lengths=True,  # padding keys and values are zeroed before the projection
    )
    Options = LinformerOptions

    def __init__(self, spec) -> None:
        super().__init__(spec)
        rank, n = self.options.rank, spec.max_seq_len
        # Entries of variance 1/n: a projected row is a random mix of keys at the keys' own scale.
        self.proj_k = nn.Parameter(torch.randn(rank, n) / n**0.5)  # E
        self.proj_v = nn.Parameter(torch.randn(rank, n) / n**0.5)  # F

    def _project(self, k: torch.Tensor, v: torch.Tensor, key_lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
        nk = k.shape[-2]
        if nk > self.spec.max_seq_len:
            raise Unsupported(f"linformer's projections cover {self.spec.max_seq_len} keys, got {nk}")
        if key_lengths is not None:
            real = key_mask(key_lengths, nk)[:, None, :, None]
            k, v = k * real, v * real
        e = self.proj_k[:, :nk].to(k.dtype)
        f = self.proj_v[:, :nk].to(v.dtype)
        return e @ k, f @ v  # (B, Hkv, k, D)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        _, h, hkv, _, _, _ = check_qkv(q, k, v)
        pk, pv = self._project(k, v, key_lengths)
        return F.scaled_dot_product_attention(q, pk, pv, enable_gqa=hkv != h)

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Softmax attention over the projected keys and values."""
        check_qkv(q, k, v)
        pk, pv = self._project(k, v, key_lengths)
        return softmax_attention(q, pk, pv)
