"""MAD's fuzzy in-context recall (mad-lab's generate_fuzzy_in_context_recall_instance, multi_query=True).

Keys and values are motifs: runs of 1 to `k_motif_size` (`v_motif_size`) distinct symbols, keys from
the lower half of the symbols, values from the upper. Pairs follow one another until the sequence is
nearly full, one of them a probe pair placed at a random point, and the probe pair ends the sequence
again; a key keeps its value within a sequence. Sequences are left-padded with MAD's pad symbol (the
last) to seq_len + 1 and shifted by one. Training examples take keys of every size and every next
token as targets; test examples take keys of the largest size only and score each value whose key
was shown before, the final probe's included. A motif is drawn uniformly among the ordered choices of
distinct symbols, as MAD draws it from their shuffled list.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .base import IGNORE
from .mad import MadSizes, mad_task


class FuzzyRecallParams(MadSizes):
    """MAD's fuzzy in-context recall baseline: 16 symbols, 128 tokens, motifs of up to 3."""

    vocab_size: int = Field(16, gt=4, description="MAD's vocabulary: keys, values and the pad symbol")
    seq_len: int = Field(128, gt=0)
    k_motif_size: int = Field(3, gt=0, description="the longest key")
    v_motif_size: int = Field(3, gt=0, description="the longest value")

    @model_validator(mode="after")
    def _fits(self) -> FuzzyRecallParams:
        half = (self.vocab_size - 1) // 2
        if max(self.k_motif_size, self.v_motif_size) > half:
            raise ValueError(
                f"motifs of distinct symbols need vocab_size > {2 * max(self.k_motif_size, self.v_motif_size)}"
            )
        if self.seq_len <= 3 * (self.k_motif_size + self.v_motif_size):
            raise ValueError(f"seq_len must exceed {3 * (self.k_motif_size + self.v_motif_size)} for the probe pairs")
        return self


def _motif(symbols: np.ndarray, size: int, rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(s) for s in rng.choice(symbols, size, replace=False))


def fuzzy_instance(params: FuzzyRecallParams, training: bool, rng: np.random.Generator) -> tuple[list, list]:
    """One sequence of seq_len + 1 tokens and its targets, before the shift."""
    pad = params.vocab_size - 1
    half = pad // 2
    key_symbols, value_symbols = np.arange(half), np.arange(half, pad)
    key_sizes = list(range(1, params.k_motif_size + 1)) if training else [params.k_motif_size]
    value_sizes = list(range(1, params.v_motif_size + 1))

    probe_key = _motif(key_symbols, int(rng.choice(key_sizes)), rng)
    probe_value = _motif(value_symbols, int(rng.choice(value_sizes)), rng)
    probe_len = len(probe_key) + len(probe_value)
    probe_at = int(rng.integers(params.seq_len - 2 * probe_len))
    probe_added = False

    values: dict[tuple[int, ...], tuple[int, ...]] = {}  # each key's value, fixed at its first pair
    inputs: list[int] = []
    targets: list[int] = []
    while len(inputs) < params.seq_len - probe_len - (params.k_motif_size + params.v_motif_size):
        key_size, value_size = int(rng.choice(key_sizes)), int(rng.choice(value_sizes))
        if len(inputs) >= probe_at and not probe_added:
            inputs += [*probe_key, *probe_value]
            targets += [IGNORE] * probe_len
            values[probe_key] = probe_value
            probe_added = True
            continue
        key = _motif(key_symbols, key_size, rng)
        if key == probe_key:
            value, probe_added = probe_value, True
        else:
            value = values.get(key) or _motif(value_symbols, value_size, rng)
        inputs += [*key, *value]
        targets += [IGNORE] * len(key) + (list(value) if key in values else [IGNORE] * len(value))
        values[key] = value
    inputs += [*probe_key, *probe_value]
    targets += [IGNORE] * len(probe_key) + list(probe_value)
    padding = params.seq_len + 1 - len(inputs)
    return [pad] * padding + inputs, [IGNORE] * padding + targets


def fuzzy_examples(
    params: FuzzyRecallParams, n: int, training: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of seq_len tokens: next tokens as targets when `training`, else the recalled values."""
    drawn = [fuzzy_instance(params, training, rng) for _ in range(n)]
    sequence = np.array([inputs for inputs, _ in drawn], dtype=np.int64)
    if training:
        return sequence[:, :-1], sequence[:, 1:]
    return sequence[:, :-1], np.array([targets for _, targets in drawn], dtype=np.int64)[:, 1:]


TASK = mad_task(
    "mad-fuzzy-in-context-recall",
    "MAD fuzzy in-context recall: keys and values of several tokens (synthetic)",
    FuzzyRecallParams,
    fuzzy_examples,
    lambda p: (
        f"MAD fuzzy in-context recall, {p.seq_len} tokens, vocab {p.vocab_size}, motifs up to "
        f"{p.k_motif_size} / {p.v_motif_size}"
    ),
)
