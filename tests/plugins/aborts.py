"""Broken on purpose: kills its own worker process (os.abort) for N >= 128, as a crashing kernel does."""

import os

import torch.nn.functional as F

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class Aborts(Variant):
    info = VariantInfo(name="aborts", family="exact", exact=True, gqa=False, causal=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        if k.shape[2] >= 128:
            os.abort()
        return F.scaled_dot_product_attention(q, k, v)
