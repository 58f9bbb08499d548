"""Broken on purpose: DeltaNet with beta on the value only, S_t = S_{t-1} + k_t (beta_t v_t - S_{t-1}^T k_t)^T,
where the definition scales the whole correction, S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T."""

import torch

from attnbench.variants.contract import VariantInfo
from attnbench.variants.linear.deltanet import DeltaNetAttention, l2_normalise


class BetaValueOnly(DeltaNetAttention):
    info = VariantInfo(**{**DeltaNetAttention.info.__dict__, "name": "deltanet-beta-value-only"})

    def chunked(self, q, k, v, gates, state):
        q, k = l2_normalise(q) * self.scale(q.shape[-1]), l2_normalise(k)
        out = []
        for q_t, k_t, v_t, b_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), gates["beta"].unbind(2), strict=True):
            read = torch.einsum("bhkv,bhk->bhv", state, k_t)
            state = state + k_t[..., :, None] * (b_t[..., None] * v_t - read)[..., None, :]
            out.append(torch.einsum("bhkv,bhk->bhv", state, q_t))
        return torch.stack(out, 2), state
