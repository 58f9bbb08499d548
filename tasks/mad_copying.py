"""MAD's selective copying (mad-lab's generate_selective_copying_instance).

`num_tokens_to_copy` data tokens are scattered among blanks: MAD inserts each blank before one of
the data tokens drawn uniformly, so the last data token is never followed by a blank. A copy token
follows, then one blank per data token, where the model must output the data tokens in order. No
shift: the targets are the data tokens at the trailing blanks, IGNORE elsewhere, in training as in
test. Departure: MAD draws the blanks' places from numpy's global generator (unseeded); here from
the task's seeded one.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .base import IGNORE
from .mad import MadSizes, mad_task


class CopyingParams(MadSizes):
    """MAD's selective copying baseline: 16 symbols, 256 tokens, 16 to copy."""

    vocab_size: int = Field(16, gt=2, description="MAD's vocabulary: data symbols, the blank and the copy token")
    seq_len: int = Field(256, gt=0)
    num_tokens_to_copy: int = Field(16, gt=0)

    @model_validator(mode="after")
    def _fits(self) -> CopyingParams:
        if self.seq_len <= 2 * self.num_tokens_to_copy + 1:
            raise ValueError(f"seq_len must exceed {2 * self.num_tokens_to_copy + 1} (2 x tokens to copy + 1)")
        return self


def copying_examples(
    params: CopyingParams, n: int, training: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of seq_len tokens and their targets (the same in training and test)."""
    copies = params.num_tokens_to_copy
    blank, copy = params.vocab_size - 2, params.vocab_size - 1
    blanks = params.seq_len - 2 * copies - 1
    data = rng.integers(0, params.vocab_size - 2, (n, copies))
    before = rng.multinomial(blanks, np.full(copies, 1 / copies), size=n)  # blanks inserted before each token
    places = np.arange(copies) + np.cumsum(before, axis=1)
    inputs = np.full((n, params.seq_len), blank, dtype=np.int64)
    inputs[np.arange(n)[:, None], places] = data
    inputs[:, copies + blanks] = copy
    targets = np.full_like(inputs, IGNORE)
    targets[:, copies + blanks + 1 :] = data
    return inputs, targets


TASK = mad_task(
    "mad-selective-copying",
    "MAD selective copying: the data tokens among blanks, in order, after a copy token (synthetic)",
    CopyingParams,
    copying_examples,
    lambda p: f"MAD selective copying, {p.num_tokens_to_copy} tokens in {p.seq_len}, vocab {p.vocab_size}",
)
