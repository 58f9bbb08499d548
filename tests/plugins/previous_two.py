"""Attends only to the previous two tokens (keys i-1 and i-2 of query i), so it cannot recall a key seen
earlier: on MQAR the protocol must judge it `worse` than sdpa."""

import torch

from attnbench.variants.contract import Variant, VariantInfo, check_qkv


class PreviousTwo(Variant):
    info = VariantInfo(name="previous-two", family="sparse", exact=False, gqa=False)

    def forward(self, q, k, v):
        check_qkv(q, k, v)
        nq, nk = q.shape[-2], k.shape[-2]
        back = torch.arange(nk - nq, nk, device=q.device)[:, None] - torch.arange(nk, device=q.device)[None, :]
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        weights = scores.masked_fill((back < 1) | (back > 2), float("-inf")).softmax(-1)
        return weights.nan_to_num(0.0) @ v  # the first query sees no key: zeros
