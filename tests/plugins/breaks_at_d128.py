"""Broken on purpose: for head dims of 128 and more it uses the softmax scale of D = 64, a constant
left over from a kernel tuned for D <= 64; right at every smaller head dim."""

from attnbench.variants.contract import Variant, VariantInfo, check_qkv, softmax_scale
from attnbench.variants.softmax import softmax_attention


class BreaksAtD128(Variant):
    info = VariantInfo(name="breaks-at-d128", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        _, _, _, _, _, d = check_qkv(q, k, v)
        scale = softmax_scale(64 if d >= 128 else d)
        return softmax_attention(q, k, v, causal=self.spec.causal, scale=scale)
