"""Broken on purpose: right for a whole sequence, but a single decoding query (Nq = 1) is aligned
top-left (torch's is_causal), so it sees only key 0 instead of every key."""

import torch.nn.functional as F

from attnbench.variants.contract import Variant, VariantInfo, check_qkv
from attnbench.variants.softmax import softmax_attention


class DecodeMisaligned(Variant):
    info = VariantInfo(name="decode-misaligned", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        _, _, _, nq, _, _ = check_qkv(q, k, v)
        if self.spec.causal and nq == 1:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return softmax_attention(q, k, v, causal=self.spec.causal)
