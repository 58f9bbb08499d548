"""Broken on purpose: GLA with its forget gate applied after the update, S_t = diag(a_t) (S_{t-1} + k_t v_t^T),
where the definition decays first, S_t = diag(a_t) S_{t-1} + k_t v_t^T."""

import torch

from attnbench.variants.contract import VariantInfo
from attnbench.variants.linear.gla import GlaAttention


class GateAfterUpdate(GlaAttention):
    info = VariantInfo(**{**GlaAttention.info.__dict__, "name": "gla-gate-after"})

    def chunked(self, q, k, v, gates, state):
        alpha, out = gates["g"].exp(), []
        for q_t, k_t, v_t, a_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), alpha.unbind(2), strict=True):
            state = a_t[..., :, None] * (state + k_t[..., :, None] * v_t[..., None, :])
            out.append(self.scale(q.shape[-1]) * (q_t[..., :, None] * state).sum(-2))
        return torch.stack(out, 2), state
