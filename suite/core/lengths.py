"""Sequence-length distributions of a bench point: how long each sequence of a ragged batch is.

``fixed``: every sequence is N long (the equal-length batch). ``uniform:LO:HI``: lengths drawn
uniformly between LO * N and HI * N (fractions of N, 0 < LO <= HI <= 1), so one spec serves a sweep
over N. ``list:L1,L2,...``: these lengths (tokens), repeated over the batch. Draws are seeded by the
point's shape, so every variant and layout of a point sees the same batch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

FIXED = "fixed"


@dataclass(frozen=True)
class LengthSpec:
    """A parsed ``--lengths`` value."""

    kind: str  # fixed, uniform, list
    low: float = 1.0
    high: float = 1.0
    values: tuple[int, ...] = ()

    def __str__(self) -> str:
        """The canonical spelling: equal distributions are one point."""
        if self.kind == "uniform":
            return f"uniform:{self.low:g}:{self.high:g}"
        if self.kind == "list":
            return "list:" + ",".join(map(str, self.values))
        return FIXED

    def draw(self, batch: int, seq: int) -> list[int]:
        """The `batch` sequence lengths for a point of (maximum) length `seq`."""
        if self.kind == FIXED:
            return [seq] * batch
        if self.kind == "list":
            if max(self.values) > seq:
                raise ValueError(f"length {max(self.values)} is longer than N = {seq}")
            return [self.values[i % len(self.values)] for i in range(batch)]
        lo, hi = max(1, math.ceil(self.low * seq)), max(1, math.floor(self.high * seq))
        rng = random.Random(f"{batch}:{seq}")  # a str seed hashes the same in every process
        return [rng.randint(lo, max(lo, hi)) for _ in range(batch)]


def parse_lengths(text: str) -> LengthSpec:
    """`fixed`, `uniform:LO:HI` (fractions of N) or `list:L1,L2,...` (tokens); ValueError naming the problem."""
    kind, _, rest = text.partition(":")
    if kind == FIXED and not rest:
        return LengthSpec(FIXED)
    if kind == "uniform":
        parts = rest.split(":")
        try:
            low, high = (float(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"lengths {text!r}: expected uniform:LO:HI with fractions of N, e.g. uniform:0.25:1"
            ) from None
        if not 0 < low <= high <= 1:
            raise ValueError(f"lengths {text!r}: need 0 < LO <= HI <= 1 (fractions of N)")
        return LengthSpec("uniform", low, high)
    if kind == "list":
        try:
            values = tuple(int(p) for p in rest.split(","))
        except ValueError:
            raise ValueError(f"lengths {text!r}: expected list:L1,L2,... with whole token counts") from None
        if min(values) < 1:
            raise ValueError(f"lengths {text!r}: every length must be at least 1")
        return LengthSpec("list", values=values)
    raise ValueError(f"lengths {text!r}: expected fixed, uniform:LO:HI or list:L1,L2,...")
