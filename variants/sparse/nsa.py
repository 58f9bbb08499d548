"""nsa: Native Sparse Attention, three branches (compressed, selected, sliding) mixed by per-head gates.

Yuan et al. 2025, "Native Sparse Attention: Hardware-Aligned and Natively Trainable Sparse Attention"
(DeepSeek, ACL 2025), as flash-linear-attention's fla/ops/nsa/naive.py computes it:

- compressed: the keys and values mean-pooled over blocks of `block_size`; a query attends to the
  compressed blocks that are complete at its position ((c + 1) * block_size - 1 <= t);
- selected: each block's importance is the compressed attention's probability, averaged over the
  query heads of a K/V group (so the group shares one choice); the first block, the query's own and
  the one before it are forced; the top blocks are attended token by token, causally;
- sliding: the last `window` keys (t - window < j <= t);
- out = g_cmp * o_cmp + g_slc * o_slc + g_swa * o_swa, the gates (B, H, Nq, 3) in (0, 1) an input
  (a task model makes them with the layer's sigmoid(W x), as fla's NSA layer).

Definition (`reference`): each branch a dense masked softmax in float64. Fast form: the compressed
branch dense over the N / block_size pooled keys, the selected branch by chosen block
(selection.chosen_block_attention), the sliding branch by blocks of the window (selection.window_attention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..contract import GateInput, Variant, VariantInfo, accumulate_dtype, check_qkv, softmax_scale
from ..gates import check_gates, heads_first
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
    window_attention,
)

BRANCHES = 3  # compressed, selected, sliding
FORCED = 3  # the first block, the query's own, the one before it


class NsaOptions(SelectionOptions):
    block_size: int = Field(64, gt=0, description="tokens per compressed and per selected block (fla: 64)")
    window: int = Field(64, gt=0, description="keys of the sliding branch, the query's own included")


def pooled(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, N // size, D): each complete block's mean (a partial last one is never visible)."""
    b, h, n, d = x.shape
    whole = n // size
    return x[:, :, : whole * size].reshape(b, h, whole, size, d).mean(3)


def compressed_visible(num_queries: int, num_keys: int, size: int, device) -> torch.Tensor:
    """(Nq, N // size) bool: compressed block c is visible to a query at t once complete."""
    ends = (torch.arange(num_keys // size, device=device) + 1) * size - 1
    return ends[None, :] <= positions(num_queries, num_keys, device)[:, None]


def compressed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: int, scale: float) -> torch.Tensor:
    """Softmax attention over the visible mean-pooled blocks (zeros for a query that sees none)."""
    visible = compressed_visible(q.shape[2], k.shape[2], size, q.device)
    return masked_attention(q, pooled(k, size), pooled(v, size), visible.expand(*q.shape[:2], *visible.shape), scale)


def compressed_probs(q: torch.Tensor, k: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, Nq, Nk // size) float32: the compressed branch's softmax over the visible pooled keys (a row
    that sees none is zeros). The selection's importance, and the fast form's compressed weights."""
    _, h, nq, d = q.shape
    hkv = k.shape[1]
    visible = compressed_visible(nq, k.shape[2], size, q.device)
    keys = pooled(k.to(SELECTION_DTYPE), size).repeat_interleave(h // hkv, dim=1)
    scores = (q.to(SELECTION_DTYPE) * softmax_scale(d)) @ keys.transpose(-1, -2)
    return scores.masked_fill_(~visible, float("-inf")).softmax(-1).nan_to_num_(0.0)


def nsa_choice(probs: torch.Tensor, num_keys: int, kv_heads: int, options: NsaOptions) -> torch.Tensor:
    """(B, H_kv, Nq, S) long: the blocks each K/V group selects for each query (given the compressed
    probabilities, compressed_probs), forced ones first, -1 in unused slots."""
    b, h, nq, _ = probs.shape
    size = options.block_size
    n_blocks = math.ceil(num_keys / size)
    importance = probs.view(b, kv_heads, h // kv_heads, nq, -1).mean(2)  # (B, Hkv, Nq, Nk // size)
    importance = F.pad(importance, (0, n_blocks - importance.shape[-1]))  # the partial last block: forced only
    visible = compressed_visible(nq, num_keys, size, probs.device)
    own = positions(nq, num_keys, probs.device) // size
    block = torch.arange(n_blocks, device=probs.device)
    forced = (block[None, :] == own[:, None]) | (block[None, :] == own[:, None] - 1) | (block[None, :] == 0)
    forced &= own[:, None] >= 0
    allowed = F.pad(visible, (0, n_blocks - visible.shape[-1])) | forced
    importance.masked_fill_(forced, 2.0)  # above any probability: forced blocks first
    importance.masked_fill_(~allowed, float("-inf"))
    counts = kept_count(own + 1, options.keep, options.top_k, FORCED)
    return ranked_choice(importance, counts.expand(b, kv_heads, nq))


class NsaGates(nn.Module):
    """fla's NSA layer gate: sigmoid(W x), three per head (compressed, selected, sliding)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.g_proj = nn.Linear(dim, heads * BRANCHES)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"branch_gates": heads_first(self.g_proj(x).sigmoid(), self.heads)}


class NsaAttention(Variant):
    """NSA: compressed, selected and sliding branches, mixed by the input gates."""

    info = VariantInfo(
        name="nsa",
        family="sparse",
        exact=False,
        non_causal=False,
        selects=True,
        gqa_native=True,
        definition="g_cmp softmax(pooled blocks) + g_slc softmax(top blocks by pooled attention, group-shared) "
        "+ g_swa softmax(last w keys), each causal",
        summary="Native Sparse Attention: compressed, selected and sliding branches, gated per head",
        paper="Yuan et al. 2025, Native Sparse Attention (DeepSeek, ACL 2025)",
        source="fla-org/flash-linear-attention, fla/ops/nsa/naive.py (naive_nsa, naive_nsa_topk), fla/layers/nsa.py",
        departures=(
            "compression is mean pooling over blocks the size of the selection blocks, stride = block, as fla; "
            "the paper's MLP over overlapping blocks (l = 32, stride 16) is not built",
            "how many blocks a query selects: a share `keep` of the blocks it can see (default 1/8), at least "
            "the 3 forced, or a fixed `top_k` (the paper: 16 of 64 tokens); 16 blocks are the whole context "
            "below N = 1024",
            "importance is scored in float32 in both forms, ties to the earlier block (see selection.py)",
            "the sliding window is 64 keys by default (the paper: 512), so it is sparse at the sizes a CPU runs",
            "gradients go through the dense definition (O(Nq Nk) memory), not fla's backward kernels",
            "any group size: fla's kernels need 16 or more query heads per K/V head, a power of two",
        ),
        gates=(
            GateInput(
                name="branch_gates",
                law="unit",
                width=BRANCHES,
                queries=True,
                description="per query and head, the weights of the compressed, selected and sliding branches",
            ),
        ),
    )
    Options = NsaOptions

    def gate_layer(self, dim: int) -> NsaGates:
        return NsaGates(dim, self.spec.num_heads)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, branch_gates: torch.Tensor) -> torch.Tensor:
        check_qkv(q, k, v)
        check_gates(self.info.name, self.info.gates, {"branch_gates": branch_gates}, q, k)
        if selection_forward_is_dense(q, k, v, branch_gates):
            acc = accumulate_dtype(q.dtype)
            return self.reference(q.to(acc), k.to(acc), v.to(acc), branch_gates.to(acc)).to(q.dtype)
        return by_query_chunks(self._branches, q, k, v, {"branch_gates": branch_gates}, self.info.gates)

    def _branches(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, branch_gates: torch.Tensor) -> torch.Tensor:
        size, scale = self.options.block_size, softmax_scale(q.shape[-1])
        h, hkv = q.shape[1], k.shape[1]
        own = positions(q.shape[2], k.shape[2], q.device) // size
        probs = compressed_probs(q, k, size)
        index = nsa_choice(probs, k.shape[2], hkv, self.options)  # (B, H_kv, Nq, S)
        index = index.masked_fill(index == own[:, None], -1).repeat_interleave(h // hkv, dim=1)  # own: apart
        acc = accumulate_dtype(q.dtype)
        grouped = probs.view(q.shape[0], hkv, h // hkv, q.shape[2], -1).to(acc)
        o_cmp = (grouped @ pooled(v.to(acc), size)[:, :, None]).view(q.shape)
        o_slc = chosen_block_attention(q, k, v, index, size, scale).to(acc)
        o_swa = window_attention(q, k, v, self.options.window, scale).to(acc)
        g = branch_gates.to(acc)
        return (g[..., 0:1] * o_cmp + g[..., 1:2] * o_slc + g[..., 2:3] * o_swa).to(q.dtype)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, branch_gates: torch.Tensor) -> torch.Tensor:
        """The three branches as dense masked softmaxes, mixed by the gates."""
        check_qkv(q, k, v)
        b, h, nq, d = q.shape
        hkv, nk = k.shape[1], k.shape[2]
        size, scale = self.options.block_size, softmax_scale(d)
        causal = causal_keys(nq, nk, q.device)
        index = nsa_choice(compressed_probs(q, k, size), nk, hkv, self.options)
        blocks = choice_mask(index, math.ceil(nk / size))
        chosen = blocks_to_keys(blocks, nk, size).repeat_interleave(h // hkv, dim=1)
        pos = positions(nq, nk, q.device)
        window = causal & (pos[:, None] - torch.arange(nk, device=q.device)[None, :] < self.options.window)
        o_cmp = compressed_attention(q, k, v, size, scale)
        o_slc = masked_attention(q, k, v, chosen & causal, scale)
        o_swa = masked_attention(q, k, v, window.expand(b, h, nq, nk), scale)
        g = branch_gates
        return g[..., 0:1] * o_cmp + g[..., 1:2] * o_slc + g[..., 2:3] * o_swa

    def kept_pairs(self, num_queries: int, num_keys: int) -> int:
        """Pairs attended per head over the three branches: visible pooled blocks, the selected blocks' keys up
        to the query, the window."""
        size = self.options.block_size
        pos = positions(num_queries, num_keys, "cpu")
        pos = pos[pos >= 0]
        own = pos // size
        selected = kept_count(own + 1, self.options.keep, self.options.top_k, FORCED)
        within = pos - own * size + 1  # the own block, always selected, up to the query
        pooled_seen = (pos + 1) // size
        return int((pooled_seen + within + (selected - 1) * size + torch.clamp(pos + 1, max=self.options.window)).sum())

    def selection_pairs(self, num_queries: int, num_keys: int) -> int:
        """Importance needs the compressed attention's scores, already counted in kept_pairs: none extra."""
        return 0
