"""cache-h2o: H2O's cache, the prompt's heavy hitters (the most attended tokens) and its most recent ones.

Zhang et al. 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models"
(NeurIPS 2023). A token's score is the attention it received: the column sum of the causal softmax
weights of every prompt query. The cache keeps the `recent` share of the budget from the end of the
prompt (H2O's recent_ratio; its heavy and recent ratios are equal by default, so one half), and the rest
by score among the older tokens, as FMInference/H2O's H2OKVCache_LayerWise (real-drop) does at the end of
the prompt.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .cache_policy import (
    GROUP_SCORES,
    PROMPT_QUERIES,
    CacheOptions,
    CachePolicy,
    policy_info,
    received_attention,
)


class H2OCacheOptions(CacheOptions):
    recent: float = Field(0.5, ge=0, le=1, description="share of the budget kept from the end of the prompt")


class H2OCache(CachePolicy):
    """Decoding over the prompt's most attended tokens and its most recent ones."""

    info = policy_info(
        name="cache-h2o",
        gates=(PROMPT_QUERIES,),
        definition="masked softmax over the prompt's top tokens by received attention plus its recent ones",
        summary="KV-cache policy: H2O's heavy hitters (most attended prompt tokens) plus the recent ones",
        paper="Zhang et al. 2023, H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs (NeurIPS)",
        source="FMInference/H2O, h2o_hf/utils_real_drop/modify_llama.py (H2OKVCache_LayerWise)",
        departures=(
            "scores per sequence; H2OKVCache_LayerWise sums them over the batch, so every sequence of a batch "
            "keeps the same tokens",
            GROUP_SCORES,
            "the cache is cut once, at the end of the prompt, to a budget (a share `keep` of the prompt, or "
            "`top_k` tokens); H2O then evicts one token per generated one, which a few decoding steps leave alone",
            "the scores are the prompt's attention recomputed in float32 from the prompt's queries; H2O takes them "
            "from prefill's own attention weights",
        ),
    )
    Options = H2OCacheOptions

    def choose(self, k: torch.Tensor, keep: int, prompt_q: torch.Tensor | None) -> torch.Tensor:
        b, hkv, prompt = k.shape[:3]
        recent = int(keep * self.options.recent)
        older = received_attention(prompt_q, k, range(prompt))[..., : prompt - recent]
        heavy = older.topk(keep - recent, dim=-1).indices.sort(-1).values
        tail = torch.arange(prompt - recent, prompt, device=k.device).expand(b, hkv, recent)
        return torch.cat([heavy, tail], dim=-1)
