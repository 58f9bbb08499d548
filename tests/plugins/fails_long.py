"""Broken on purpose: raises for N >= 1024 (shorter inputs are correct)."""

import torch.nn.functional as F

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class FailsLong(Variant):
    info = VariantInfo(name="fails-long", family="exact", exact=True, gqa=False, causal=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        if k.shape[2] >= 1024:
            raise RuntimeError(f"kernel has no tile config for N={k.shape[2]}")
        return F.scaled_dot_product_attention(q, k, v)
