"""Broken on purpose: adds random noise of 1e-2 to the output, so two calls on one input differ."""

import torch

from attnbench.variants.contract import Variant, VariantInfo, check_qkv
from attnbench.variants.softmax import softmax_attention


class Nondeterministic(Variant):
    info = VariantInfo(name="nondeterministic", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        out = softmax_attention(q, k, v, causal=self.spec.causal)
        return out + 1e-2 * torch.randn_like(out)
