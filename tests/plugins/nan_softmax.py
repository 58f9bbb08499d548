"""Broken on purpose: softmax as exp / sum without subtracting the row max (overflows to NaN)."""

import torch

from attnbench.variants.contract import Variant, VariantInfo, check_qkv, softmax_scale
from attnbench.variants.masks import causal_mask


class NanSoftmax(Variant):
    info = VariantInfo(name="nan-softmax", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        _, _, _, nq, nk, d = check_qkv(q, k, v)
        scores = (q @ k.transpose(-2, -1)) * softmax_scale(d)
        if self.spec.causal:
            scores = scores.masked_fill(~causal_mask(nq, nk, q.device), float("-inf"))
        weights = torch.exp(scores)
        return (weights / weights.sum(-1, keepdim=True)) @ v
