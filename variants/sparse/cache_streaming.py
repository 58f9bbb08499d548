"""cache-streaming: StreamingLLM's cache, the first `sinks` tokens of the prompt and its most recent ones.

Xiao, Tian, Chen, Han & Lewis 2024, "Efficient Streaming Language Models with Attention Sinks". A model
puts much of its attention on the first tokens whatever they hold (attention sinks); a cache of the
recent tokens alone loses them and the output degrades. StreamingLLM's StartRecentKVCache keeps
`start_size` (4) first tokens and `recent_size` recent ones. Here the budget (cache_policy.py) holds both:
min(sinks, budget) first tokens, and the rest of the budget from the end of the prompt. The policy reads
positions only: no scores, no prompt queries.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .cache_policy import CacheOptions, CachePolicy, policy_info


class StreamingCacheOptions(CacheOptions):
    sinks: int = Field(4, ge=0, description="first prompt tokens kept (StreamingLLM's start_size: 4)")


class StreamingCache(CachePolicy):
    """Decoding over the prompt's first `sinks` tokens and its most recent ones."""

    info = policy_info(
        name="cache-streaming",
        definition="masked softmax over the prompt's first sinks and last budget - sinks tokens, then the queries' own",
        summary="KV-cache policy: StreamingLLM's attention sinks plus the most recent tokens",
        paper="Xiao et al. 2024, Efficient Streaming Language Models with Attention Sinks (ICLR 2024)",
        source="mit-han-lab/streaming-llm, streaming_llm/kv_cache.py (StartRecentKVCache)",
        departures=(
            "the cache is cut once, at the end of the prompt, to a budget (a share `keep` of the prompt, or "
            "`top_k` tokens); StreamingLLM keeps start_size + recent_size at every step of a stream",
            "positions are the sequence's own: StreamingLLM re-numbers the cache's positions for rotary "
            "embeddings, which belongs to the model, not to this attention call",
        ),
    )
    Options = StreamingCacheOptions

    def choose(self, k: torch.Tensor, keep: int, prompt_q: torch.Tensor | None) -> torch.Tensor:
        b, hkv, prompt = k.shape[:3]
        sinks = min(self.options.sinks, keep)
        kept = torch.cat([torch.arange(sinks), torch.arange(prompt - (keep - sinks), prompt)]).to(k.device)
        return kept.expand(b, hkv, keep)
