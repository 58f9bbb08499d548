"""Gate inputs: the per-token inputs beyond q, k and v that gated and delta-rule recurrences take.

A variant declares each one (:class:`GateInput`: its name, its shape, its range and the law it is
drawn from when no model makes it); the harness passes them to ``forward`` and ``reference`` as
keyword arguments of shape ``(B, H, N)`` (one value per query head and token) or ``(B, H, N, D)``
(one per key channel too), N being the key sequence. ``bench`` and ``check`` draw them from the
declared law (:func:`make_gates`); a task model makes them from its hidden states with the
projections of the variant's original layer (the variant's ``gate_projection``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

# What a gate's values are, and how a synthetic one is drawn:
# - "log-decay": log of a forget gate, in (-inf, 0]: logsigmoid(x) / temperature, x ~ N(0, 1)
#   (GLA's gate_logit_normalizer is the temperature; Gated DeltaNet's -exp(A) softplus(.) is drawn alike);
# - "unit": in (0, 1): sigmoid(x), x ~ N(0, 1) (DeltaNet's beta);
# - "normal": unbounded, N(0, 1) (RWKV-7's low-rank update vectors before their own maps).
Law = Literal["log-decay", "unit", "normal"]


@dataclass(frozen=True)
class GateInput:
    """One extra per-token input a variant takes, declared beside its code."""

    name: str
    law: Law
    per_channel: bool = False  # (B, H, N, D) when True, else (B, H, N)
    temperature: float = 1.0  # "log-decay" only: the divisor of logsigmoid
    description: str = ""

    def shape(self, b: int, h: int, n: int, d: int) -> tuple[int, ...]:
        return (b, h, n, d) if self.per_channel else (b, h, n)

    def check(self, value: torch.Tensor, b: int, h: int, n: int, d: int) -> None:
        """ValueError when `value` has not the declared shape. The range is declared, not checked per call:
        that would cost a device sync inside every timed call."""
        want = self.shape(b, h, n, d)
        if tuple(value.shape) != want:
            raise ValueError(f"gate {self.name} must be {want}; got {tuple(value.shape)}")


def draw(gate: GateInput, b: int, h: int, n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """A float64 sample of `gate` from its law (on the CPU, so every device draws the same values)."""
    x = torch.randn(gate.shape(b, h, n, d), generator=generator, dtype=torch.float64)
    if gate.law == "log-decay":
        return F.logsigmoid(x) / gate.temperature
    if gate.law == "unit":
        return torch.sigmoid(x)
    return x


def make_gates(
    gates: tuple[GateInput, ...],
    q: torch.Tensor,
    k: torch.Tensor,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Every declared gate for inputs q (B, H, Nq, D) and k (B, H_kv, Nk, D), drawn from its law with
    `seed`, in `dtype` (default q's) on q's device. The same seed gives the same values for any dtype,
    so a variant and its float64 definition see one set of gates."""
    b, h, _, d = q.shape
    n = k.shape[-2]
    generator = torch.Generator().manual_seed(seed)
    return {g.name: draw(g, b, h, n, d, generator).to(q.device, dtype or q.dtype) for g in gates}
