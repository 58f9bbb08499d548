"""Broken on purpose: no shape validation, so a k with head dim 1 broadcasts silently over q's."""

from attnbench.variants.contract import Variant, VariantInfo


class Broadcasts(Variant):
    info = VariantInfo(name="broadcasts", family="exact", exact=True, causal=False, gqa=False)

    def forward(self, q, k, v):
        # Elementwise product then sum over D: a size-1 head dim in k broadcasts instead of raising.
        scores = (q[..., :, None, :] * k[..., None, :, :]).sum(-1) / q.shape[-1] ** 0.5
        return scores.softmax(-1) @ v
