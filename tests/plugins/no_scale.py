"""Broken on purpose: softmax(q k^T) v without the 1/sqrt(D) temperature."""

import torch

from attnbench.variants.contract import Variant, VariantInfo, check_qkv
from attnbench.variants.masks import causal_mask


class NoScale(Variant):
    info = VariantInfo(name="no-scale", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        _, _, _, nq, nk, _ = check_qkv(q, k, v)
        scores = q @ k.transpose(-2, -1)
        if self.spec.causal:
            scores = scores.masked_fill(~causal_mask(nq, nk, q.device), float("-inf"))
        return torch.nan_to_num(scores.softmax(-1)) @ v
