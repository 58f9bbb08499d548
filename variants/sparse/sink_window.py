"""sink-window: the first `sinks` tokens (attention sinks) plus a sliding window, as StreamingLLM keeps them.

Xiao, Tian, Chen, Han & Lewis 2024, "Efficient Streaming Language Models with Attention Sinks". A
model puts much of its attention on the first tokens whatever they hold; a window alone drops them
once the sequence outgrows it, and the output degrades. StreamingLLM keeps the first four tokens
beside the window. Here the window has sliding-window's meaning (|i - j| <= w // 2, so w // 2 keys
back under causality), and the sinks are visible to every query (under causality, to those at or past them).
"""

from __future__ import annotations

from pydantic import Field

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


def sink_window(sinks: int, window: int) -> Pattern:
    """Keep j < sinks, or |i - j| <= window // 2."""
    half = window // 2

    def sink_window_pattern(h, q_pos, kv_idx):
        return (kv_idx < sinks) | ((q_pos - kv_idx).abs() <= half)

    return sink_window_pattern


class SinkWindowOptions(SparseOptions):
    sinks: int = Field(4, ge=0, description="first tokens every query sees (StreamingLLM keeps 4)")
    window: int = Field(512, gt=0, description="band width w: keep |i - j| <= w // 2 (w // 2 keys back if causal)")


class SinkWindowAttention(SparseAttention):
    """Softmax attention over the first `sinks` keys and a band of w // 2 keys each side."""

    info = VariantInfo(
        compiles=True,
        name="sink-window",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax, keep j < sinks or |i - j| <= w // 2",
        summary="attention sinks plus a sliding window (StreamingLLM's kept tokens, FlexAttention)",
        paper="Xiao et al. 2024, Efficient Streaming Language Models with Attention Sinks (ICLR 2024)",
        source="mit-han-lab/streaming-llm, streaming_llm/kv_cache.py (StartRecentKVCache: start_size + recent_size)",
        departures=(
            "the kept tokens as a mask over the whole sequence, for training and prefill; StreamingLLM evicts "
            "them from a decoder's cache",
            "positions are the sequence's own: StreamingLLM re-numbers the cache's positions for rotary "
            "embeddings, which belongs to the model, not to this attention call",
        ),
        lengths=True,  # a position-only pattern: padding after a sequence leaves it as it is
    )
    Options = SinkWindowOptions

    def pattern(self, num_keys, device):
        return sink_window(self.options.sinks, self.options.window)
