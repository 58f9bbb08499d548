"""Broken on purpose: accepts causal=True but never masks, so every query sees the future."""

import torch.nn.functional as F

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class LeakyCausal(Variant):
    info = VariantInfo(name="leaky-causal", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        return F.scaled_dot_product_attention(q, k, v)
