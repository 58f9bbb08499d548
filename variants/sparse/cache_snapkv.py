"""cache-snapkv: SnapKV's cache, the prompt tokens its last queries attend to most, and those last tokens.

Li et al. 2024, "SnapKV: LLM Knows What You are Looking for Before Generation" (NeurIPS 2024). The last
`window` queries of the prompt (the observation window) already attend where generation will: their
causal softmax weights, summed over the window, score the older tokens; the scores are smoothed by an
average pool of `kernel` tokens (clusters, not lone tokens); the cache keeps the top-scoring older tokens
and the window's own, as FasterDecoding/SnapKV's SnapKVCluster.update_kv (window 32, kernel 5, avgpool).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from .cache_policy import (
    GROUP_SCORES,
    PROMPT_QUERIES,
    CacheOptions,
    CachePolicy,
    policy_info,
    received_attention,
)


class SnapKVCacheOptions(CacheOptions):
    window: int = Field(32, gt=0, description="the observation window: last prompt queries that score, tokens kept")
    kernel: int = Field(5, gt=0, description="average-pool width over the scores (odd; SnapKV's kernel_size)")


class SnapKVCache(CachePolicy):
    """Decoding over the prompt tokens its observation window attends to most, and the window's own."""

    info = policy_info(
        name="cache-snapkv",
        gates=(PROMPT_QUERIES,),
        definition="masked softmax over the prompt's top tokens by the last queries' pooled attention, and theirs",
        summary="KV-cache policy: SnapKV's tokens that the prompt's last queries attend to, pooled",
        paper="Li et al. 2024, SnapKV: LLM Knows What You are Looking for Before Generation (NeurIPS 2024)",
        source="FasterDecoding/SnapKV, snapkv/monkeypatch/snapkv_utils.py (SnapKVCluster.update_kv)",
        departures=(
            GROUP_SCORES,
            "the budget is a share `keep` of the prompt, or `top_k` tokens (SnapKV: max_capacity_prompt, 2048); "
            "a budget below the window keeps the last `budget` tokens (SnapKV refuses one)",
            "the softmax in float32 from the prompt's queries, as SnapKV; its weights are then cast to the "
            "model's dtype before the sum, not here",
        ),
    )
    Options = SnapKVCacheOptions

    def choose(self, k: torch.Tensor, keep: int, prompt_q: torch.Tensor | None) -> torch.Tensor:
        b, hkv, prompt = k.shape[:3]
        window = min(self.options.window, keep)
        tail = torch.arange(prompt - window, prompt, device=k.device).expand(b, hkv, window)
        if window == keep:
            return tail
        older = received_attention(prompt_q, k, range(prompt - window, prompt))[..., : prompt - window]
        kernel = self.options.kernel
        pooled = F.avg_pool1d(older.flatten(0, 1)[:, None], kernel, stride=1, padding=kernel // 2)
        pooled = pooled.view(b, hkv, -1)[..., : prompt - window]
        heavy = pooled.topk(keep - window, dim=-1).indices.sort(-1).values
        return torch.cat([heavy, tail], dim=-1)
