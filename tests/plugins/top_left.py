"""Broken on purpose: torch's is_causal, which aligns top-left when Nq != Nk."""

import torch.nn.functional as F

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class TopLeft(Variant):
    info = VariantInfo(name="top-left", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.spec.causal)
