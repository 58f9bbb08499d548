"""moba: Mixture of Block Attention, each query attending to the key blocks its gate chooses.

Lu et al. 2025, "MoBA: Mixture of Block Attention for Long-Context LLMs" (Moonshot AI). The keys are
cut into blocks of `block_size`; a query scores each block by its dot product with the block's mean
key; the blocks entirely before the query's own are the candidates; its own block is always chosen
(counted in the top-k) and attended causally; the query attends, in one softmax, to every key of the
chosen blocks. Per query head: the heads of a K/V group choose apart (the blocks' mean keys are the
group's).

Definition (`reference`): the chosen blocks as a (B, H, Nq, Nk) mask, then the masked softmax, as
MoonshotAI/MoBA's moba_naive.py builds it. Fast form: the blocks' keys meet the queries that chose
them (selection.chosen_block_attention).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ..contract import Variant, VariantInfo, accumulate_dtype, check_qkv, softmax_scale
from .selection import (
    SELECTION_DTYPE,
    SelectionOptions,
    blocks_to_keys,
    by_query_chunks,
    causal_keys,
    choice_mask,
    chosen_block_attention,
    kept_count,
    masked_attention,
    positions,
    ranked_choice,
    selection_forward_is_dense,
)


class MobaOptions(SelectionOptions):
    block_size: int = Field(64, gt=0, description="keys per block (MoBA's chunk; 512 in its long-context runs)")


def moba_choice(q: torch.Tensor, k: torch.Tensor, options: MobaOptions) -> torch.Tensor:
    """(B, H, Nq, S) long: the past blocks each query chooses, best first, -1 in unused slots (its own block,
    always attended, apart)."""
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    size = options.block_size
    n_blocks = math.ceil(nk / size)
    pad = n_blocks * size - nk
    kf = k.to(SELECTION_DTYPE)
    if pad:
        kf = torch.cat([kf, kf.new_zeros(b, hkv, pad, d)], dim=2)
    means = kf.view(b, hkv, n_blocks, size, d).sum(3) / size  # only complete past blocks are ever candidates
    means = means.repeat_interleave(h // hkv, dim=1)
    gate = q.to(SELECTION_DTYPE) @ means.transpose(-1, -2)  # (B, H, Nq, n_blocks)
    own = positions(nq, nk, q.device) // size  # (Nq,)
    block = torch.arange(n_blocks, device=q.device)
    past = block[None, :] < own[:, None]  # (Nq, n_blocks): wholly before the query's block
    gate = gate.masked_fill(~past, float("-inf"))
    seen = own + 1  # the past blocks and its own
    counts = kept_count(seen, options.keep, options.top_k, 1) - 1  # the own block is counted in top-k
    return ranked_choice(gate, counts.expand(b, h, nq))


def own_blocks(num_queries: int, num_keys: int, size: int, device) -> torch.Tensor:
    """(Nq, n_blocks) bool: each query's own block."""
    own = positions(num_queries, num_keys, device) // size
    return torch.arange(math.ceil(num_keys / size), device=device)[None, :] == own[:, None]


class MobaAttention(Variant):
    """MoBA: per query, its own block (causal) and the top past blocks by the gate q . mean(k of block)."""

    info = VariantInfo(
        name="moba",
        family="sparse",
        exact=False,
        non_causal=False,
        selects=True,
        gqa_native=True,
        definition="masked softmax over the keys of the chosen blocks: own block (causal) + top past blocks "
        "by q . mean(block keys)",
        summary="Mixture of Block Attention: each query's gate picks key blocks by their mean key",
        paper="Lu et al. 2025, MoBA: Mixture of Block Attention for Long-Context LLMs (Moonshot AI)",
        source="MoonshotAI/MoBA, moba/moba_naive.py (the definition), moba/moba_efficient.py",
        departures=(
            "how many blocks a query keeps: a share `keep` of the blocks it can see (default 1/8), or a fixed "
            "`top_k` as MoBA's; MoBA's 3 of 512-token blocks are the whole context at short N",
            "the gate is scored in float32 in both forms, ties to the earlier block (see selection.py)",
            "gradients go through the dense definition (O(Nq Nk) memory); MoBA's efficient form is forward "
            "and backward through flash-attn's varlen kernels",
            "MoBA's code runs the first layers or the last with full attention (a hybrid); that belongs to the "
            "model, not to this call",
        ),
    )
    Options = MobaOptions

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        check_qkv(q, k, v)
        if selection_forward_is_dense(q, k, v):
            acc = accumulate_dtype(q.dtype)
            return self.reference(q.to(acc), k.to(acc), v.to(acc)).to(q.dtype)
        return by_query_chunks(self._chosen_blocks, q, k, v, {}, ())

    def _chosen_blocks(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        index = moba_choice(q, k, self.options)  # past blocks; the own one is attended there
        return chosen_block_attention(q, k, v, index, self.options.block_size, softmax_scale(q.shape[-1]))

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The chosen blocks as a key mask, intersected with causality, then the masked softmax."""
        check_qkv(q, k, v)
        nq, nk = q.shape[2], k.shape[2]
        size = self.options.block_size
        past = choice_mask(moba_choice(q, k, self.options), math.ceil(nk / size))
        chosen = past | own_blocks(nq, nk, size, q.device)
        keys = blocks_to_keys(chosen, nk, size)
        return masked_attention(q, k, v, keys & causal_keys(nq, nk, q.device), softmax_scale(q.shape[-1]))

    def kept_pairs(self, num_queries: int, num_keys: int) -> int:
        """(query, key) pairs attended per head: the own block up to the query, and whole chosen past blocks."""
        size = self.options.block_size
        pos = positions(num_queries, num_keys, "cpu")
        pos = pos[pos >= 0]
        own = pos // size
        past = kept_count(own + 1, self.options.keep, self.options.top_k, 1) - 1
        return int((pos - own * size + 1 + past * size).sum())

    def selection_pairs(self, num_queries: int, num_keys: int) -> int:
        """(query, block mean) products of the gate per head."""
        return num_queries * math.ceil(num_keys / self.options.block_size)
