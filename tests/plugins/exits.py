"""Broken on purpose: ends its own process with sys.exit(0) inside its forward, as if it had succeeded."""

import sys

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class Exits(Variant):
    info = VariantInfo(name="exits", family="exact", exact=True, gqa=False, causal=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        sys.exit(0)
