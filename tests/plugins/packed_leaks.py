"""Declares packed sequences but ignores their boundaries: every sequence sees the others."""

from dataclasses import replace

import torch

from attnbench.variants.exact.naive import NaiveAttention


class PackedLeaks(NaiveAttention):
    info = replace(NaiveAttention.info, name="packed-leaks")

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths=None, cu_seqlens=None):
        return super().forward(q, k, v, key_lengths)
