"""Broken on purpose: every call raises."""

from attnbench.variants.contract import Variant, VariantInfo


class Raises(Variant):
    info = VariantInfo(name="raises", family="exact", exact=True)

    def forward(self, q, k, v):
        raise RuntimeError("kernel launch failed")
