"""Broken on purpose: declares native GQA but repeats K/V to every query head."""

import torch.nn.functional as F

from attnbench.variants.contract import Variant, VariantInfo, check_qkv
from attnbench.variants.masks import causal_mask


class FakeNativeGqa(Variant):
    info = VariantInfo(name="fake-native-gqa", family="exact", exact=True, gqa_native=True)

    def forward(self, q, k, v):
        _, h, hkv, nq, nk, _ = check_qkv(q, k, v)
        k, v = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
        mask = causal_mask(nq, nk, q.device) if self.spec.causal else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
