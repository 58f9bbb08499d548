"""MQAR: multi-query associative recall, as defined in Zoology (Arora, Eyuboglu et al. 2023).

A sequence starts with key-value pairs ``k1 v1 k2 v2 ...`` (keys from the first half of the
vocabulary, values from the second, each key once); later, every key is queried once, at a gap
drawn from a power law (near queries likelier), and the model must output its value at the query
position. Other positions hold random tokens (``random_non_queries``) or padding, and carry no
label. A causal language model solves it by attending back to the key's first occurrence: the
capability that fixed-size-state attention approximations tend to lose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import FIRST_SYMBOL, IGNORE, PAD, Split, Task, TaskData


class MqarParams(BaseModel):
    """Generator parameters (Zoology's defaults, except the sizes)."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(8192, gt=4, description="task symbols: keys take the first half, values the second")
    seq_len: int = Field(256, gt=0)
    num_kv_pairs: int = Field(16, gt=0)
    power_a: float = Field(0.01, gt=0, description="power-law exponent of the query gaps")
    random_non_queries: bool = True
    train_size: int = Field(100_000, gt=0)
    val_size: int = Field(3_000, gt=0)
    test_size: int = Field(3_000, gt=0)

    @model_validator(mode="after")
    def _fits(self) -> MqarParams:
        if 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(f"{self.num_kv_pairs} pairs and their queries need seq_len >= {4 * self.num_kv_pairs}")
        if self.num_kv_pairs >= self.vocab_size // 2:
            raise ValueError(f"{self.num_kv_pairs} distinct keys need vocab_size > {2 * self.num_kv_pairs}")
        return self


def make_examples(params: MqarParams, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences (n, seq_len) and per-position labels (n, seq_len), IGNORE where nothing is asked."""
    half = params.vocab_size // 2
    pairs = params.num_kv_pairs
    context = 2 * pairs
    slots = (params.seq_len - context) // 2  # query positions: every other position after the context
    weights = params.power_a * np.arange(1, slots + 1) ** (params.power_a - 1)
    weights /= weights.sum()

    # Task symbols are offset by FIRST_SYMBOL so that PAD and CLS stay reserved.
    keys = np.stack([rng.choice(half - 1, pairs, replace=False) for _ in range(n)]) + 1
    values = np.stack([rng.choice(half, pairs, replace=False) for _ in range(n)]) + half
    gaps = np.stack([rng.choice(slots, pairs, replace=False, p=weights) for _ in range(n)])

    tokens = np.full((n, params.seq_len), -1, dtype=np.int64)
    labels = np.full((n, params.seq_len), IGNORE, dtype=np.int64)
    tokens[:, 0:context:2], tokens[:, 1:context:2] = keys, values
    rows = np.arange(n)[:, None]
    query_pos = context + 2 * gaps
    tokens[rows, query_pos] = keys
    labels[rows, query_pos] = values + FIRST_SYMBOL  # the answer at the query position
    free = tokens < 0
    tokens += FIRST_SYMBOL
    if params.random_non_queries:
        tokens[free] = rng.integers(0, params.vocab_size, size=int(free.sum())) + FIRST_SYMBOL
    else:
        tokens[free] = PAD
    return torch.from_numpy(tokens), torch.from_numpy(labels)


def generate(params: MqarParams, seed: int) -> TaskData:
    """Train, validation and test sets drawn from one seeded generator."""
    rng = np.random.default_rng(seed)
    splits = {
        name: Split(*make_examples(params, size, rng))
        for name, size in (("train", params.train_size), ("val", params.val_size), ("test", params.test_size))
    }
    return TaskData(
        name="mqar",
        kind="lm",
        **splits,
        vocab_size=FIRST_SYMBOL + params.vocab_size,
        num_classes=FIRST_SYMBOL + params.vocab_size,
        max_len=params.seq_len,
        description=f"MQAR, {params.num_kv_pairs} pairs in {params.seq_len} tokens, vocab {params.vocab_size}",
        params=params.model_dump(),
    )


def at_length(params: dict[str, Any], n: int) -> dict[str, Any]:
    """`params` at sequence length n, key-value pairs grown in proportion (Zoology's sweep: 4 pairs in 64
    tokens, 8 in 128, 16 in 256; it jumps to 64 in 512, where this rule keeps 32)."""
    base = MqarParams.model_fields
    seq_len, pairs = (
        params.get("seq_len", base["seq_len"].default),
        params.get("num_kv_pairs", base["num_kv_pairs"].default),
    )
    return {**params, "seq_len": n, "num_kv_pairs": max(1, round(pairs * n / seq_len))}


TASK = Task("mqar", "multi-query associative recall (Zoology), synthetic", MqarParams, generate, at_length=at_length)
