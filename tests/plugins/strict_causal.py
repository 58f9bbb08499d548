"""Broken on purpose: the causal mask leaves out the diagonal, so a query sees only strictly earlier keys."""

import torch

from attnbench.variants.contract import Variant, VariantInfo, check_qkv, softmax_scale


class StrictCausal(Variant):
    info = VariantInfo(name="strict-causal", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        _, _, _, nq, nk, d = check_qkv(q, k, v)
        scores = (q @ k.transpose(-2, -1)) * softmax_scale(d)
        if self.spec.causal:
            strictly_earlier = torch.ones(nq, nk, dtype=torch.bool, device=q.device).tril(nk - nq - 1)
            scores = scores.masked_fill(~strictly_earlier, float("-inf"))
        return torch.nan_to_num(scores.softmax(-1)) @ v
