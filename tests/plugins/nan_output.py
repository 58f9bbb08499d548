"""Broken on purpose: returns NaN everywhere, so a model built on it has a NaN loss from its first step."""

import torch

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class NanOutput(Variant):
    info = VariantInfo(name="nan-output", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        return torch.full_like(q, float("nan"))
