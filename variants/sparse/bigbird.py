"""bigbird: block-sparse attention with window, global and random blocks (Zaheer et al. 2020).

Positions are cut into blocks of `block_size`; the pattern is BigBird's ITC construction:

- global blocks: the first ceil(g/2) and the last floor(g/2) blocks (g = `global_blocks`; 2, the
  default, is the original's first and last block). Their queries see every key, and every query
  sees their keys;
- window: each query block sees the `window_blocks` blocks centred on it (3: itself and one on
  each side);
- random: each other query block sees `random_blocks` (r) more key blocks, drawn per head and per
  query block from the blocks outside its window and the global blocks, from a generator seeded
  with `seed` (so the pattern is fixed for a length, head count and seed). Without a seed, one is
  drawn from torch's generator when the layer is built, so the layers of a model seeded once draw
  different blocks (the original seeds layer i with i).

A row with fewer than r candidate blocks (a short sequence) takes all of them.
"""

from __future__ import annotations

import functools

import torch
from pydantic import Field, model_validator

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


class BigBirdOptions(SparseOptions):
    block_size: int = Field(64, gt=0, description="positions per block")
    window_blocks: int = Field(3, gt=0, description="blocks in the sliding window, centred: odd (3: one each side)")
    global_blocks: int = Field(2, ge=0, description="global blocks: the first ceil(g/2) and the last floor(g/2)")
    random_blocks: int = Field(3, ge=0, description="random key blocks per query block and head (r)")
    seed: int | None = Field(None, description="seed of the random blocks (default: drawn from torch's generator)")

    @model_validator(mode="after")
    def _centred_window(self) -> BigBirdOptions:
        if self.window_blocks % 2 == 0:
            raise ValueError(f"window_blocks must be odd (a centred window), got {self.window_blocks}")
        return self


def global_block_ids(num_blocks: int, global_blocks: int) -> torch.Tensor:
    """(num_blocks,) bool: the first ceil(g/2) and the last floor(g/2) blocks."""
    ids = torch.arange(num_blocks)
    return (ids < -(-global_blocks // 2)) | (ids >= num_blocks - global_blocks // 2)


@functools.cache
def random_block_table(
    num_blocks: int, heads: int, per_row: int, window_blocks: int, global_blocks: int, seed: int
) -> torch.Tensor:
    """(heads, num_blocks, num_blocks) bool: for each head and non-global query block, `per_row` distinct
    key blocks drawn uniformly from those outside its window and the global blocks."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.arange(num_blocks)
    glob = global_block_ids(num_blocks, global_blocks)
    allowed = ((ids[:, None] - ids[None, :]).abs() > window_blocks // 2) & ~glob[None, :] & ~glob[:, None]
    table = torch.zeros(heads, num_blocks, num_blocks, dtype=torch.bool)
    take = min(per_row, num_blocks)
    for h in range(heads):
        # A uniform random order of each row's candidates: random keys, non-candidates sorted last.
        keys = torch.rand(num_blocks, num_blocks, generator=gen).masked_fill(~allowed, 2.0)
        chosen = keys.argsort(-1)[:, :take]
        table[h].scatter_(1, chosen, allowed.gather(1, chosen))
    return table


def bigbird(
    num_keys: int,
    heads: int,
    block_size: int,
    window_blocks: int,
    global_blocks: int,
    random_blocks: int,
    seed: int,
    device: torch.device | str,
) -> Pattern:
    """Keep the window blocks, the global blocks (rows and columns) and each head's random blocks."""
    num_blocks = -(-num_keys // block_size)
    table = random_block_table(num_blocks, heads, random_blocks, window_blocks, global_blocks, seed).to(device)
    glob = global_block_ids(num_blocks, global_blocks).to(device)

    def bigbird_pattern(h, q_pos, kv_idx):
        # Queries before the first key (causal, Nq > Nk) have negative positions: clamp into the table.
        qb, kb = (q_pos // block_size).clamp(0, num_blocks - 1), kv_idx // block_size
        near = (qb - kb).abs() <= window_blocks // 2
        return near | glob[qb] | glob[kb] | table[h, qb, kb]

    return bigbird_pattern


class BigBirdAttention(SparseAttention):
    """BigBird attention: window + global + random blocks."""

    info = VariantInfo(
        compiles=True,
        name="bigbird",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax over window, global (first and last) and per-head seeded random blocks",
        summary="BigBird ITC: window + first/last global + random blocks per head (FlexAttention)",
        paper="Zaheer et al. 2020, Big Bird: Transformers for Longer Sequences",
        source="google-research/bigbird, bigbird/core/attention.py (bigbird_block_rand_mask, ITC)",
        departures=(
            "random blocks: the original's code draws the last two query blocks' random blocks from all middle "
            "blocks (its own comments, 'Missing -3' and 'Missing -4', call that a slip), so they can land in the "
            "window; here every row draws outside its window and the globals, as the paper's rule says",
            "N need not be a multiple of block_size (the original requires it): the last block is partial",
            "causal specs intersect the pattern with the causal mask (BigBird's ITC pattern is bidirectional)",
            "random blocks come from every block for every N: the original's plans for N of 1024 to 4096 draw them "
            "from the first 1024 positions only (its last_idx)",
        ),
        # Key lengths intersect the pattern, which is laid out for the padded length as in the original
        # (it pads every sequence to one length): the last global block and the random blocks that fall in
        # a sequence's padding are lost to it, so the amount of padding changes a short sequence's pattern.
        lengths=True,
    )
    Options = BigBirdOptions

    @property
    def per_head(self) -> bool:
        return self.options.random_blocks > 0

    def __init__(self, spec) -> None:
        super().__init__(spec)
        seed = self.options.seed
        self.seed = int(torch.randint(2**31, ())) if seed is None else seed

    def pattern(self, num_keys, device):
        o = self.options
        return bigbird(
            num_keys,
            self.spec.num_heads,
            o.block_size,
            o.window_blocks,
            o.global_blocks,
            o.random_blocks,
            self.seed,
            device,
        )
