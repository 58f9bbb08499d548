"""bigbird: block-sparse attention with window, global and random blocks (Zaheer et al. 2020).

Positions are cut into blocks of `block_size`. A query block sees its `window_blocks` nearest
blocks (itself in the middle), the first `global_blocks` blocks (which in turn see everything),
and `random_blocks` blocks drawn at random for each query block from a seeded generator, so the
pattern is fixed for a given length and seed (BigBird's ITC construction).
"""

from __future__ import annotations

import functools

import torch
from pydantic import Field

from ..contract import VariantInfo
from .base import Pattern, SparseAttention, SparseOptions


class BigBirdOptions(SparseOptions):
    block_size: int = Field(64, gt=0, description="positions per block")
    window_blocks: int = Field(3, gt=0, description="blocks in the sliding window (odd: centred)")
    global_blocks: int = Field(2, ge=0, description="leading global blocks")
    random_blocks: int = Field(3, ge=0, description="random key blocks per query block")
    seed: int = Field(0, description="seed of the random blocks")


@functools.cache
def random_block_table(num_blocks: int, per_row: int, seed: int) -> torch.Tensor:
    """(num_blocks, num_blocks) bool: `per_row` distinct random key blocks for each query block."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.zeros(num_blocks, num_blocks, dtype=torch.bool)
    for row in range(num_blocks):
        table[row, torch.randperm(num_blocks, generator=gen)[: min(per_row, num_blocks)]] = True
    return table


def bigbird(num_keys: int, block_size: int, window_blocks: int, global_blocks: int, random_blocks: int,
            seed: int, device: torch.device | str) -> Pattern:  # fmt: skip
    """Keep the window blocks, the global blocks and each query block's seeded random blocks."""
    num_blocks = -(-num_keys // block_size)
    table = random_block_table(num_blocks, random_blocks, seed).to(device)

    def bigbird_pattern(q_pos, kv_idx):
        qb, kb = q_pos // block_size, kv_idx // block_size
        near = (qb - kb).abs() <= window_blocks // 2
        glob = (qb < global_blocks) | (kb < global_blocks)
        # Queries before the first key (causal, Nq > Nk) have negative positions: clamp into the table.
        return near | glob | table[qb.clamp(0, num_blocks - 1), kb]

    return bigbird_pattern


class BigBirdAttention(SparseAttention):
    """BigBird attention: window + global + random blocks."""

    info = VariantInfo(
        name="bigbird",
        family="sparse",
        exact=False,
        gqa_native=True,
        definition="masked softmax over window, global and seeded random blocks",
        summary="BigBird window + global + random blocks (FlexAttention)",
        paper="Zaheer et al. 2020, Big Bird: Transformers for Longer Sequences",
        # Key lengths intersect the pattern: random blocks are drawn for the padded length, so those that
        # land in a sequence's padding are lost to it, as the window and global blocks past its end are.
        lengths=True,
    )
    Options = BigBirdOptions

    def pattern(self, num_keys, device):
        o = self.options
        return bigbird(num_keys, o.block_size, o.window_blocks, o.global_blocks, o.random_blocks, o.seed, device)
