"""What the gated and delta-rule recurrences share: RetNet, GLA, DeltaNet, Gated DeltaNet, RWKV-7.

Each is a recurrence over a state S_t of shape (D_k, D_v) per head, read by the query:
``o_t = scale * q_t^T S_t``; they differ in how S_t follows from S_{t-1}, k_t, v_t and the gates
(gates.py). A variant file holds two forms of its update: ``recurrent``, the definition (a loop
over time, run in float64 by `reference`, the way fla keeps naive.py beside its kernels), and
``chunked``, the fast pure-torch form (chunks of `chunk_size` tokens: matrix products within a
chunk, the recurrence across chunks). Both take and return the state, so a run can start from a
carried state and hand its final state on (decoding one token at a time is the recurrence with N = 1).

The rest is done here once: causal only (the queries are the last Nq of the Nk positions, Nq <= Nk),
grouped K/V heads repeated to the query heads (the state is per query head, as the gates are),
and key lengths: past a sequence's length a token updates nothing (k = v = 0, every gate at its
neutral value), so the final state is the state at the length and later queries read it.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from pydantic import Field

from ..contract import Options, Unsupported, Variant, VariantInfo, accumulate_dtype, check_gates, check_qkv
from ..masks import key_mask

State = torch.Tensor  # (B, H, D_k, D_v)
Gates = dict[str, torch.Tensor]


class RecurrentOptions(Options):
    chunk_size: int = Field(64, gt=0, description="tokens per chunk of the chunked form")


# The value that leaves the state alone, per gate law: a log-decay of 0 forgets nothing, a beta of 0
# writes nothing, a low-rank vector of 0 changes nothing.
NEUTRAL = {"log-decay": 0.0, "unit": 0.0, "normal": 0.0}


class RecurrentVariant(Variant):
    """Base of the recurrences: subclasses set `info` (with its gates) and define `recurrent` and `chunked`.

    ``forward(q, k, v, key_lengths=None, initial_state=None, return_state=False, **gates)`` returns the
    output (B, H, Nq, D_v), and with `return_state` the pair (output, final state).
    """

    Options = RecurrentOptions

    def recurrent(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """The definition: a loop over time (inputs (B, H, N, D), gates per query head). Returns (o, S_N)."""
        raise NotImplementedError

    def chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """The same recurrence, chunk by chunk (`self.options.chunk_size` tokens). Returns (o, S_N)."""
        raise NotImplementedError

    def scale(self, head_dim: int) -> float:
        """The query scale of o_t = scale * q_t^T S_t: D_k^-1/2, as fla's kernels default to."""
        return head_dim**-0.5

    def state_bytes(self, batch: int, dtype: torch.dtype) -> int:
        """Bytes of the recurrent state of one layer: what decoding carries instead of a KV cache."""
        spec = self.spec
        wide = torch.promote_types(accumulate_dtype(dtype), torch.float32)
        return batch * spec.num_heads * spec.head_dim * spec.head_dim * torch.finfo(wide).bits // 8

    def fixed_gates(self, batch: int, heads: int, n: int, device: torch.device, dtype: torch.dtype) -> Gates:
        """Per-token log decays (B, H, N) the variant makes itself rather than takes as gates (RetNet's fixed
        decay per head); like a declared log-decay gate, 0 past a key length. None by default."""
        return {}

    def _prepare(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_lengths: torch.Tensor | None,
        gates: Gates,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Gates]:
        """q at the last Nq of Nk positions (zeros before), K/V heads repeated, padding updates neutral."""
        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        if not self.spec.causal:
            raise Unsupported(f"{self.info.name} is a causal recurrence")
        check_gates(self.info.name, self.info.gates, gates, q, k)
        declared = {g.name: g for g in self.info.gates}
        if hkv != h:
            k, v = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
        # The queries are the last Nq positions: earlier positions get zero queries, and with Nq > Nk the
        # first Nq - Nk queries see no key (their outputs are made zero in _run).
        q = torch.cat([q.new_zeros(b, h, nk - nq, d), q], dim=2) if nq < nk else q[:, :, nq - nk :]
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        # A log decay is summed over the sequence: float32 at least (a bfloat16 one drifts in its third digit).
        wide = torch.promote_types(dtype, torch.float32)
        gates = {name: g.to(wide if declared[name].law == "log-decay" else dtype) for name, g in gates.items()}
        laws = {name: gate.law for name, gate in declared.items()}
        fixed = self.fixed_gates(b, h, nk, q.device, wide)
        gates |= fixed
        laws |= dict.fromkeys(fixed, "log-decay")
        if key_lengths is not None:
            real = key_mask(key_lengths, nk)[:, None, :]  # (B, 1, N)
            k, v = k * real[..., None], v * real[..., None]
            gates = {name: _neutral_past(g, real, laws[name]) for name, g in gates.items()}
        return q, k, v, gates

    def _run(self, form, q, k, v, key_lengths, initial_state, return_state, gates, dtype):
        nq = q.shape[-2]
        q_, k_, v_, g_ = self._prepare(q, k, v, key_lengths, gates, dtype)
        b, h, _, dk = q_.shape
        if initial_state is not None and tuple(initial_state.shape) != (b, h, dk, v_.shape[-1]):
            raise ValueError(f"initial_state must be {(b, h, dk, v_.shape[-1])}; got {tuple(initial_state.shape)}")
        # The state sums every past token: float32 at least, whatever the inputs (fla's kernels keep it so too).
        wide = torch.promote_types(dtype, torch.float32)
        state = (
            initial_state.to(wide)
            if initial_state is not None
            else torch.zeros(b, h, dk, v_.shape[-1], dtype=wide, device=q.device)
        )
        out, final = form(q_, k_, v_, g_, state)
        out = last_queries(out, nq)
        return (out, final) if return_state else out

    def working_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype the chunked form computes in for inputs of `dtype`: float32 for half inputs (the
        state sums every past token). A kernel that takes half inputs itself returns `dtype`."""
        return accumulate_dtype(dtype)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_lengths: torch.Tensor | None = None,
        initial_state: State | None = None,
        return_state: bool = False,
        **gates: torch.Tensor,
    ):
        work = self.working_dtype(q.dtype)
        result = self._run(self.chunked, q, k, v, key_lengths, initial_state, return_state, gates, work)
        if return_state:
            return result[0].to(q.dtype), result[1]
        return result.to(q.dtype)

    def reference(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_lengths: torch.Tensor | None = None,
        initial_state: State | None = None,
        return_state: bool = False,
        **gates: torch.Tensor,
    ):
        """The recurrent definition, in float64."""
        return self._run(self.recurrent, q, k, v, key_lengths, initial_state, return_state, gates, torch.float64)

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor, key_lengths: torch.Tensor | None = None) -> None:
        """No weight matrix: the state mixes every past token into one (D_k, D_v) summary."""
        return None


class LoopForm:
    """Mixin, before a recurrence: its definition's loop over time as the fast form, in the working dtype. The
    series a chunked form is timed against (what token-by-token decoding of a whole sequence costs)."""

    def chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        return self.recurrent(q, k, v, gates, state)


def loop_info(info: VariantInfo) -> VariantInfo:
    """The declaration of `info`'s variant run as its loop over time (LoopForm)."""
    return replace(
        info, name=f"{info.name}-loop", summary=f"{info.name}'s recurrent definition, one token at a time (no chunks)"
    )


def last_queries(out: torch.Tensor, nq: int) -> torch.Tensor:
    """The outputs (B, H, N, D) of the last `nq` positions; with nq > N, zeros first for the queries
    that come before every key (they see none)."""
    n = out.shape[2]
    if nq > n:
        return torch.cat([out.new_zeros(*out.shape[:2], nq - n, out.shape[-1]), out], dim=2)
    return out[:, :, n - nq :]


def _neutral_past(gate: torch.Tensor, real: torch.Tensor, law: str) -> torch.Tensor:
    """`gate` with every position past a sequence's length set to the value that leaves the state alone."""
    mask = real if gate.dim() == 3 else real[..., None]
    return torch.where(mask, gate, torch.full_like(gate, NEUTRAL[law]))
