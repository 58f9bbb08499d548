"""Broken on purpose: raises KeyboardInterrupt inside its forward, as if the user had pressed Ctrl-C."""

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class Interrupts(Variant):
    info = VariantInfo(name="interrupts", family="exact", exact=True, gqa=False, causal=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        raise KeyboardInterrupt
