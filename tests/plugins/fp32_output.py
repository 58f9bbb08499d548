"""Broken on purpose: computes in float32 for half inputs and forgets to cast the output back."""

from attnbench.variants.contract import Variant, VariantInfo, check_qkv
from attnbench.variants.softmax import softmax_attention


class Fp32Output(Variant):
    info = VariantInfo(name="fp32-output", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        return softmax_attention(q.float(), k.float(), v.float(), causal=self.spec.causal)
