"""What the content-selected sparse variants share (MoBA, NSA, DSA): how many keys a query keeps, the
selection as a dense mask, softmax attention under a per-query mask, and attention over chosen blocks.

Causal only, like their sources, and aligned bottom-right: a query's position is ``q_idx + (Nk - Nq)``.
How much a query keeps is a share of what it can see (``keep``: blocks or tokens), or a fixed count
(``top_k``): a query at position t keeps ``max(minimum, ceil(keep * seen(t)))``. A share scales
with N, where a fixed count (MoBA's top-3 of 512-token chunks, DSA's 2048 tokens) is the whole context
at short N; and it depends only on the query's position, so the outputs of a block of queries are
those of the whole sequence cut after the block's last query (how `bench` checks long N in blocks).

The selection's scores are computed in float32 in both the fast form and the definition, from the same
inputs by the same code: a near-tie that float64 decided the other way would swap a whole block, an
error no tolerance on the attention's arithmetic should hide. Ties go to the earlier block or token
(a stable sort), in both.

The fast form of block selection, :func:`chosen_block_attention`, runs the key blocks one at a time:
each block's keys meet the queries that chose it in one matrix product (MoBA's own efficient form
groups queries by chosen block the same way), and an online softmax merges a query's blocks. Its
work is the kept pairs, its memory O(Nq * D) beside the (Nq, chosen) indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import Field, model_validator

from ..contract import Options
from ..gates import GateInput
from ..inputs import accumulate_dtype

# The float32 in which selections are scored (see the module docstring).
SELECTION_DTYPE = torch.float32
# Queries per pass of a block selection's fast form: its (query, chosen) indices and their sorts are made per
# pass, so its memory grows with N through the chosen count (a share of N), not with Nq times that count.
QUERY_CHUNK = 4096


class SelectionOptions(Options):
    """How much a query keeps: a share of what it can see, or a fixed count."""

    keep: float = Field(0.125, gt=0, le=1, description="share of the blocks or tokens a query can see that it keeps")
    top_k: int | None = Field(None, gt=0, description="a fixed count of blocks or tokens instead (the sources' rule)")

    @model_validator(mode="after")
    def _one_rule(self) -> SelectionOptions:
        if self.top_k is not None and "keep" in self.model_fields_set:
            raise ValueError("give keep (a share) or top_k (a count), not both")
        return self


def positions(num_queries: int, num_keys: int, device: torch.device | str) -> torch.Tensor:
    """(Nq,) long: each query's position among the keys, bottom-right."""
    return torch.arange(num_queries, device=device) + (num_keys - num_queries)


def kept_count(seen: torch.Tensor, keep: float, top_k: int | None, minimum: int) -> torch.Tensor:
    """How many of `seen` candidates a query keeps: `top_k` if given, else ceil(keep * seen), at least
    `minimum`, never more than seen."""
    # In float64, less a hair: 0.3 x 50 is 15 here, not the 16 that float rounding would make of it.
    want = torch.full_like(seen, top_k) if top_k is not None else torch.ceil(seen.double() * keep - 1e-9).long()
    return torch.minimum(torch.clamp(want, min=minimum), seen)


def ranked_choice(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(..., K) long: the columns of the `counts` (...) best scores of each row of `scores` (..., C), best
    first, -1 in the unused slots (K the largest count). -inf is no candidate. A tie across the cut goes
    to the earlier columns: such rows (rare but for exact ties, as ReLU's zeros) are ranked again by a
    stable sort; the rest take topk's order."""
    most = min(int(counts.max()) if counts.numel() else 0, scores.shape[-1])
    if most <= 0:
        return torch.full((*scores.shape[:-1], 0), -1, dtype=torch.long, device=scores.device)
    wide = min(most + 1, scores.shape[-1])  # one more, to see a tie across the cut
    values, index = scores.topk(wide, dim=-1)
    counts = counts.clamp(max=most)
    cut = counts.clamp(min=1)[..., None] - 1
    at_cut = values.gather(-1, cut)
    after = values.gather(-1, (cut + 1).clamp(max=wide - 1))
    ties = ((counts[..., None] < wide) & (at_cut == after) & torch.isfinite(at_cut))[..., 0]
    tied_rows = ties.nonzero(as_tuple=True)
    if tied_rows[0].numel():  # the earlier column first, through the whole row (a tie may reach back)
        order = torch.sort(scores[tied_rows], dim=-1, descending=True, stable=True)
        values[tied_rows], index[tied_rows] = order.values[:, :wide], order.indices[:, :wide]
    keep = (torch.arange(wide, device=scores.device) < counts[..., None]) & torch.isfinite(values)
    return torch.where(keep, index, -1)[..., :most]


def choice_mask(index: torch.Tensor, columns: int) -> torch.Tensor:
    """(..., S) column indices, -1 unused -> (..., columns) bool."""
    mask = torch.zeros(*index.shape[:-1], columns + 1, dtype=torch.bool, device=index.device)
    mask.scatter_(-1, torch.where(index < 0, columns, index), True)
    return mask[..., :columns]


def blocks_to_keys(chosen: torch.Tensor, num_keys: int, block_size: int) -> torch.Tensor:
    """(..., Nq, n_blocks) bool chosen blocks -> (..., Nq, Nk) bool keys of those blocks."""
    return chosen.repeat_interleave(block_size, dim=-1)[..., :num_keys]


def causal_keys(num_queries: int, num_keys: int, device: torch.device | str) -> torch.Tensor:
    """(Nq, Nk) bool: key j at or before each query's position."""
    return torch.arange(num_keys, device=device)[None, :] <= positions(num_queries, num_keys, device)[:, None]


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Softmax attention written out under a per-query mask (B, H, Nq, Nk) bool; a query keeping no key
    outputs zeros. A group's query heads are folded into the query axis, so K/V are never repeated."""
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    hidden = ~mask.expand(b, h, nq, nk).reshape(b, hkv, (h // hkv) * nq, nk)
    scores = ((q.reshape(b, hkv, -1, d) * scale) @ k.transpose(-1, -2)).masked_fill_(hidden, float("-inf"))
    empty = hidden.all(-1, keepdim=True)  # a query that keeps no key: zeros, not NaN (nor a NaN gradient)
    if bool(empty.any()):
        probs = scores.masked_fill(empty, 0.0).softmax(-1).masked_fill(hidden, 0.0)
    else:
        probs = scores.softmax(-1)
    return (probs @ v).view(b, h, nq, d)


def own_block_state(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each query over its own block's keys up to itself, unnormalised: the running max (B * H, Nq), the sum
    of exponentials (B * H, Nq) and the weighted values (B * H, Nq, D), in the accumulate dtype. A block's
    queries meet its keys in one matrix product; a query before every key holds nothing (-inf, 0, 0)."""
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    acc, size = accumulate_dtype(q.dtype), block_size
    real = min(nq, nk)
    blocks = math.ceil(nk / size)
    first = (nk - real) // size
    span = blocks * size
    qs = torch.cat([q.new_zeros(b, h, nk - real, d), q[:, :, nq - real :], q.new_zeros(b, h, span - nk, d)], dim=2)
    qs = qs[:, :, first * size :].to(acc).view(b, hkv, h // hkv, blocks - first, size, d) * scale
    kb, vb = (
        torch.cat([x, x.new_zeros(b, hkv, span - nk, d)], dim=2)[:, :, first * size :]
        .to(acc)
        .view(b, hkv, 1, blocks - first, size, d)
        for x in (k, v)
    )
    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    scores = (qs @ kb.transpose(-1, -2)).masked_fill(~causal, float("-inf"))  # (B, Hkv, G, blocks, s, s)
    top = scores.amax(-1)
    probs = (scores - top[..., None]).exp()
    start = nk - real - first * size
    keep = slice(start, start + real)

    def rows(x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:  # (B, Hkv, G, blocks, s, ...) -> (B * H, Nq, ...)
        x = x.reshape(b * h, (blocks - first) * size, *x.shape[5:])[:, keep]
        if real < nq:  # the queries before every key come first
            x = torch.cat([x.new_full((b * h, nq - real, *x.shape[2:]), fill), x], dim=1)
        return x

    return rows(top, float("-inf")), rows(probs.sum(-1)), rows(probs @ vb)


def chosen_block_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chosen: torch.Tensor, block_size: int, scale: float
) -> torch.Tensor:
    """Softmax attention of each query over its own block (causally) and the whole past blocks it chose.

    q (B, H, Nq, D); k, v (B, H_kv, Nk, D); chosen (B, H, Nq, S) long indices of past blocks (wholly before
    the query's own), -1 for an unused slot, each at most once per query. Returns (B, H, Nq, D) in q's
    dtype, zeros for a query before every key. The own blocks first (own_block_state), then the chosen
    blocks one key block at a time, merged by an online softmax (see the module docstring)."""
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    g, slots = h // hkv, chosen.shape[-1]
    acc_dtype = accumulate_dtype(q.dtype)
    n_blocks = math.ceil(nk / block_size)
    rows, stride = b * h, nq + 1  # each head's queries, then one spare row where padding writes
    top, total, acc = own_block_state(q, k, v, block_size, scale)
    # Flat (rows * stride, ...) state: a run of queries is read and written with index_select/index_copy_.
    top = torch.cat([top, top.new_zeros(rows, 1)], dim=1).reshape(-1)
    total = torch.cat([total, total.new_zeros(rows, 1)], dim=1).reshape(-1)
    acc = torch.cat([acc, acc.new_zeros(rows, 1, d)], dim=1).reshape(-1, d)
    if slots:
        # (B * H, n_blocks, bs, D): each query head's view of its K/V head's blocks (past blocks are whole).
        whole = nk // block_size
        kb, vb = (
            x[:, :, : whole * block_size]
            .to(acc_dtype)
            .view(b, hkv, 1, whole, block_size, d)
            .expand(b, hkv, g, whole, block_size, d)
            .reshape(rows, whole, block_size, d)
            for x in (k, v)
        )
        # The (query, slot) pairs of each head sorted by block: a block's queries are one contiguous run.
        block_of = chosen.reshape(rows, nq * slots)
        block_of = block_of.masked_fill(block_of < 0, n_blocks)
        order = torch.sort(block_of, dim=-1, stable=True).indices
        query_of = torch.arange(nq, device=q.device).repeat_interleave(slots)[order]  # (rows, nq * S)
        counts = torch.zeros(rows, n_blocks + 1, dtype=torch.long, device=q.device)
        counts.scatter_add_(1, block_of, torch.ones_like(block_of))
        starts = counts.cumsum(1) - counts
        qs = torch.cat([q.reshape(rows, nq, d), q.new_zeros(rows, 1, d)], dim=1).to(acc_dtype).reshape(-1, d)
        qs = qs * scale
        base_row = (torch.arange(rows, device=q.device) * stride)[:, None]
        widths = counts[:, :n_blocks].amax(0).tolist()
        for j in range(min(whole, n_blocks)):
            width = widths[j]
            if width == 0:
                continue
            run = torch.arange(width, device=q.device)
            real = run[None, :] < counts[:, j : j + 1]
            at = (starts[:, j : j + 1] + run[None, :]).clamp(max=nq * slots - 1)
            flat = (torch.where(real, query_of.gather(1, at), nq) + base_row).reshape(-1)  # nq: padding
            scores = qs.index_select(0, flat).view(rows, width, d) @ kb[:, j].transpose(-1, -2)
            old = top.index_select(0, flat).view(rows, width)
            new = torch.maximum(old, scores.amax(-1))  # finite: a past block is whole and unmasked
            probs = (scores - new[..., None]).exp()
            decay = (old - new).exp()
            summed = total.index_select(0, flat).view(rows, width) * decay + probs.sum(-1)
            values = acc.index_select(0, flat).view(rows, width, d) * decay[..., None] + probs @ vb[:, j]
            total.index_copy_(0, flat, summed.view(-1))
            acc.index_copy_(0, flat, values.view(-1, d))
            top.index_copy_(0, flat, new.view(-1))
    acc, total = acc.view(rows, stride, d)[:, :nq], total.view(rows, stride)[:, :nq]
    out = acc / total[..., None].clamp_min(torch.finfo(acc_dtype).tiny)
    return out.view(b, h, nq, d).to(q.dtype)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float) -> torch.Tensor:
    """Softmax attention of each query over its last `window` keys (t - window < j <= t), by blocks of
    `window` positions: a block's queries meet its keys and the block's before, one matrix product per
    block, about twice the kept pairs of work and no (Nq, Nk) tensor. Queries before every key get zeros."""
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    acc, w = accumulate_dtype(q.dtype), window
    real = min(nq, nk)  # the last `real` queries are at key positions nk - real .. nk - 1
    blocks = math.ceil(nk / w)
    first = (nk - real) // w  # blocks before it hold no query
    span = blocks * w
    qs = torch.cat([q.new_zeros(b, h, nk - real, d), q[:, :, nq - real :], q.new_zeros(b, h, span - nk, d)], dim=2)
    qs = qs[:, :, first * w :].to(acc).view(b, hkv, h // hkv, blocks - first, w, d) * scale
    kv = [torch.cat([x.new_zeros(b, hkv, w, d), x, x.new_zeros(b, hkv, span - nk, d)], dim=2) for x in (k, v)]
    # Block c's keys are positions (c - 1) w .. (c + 1) w - 1: padded index c w .. c w + 2 w - 1.
    kb, vb = (x[:, :, first * w :].to(acc).unfold(2, 2 * w, w).transpose(-1, -2)[:, :, None] for x in kv)
    q_pos = (torch.arange(first, blocks, device=q.device)[:, None] * w + torch.arange(w, device=q.device))[..., None]
    k_pos = q_pos.new_tensor(range(2 * w))[None, None, :] + q_pos[:, :1, :1] - w  # (blocks, 1, 2w) via block start
    keep = (k_pos <= q_pos) & (q_pos - k_pos < w) & (k_pos >= 0)  # (blocks - first, w, 2w)
    scores = (qs @ kb.transpose(-1, -2)).masked_fill(~keep, float("-inf"))
    empty = ~keep.any(-1, keepdim=True)
    probs = scores.masked_fill(empty, 0.0).softmax(-1).masked_fill(~keep, 0.0)
    out = (probs @ vb).reshape(b, h, (blocks - first) * w, d)
    start = nk - real - first * w
    out = out[:, :, start : start + real]
    if real < nq:
        out = torch.cat([out.new_zeros(b, h, nq - real, d), out], dim=2)
    return out.to(q.dtype)


def by_query_chunks(
    call: Callable[..., torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: dict[str, torch.Tensor],
    declared: tuple[GateInput, ...],
) -> torch.Tensor:
    """``call(q, k, v, **gates)`` on chunks of QUERY_CHUNK queries, each against the keys up to its last query,
    concatenated: a chunk's outputs are those of the sequence cut after its last query (module docstring).
    Per-query gates are cut to the chunk's queries, the others to its keys; a chunk before every key: zeros."""
    nq, nk = q.shape[2], k.shape[2]
    if nq <= QUERY_CHUNK:
        return call(q, k, v, **gates)
    per_query = {g.name for g in declared if g.queries}
    outs = []
    for start in range(0, nq, QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, nq)
        keys = stop + nk - nq
        if keys <= 0:
            outs.append(q.new_zeros(*q.shape[:2], stop - start, v.shape[-1]))
            continue
        part = {name: g[:, :, start:stop] if name in per_query else g[:, :, :keys] for name, g in gates.items()}
        outs.append(call(q[:, :, start:stop], k[:, :, :keys], v[:, :, :keys], **part))
    return torch.cat(outs, dim=2)


def selection_forward_is_dense(*tensors: torch.Tensor) -> bool:
    """Whether a call needs gradients: the chosen-block loop writes in place, so gradients go through the
    dense definition (in the accumulate dtype), with its O(Nq * Nk) memory."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
