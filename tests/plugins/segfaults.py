"""Broken on purpose: reads address 0 inside its forward, so its process dies of SIGSEGV (a crashing kernel)."""

import ctypes

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class Segfaults(Variant):
    info = VariantInfo(name="segfaults", family="exact", exact=True, gqa=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        ctypes.string_at(0)
        return q
