"""sink-logit: softmax attention with a learned sink logit per head in the normaliser (gpt-oss).

OpenAI 2025, gpt-oss (model card; the attention sinks of Xiao et al. 2024 made a parameter): each
head has a logit s_h that joins the softmax's denominator and attends to nothing,
``o_i = sum_j exp(z_ij) v_j / (exp(s_h) + sum_j exp(z_ij))``, z the scaled scores. A head can so put
weight on "no token" instead of on the first one.

Fast form: SDPA with one more key. The queries gain a channel holding s_h (per query head, so GQA
holds), the keys a zero channel, and a key is put first whose only non-zero channel makes its score
s_h, with a zero value: SDPA's softmax then has exp(s_h) in its denominator and nothing in its sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import Variant, VariantInfo, check_qkv, softmax_scale
from ..masks import causal_mask


class SinkLogitAttention(Variant):
    """Softmax attention whose denominator also holds exp(sink logit), one learned logit per head."""

    info = VariantInfo(
        name="sink-logit",
        family="modified",
        exact=False,
        gqa_native=True,
        definition="sum_j exp(z_ij) v_j / (exp(s_h) + sum_j exp(z_ij)), z = q k^T / sqrt(D), s_h learned per head",
        summary="a learned sink logit per head in the softmax's denominator (gpt-oss)",
        paper="OpenAI 2025, gpt-oss-120b & gpt-oss-20b model card (attention sinks)",
        source="openai/gpt-oss, gpt_oss/torch/model.py (sdpa with S, the sinks, concatenated to the scores)",
        departures=("the sinks start at 0 (gpt-oss ships trained ones)",),
    )

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.sinks = nn.Parameter(torch.zeros(spec.num_heads))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        scale = softmax_scale(d)
        sinks = self.sinks.to(q.dtype)
        # q' = [q, s_h], k'_j = [k_j, 0], the sink key [0, 1 / scale] first: q' . k_sink * scale = s_h.
        q1 = torch.cat([q, sinks[None, :, None, None].expand(b, h, nq, 1)], dim=-1)
        sink_key = torch.zeros(b, hkv, 1, d + 1, dtype=k.dtype, device=k.device)
        sink_key[..., -1] = 1 / scale
        k1 = torch.cat([sink_key, F.pad(k, (0, 1))], dim=2)
        v1 = torch.cat([v.new_zeros(b, hkv, 1, d), v], dim=2)
        kwargs: dict = {"scale": scale, "enable_gqa": hkv != h}
        if self.spec.causal:  # the sink key (first) is visible to every query; the rest bottom-right
            mask = causal_mask(nq, nk, q.device)
            kwargs["attn_mask"] = torch.cat([torch.ones(nq, 1, dtype=torch.bool, device=q.device), mask], dim=1)
        return F.scaled_dot_product_attention(q1, k1, v1, **kwargs)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The scores and the sink's exponential written out."""
        _, h, hkv, nq, nk, d = check_qkv(q, k, v)
        k, v = k.repeat_interleave(h // hkv, dim=1), v.repeat_interleave(h // hkv, dim=1)
        scores = q @ k.transpose(-1, -2) * softmax_scale(d)
        if self.spec.causal:
            scores = scores.masked_fill(~causal_mask(nq, nk, q.device), float("-inf"))
        sink = self.sinks.to(q.dtype)[None, :, None, None].expand(*scores.shape[:3], 1)
        top = torch.maximum(scores.amax(-1, keepdim=True), sink)
        weights = (scores - top).exp()
        return weights @ v / (weights.sum(-1, keepdim=True) + (sink - top).exp())
