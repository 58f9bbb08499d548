"""Declares key lengths but ignores them: padding keys reach every query."""

from dataclasses import replace

import torch

from attnbench.variants.exact.naive import NaiveAttention


class AttendsPadding(NaiveAttention):
    info = replace(NaiveAttention.info, name="attends-padding", packed=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths=None) -> torch.Tensor:
        return super().forward(q, k, v)

    def reference(self, q, k, v, key_lengths=None):
        return super().reference(q, k, v, key_lengths)
