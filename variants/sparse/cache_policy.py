"""What the KV-cache eviction policies share (StreamingLLM, H2O, SnapKV): the budget, the cut, and attention
over the cut cache.

A decoder's cache holds the prompt's keys and values; a policy keeps `budget` of the prompt's tokens per
K/V head and drops the rest, once, at the end of prefill; each later query attends to the kept tokens and
to the tokens generated since. Here the queries are the last Nq positions of the keys (bottom-right, as in
the `decode` preset: Nq = 1, or 4 as in speculative decoding), the prompt is the Nk - Nq tokens before
them, and `prompt_q` holds the queries the prompt's tokens were computed with at prefill (what H2O and
SnapKV score the prompt's tokens by; its rows for the last Nq tokens are not read).

The budget is a share of the prompt (``keep``, 1/8 by default) or a fixed count of tokens (``top_k``), as
the content selections count theirs (selection.py); a prompt within the budget is kept whole. The scores a
policy ranks tokens by are computed in float32, in both forms, by the same code (the reason is
selection.py's: a near-tie that float64 decided the other way would swap a token).

Definition (`reference`): the kept tokens as a (B, H, Nq, Nk) mask with causality over the queries' own
tokens, then the masked softmax in float64. Fast form: the kept keys and values gathered into a cut cache,
then attention over it; `bench` makes the cut once, untimed (at prefill, where the sources make it), and
times the attention over the cut cache, as a decoder runs it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import torch

from ..contract import GateInput, Variant, VariantInfo, accumulate_dtype, check_qkv, softmax_scale
from ..gates import check_gates
from .selection import SELECTION_DTYPE, SelectionOptions, causal_keys, kept_count, masked_attention, positions

PROMPT_QUERIES = GateInput(
    name="prompt_q",
    law="normal",
    per_channel=True,
    description="the queries of the cached tokens at prefill (the rows of the last Nq tokens are not read)",
)


# A departure the scoring policies share: one kept set per K/V head.
GROUP_SCORES = (
    "a K/V head keeps one set for its group of query heads, by the group's summed scores (the source is written "
    "for multi-head attention, one cache per query head)"
)


def policy_info(**declared: Any) -> VariantInfo:
    """A cache policy's declaration: causal, sparse, an inference-time cut (no gradients declared), native GQA."""
    shared = {"family": "sparse", "exact": False, "non_causal": False, "evicts": True, "gqa_native": True}
    return VariantInfo(**shared, backward=False, **declared)


class CacheOptions(SelectionOptions):
    """The budget: a share `keep` of the prompt's tokens (default 1/8), or a fixed count `top_k`."""


def budget(prompt: int, options: CacheOptions) -> int:
    """Prompt tokens kept per K/V head: the whole prompt when it fits in the budget."""
    if prompt <= 0:
        return 0
    return int(kept_count(torch.tensor([prompt]), options.keep, options.top_k, 1)[0])


def grouped_scores(scores: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(B, H, N) per query head -> (B, H_kv, N): a K/V head's cache serves its whole group, so the group's
    scores are summed (the sources are written for multi-head attention, one cache per query head)."""
    b, h, n = scores.shape
    return scores.view(b, kv_heads, h // kv_heads, n).sum(2)


def prompt_attention(
    prompt_q: torch.Tensor, k: torch.Tensor, rows: range, chunk: int = 256
) -> Iterator[tuple[range, torch.Tensor]]:
    """The causal softmax weights of the prompt queries in `rows` over the prompt keys, in float32, a chunk of
    rows at a time: (rows of the chunk, (B, H, rows, keys up to the chunk's last row))."""
    h, hkv, d = prompt_q.shape[1], k.shape[1], k.shape[-1]
    scale = softmax_scale(d)
    for start in range(rows.start, rows.stop, chunk):
        part = range(start, min(start + chunk, rows.stop))
        keys = part.stop
        q = prompt_q[:, :, part.start : part.stop].to(SELECTION_DTYPE)
        kk = k[:, :, :keys].to(SELECTION_DTYPE)
        b = q.shape[0]
        scores = (q.reshape(b, hkv, (h // hkv) * len(part), d) * scale) @ kk.mT
        scores = scores.view(b, h, len(part), keys)
        rows_at = torch.arange(part.start, part.stop, device=k.device)
        ahead = torch.arange(keys, device=k.device)[None, :] > rows_at[:, None]
        yield part, scores.masked_fill_(ahead, float("-inf")).softmax(-1)


def received_attention(prompt_q: torch.Tensor, k: torch.Tensor, rows: range) -> torch.Tensor:
    """(B, H_kv, P) float32: the causal softmax weight each prompt token gets from the prompt queries `rows`,
    summed over them and over each K/V group's query heads (what H2O and SnapKV rank tokens by)."""
    b, h, prompt = prompt_q.shape[0], prompt_q.shape[1], k.shape[2]
    received = prompt_q.new_zeros(b, h, prompt, dtype=torch.float32)
    for part, weights in prompt_attention(prompt_q, k, rows):
        received[..., : part.stop] += weights.sum(2)
    return grouped_scores(received, k.shape[1])


class CachePolicy(Variant):
    """Attention over a prompt cache cut to a budget by `choose`; the subclass says which tokens it keeps."""

    Options = CacheOptions

    @abstractmethod
    def choose(self, k: torch.Tensor, keep: int, prompt_q: torch.Tensor | None) -> torch.Tensor:
        """(B, H_kv, keep) long, ascending: the prompt tokens each K/V head keeps, for the prompt's keys
        (B, H_kv, P, D), P > keep, and its queries (B, H, P, D) where the policy declares them."""

    def kept_tokens(self, k: torch.Tensor, prompt: int, prompt_q: torch.Tensor | None) -> torch.Tensor | None:
        """(B, H_kv, budget) the prompt tokens kept, or None when the prompt fits whole."""
        keep = budget(prompt, self.options)
        if keep >= prompt:
            return None
        return self.choose(k[:, :, :prompt], keep, None if prompt_q is None else prompt_q[:, :, :prompt])

    def evict(
        self, k: torch.Tensor, v: torch.Tensor, num_queries: int, prompt_q: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cut cache: the kept prompt tokens' keys and values, then the last `num_queries` tokens'."""
        prompt = k.shape[2] - num_queries
        kept = self.kept_tokens(k, prompt, prompt_q)
        if kept is None:
            return k, v
        at = kept[..., None].expand(-1, -1, -1, k.shape[-1])
        cut_k = torch.cat([k[:, :, :prompt].gather(2, at), k[:, :, prompt:]], dim=2)
        cut_v = torch.cat([v[:, :, :prompt].gather(2, at), v[:, :, prompt:]], dim=2)
        return cut_k, cut_v

    def attend_cache(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The queries over a (cut) cache whose last tokens are their own: every kept token, and their own
        tokens up to each query."""
        acc = accumulate_dtype(q.dtype)
        nq, nk = q.shape[2], k.shape[2]
        out = masked_attention(
            q.to(acc), k.to(acc), v.to(acc), causal_keys(nq, nk, q.device), softmax_scale(q.shape[-1])
        )
        return out.to(q.dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **gates: torch.Tensor) -> torch.Tensor:
        check_qkv(q, k, v)
        check_gates(self.info.name, self.info.gates, gates, q, k)
        return self.attend_cache(q, *self.evict(k, v, q.shape[2], gates.get("prompt_q")))

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **gates: torch.Tensor) -> torch.Tensor:
        """The kept prompt tokens as a key mask, the queries' own tokens causally, then the masked softmax."""
        check_qkv(q, k, v)
        b, h, nq, _ = q.shape
        hkv, nk = k.shape[1], k.shape[2]
        prompt = nk - nq
        mask = causal_keys(nq, nk, q.device).expand(b, h, nq, nk).clone()
        kept = self.kept_tokens(k, prompt, gates.get("prompt_q"))
        if kept is not None:
            in_prompt = torch.zeros(b, hkv, nk, dtype=torch.bool, device=q.device)
            in_prompt[..., prompt:] = True  # the queries' own tokens stay (causally)
            in_prompt.scatter_(2, kept, True)
            mask &= in_prompt.repeat_interleave(h // hkv, dim=1)[:, :, None, :]
        return masked_attention(q, k, v, mask, softmax_scale(q.shape[-1]))

    def kept_pairs(self, num_queries: int, num_keys: int) -> int:
        """(query, key) pairs attended per head: the kept prompt tokens and the queries' own up to each."""
        prompt = num_keys - num_queries
        pos = positions(num_queries, num_keys, "cpu")
        own = (pos - max(prompt, 0) + 1).clamp(min=0)
        return int(own.sum()) + budget(prompt, self.options) * int((pos >= 0).sum())

    def cache_tokens(self, num_queries: int, num_keys: int) -> int:
        """Tokens a K/V head's cache holds after the cut: the kept prompt tokens and the queries' own."""
        prompt = num_keys - num_queries
        return budget(prompt, self.options) + min(num_queries, num_keys)
