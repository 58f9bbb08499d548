"""Broken on purpose: keeps at most 1024 keys (a fixed-size key buffer), silently dropping the rest;
right whenever Nk <= 1024."""

from attnbench.variants.contract import Variant, VariantInfo, check_qkv
from attnbench.variants.masks import causal_mask
from attnbench.variants.softmax import softmax_attention

BUFFER = 1024


class BreaksBeyond1024(Variant):
    info = VariantInfo(name="breaks-beyond-1024", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        _, _, _, nq, nk, _ = check_qkv(q, k, v)
        mask = causal_mask(nq, nk, q.device)[:, :BUFFER] if self.spec.causal else None
        return softmax_attention(q, k[:, :, :BUFFER], v[:, :, :BUFFER], mask=mask)
