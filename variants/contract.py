"""The variant contract: what every attention variant is built from, takes, returns and declares.

A variant is a torch module built from an :class:`AttentionSpec`. ``forward(q, k, v)`` takes
q ``(B, H, Nq, D)`` and k, v ``(B, H_kv, Nk, D)`` with ``H % H_kv == 0`` (GQA; MQA when H_kv = 1)
and returns ``(B, H, Nq, D)`` in q's dtype and device. Causal attention with Nq != Nk aligns
bottom-right: the queries are the LAST Nq positions of the key sequence, so query i sees keys
``j <= i + (Nk - Nq)`` (as in decoding and in flash-attn; torch SDPA's ``is_causal`` is top-left).
A query that sees no key (causal with Nq > Nk) outputs zeros.

This module knows nothing of the harness: the suite reads :class:`VariantInfo` and calls the
module; the variant never imports from ``attnbench.suite``. It is the plugin interface: the input
rules of inputs.py (``check_qkv``, ``softmax_scale``, ...) are importable from here too.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from .gates import OUTPUT_GATE, GateInput, check_gates, heads_first, make_gates
from .inputs import accumulate_dtype, check_packed, check_qkv, per_sequence, softmax_scale
from .softmax import softmax_attention, softmax_weights

# The plugin interface: what a variant file imports from here (the input rules are inputs.py's).
__all__ = [
    "DEFAULT_TOLERANCE",
    "FAMILIES",
    "OUTPUT_GATE",
    "AttentionSpec",
    "GateInput",
    "Options",
    "Unsupported",
    "Variant",
    "VariantInfo",
    "accumulate_dtype",
    "attend",
    "check_gates",
    "check_packed",
    "check_qkv",
    "heads_first",
    "missing_packages",
    "per_sequence",
    "reference",
    "softmax_scale",
]

FAMILIES = ("exact", "linear", "sparse", "low-rank", "modified")

# Relative-norm error ||out - ref|| / ||ref|| allowed against the float64 definition, per input dtype.
DEFAULT_TOLERANCE: Mapping[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}


class Unsupported(ValueError):
    """Raised by a variant for an input it declares it cannot compute (a limit, not a bug)."""


class Options(BaseModel):
    """Base of a variant's options: typed, defaulted, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class AttentionSpec:
    """The shape of an attention layer, from which a variant is built."""

    num_heads: int
    head_dim: int
    num_kv_heads: int | None = None
    causal: bool = False
    max_seq_len: int = 8192
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        for name in ("num_heads", "head_dim", "num_kv_heads", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"spec.{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"spec.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )

    @property
    def groups(self) -> int:
        """Query heads per key/value head (1: multi-head, num_heads: multi-query)."""
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class VariantInfo:
    """What a variant is and what it supports, declared in one place beside its code."""

    name: str
    family: str
    exact: bool
    summary: str = ""
    paper: str = ""
    # The original code the variant follows (repository and file), beside the paper.
    source: str = ""
    # Each way the variant differs from its paper or original code: what differs, and why.
    departures: tuple[str, ...] = ()
    causal: bool = True
    non_causal: bool = True
    gqa: bool = True
    # True when grouped heads are computed without materialising repeated K/V.
    gqa_native: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    # True, False, or the devices on which gradients work.
    backward: bool | tuple[str, ...] = True
    packages: tuple[str, ...] = ()
    # True when forward (and reference) take key_lengths: (B,) real keys per sequence, the rest
    # padding that no query may attend to. A variant without it is refused such inputs.
    lengths: bool = False
    # True when forward takes cu_seqlens: a packed batch, B = 1 and Nq = Nk, holding the sequences
    # [cu_seqlens[i], cu_seqlens[i+1]) end to end; none may attend to another (causal within each).
    packed: bool = False
    # What the variant must equal: exact ones softmax attention, the others their own dense form.
    definition: str = "softmax attention"
    # Whether the definition applies the 1/sqrt(D) softmax scale (false for kernelised forms).
    scaled: bool = True
    # How many (B, H, Nq, Nk) tensors the variant holds at its peak (naive softmax: the scores and the
    # probabilities); 0 for kernels that never build them. Predicts out-of-memory points before a run.
    score_buffers: int = 0
    # True when half-precision K and V are copied to float32 (their accumulate dtype) whole: a copy of
    # the K/V cache, which the out-of-memory prediction counts.
    upcasts_kv: bool = False
    # True when the first call compiles a kernel (torch.compile): seconds, timed apart as first_call_s.
    compiles: bool = False
    # The per-token inputs beyond q, k, v that forward and reference take as keywords (gates.py): a
    # forget gate, a delta rule's beta. The harness draws them, or a task model makes them.
    gates: tuple[GateInput, ...] = ()
    # True for a recurrence over a carried state (linear/recurrence.py): forward also takes
    # initial_state and return_state, and its definition is a loop over time, O(N) in memory.
    recurrent: bool = False
    # True when the keys a query attends are chosen from the content (q, k or an indexer), not by position
    # alone (NSA, MoBA, DSA): `check` then lures the selection with attractive future keys.
    selects: bool = False
    # True for a KV-cache policy (sparse/cache_policy.py): the tokens before the queries are cut to a budget,
    # then attended (`evict`, then `attend_cache`); decoding times the attention over the cut cache.
    evicts: bool = False
    tolerance: Mapping[torch.dtype, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("VariantInfo.name must be a non-empty string")
        if not (self.causal or self.non_causal):
            raise ValueError(f"variant {self.name}: supports neither causal nor non-causal attention")
        if isinstance(self.departures, str) or not all(isinstance(d, str) and d for d in self.departures):
            raise ValueError(f"variant {self.name}: departures must be a tuple of non-empty strings")
        object.__setattr__(self, "departures", tuple(self.departures))

    def has_backward(self, device: str) -> bool:
        """Whether gradients flow through the variant on `device`."""
        if isinstance(self.backward, bool):
            return self.backward
        return device in self.backward

    def tolerance_for(self, dtype: torch.dtype) -> float:
        """Allowed relative-norm error against the float64 definition for inputs of `dtype`."""
        return self.tolerance.get(dtype, DEFAULT_TOLERANCE.get(dtype, 1e-2))


def missing_packages(packages: tuple[str, ...]) -> list[str]:
    """Names among `packages` that cannot be imported here (checked without importing them)."""
    return [name for name in packages if importlib.util.find_spec(name) is None]


class Variant(nn.Module):
    """Base class of every attention variant; subclasses set `info` and implement `forward`."""

    info: ClassVar[VariantInfo]
    Options: ClassVar[type[Options]] = Options

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.options = self.parse_options(spec.options)
        if spec.causal and not self.info.causal:
            raise Unsupported(f"{self.info.name} does not support causal attention")
        if not spec.causal and not self.info.non_causal:
            raise Unsupported(f"{self.info.name} supports causal attention only")
        if spec.groups > 1 and not self.info.gqa:
            raise Unsupported(f"{self.info.name} does not support grouped K/V heads (GQA/MQA)")

    @classmethod
    def parse_options(cls, options: Mapping[str, Any]) -> Options:
        """The variant's typed options; a bad or unknown key raises ValueError naming it."""
        try:
            return cls.Options(**dict(options))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            # A check across fields has no location: its message names the fields.
            what = f"option {where}: {first['msg']}" if where else first["msg"].removeprefix("Value error, ")
            known = ", ".join(cls.Options.model_fields) or "none"
            raise ValueError(f"variant {cls.info.name}: {what} (options: {known})") from None

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """Why the variant cannot run on `device` with `dtype`, or None when it can."""
        if device not in cls.info.devices:
            return f"runs on {'/'.join(cls.info.devices)} only"
        if dtype is not None and dtype not in cls.info.dtypes:
            return f"no {str(dtype).removeprefix('torch.')} support"
        missing = missing_packages(cls.info.packages)
        if missing:
            return f"package {', '.join(missing)} not installed"
        return None

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The dense definition this variant must equal, evaluated on the given (float64) inputs."""
        return softmax_attention(q, k, v, causal=self.spec.causal, key_lengths=key_lengths)

    def attention_weights(
        self, q: torch.Tensor, k: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The (B, H, Nq, Nk) weights the variant applies to v (for heatmaps), or None if it has none."""
        if not self.info.exact:
            return None
        return softmax_weights(q, k, causal=self.spec.causal, key_lengths=key_lengths)

    def gate_layer(self, dim: int) -> nn.Module | None:
        """For a variant that declares gates: the layer that makes them from a model's hidden states
        (B, N, dim), as the variant's original layer does, returning {name: (B, H, N[, D])}. None: no gates."""
        return None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def attend(
    variant: Variant,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_lengths: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    gates: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Call `variant`, with per-sequence key lengths or packed-sequence boundaries where given;
    Unsupported if it does not take them, ValueError if they do not fit the inputs. A variant that
    declares gates gets `gates`, or, where none are given, gates drawn from their laws (seed 0)."""
    extra = dict(gates) if gates is not None else make_gates(variant.info.gates, q, k) if variant.info.gates else {}
    if cu_seqlens is not None:
        if key_lengths is not None:
            raise ValueError("give key_lengths (a padded batch) or cu_seqlens (a packed one), not both")
        if not variant.info.packed:
            raise Unsupported(f"{variant.info.name} does not take packed sequences (they would see each other)")
        check_packed(q, k, cu_seqlens)
        return variant(q, k, v, cu_seqlens=cu_seqlens, **extra)
    if key_lengths is None:
        return variant(q, k, v, **extra)
    if not variant.info.lengths:
        raise Unsupported(f"{variant.info.name} does not take per-sequence key lengths (padding would be attended)")
    if key_lengths.shape != (q.shape[0],) or bool((key_lengths < 1).any()) or bool((key_lengths > k.shape[-2]).any()):
        raise ValueError(f"key_lengths must be (B,) = ({q.shape[0]},) values in 1..{k.shape[-2]}")
    return variant(q, k, v, key_lengths=key_lengths, **extra)


def reference(
    variant: Variant,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_lengths: torch.Tensor | None = None,
    gates: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The variant's definition on float64 copies of the inputs, with the gates `attend` gives it (the
    same draw, in float64)."""
    q64, k64, v64 = q.double(), k.double(), v.double()
    if gates is None:  # drawn in the inputs' dtype, as attend draws them, then widened: the same values
        gates = make_gates(variant.info.gates, q, k) if variant.info.gates else {}
    extra = {name: g.double() for name, g in gates.items()}
    if key_lengths is None:
        return variant.reference(q64, k64, v64, **extra)
    return variant.reference(q64, k64, v64, key_lengths, **extra)
