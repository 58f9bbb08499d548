"""Causal only, declares key lengths and ignores them: in self-attention its real queries never reach
the padding anyway, so only a decoding shape (Nq < Nk) or a padded query row shows the bug."""

from dataclasses import replace

import torch

from attnbench.variants.exact.naive import NaiveAttention


class CausalIgnoresLengths(NaiveAttention):
    info = replace(NaiveAttention.info, name="causal-ignores-lengths", packed=False, non_causal=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths=None) -> torch.Tensor:
        return super().forward(q, k, v)
