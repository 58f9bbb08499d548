"""Broken on purpose: never returns for N >= 1024 (a deadlocked kernel)."""

import time

import torch.nn.functional as F

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class Hangs(Variant):
    info = VariantInfo(name="hangs", family="exact", exact=True, gqa=False, causal=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        while k.shape[2] >= 1024:
            time.sleep(1)
        return F.scaled_dot_product_attention(q, k, v)
