"""deltanet: linear attention whose state is written by the delta rule, and deltanet-fla, fla's kernel for it.

Schlag, Irie & Schmidhuber 2021 (Linear Transformers Are Secretly Fast Weight Programmers); Yang, Wang,
Zhang, Shen & Kim 2024 (Parallelizing Linear Transformers with the Delta Rule over Sequence Length).
Each token replaces, at rate beta_t, the value the state stores under its key:
``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T``, read as ``o_t = D^-1/2 S_t^T q_t``, with q and k
L2-normalised over the head dim (fla's ``use_qk_l2norm_in_kernel=True``).

The chunked form is Yang et al.'s WY / UT transform: within a chunk the new values
``U - W S`` (U = T V, W = T K, T = (I + tril(diag(beta) K K^T, -1))^-1 diag(beta)) need one triangular
solve, the outputs a causal intra-chunk product, and only the state crosses chunks. Gated DeltaNet
(gated_deltanet.py) is the same computation with a decay, so the chunk routine here takes one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..contract import GateInput, VariantInfo
from ..gates import heads_first
from .fla import FlaKernel, time_first
from .recurrence import Gates, LoopForm, RecurrentOptions, RecurrentVariant, State, loop_info

# fla's l2norm adds this under the square root, so a zero row (a padding key) stays zero, without NaN.
L2_EPS = 1e-6

BETA = GateInput(
    name="beta",
    law="unit",
    description="writing strength beta_t in (0, 1) per head and token; the layer makes sigmoid(b_proj x)",
)

# Release notes of fla that decide its floor: chunk_size became an argument of both chunk kernels in
# 0.5.2 (0.5.0 and 0.5.1 ignore it and use 64), and 0.5.2 fixed delta_rule's WY backward, which Triton
# miscompiled on Hopper (wrong dk and dbeta; fla #984, #988).
FLA_MIN_VERSION = (0, 5, 2)

SOLVE_T = (
    "the chunked form solves T with torch.linalg.solve_triangular where fla inverts by blocks and forward "
    "substitution: the same T"
)

# float32 chunked against the float64 loop: at most 6e-7 measured, outputs and gradients (N up to 1100, D up
# to 128, chunks 16 and 64, correlated keys); half inputs are computed in float32.
PURE_TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-6, torch.float16: 5e-3, torch.bfloat16: 3e-2}
# Not measured on a GPU: Triton's dots take float32 as tf32, and fla keeps w, u and the chunk states in the
# input dtype; fla's own tests allow 6e-3 (outputs) to 8e-3 (gradients) in bfloat16.
FLA_TOLERANCE = {torch.float32: 5e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2}


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(|x|^2 + 1e-6) over the last dim, as fla's l2norm."""
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + L2_EPS)


def chunked_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    state: State,
    chunk_size: int,
    scale: float,
    log_decay: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """The (gated) delta rule in chunks, WY / UT form: q, k (B, H, N, Dk) as given (normalise them first),
    v (B, H, N, Dv), beta and log_decay (B, H, N), state (B, H, Dk, Dv). Returns (o, final state)."""
    n, dk, dv = k.shape[2], k.shape[3], v.shape[3]
    c = min(chunk_size, n)
    pad = -n % c

    def chunks(x: torch.Tensor) -> torch.Tensor:
        # (B, H, N, ...) -> (B, H, M, C, ...); the zero tail has beta = 0 and no decay: it changes nothing.
        return (F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad)) if pad else x).unflatten(2, (-1, c))

    q, k, v, beta = chunks(q * scale), chunks(k), chunks(v), chunks(beta)[..., None]  # (B, H, M, C, D|1)
    causal = torch.ones(c, c, dtype=torch.bool, device=k.device).tril()
    kk = k @ k.transpose(-1, -2)  # (B, H, M, C, C)
    qk = q @ k.transpose(-1, -2)
    # With a decay, G_i is the log-decay from the chunk's start through token i: the state a token sees
    # is exp(G_i) S_0 plus the chunk's writes j < i decayed by exp(G_i - G_j).
    q_from_start, k_from_start, k_to_end, chunk_decay = q, k, k, None
    if log_decay is not None:
        cum = chunks(log_decay).cumsum(-1)  # (B, H, M, C), falling: every g <= 0
        # -inf above the diagonal: the exponent is taken only where i >= j, where it is <= 0.
        kk_decay = (cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, -math.inf).exp()
        kk, qk = kk * kk_decay, qk * kk_decay
        q_from_start = q * cum.exp()[..., None]
        k_from_start = k * cum.exp()[..., None]
        k_to_end = k * (cum[..., -1:] - cum).exp()[..., None]
        chunk_decay = cum[..., -1, None, None].exp()  # (B, H, M, 1, 1)

    # T = (I + tril(diag(beta) K K^T, -1))^-1 diag(beta), applied by one unit lower-triangular solve
    # (unitriangular: the I is implied). W carries the decay from the chunk's start, as S_0 does.
    lower = (beta * kk).tril(-1)
    rhs = beta * torch.cat([k_from_start, v], dim=-1)
    wu = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)  # (B, H, M, C, Dk + Dv)
    attn = qk.masked_fill(~causal, 0)  # (B, H, M, C, C): causal within the chunk, the diagonal included

    # With S the state entering a chunk, its new values are U - W S, its outputs Q S + A (U - W S) and the
    # state it hands on d S + K_end^T (U - W S). Everything but S is known for all chunks at once, so the
    # loop over chunks is one product each, S <- (d I - K_end^T W) S + K_end^T U, and the outputs one
    # product for all chunks after it. W and U go through each product together, as the solve made them.
    kw, written = (k_to_end.transpose(-1, -2) @ wu).split([dk, dv], dim=-1)  # (B, H, M, Dk, Dk | Dv)
    carry = -kw
    carry.diagonal(dim1=-2, dim2=-1).add_(1.0 if chunk_decay is None else chunk_decay[..., 0])
    aw, au = (attn @ wu).split([dk, dv], dim=-1)  # (B, H, M, C, Dk | Dv)
    entering = []
    # Chunks first, batch and heads as one: each step reads two contiguous blocks.
    carry, written = (x.movedim(2, 0).flatten(1, 2).contiguous() for x in (carry, written))
    for carry_i, written_i in zip(carry, written, strict=True):
        entering.append(state)
        state = torch.baddbmm(written_i, carry_i, state.flatten(0, 1)).view_as(state)
    reads = q_from_start - aw  # (B, H, M, C, Dk): what the entering state is read by
    out = torch.baddbmm(au.flatten(0, 2), reads.flatten(0, 2), torch.stack(entering, dim=2).flatten(0, 2))
    return out.view_as(au).flatten(2, 3)[:, :, :n], state


class DeltaNetGates(nn.Module):
    """beta as fla's DeltaNet layer makes it: sigmoid(b_proj x), one per head and token."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.b_proj = nn.Linear(dim, heads, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"beta": heads_first(self.b_proj(x).sigmoid(), self.heads)}


class DeltaNetAttention(RecurrentVariant):
    """DeltaNet's attention core: the delta rule over L2-normalised keys, chunked in WY / UT form."""

    info = VariantInfo(
        name="deltanet",
        family="linear",
        exact=False,
        non_causal=False,
        recurrent=True,
        gqa=True,
        lengths=True,
        scaled=True,
        gates=(BETA,),
        definition=(
            "recurrence S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T, o_t = D^-1/2 S_t^T q_t, q and k "
            "L2-normalised (the loop over tokens, in float64)"
        ),
        summary="DeltaNet: linear attention with the delta rule (chunked WY / UT form in torch)",
        paper=(
            "Schlag et al. 2021, Linear Transformers Are Secretly Fast Weight Programmers; Yang et al. 2024, "
            "Parallelizing Linear Transformers with the Delta Rule over Sequence Length"
        ),
        source="fla-org/flash-linear-attention, fla/layers/delta_net.py and fla/ops/delta_rule/naive.py",
        departures=(
            "the attention core only: the layer's projections, short convolutions with SiLU, output norm (gated "
            "with use_gate) and output projection belong to the model; beta is a gate input (the layer's "
            "sigmoid(b_proj x))",
            "q, k L2-normalised as with the layer's default qk_norm='l2' (fla's eps 1e-6); qk_norm='sum' and "
            "allow_neg_eigval (beta in (0, 2)) are left out",
            "grouped K/V heads are repeated to the query heads and the state is per query head (the layer has "
            "equal heads)",
            SOLVE_T,
        ),
        tolerance=PURE_TOLERANCE,
    )

    def gate_layer(self, dim: int) -> nn.Module:
        return DeltaNetGates(dim, self.spec.num_heads)

    def recurrent(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """The definition, token by token: (o (B, H, N, Dv), final state)."""
        q, k = l2_normalise(q) * self.scale(q.shape[-1]), l2_normalise(k)
        beta = gates["beta"]
        outs = []
        for t in range(k.shape[2]):
            k_t, v_t = k[:, :, t], v[:, :, t]  # (B, H, Dk), (B, H, Dv)
            # Replace, at rate beta_t, the value read under k_t by v_t.
            error = v_t - torch.einsum("bhkv,bhk->bhv", state, k_t)
            state = state + beta[:, :, t, None, None] * k_t[..., :, None] * error[..., None, :]
            outs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, :, t]))
        return torch.stack(outs, dim=2), state

    def chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """The WY / UT form, `chunk_size` tokens at a time: (o, final state)."""
        scale = self.scale(q.shape[-1])
        return chunked_delta_rule(
            l2_normalise(q), l2_normalise(k), v, gates["beta"], state, self.options.chunk_size, scale
        )


class FlaChunkOptions(RecurrentOptions):
    chunk_size: Literal[16, 32, 64] = Field(64, description="tokens per chunk of fla's kernel (16, 32 or 64)")


class FlaDeltaRule(FlaKernel):
    """Mixin, before a delta-rule variant: its chunked form is one of fla's chunk kernels, which take the gates
    named by `fla_gates` after v, q and k L2-normalised inside (use_qk_l2norm_in_kernel)."""

    Options = FlaChunkOptions
    fla_minimum = FLA_MIN_VERSION
    fla_older = "chunk_size ignored before 0.5.2, delta_rule's backward miscompiled on Hopper"
    fla_gates: tuple[str, ...]  # the gates the kernel takes after v, in its order

    @staticmethod
    def fla_kernel() -> Callable:
        """The fla function, imported where it is used (fla is optional)."""
        raise NotImplementedError

    def chunked(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State
    ) -> tuple[torch.Tensor, State]:
        out, final = self.fla_kernel()(
            *time_first(q, k, v, *(gates[name] for name in self.fla_gates)),
            scale=self.scale(q.shape[-1]),
            initial_state=state,
            output_final_state=True,
            use_qk_l2norm_in_kernel=True,
            chunk_size=self.options.chunk_size,
        )
        return out.transpose(1, 2), final


class FlaDeltaNetAttention(FlaDeltaRule, DeltaNetAttention):
    """deltanet through fla.ops.delta_rule.chunk_delta_rule (CUDA, half precision)."""

    info = replace(
        DeltaNetAttention.info,
        name="deltanet-fla",
        devices=("cuda",),
        dtypes=(torch.bfloat16, torch.float16),
        packages=("fla",),
        summary="deltanet on the flash-linear-attention Triton kernel (fla >= 0.5.2)",
        source="fla-org/flash-linear-attention, fla/ops/delta_rule/chunk.py (chunk_delta_rule)",
        departures=(
            *DeltaNetAttention.info.departures[:3],
            "chunk_size is 16, 32 or 64 (fla's kernels); no float32 (fla refuses it)",
        ),
        tolerance=FLA_TOLERANCE,
    )
    fla_gates = ("beta",)  # chunk_delta_rule(q, k, v, beta, ...)

    @staticmethod
    def fla_kernel() -> Callable:
        """fla.ops.delta_rule.chunk_delta_rule."""
        from fla.ops.delta_rule import chunk_delta_rule

        return chunk_delta_rule

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """float32 refused with fla's reason, then the checks of every fla variant."""
        if dtype == torch.float32 and device in cls.info.devices:
            return "no float32: fla's chunk_delta_rule asserts its inputs are not float32"
        return super().unavailable_reason(device, dtype)


class DeltaNetLoop(LoopForm, DeltaNetAttention):
    """DeltaNetAttention's definition as its fast form: the series the chunked form is timed against."""

    info = loop_info(DeltaNetAttention.info)
