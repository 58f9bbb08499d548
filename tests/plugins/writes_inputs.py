"""Broken on purpose: scales q by 1/sqrt(D) in place (q.mul_), changing the caller's tensor."""

import torch

from attnbench.variants.contract import Variant, VariantInfo, check_qkv, softmax_scale
from attnbench.variants.masks import causal_mask


class WritesInputs(Variant):
    info = VariantInfo(name="writes-inputs", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        _, _, _, nq, nk, d = check_qkv(q, k, v)
        scores = q.mul_(softmax_scale(d)) @ k.transpose(-2, -1)
        if self.spec.causal:
            scores = scores.masked_fill(~causal_mask(nq, nk, q.device), float("-inf"))
        return torch.nan_to_num(scores.softmax(-1)) @ v
