"""Broken on purpose: returns (B, N, H, D), forgetting to transpose back."""

import torch.nn.functional as F

from attnbench.variants.contract import Variant, VariantInfo, check_qkv
from attnbench.variants.masks import causal_mask


class WrongShape(Variant):
    info = VariantInfo(name="wrong-shape", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        _, _, _, nq, nk, _ = check_qkv(q, k, v)
        mask = causal_mask(nq, nk, q.device) if self.spec.causal else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
