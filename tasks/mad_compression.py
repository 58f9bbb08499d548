"""MAD's compression (mad-lab's generate_compression_instance, model AutoEncoder).

A sequence of seq_len - 1 random symbols and a compression token; the model reads it causally,
keeps its last position's encoding alone and rebuilds every token of the sequence from it (the
decoder adds each position's sinusoidal embedding; suite/training/model.py's Reconstruction), scored
at every position. MAD's noise option is left out: its benchmark does not use it.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .mad import MadSizes, mad_task


class CompressionParams(MadSizes):
    """MAD's compression baseline: 16 symbols, 32 tokens."""

    vocab_size: int = Field(16, gt=2, description="MAD's vocabulary: the symbols and the compression token")
    seq_len: int = Field(32, gt=1)


def compression_examples(
    params: CompressionParams, n: int, training: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of seq_len tokens, each its own target."""
    inputs = np.empty((n, params.seq_len), dtype=np.int64)
    inputs[:, :-1] = rng.integers(0, params.vocab_size - 1, (n, params.seq_len - 1))
    inputs[:, -1] = params.vocab_size - 1
    return inputs, inputs.copy()


TASK = mad_task(
    "mad-compression",
    "MAD compression: a sequence rebuilt from its last position's encoding (synthetic)",
    CompressionParams,
    compression_examples,
    lambda p: f"MAD compression, {p.seq_len} tokens, vocab {p.vocab_size}",
    kind="autoencode",
)
