"""Gate inputs: the per-token inputs beyond q, k and v that gated and delta-rule recurrences take.

A variant declares each one (:class:`GateInput`: its name, its shape, its range and the law it is
drawn from when no model makes it); the harness passes them to ``forward`` and ``reference`` as
keyword arguments of shape ``(B, H, N)`` (one value per query head and token), ``(B, H, N, D)`` (one
per key channel too) or ``(B, H, N, W)`` (a declared width: NSA's three branch gates); N is the key
sequence, or the queries' for a gate on the output (gated attention's), and H the query heads, or
the K/V heads for an input shared by a group (DSA's indexer keys). ``bench`` and ``check`` draw them from the
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
# - "normal": unbounded, N(0, 1) (RWKV-7's low-rank update vectors before their own maps; gated
#   attention's gate logits; DSA's indexer queries and keys).
Law = Literal["log-decay", "unit", "normal"]

# The name by which a variant declares a sigmoid gate on its output, after attention (gated attention's):
# output = sigmoid(output_gate) * attention; `check`'s output-gate check holds it to that.
OUTPUT_GATE = "output_gate"


@dataclass(frozen=True)
class GateInput:
    """One extra per-token input a variant takes, declared beside its code."""

    name: str
    law: Law
    per_channel: bool = False  # (B, H, N, D) when True
    width: int = 0  # (B, H, N, width) when set; neither: (B, H, N)
    temperature: float = 1.0  # "log-decay" only: the divisor of logsigmoid
    description: str = ""
    queries: bool = False  # one per query (N = Nq), for a gate applied to the output; else one per key
    kv_heads: bool = False  # one per K/V head (H_kv), shared by its group of query heads; else per query head

    def __post_init__(self) -> None:
        if self.per_channel and self.width:
            raise ValueError(f"gate {self.name}: per_channel (D wide) or a width, not both")

    def shape(self, b: int, h: int, hkv: int, nq: int, nk: int, d: int) -> tuple[int, ...]:
        """Its shape for q (B, H, Nq, D) and k (B, H_kv, Nk, D)."""
        lead = (b, hkv if self.kv_heads else h, nq if self.queries else nk)
        return (*lead, d) if self.per_channel else (*lead, self.width) if self.width else lead

    def check(self, value: torch.Tensor, b: int, h: int, hkv: int, nq: int, nk: int, d: int) -> None:
        """ValueError when `value` has not the declared shape. The range is declared, not checked per call:
        that would cost a device sync inside every timed call."""
        want = self.shape(b, h, hkv, nq, nk, d)
        if tuple(value.shape) != want:
            raise ValueError(f"gate {self.name} must be {want}; got {tuple(value.shape)}")


def draw(gate: GateInput, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A float64 sample of `gate` from its law (on the CPU, so every device draws the same values)."""
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
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
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[-2]
    generator = torch.Generator().manual_seed(seed)
    return {g.name: draw(g, g.shape(b, h, hkv, nq, nk, d), generator).to(q.device, dtype or q.dtype) for g in gates}


def check_gates(
    owner: str, declared: tuple[GateInput, ...], gates: dict[str, torch.Tensor], q: torch.Tensor, k: torch.Tensor
) -> None:
    """ValueError, naming the variant `owner`, unless `gates` holds exactly the declared gates, each of its
    declared shape."""
    names = {g.name for g in declared}
    if set(gates) != names:
        raise ValueError(f"{owner} takes gates {sorted(names)}; got {sorted(gates)}")
    b, h, nq, d = q.shape
    for gate in declared:
        gate.check(gates[gate.name], b, h, k.shape[1], nq, k.shape[-2], d)


def heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """A projection's output as a gate: (B, N, H) -> (B, H, N), or (B, N, H * W) -> (B, H, N, W)."""
    b, n, width = x.shape
    if width == heads:
        return x.transpose(1, 2)
    return x.view(b, n, heads, width // heads).transpose(1, 2)
