"""gla: gated linear attention, a state decayed per key channel by a data-dependent forget gate; gla-fla: fla's kernel.

Yang, Wang, Shen, Panda & Kim 2024, "Gated Linear Attention Transformers with Hardware-Efficient
Training". Each head keeps a state S_t (D_k, D_v); the gate g_t (D_k,) is the log of the forget gate
alpha_t, per key channel: ``S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T``, ``o_t = D_k^-1/2 S_t^T q_t``.

The chunked form works in log space with G, the cumulative sum of g from a chunk's start. Between
tokens i >= j of one chunk the decay is exp(G_i - G_j) per channel, never formed as
exp(G_i) / exp(G_j), which overflows once the gates have decayed far. As in fla's chunk_gla, a chunk
is cut into sub-chunks of 16 tokens (the whole chunk when shorter; a chunk that is no multiple of 16
is padded with neutral tokens): between two sub-chunks the decay splits at the position r just before
the later one, exp(G_i - G_r) exp(G_r - G_j), both factors <= 1, so the scores are one matrix
product; within a sub-chunk it is taken per channel, (16, 16, D_k) per sub-chunk.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import GateInput, VariantInfo
from ..gates import heads_first
from .fla import FlaKernel, time_first
from .recurrence import Gates, LoopForm, RecurrentVariant, State, loop_info
from .retnet import FLA_TOLERANCE, across_chunks, to_chunks

# Tokens per sub-chunk: the per-channel decay of the diagonal blocks costs (sub x D_k) per token.
SUB_CHUNK = 16


def chunk_scores(q: torch.Tensor, k: torch.Tensor, g: torch.Tensor, sub: int) -> torch.Tensor:
    """A_ij = sum_d q_id k_jd exp(G_id - G_jd) for j <= i of each chunk, 0 above: (..., W, W) from q, k and
    the cumulative log decay G, each (..., W, D_k), W a multiple of `sub`. Every exponent taken is <= 0."""
    *lead, width, dk = q.shape
    m = width // sub
    qs, ks, gs = (x.unflatten(-2, (m, sub)) for x in (q, k, g))  # (..., m, s, Dk)
    # G_r, r the last position before each sub-chunk (G = 0 before the first): (..., m, Dk).
    ref = torch.cat([g.new_zeros(*lead, 1, dk), gs[..., :-1, -1, :]], dim=-2)
    # Blocks below the diagonal: key j in an earlier sub-chunk than query i, so j <= r < i.
    q_dec = qs * (gs - ref[..., None, :]).exp()  # (..., m, s, Dk)
    position = torch.arange(width, device=q.device)
    earlier = position[None, :] < position[::sub, None]  # (m, W): key j precedes sub-chunk p
    to_ref = torch.where(earlier[..., None], ref[..., :, None, :] - g[..., None, :, :], float("-inf"))
    k_dec = k[..., None, :, :] * to_ref.exp()  # (..., m, W, Dk)
    below = q_dec @ k_dec.transpose(-1, -2)  # (..., m, s, W)
    # Diagonal blocks: exp(G_i - G_j) channel by channel, masked before exp above the diagonal.
    causal = torch.ones(sub, sub, dtype=torch.bool, device=q.device).tril()
    diff = gs[..., :, None, :] - gs[..., None, :, :]  # (..., m, s, s, Dk)
    diff = torch.where(causal[..., None], diff, float("-inf"))
    diag = torch.einsum("...id,...jd,...ijd->...ij", qs, ks, diff.exp())  # (..., m, s, s)
    # Sub-chunk p's diagonal block goes to its own columns p*s..p*s+s-1.
    place = torch.eye(m, dtype=q.dtype, device=q.device)[:, None, :, None]  # (m, 1, m, 1)
    on_diagonal = (diag[..., :, :, None, :] * place).flatten(-2)  # (..., m, s, W)
    return (below + on_diagonal).flatten(-3, -2)


# Largest exponent the chunk-level form may take: exp(80) ~ 5.5e34 is finite in float32 (to 3.4e38).
SAFE_EXPONENT = 80.0


def intra_chunk_scores(q: torch.Tensor, k: torch.Tensor, g: torch.Tensor, sub: int) -> torch.Tensor:
    """A_ij = sum_d q_id k_jd exp(G_id - G_jd) for j <= i, 0 above, each chunk (..., W, W). Where no chunk
    decays by more than exp(-SAFE_EXPONENT) along a channel, the chunk-level form of the GLA paper: the
    product of q exp(G) and k exp(-G), one matrix product. Otherwise exp(-G) could overflow, and the
    sub-chunk form (chunk_scores), whose exponents are all <= 0, is used."""
    width = q.shape[-2]
    if (-g[..., -1, :]).max() > SAFE_EXPONENT:  # G falls from 0 within a chunk: its last row is the deepest
        return chunk_scores(q, k, g, sub)
    causal = torch.ones(width, width, dtype=torch.bool, device=q.device).tril()
    return ((q * g.exp()) @ (k * (-g).exp()).transpose(-1, -2)).masked_fill(~causal, 0.0)


# fla's GLA layer: the gate is a rank-16 projection (gate_low_rank_dim), logsigmoid over 16 (gate_logit_normalizer).
GATE_RANK, GATE_NORMALISER = 16, 16.0


class GlaGates(nn.Module):
    """The gate of fla's GatedLinearAttention layer: g = logsigmoid(W_2 W_1 x) / 16, one per key channel."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.gk_proj = nn.Sequential(nn.Linear(dim, GATE_RANK, bias=False), nn.Linear(GATE_RANK, heads * head_dim))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"g": heads_first(F.logsigmoid(self.gk_proj(x)) / GATE_NORMALISER, self.heads)}


class GlaAttention(RecurrentVariant):
    """Gated linear attention: a loop over time as the definition, chunked in log space as the fast form."""

    info = VariantInfo(
        name="gla",
        family="linear",
        exact=False,
        non_causal=False,
        recurrent=True,
        lengths=True,
        definition="S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = D^-1/2 S_t^T q_t, g_t <= 0 per key channel",
        summary="gated linear attention: a per-channel data-dependent forget gate (chunked in log space)",
        paper="Yang et al. 2024, Gated Linear Attention Transformers with Hardware-Efficient Training",
        source="fla-org/flash-linear-attention, fla/layers/gla.py, fla/ops/gla/naive.py",
        departures=(
            "the gate is an input: a task model makes it with the layer's projection logsigmoid(W2 W1 x) / 16 "
            "(gate_layer), bench and check draw it from that law (x ~ N(0, 1)); fla's optional clamp_min is "
            "not applied",
            "no swish output gate, no group (RMS) norm, no short convolution, no feature map: they belong to the "
            "layer (fla's GatedLinearAttention), not to the recurrence it calls",
            "key heads as wide as value heads (one head dim): fla's layer makes them half as wide (expand_k = 0.5)",
        ),
        gates=(
            GateInput(
                name="g",
                law="log-decay",
                per_channel=True,
                temperature=16.0,
                description="log forget gate per key channel, logsigmoid(.) / 16 (fla's gate_logit_normalizer)",
            ),
        ),
    )

    def gate_layer(self, dim: int) -> GlaGates:
        return GlaGates(dim, self.spec.num_heads, self.spec.head_dim)

    def recurrent(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State
    ) -> tuple[torch.Tensor, State]:
        """S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale * S_t^T q_t, one token at a time."""
        alpha = gates["g"].exp()  # (B, H, N, Dk)
        scale = self.scale(q.shape[-1])
        out = []
        # unbind, not q[:, :, t]: each index's backward writes a full-length zero gradient, O(N^2) in all.
        for q_t, k_t, v_t, alpha_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), alpha.unbind(2), strict=True):
            state = alpha_t[..., :, None] * state + k_t[..., :, None] * v_t[..., None, :]  # (B, H, Dk, Dv)
            out.append(scale * (q_t[..., :, None] * state).sum(-2))  # (B, H, Dv); a tiny bmm is ~8x slower on CPU
        return torch.stack(out, 2), state

    def chunked(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State
    ) -> tuple[torch.Tensor, State]:
        """The recurrence chunk by chunk: scores within a chunk (chunk_scores), the state across chunks."""
        n, size = q.shape[2], self.options.chunk_size
        sub = min(SUB_CHUNK, size)
        pad = -size % sub  # each chunk padded with neutral tokens to whole sub-chunks
        q, k, v, g = (to_chunks(x, size) for x in (q, k, v, gates["g"]))  # (B, H, n, C, D)
        if pad:
            q, k, v, g = (torch.cat([x, x.new_zeros(*x.shape[:3], pad, x.shape[-1])], dim=3) for x in (q, k, v, g))
        g = g.cumsum(3)  # (B, H, n, W, Dk): log decay from the chunk start to i, per channel
        intra = intra_chunk_scores(q, k, g, sub) @ v  # (B, H, n, W, Dv)
        inter, final = across_chunks(q, k, v, g, state)
        out = self.scale(q.shape[-1]) * (intra + inter)
        return out[..., :size, :].flatten(2, 3)[:, :, :n], final


class FlaGlaAttention(FlaKernel, GlaAttention):
    """gla through fla.ops.gla.chunk_gla."""

    info = replace(
        GlaAttention.info,
        name="gla-fla",
        devices=("cuda",),
        dtypes=(torch.float32, torch.float16, torch.bfloat16),
        packages=("fla",),
        summary="gla on the flash-linear-attention Triton kernel (chunk_gla, fla >= 0.2)",
        source="fla-org/flash-linear-attention, fla/ops/gla/chunk.py",
        tolerance=FLA_TOLERANCE,
    )

    fla_minimum = (0, 2)
    fla_older = "its kernels took head-first (B, H, T, K) inputs by default"

    def chunked(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State
    ) -> tuple[torch.Tensor, State]:
        """One call of fla's chunk_gla (the log decay and the state in float32, as it asserts)."""
        from fla.ops.gla import chunk_gla

        q_, k_, v_, g = time_first(q, k, v, gates["g"].float())
        scale = self.scale(q.shape[-1])
        out, final = chunk_gla(q=q_, k=k_, v=v_, g=g, scale=scale, initial_state=state, output_final_state=True)
        return out.transpose(1, 2), final


class GlaLoop(LoopForm, GlaAttention):
    """GlaAttention's definition as its fast form: the series the chunked form is timed against."""

    info = loop_info(GlaAttention.info)
