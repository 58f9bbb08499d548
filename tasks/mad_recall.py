"""MAD's in-context recall and noisy in-context recall (mad-lab's generate_in_context_recall_instance,
with its benchmark's multi_query=True).

A sequence is key-value pairs ``k v k v ...`` (keys from the first half of the task's symbols, values
from the second; a key keeps its value within the sequence), then a probe pair: a key shown earlier
and its value. MAD trains a language model on every next token (inputs shifted by one) and scores
the value of every pair whose key was shown before, the probe's included. The noisy variant replaces
pairs, each with probability `frac_noise`, by two tokens of a separate noise vocabulary, unscored
and not counting as shown. Departure: the one pair kept free of noise is drawn among the context's
pairs (MAD draws it among those and the probe, so with probability 1/(L/2) it protects none).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .base import IGNORE
from .mad import MadSizes, mad_task


class RecallParams(MadSizes):
    """MAD's in-context recall baseline: 16 symbols, 128 tokens."""

    vocab_size: int = Field(16, gt=3, description="MAD's vocabulary: keys, values and noise")
    seq_len: int = Field(128, gt=3, description="the sequence with its probe pair; inputs are one token shorter")
    noise_vocab_size: int = Field(0, ge=0, description="the last symbols, kept for noise")
    frac_noise: float = Field(0.0, ge=0, lt=1, description="the chance a context pair is noise")

    @model_validator(mode="after")
    def _fits(self) -> RecallParams:
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even (pairs of tokens), got {self.seq_len}")
        if self.vocab_size - self.noise_vocab_size < 2:
            raise ValueError("vocab_size must leave a key and a value beside the noise vocabulary")
        if self.frac_noise > 0 and self.noise_vocab_size == 0:
            raise ValueError("frac_noise > 0 needs noise_vocab_size > 0")
        return self


class NoisyRecallParams(RecallParams):
    """MAD's noisy in-context recall baseline: 16 symbols and 16 of noise, a fifth of the pairs noise."""

    vocab_size: int = Field(32, gt=3, description="MAD's vocabulary: keys, values and noise")
    noise_vocab_size: int = Field(16, ge=0, description="the last symbols, kept for noise")
    frac_noise: float = Field(0.2, ge=0, lt=1, description="the chance a context pair is noise")


def recall_examples(
    params: RecallParams, n: int, training: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of seq_len - 1 tokens: next tokens as targets when `training`, else the recalled values."""
    symbols = params.vocab_size - params.noise_vocab_size
    half = symbols // 2
    pairs = params.seq_len // 2 - 1  # the context; the probe pair ends the sequence
    rows = np.arange(n)
    keys = rng.integers(0, half, (n, pairs))
    table = rng.integers(half, symbols, (n, half))  # each key's value: drawn for it once per sequence
    values = np.take_along_axis(table, keys, 1)
    protected = rng.integers(0, pairs, n)
    noisy = (rng.random((n, pairs)) < params.frac_noise) & (np.arange(pairs) != protected[:, None])
    noise = rng.integers(symbols, symbols + max(params.noise_vocab_size, 1), (n, pairs, 2))

    shown = np.zeros((n, half), dtype=bool)
    asked = np.zeros((n, pairs), dtype=bool)  # a value is scored where its key was shown before
    for j in range(pairs):
        real = ~noisy[:, j]
        asked[:, j] = real & shown[rows, keys[:, j]]
        shown[rows[real], keys[real, j]] = True
    probe = np.argmax(np.where(shown, rng.random((n, half)), -1.0), axis=1)  # uniform among the keys shown
    probe_value = table[rows, probe]

    sequence = np.empty((n, 2 * pairs + 2), dtype=np.int64)
    sequence[:, 0 : 2 * pairs : 2] = np.where(noisy, noise[..., 0], keys)
    sequence[:, 1 : 2 * pairs : 2] = np.where(noisy, noise[..., 1], values)
    sequence[:, -2], sequence[:, -1] = probe, probe_value
    if training:
        return sequence[:, :-1], sequence[:, 1:]
    targets = np.full_like(sequence, IGNORE)
    targets[:, 1 : 2 * pairs : 2] = np.where(asked, values, IGNORE)
    targets[:, -1] = probe_value
    return sequence[:, :-1], targets[:, 1:]


def _described(params: RecallParams) -> str:
    noise = f", {params.frac_noise:g} of pairs noise" if params.frac_noise else ""
    return f"MAD in-context recall, {params.seq_len} tokens, vocab {params.vocab_size}{noise}"


TASK = mad_task(
    "mad-in-context-recall",
    "MAD in-context recall: every repeated key's value, and a final probe (synthetic)",
    RecallParams,
    recall_examples,
    _described,
)
NOISY_TASK = mad_task(
    "mad-noisy-in-context-recall",
    "MAD noisy in-context recall: in-context recall with noise pairs between the pairs (synthetic)",
    NoisyRecallParams,
    recall_examples,
    _described,
)
