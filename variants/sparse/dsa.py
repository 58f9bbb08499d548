"""dsa: DeepSeek Sparse Attention, each query attending to the tokens its lightning indexer ranks highest.

DeepSeek-AI 2025, "DeepSeek-V3.2: Pushing the Frontier of Open Large Language Models" (DSA). A small
indexer scores every past token s for the query at t: ``I(t, s) = sum_j w(t, j) ReLU(q_I(t, j) . k_I(s))``
over its heads j, with its own queries q_I, keys k_I and head weights w (from the hidden state, not
from the attention's q and k); the query attends, by softmax, to its top-k tokens. DeepSeek's indexer
keys are one per token, shared by every query head (MLA in its MQA form); here one per K/V head, and
the indexer's heads are the query heads of the group, so a group shares one top-k, as
flash-linear-attention's fla/ops/dsa/naive.py shares it.

Definition (`reference`): the indexer's top-k as a (B, H, Nq, Nk) mask, then the masked softmax.
Fast form: queries in chunks; within a chunk the indexer's scores and the attention's scores are dense
(O(N^2) work here: the gain of DSA is a kernel that gathers only the chosen tokens, FlashMLA's sparse
decoding, not written here), the top-k is taken per run of rows that keep equally many, and the softmax
runs over the chosen tokens only; its memory is a chunk's rows, not (Nq, Nk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import GateInput, Variant, VariantInfo, accumulate_dtype, check_qkv, softmax_scale
from ..gates import check_gates, heads_first
from .selection import (
    SELECTION_DTYPE,
    SelectionOptions,
    causal_keys,
    kept_count,
    masked_attention,
    positions,
)

# Query rows per chunk of the fast form and of the indexer (the same rows in both, so they score alike).
CHUNK_ROWS = 256
# The recency nudge of tied scores: token j gains j * RECENCY / Nk, below float32's ulp of any score over ~1e-23.
RECENCY = 1e-30


class DsaOptions(SelectionOptions):
    """The share or count a query keeps (selection.SelectionOptions): DeepSeek-V3.2 keeps 2048 tokens."""


def dsa_choice(
    index_q: torch.Tensor,
    index_k: torch.Tensor,
    index_w: torch.Tensor,
    start: int,
    options: DsaOptions,
) -> list[tuple[slice, torch.Tensor]]:
    """The tokens each K/V group keeps for the queries at positions start, start + 1, ... (their indexer
    queries (B, H, rows, D) and weights (B, H, rows); the indexer keys (B, H_kv, Nk', D) up to the last of
    them): runs of rows that keep equally many, each (its rows, (B, H_kv, run, count) long token indices,
    in no order). Rows that keep nothing (before every key) are in no run."""
    b, h, rows, _ = index_q.shape
    hkv, num_keys = index_k.shape[1], index_k.shape[2]
    g = h // hkv
    grouped = index_q.to(SELECTION_DTYPE).reshape(b, hkv, g * rows, -1)  # a group's heads share its keys
    scores = (grouped @ index_k.to(SELECTION_DTYPE).mT).relu_().view(b, hkv, g, rows, num_keys)
    scores = scores.mul_(index_w.to(SELECTION_DTYPE).view(b, hkv, g, rows, 1))
    scores = scores[:, :, 0] if g == 1 else scores.sum(2)
    pos = torch.arange(rows, device=index_q.device) + start
    visible = torch.arange(num_keys, device=index_q.device)[None, :] <= pos[:, None]
    # ReLU's exact zeros tie: the later token ranks first, by a nudge far below any non-zero score's ulp.
    scores += torch.arange(num_keys, device=scores.device, dtype=scores.dtype) * (RECENCY / max(num_keys, 1))
    scores.masked_fill_(~visible, float("-inf"))
    # A count grows with the position only, so equal counts come in runs of rows; a run's top-k needs no order
    # (a sorted top-k of the largest count, cut per row, costs half as much again on a CPU).
    counts = kept_count(pos + 1, options.keep, options.top_k, 1).tolist()
    runs, first = [], 0
    for row in range(1, rows + 1):
        if row == rows or counts[row] != counts[first]:
            if counts[first] > 0:
                chosen = scores[:, :, first:row].topk(counts[first], dim=-1, sorted=False).indices
                runs.append((slice(first, row), chosen))
            first = row
    return runs


def kept_mask(
    index_q: torch.Tensor, index_k: torch.Tensor, index_w: torch.Tensor, start: int, options: DsaOptions
) -> torch.Tensor:
    """(B, H_kv, rows, Nk') bool: dsa_choice's tokens as a mask over the keys."""
    b, rows = index_q.shape[0], index_q.shape[2]
    hkv, num_keys = index_k.shape[1], index_k.shape[2]
    kept = torch.zeros(b, hkv, rows, num_keys, dtype=torch.bool, device=index_q.device)
    for span, chosen in dsa_choice(index_q, index_k, index_w, start, options):
        kept[:, :, span].scatter_(-1, chosen, True)
    return kept


def chosen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, runs: list[tuple[slice, torch.Tensor]], scale: float
) -> torch.Tensor:
    """Queries (B, H, rows, D) over their chosen tokens (dsa_choice's runs) among k, v (B, H_kv, Nk', D): the
    scores dense, the softmax over each row's chosen tokens only, scattered back as the weights of one product
    with v (a softmax over whole masked rows costs 8 times the exponentials at keep 1/8). Rows in no run: zeros."""
    b, h, rows, d = q.shape
    hkv, num_keys = k.shape[1], k.shape[2]
    g = h // hkv
    scores = ((q.reshape(b, hkv, g * rows, d) * scale) @ k.mT).view(b, hkv, g, rows, num_keys)
    probs = torch.zeros_like(scores)
    for span, chosen in runs:
        at = chosen[:, :, None].expand(b, hkv, g, *chosen.shape[2:])
        probs[:, :, :, span].scatter_(-1, at, scores[:, :, :, span].gather(-1, at).softmax(-1))
    return (probs.view(b, hkv, g * rows, num_keys) @ v).view(b, h, rows, d)


class DsaIndexer(nn.Module):
    """The indexer's inputs from the hidden state, after DeepSeek's Indexer: its queries and weights per head
    (wq, weights_proj), its keys per K/V head (wk, then a LayerNorm as DeepSeek's k_norm)."""

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        self.wq = nn.Linear(dim, heads * head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.k_norm = nn.LayerNorm(head_dim)
        self.weights_proj = nn.Linear(dim, heads, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = heads_first(self.wk(x), self.kv_heads)
        return {
            "index_q": heads_first(self.wq(x), self.heads),
            "index_k": self.k_norm(keys),
            "index_w": heads_first(self.weights_proj(x), self.heads),
        }


class DsaAttention(Variant):
    """DSA: per query, softmax over the top tokens of a ReLU indexer shared by each K/V group."""

    info = VariantInfo(
        name="dsa",
        family="sparse",
        exact=False,
        non_causal=False,
        selects=True,
        gqa_native=True,
        definition="masked softmax over the top tokens by sum_j w_j relu(q_I,j . k_I), shared per K/V group",
        summary="DeepSeek Sparse Attention: a ReLU lightning indexer picks each query's top tokens",
        paper="DeepSeek-AI 2025, DeepSeek-V3.2 (DeepSeek Sparse Attention)",
        source="deepseek-ai/DeepSeek-V3.2-Exp, inference/model.py (Indexer); fla-org/flash-linear-attention, "
        "fla/ops/dsa/naive.py",
        departures=(
            "the indexer's heads are the query heads of a K/V group, as wide as the attention's, and its keys one "
            "per K/V head; DeepSeek's indexer has 64 heads of 128 and one key per token",
            "the indexer runs in float32 (DeepSeek's in FP8), in both forms by the same code; ReLU makes exact ties "
            "at 0 common: the later token ranks first (token j gains j 1e-30 / Nk, which no non-zero score feels); "
            "other exact ties go as torch.topk orders them",
            "how many tokens a query keeps: a share `keep` of those it can see (default 1/8), or a fixed "
            "`top_k` (DeepSeek: 2048, the whole context below N = 2048)",
            "the indexer's scale factors (1/sqrt of its heads and dim) are left out: they do not change the ranking",
            "gradients reach the indexer's inputs nowhere (top-k is not differentiable); DeepSeek trains the "
            "indexer apart with a KL loss to the attention, not built",
        ),
        gates=(
            GateInput(
                name="index_q", law="normal", per_channel=True, queries=True, description="indexer queries per head"
            ),
            GateInput(name="index_k", law="normal", per_channel=True, kv_heads=True, description="indexer keys"),
            GateInput(name="index_w", law="normal", queries=True, description="indexer head weights per query"),
        ),
    )
    Options = DsaOptions

    def gate_layer(self, dim: int) -> DsaIndexer:
        return DsaIndexer(dim, self.spec.num_heads, self.spec.num_kv_heads, self.spec.head_dim)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: dict[str, torch.Tensor], rows: slice
    ) -> torch.Tensor:
        """The queries in `rows` over their kept tokens: the keys after the last of them are cut first."""
        nq, nk = q.shape[2], k.shape[2]
        start = rows.start + nk - nq
        keys = max(0, min(nk, rows.stop + nk - nq))
        if keys == 0:  # every query of the rows comes before every key
            return q.new_zeros(*q.shape[:2], rows.stop - rows.start, v.shape[-1])
        runs = dsa_choice(
            gates["index_q"][:, :, rows],
            gates["index_k"][:, :, :keys],
            gates["index_w"][:, :, rows],
            start,
            self.options,
        )
        return chosen_attention(q[:, :, rows], k[:, :, :keys], v[:, :, :keys], runs, softmax_scale(q.shape[-1]))

    def _rows(self, nq: int) -> list[slice]:
        return [slice(i, min(i + CHUNK_ROWS, nq)) for i in range(0, nq, CHUNK_ROWS)]

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        index_q: torch.Tensor,
        index_k: torch.Tensor,
        index_w: torch.Tensor,
    ) -> torch.Tensor:
        check_qkv(q, k, v)
        gates = {"index_q": index_q, "index_k": index_k, "index_w": index_w}
        check_gates(self.info.name, self.info.gates, gates, q, k)
        acc = accumulate_dtype(q.dtype)
        q_, k_, v_ = q.to(acc), k.to(acc), v.to(acc)
        return torch.cat([self._attend(q_, k_, v_, gates, rows) for rows in self._rows(q.shape[2])], dim=2).to(q.dtype)

    def reference(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        index_q: torch.Tensor,
        index_k: torch.Tensor,
        index_w: torch.Tensor,
    ) -> torch.Tensor:
        """The indexer's top tokens as one (B, H, Nq, Nk) key mask, then the masked softmax over it."""
        check_qkv(q, k, v)
        nq, nk = q.shape[2], k.shape[2]
        kept = [
            F.pad(
                kept_mask(
                    index_q[:, :, rows],
                    index_k[:, :, : max(0, rows.stop + nk - nq)],
                    index_w[:, :, rows],
                    rows.start + nk - nq,
                    self.options,
                ),
                (0, nk - max(0, min(nk, rows.stop + nk - nq))),
            )
            for rows in self._rows(nq)
        ]
        mask = torch.cat(kept, dim=2).repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        return masked_attention(q, k, v, mask & causal_keys(nq, nk, q.device), softmax_scale(q.shape[-1]))

    def kept_pairs(self, num_queries: int, num_keys: int) -> int:
        """Tokens attended per query, summed, per head."""
        pos = positions(num_queries, num_keys, "cpu")
        pos = pos[pos >= 0]
        return int(kept_count(pos + 1, self.options.keep, self.options.top_k, 1).sum())

    def selection_pairs(self, num_queries: int, num_keys: int) -> int:
        """(query, token) scores of the indexer per head: every visible pair."""
        pos = positions(num_queries, num_keys, "cpu")
        return int((pos + 1).clamp(min=0, max=num_keys).sum())
