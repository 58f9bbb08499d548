"""gated-deltanet: the delta rule after a per-token decay of the state, and gated-deltanet-fla, fla's kernel.

Yang, Kautz & Hatamizadeh 2025 (Gated Delta Networks: Improving Mamba2 with Delta Rule). Each token first
decays the whole state by alpha_t = exp(g_t) (Mamba2's gate), then writes by the delta rule:
``S'_t = exp(g_t) S_{t-1}``, ``S_t = S'_t + beta_t k_t (v_t - S'_t^T k_t)^T``, ``o_t = D^-1/2 S_t^T q_t``,
q and k L2-normalised. The chunked form is deltanet's WY / UT transform with the cumulative decay G of
the chunk: exp(G_i - G_j), i >= j, weighs the key products and the intra-chunk scores, as in fla's
chunk_gated_delta_rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import GateInput, VariantInfo
from ..gates import heads_first
from .deltanet import (
    BETA,
    FLA_TOLERANCE,
    PURE_TOLERANCE,
    SOLVE_T,
    DeltaNetAttention,
    FlaDeltaRule,
    chunked_delta_rule,
    l2_normalise,
)
from .recurrence import Gates, LoopForm, State, loop_info

DECAY = GateInput(
    name="g",
    law="log-decay",
    per_channel=False,
    temperature=8.0,
    description=(
        "log decay alpha_t per head and token; the layer makes -exp(A_log) softplus(a_proj x + dt_bias); drawn "
        "as logsigmoid(x)/8, whose median ~ -0.087 matches the layer's initial -A dt"
    ),
)


class GatedDeltaNetGates(nn.Module):
    """g and beta as fla's GatedDeltaNet layer makes them: g = -exp(A_log) softplus(a_proj x + dt_bias) with
    A ~ U(0, 16) and dt ~ logU(1e-3, 0.1) at initialisation (Mamba-2's), beta = sigmoid(b_proj x)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.a_proj = nn.Linear(dim, heads, bias=False)
        self.b_proj = nn.Linear(dim, heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(0, 16).log())
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        g = -self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias)
        return {"g": heads_first(g, self.heads), "beta": heads_first(self.b_proj(x).sigmoid(), self.heads)}


class GatedDeltaNetAttention(DeltaNetAttention):
    """Gated DeltaNet's attention core: decay, then the delta rule, chunked in WY / UT form."""

    info = VariantInfo(
        name="gated-deltanet",
        family="linear",
        exact=False,
        non_causal=False,
        recurrent=True,
        gqa=True,
        lengths=True,
        scaled=True,
        gates=(DECAY, BETA),
        definition=(
            "recurrence S'_t = exp(g_t) S_{t-1}, S_t = S'_t + beta_t k_t (v_t - S'_t^T k_t)^T, o_t = D^-1/2 S_t^T q_t, "
            "q and k L2-normalised (the loop over tokens, in float64)"
        ),
        summary="Gated DeltaNet: a decayed state written by the delta rule (chunked WY / UT form in torch)",
        paper="Yang, Kautz & Hatamizadeh 2025, Gated Delta Networks: Improving Mamba2 with Delta Rule",
        source="fla-org/flash-linear-attention, fla/layers/gated_deltanet.py and fla/ops/gated_delta_rule/naive.py",
        departures=(
            "the attention core only: the layer's projections, short convolutions, output gate (g_proj with a "
            "gated RMSNorm) and output projection belong to the model; g and beta are gate inputs (the layer's "
            "-exp(A_log) softplus(a_proj x + dt_bias) and sigmoid(b_proj x))",
            "q, k L2-normalised as the layer does (fla's eps 1e-6); allow_neg_eigval (beta in (0, 2)) is left out",
            "grouped K/V heads are repeated to the query heads and the state is per query head (fla's GVA, more "
            "value heads than query heads, is not offered)",
            SOLVE_T,
        ),
        tolerance=PURE_TOLERANCE,
    )

    def gate_layer(self, dim: int) -> nn.Module:
        return GatedDeltaNetGates(dim, self.spec.num_heads)

    def recurrent(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """The definition, token by token: (o (B, H, N, Dv), final state)."""
        q, k = l2_normalise(q) * self.scale(q.shape[-1]), l2_normalise(k)
        beta, g = gates["beta"], gates["g"]
        outs = []
        for t in range(k.shape[2]):
            k_t, v_t = k[:, :, t], v[:, :, t]  # (B, H, Dk), (B, H, Dv)
            state = state * g[:, :, t, None, None].exp()  # forget first, then write into the decayed state
            error = v_t - torch.einsum("bhkv,bhk->bhv", state, k_t)
            state = state + beta[:, :, t, None, None] * k_t[..., :, None] * error[..., None, :]
            outs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, :, t]))
        return torch.stack(outs, dim=2), state

    def chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """The WY / UT form with the chunk's cumulative decay, `chunk_size` tokens at a time: (o, final state)."""
        scale = self.scale(q.shape[-1])
        return chunked_delta_rule(
            l2_normalise(q), l2_normalise(k), v, gates["beta"], state, self.options.chunk_size, scale, gates["g"]
        )


class FlaGatedDeltaNetAttention(FlaDeltaRule, GatedDeltaNetAttention):
    """gated-deltanet through fla.ops.gated_delta_rule.chunk_gated_delta_rule (CUDA)."""

    info = replace(
        GatedDeltaNetAttention.info,
        name="gated-deltanet-fla",
        devices=("cuda",),
        dtypes=(torch.bfloat16, torch.float16, torch.float32),
        packages=("fla",),
        summary="gated-deltanet on the flash-linear-attention Triton kernel (fla >= 0.5.2)",
        source="fla-org/flash-linear-attention, fla/ops/gated_delta_rule/chunk.py (chunk_gated_delta_rule)",
        departures=(
            *GatedDeltaNetAttention.info.departures[:3],
            "chunk_size is 16, 32 or 64 (fla's kernels); g is passed in float32, as the layer computes it",
        ),
        tolerance=FLA_TOLERANCE,
    )
    fla_gates = ("g", "beta")  # chunk_gated_delta_rule(q, k, v, g, beta, ...)

    @staticmethod
    def fla_kernel() -> Callable:
        """fla.ops.gated_delta_rule.chunk_gated_delta_rule."""
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        return chunk_gated_delta_rule


class GatedDeltaNetLoop(LoopForm, GatedDeltaNetAttention):
    """GatedDeltaNetAttention's definition as its fast form: the series the chunked form is timed against."""

    info = loop_info(GatedDeltaNetAttention.info)
