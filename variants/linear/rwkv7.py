"""rwkv7 and rwkv7-fla: RWKV-7's diagonal-plus-low-rank state update.

Peng et al. 2025, "RWKV-7 'Goose' with Expressive Dynamic State Evolution". In the paper's layout, a
(D_v, D_k) state with row vectors, ``S_t = S_{t-1} (diag(w_t) - kh_t^T (a_t * kh_t)) + v_t^T k_t`` and
``o_t = S_t r_t``: a per-channel decay w_t, then the state's reading along the normalised key kh_t
replaced at the in-context learning rate a_t (a delta rule), then the new pair written. fla's kernels
(fla/ops/rwkv7/fused_recurrent.py, fla/ops/generalized_delta_rule/dplr/naive.py) keep it as
(D_k, D_v), as we do, with the low-rank pair ``a = -kh`` and ``b = kh * a_t`` (fla/layers/rwkv7.py):

    S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,    o_t = S_t^T q_t   (q is RWKV's r)

The query scale is 1, as the layer calls the kernels with ``scale=1.``.

The chunked form follows fla's chunk_dplr (fla/ops/generalized_delta_rule/dplr/): in a chunk starting
from S_0, with g_t the cumulative log-decay, the pseudo-values ``u_t = a_t^T S_{t-1}`` solve the unit
lower-triangular system ``(I - A_ab) U = (a * exp(g_{t-1})) S_0 + A_ak V`` (the WY form of the
product of transitions); outputs and the next state then follow by matrix products. The within-chunk
decays exp(g_t - g_s) are taken in blocks of a few tokens, as fla's kernels do: pairwise inside a
block, factored at the block's edge between blocks, so no factor exceeds 1 whatever the decays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import GateInput, VariantInfo
from ..gates import heads_first
from .fla import FlaKernel
from .recurrence import Gates, LoopForm, RecurrentVariant, State, loop_info

# Tokens per block of the within-chunk decays: pairwise inside one, factored between them (fla's BC is 16;
# 8 does less elementwise work in torch).
BLOCK = 8

# drawn log w = logsigmoid(x) / 4, x ~ N(0, 1): 99% of draws fall in the layer's range
# log w = -e^-0.5 sigmoid(.) in (-0.607, 0); the law is unbounded below, so 1% fall under it.
DECAY_TEMPERATURE = 4.0

GATES = (
    GateInput(
        name="w",
        law="log-decay",
        per_channel=True,
        temperature=DECAY_TEMPERATURE,
        description=(
            "log of the per-channel decay w_t; RWKV-7's layer makes it -e^-0.5 sigmoid(.), in (-0.607, 0). "
            "Drawn as logsigmoid(x)/4, x ~ N(0, 1): median -0.17, 99% of draws in that range, 1% below it "
            "(the log-decay law has no lower bound)"
        ),
    ),
    GateInput(
        name="a",
        law="unit",
        per_channel=True,
        description="in-context learning rate a_t in (0, 1), per key channel: how much of the state's "
        "reading along the normalised key is replaced",
    ),
)

DEPARTURES = (
    "r, k, v come as given and w, a as gates, drawn from their laws or made by a task model with the layer's "
    "LoRAs (gate_layer: rank 32, without the token shift that lerps each projection's input with the previous "
    "token's); the value residual and the output gate of the layer are left out",
    "kh = L2-normalised k per head: the layer's learnt k_k scaling inside the norm is taken as 1",
    "the key written into the state is k as given: the layer's k * (1 + (a - 1) k_a) is taken with k_a = 0",
    "the bonus term (r * k * r_k).sum() v, the per-head group norm, the output gate and the output projection "
    "act on the output after the recurrence (fla's gate_output_correction, g_norm, o_proj): left out, so the "
    "variant is the state update and its readout alone",
    "grouped K/V heads (RWKV-7 has none) are repeated to the query heads; kh is normalised per query head",
)


def low_rank_pair(k: torch.Tensor, rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fla's (a, b) = (-kh, kh * rate), kh = k L2-normalised over the head dim: the update's b a^T."""
    kh = F.normalize(k, dim=-1)
    return -kh, kh * rate


def decayed_products(
    x: torch.Tensor, gx: torch.Tensor, y: torch.Tensor, gy: torch.Tensor, strict: bool
) -> torch.Tensor:
    """P[t, s] = sum_d x[t, d] y[s, d] exp(gx[t, d] - gy[s, d]) for s < t (s <= t unless `strict`), 0 above.

    x, gx (..., C, D) and y, gy (..., C, D) (broadcast), with gx[t] <= gy[s] wherever s < t (cumulative
    log-decays only fall). Returns (..., C, C).
    """
    c = x.shape[-2]
    rows = []
    for start in range(0, c, BLOCK):
        stop = min(start + BLOCK, c)
        xi, gxi = x[..., start:stop, :], gx[..., start:stop, :]
        # Inside the block, pairwise (..., b, b, D), masked before exp so no exponent is positive.
        diff = gxi[..., :, None, :] - gy[..., None, start:stop, :]
        size = stop - start
        keep = torch.ones(size, size, dtype=torch.bool, device=x.device).tril(-1 if strict else 0)
        decay = torch.where(keep[:, :, None], diff, float("-inf")).exp()
        inside = torch.einsum("...td,...sd,...tsd->...ts", xi, y[..., start:stop, :], decay)
        parts = [inside, inside.new_zeros(*inside.shape[:-1], c - stop)]
        if start:
            # Before the block, factored at its edge: exp(gx_t - edge) <= 1 and exp(edge - gy_s) <= 1.
            edge = gy[..., start - 1 : start, :]
            before = (xi * (gxi - edge).exp()) @ (y[..., :start, :] * (edge - gy[..., :start, :]).exp()).mT
            parts.insert(0, before)
        rows.append(torch.cat(parts, dim=-1))
    return torch.cat(rows, dim=-2)


# RWKV-7's bound on the log decay: log w = -e^-0.5 sigmoid(.), in (-0.607, 0).
LOG_DECAY_BOUND = -0.6065306597126334
LORA_RANK = 32


def _lora(dim: int, out: int, activation: nn.Module | None) -> nn.Sequential:
    """RWKV-7's low-rank projection: down to LORA_RANK without bias, an optional activation, up with a bias."""
    return nn.Sequential(nn.Linear(dim, LORA_RANK, bias=False), activation or nn.Identity(), nn.Linear(LORA_RANK, out))


class Rwkv7Gates(nn.Module):
    """w and a as fla's RWKV7Attention layer makes them, from x without its token shift: log w =
    -e^-0.5 sigmoid(w_lora x) (a tanh LoRA), a = sigmoid(a_lora x) (a linear LoRA), per key channel."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.w_lora = _lora(dim, heads * head_dim, nn.Tanh())
        self.a_lora = _lora(dim, heads * head_dim, None)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        w = LOG_DECAY_BOUND * self.w_lora(x).sigmoid()
        return {"w": heads_first(w, self.heads), "a": heads_first(self.a_lora(x).sigmoid(), self.heads)}


class Rwkv7(RecurrentVariant):
    """RWKV-7's state update: per-channel decay plus a rank-one delta-rule correction, chunked in pure torch."""

    info = VariantInfo(
        name="rwkv7",
        family="linear",
        exact=False,
        non_causal=False,
        gqa=True,
        lengths=True,
        scaled=False,
        gates=GATES,
        recurrent=True,
        definition=(
            "recurrence S_t = diag(w_t) S_{t-1} - (a_t * kh_t)(kh_t^T S_{t-1}) + k_t v_t^T, o_t = S_t^T q_t "
            "(scale 1), kh_t = k_t / |k_t|, S in (D_k, D_v), causal"
        ),
        summary="RWKV-7 (Goose) state update: diagonal decay plus low-rank delta rule, chunked WY form",
        paper="Peng et al. 2025, RWKV-7 'Goose' with Expressive Dynamic State Evolution",
        source="fla-org/flash-linear-attention, fla/ops/rwkv7 and fla/ops/generalized_delta_rule/dplr "
        "(naive.py, chunk.py); fla/layers/rwkv7.py for w, a, kk",
        departures=DEPARTURES,
        # Measured against the float64 loop (D 8 to 128, N to 4096, drawn gates): float32 at most 3e-7 with chunks
        # of 16 and 64, 9e-7 with 256; float16 6e-4 and bfloat16 4e-3, the rounding of the inputs and gates.
        tolerance={torch.float64: 1e-10, torch.float32: 2e-6, torch.float16: 1.5e-3, torch.bfloat16: 1e-2},
    )

    def gate_layer(self, dim: int) -> nn.Module:
        return Rwkv7Gates(dim, self.spec.num_heads, self.spec.head_dim)

    def scale(self, head_dim: int) -> float:
        """1: RWKV-7 reads the state with r unscaled (the layer passes scale=1. to fla's kernels)."""
        return 1.0

    def recurrent(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """The definition, one token at a time."""
        a, b = low_rank_pair(k, gates["a"])  # (B, H, N, D_k) each
        decay = gates["w"].exp()
        scale = self.scale(q.shape[-1])
        out = []
        for t in range(q.shape[2]):
            read = torch.einsum("bhi,bhiv->bhv", a[:, :, t], state)  # a_t^T S_{t-1}: (B, H, D_v)
            state = (
                decay[:, :, t, :, None] * state
                + b[:, :, t, :, None] * read[:, :, None, :]
                + k[:, :, t, :, None] * v[:, :, t, None, :]
            )
            out.append(scale * torch.einsum("bhi,bhiv->bhv", q[:, :, t], state))
        return torch.stack(out, dim=2), state

    def chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """Chunks of `chunk_size` tokens: a triangular solve for the low-rank reads within each, then the state."""
        n, c = q.shape[2], self.options.chunk_size
        a, b = low_rank_pair(k, gates["a"])
        # Tail padding: a zero log-decay, key and rate leave the state alone, so the final state is S_N.
        pad = (0, 0, 0, -n % c)
        q, k, v, a, b, lw = (
            F.pad(t, pad).unflatten(2, (-1, c))  # (B, H, n_chunks, C, D)
            for t in (q * self.scale(q.shape[-1]), k, v, a, b, gates["w"])
        )
        g = lw.cumsum(-2)  # log of the decay from the chunk's start through token t
        g_before = g - lw  # ... through token t - 1
        g_last = g[..., -1:, :]

        # Within a chunk, the reads u_t = a_t^T S_{t-1} obey u = (a * e^g_before) S_0 + A_ak v + A_ab u.
        a_k, a_b = decayed_products(a, g_before, torch.stack([k, b]), g, strict=True)
        q_k, q_b = decayed_products(q, g, torch.stack([k, b]), g, strict=False)
        a_start = a * g_before.exp()
        rhs = torch.cat([a_start, a_k @ v], dim=-1)
        # u = u_state S_0 + u_local: the WY form, one unit lower-triangular solve per chunk.
        solved = torch.linalg.solve_triangular(-a_b, rhs, upper=False, unitriangular=True)
        u_state, u_local = solved.split([a.shape[-1], v.shape[-1]], dim=-1)

        # o = q_state S_0 + o_local and S_C = carry S_0 + s_local, all but S_0 known before the loop.
        q_state = q * g.exp() + q_b @ u_state
        o_local = q_k @ v + q_b @ u_local
        k_end, b_end = (t * (g_last - g).exp() for t in (k, b))
        carry = torch.diag_embed(g_last.squeeze(-2).exp()) + b_end.mT @ u_state  # (B, H, n_chunks, D_k, D_k)
        s_local = k_end.mT @ v + b_end.mT @ u_local

        out = []
        for i in range(q.shape[2]):
            out.append(q_state[:, :, i] @ state + o_local[:, :, i])
            state = carry[:, :, i] @ state + s_local[:, :, i]
        return torch.cat(out, dim=2)[:, :, :n], state


def fla_call(
    chunk_rwkv7: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State, scale: float
) -> tuple[torch.Tensor, State]:
    """Our (B, H, N, D) inputs through ``chunk_rwkv7(r, w, k, v, a, b, scale, initial_state, output_final_state)``:
    (B, T, H, K) views, w as the log decay (float32), a = -kh and b = kh * rate as the layer makes them."""
    a, b = low_rank_pair(k.float(), gates["a"].float())
    r, w, kt, vt, at, bt = (t.transpose(1, 2) for t in (q, gates["w"].float(), k, v, a.to(q.dtype), b.to(q.dtype)))
    out, final = chunk_rwkv7(
        r=r,
        w=w,
        k=kt,
        v=vt,
        a=at,
        b=bt,
        scale=scale,
        initial_state=state.float(),
        output_final_state=True,
    )
    return out.transpose(1, 2), final


class FlaRwkv7(FlaKernel, Rwkv7):
    """rwkv7 on fla's Triton kernel (chunk_rwkv7, a diagonal-plus-low-rank chunk kernel).

    The kernel takes the inputs in their own dtype and accumulates in float32 itself; it picks its own
    chunk size (16 where the gates are not declared bounded), so `chunk_size` shapes only the pure-torch form.
    """

    info = replace(
        Rwkv7.info,
        name="rwkv7-fla",
        devices=("cuda",),
        dtypes=(torch.float32, torch.float16, torch.bfloat16),
        packages=("fla",),
        summary="rwkv7 on the flash-linear-attention Triton kernel chunk_rwkv7",
        source="fla-org/flash-linear-attention, fla.ops.rwkv7.chunk_rwkv7",
        # Not yet measured on a GPU: fla's own tests allow 2e-3 to 5e-3 against float32 references (its float32
        # dots may run in tf32); these leave room for that and for half inputs.
        tolerance={torch.float32: 5e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2},
    )

    fla_minimum = (0, 2)
    fla_older = "its kernels took head-first (B, H, T, K) inputs by default"

    def chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State) -> tuple:
        """One call of fla's chunk_rwkv7."""
        from fla.ops.rwkv7 import chunk_rwkv7

        return fla_call(chunk_rwkv7, q, k, v, gates, state, self.scale(q.shape[-1]))


class Rwkv7Loop(LoopForm, Rwkv7):
    """Rwkv7's definition as its fast form: the series the chunked form is timed against."""

    info = loop_info(Rwkv7.info)
