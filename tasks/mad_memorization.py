"""MAD's memorization (mad-lab's generate_memorization_instance).

A fixed map from keys (the lower half of the symbols) to distinct values (the upper half), the same
for every sequence and split: it must be learnt into the weights, since no sequence shows a value.
Each sequence is seq_len / 2 keys, each followed by an insert token where the model must output the
key's value (the targets, in training as in test; no shift). The map comes from its own seed (MAD's
12345), the sequences from the data seed.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .base import IGNORE
from .mad import MadSizes, mad_task


class MemorizationParams(MadSizes):
    """MAD's memorization baseline: 256 symbols, 32 tokens, 256 training examples."""

    vocab_size: int = Field(256, gt=3, description="MAD's vocabulary: keys, values and the insert token")
    seq_len: int = Field(32, gt=1)
    train_size: int = Field(256, gt=0)
    map_seed: int = Field(
        12345, description="the seed of the key-to-value map (MAD's kv_map_seed), apart from the data's"
    )

    @model_validator(mode="after")
    def _fits(self) -> MemorizationParams:
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even (key, insert), got {self.seq_len}")
        return self


def memorization_examples(
    params: MemorizationParams, n: int, training: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of seq_len tokens and their targets: the map's value after each key."""
    symbols = params.vocab_size - 1
    # MAD's map: keys (the lower half) paired with shuffled values (the upper half), from its own fixed seed.
    mapping = np.random.default_rng(params.map_seed).permutation(np.arange(symbols // 2, symbols))[: symbols // 2]
    keys = rng.integers(0, len(mapping), (n, params.seq_len // 2))
    inputs = np.full((n, params.seq_len), params.vocab_size - 1, dtype=np.int64)
    inputs[:, 0::2] = keys
    targets = np.full_like(inputs, IGNORE)
    targets[:, 1::2] = mapping[keys]
    return inputs, targets


TASK = mad_task(
    "mad-memorization",
    "MAD memorization: a fixed key-to-value map learnt into the weights (synthetic)",
    MemorizationParams,
    memorization_examples,
    lambda p: f"MAD memorization, {(p.vocab_size - 1) // 2} keys, {p.seq_len} tokens",
)
