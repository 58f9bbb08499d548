"""MoBA whose gate may choose any block, the query's future ones too (a selection bug): its definition
shares the bug, so only the selection-future check can name it."""

import math

import torch

from attnbench.variants.contract import Variant, VariantInfo, check_qkv, softmax_scale


class FutureBlocks(Variant):
    info = VariantInfo(name="future-blocks", family="sparse", exact=False, non_causal=False, selects=True)

    def forward(self, q, k, v):
        return self.reference(q, k, v)

    def reference(self, q, k, v):
        _, h, hkv, nq, nk, d = check_qkv(q, k, v)
        size, blocks = 64, math.ceil(nk / 64)
        k, v = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
        padded = torch.cat([k, k.new_zeros(*k.shape[:2], blocks * size - nk, d)], dim=2)
        gate = q @ padded.view(*k.shape[:2], blocks, size, d).mean(3).transpose(-1, -2)  # every block a candidate
        chosen = torch.zeros_like(gate, dtype=torch.bool).scatter_(-1, gate.topk(min(2, blocks), -1).indices, True)
        own = (torch.arange(nq) + nk - nq) // size
        chosen |= torch.arange(blocks)[None, :] == own[:, None]
        keys = chosen.repeat_interleave(size, -1)[..., :nk]
        keys &= torch.arange(nk)[None, :] <= (torch.arange(nq) + nk - nq)[:, None]
        scores = (q @ k.transpose(-1, -2) * softmax_scale(d)).masked_fill(~keys, float("-inf"))
        return scores.softmax(-1).nan_to_num(0.0) @ v
