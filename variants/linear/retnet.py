"""retnet: retention, linear attention with a fixed exponential decay per head; retnet-fla: fla's kernel for it.

Sun, Dong, Huang, Ma, Xia, Xue, Wang & Wei 2023, "Retentive Network: A Successor to Transformer for
Large Language Models". Head h keeps a state S_t (D_k, D_v) that decays by gamma_h = 1 - 2^(-5-h)
per token: ``S_t = gamma_h S_{t-1} + k_t v_t^T``, ``o_t = D_k^-1/2 S_t^T q_t``. The chunked form is
the paper's chunkwise retention: within a chunk the quadratic form masked by D_ij = gamma^(i-j)
(i >= j), across chunks the state, decayed by gamma^C per chunk.

Padding keys (past a sequence's key length) neither write to the state nor decay it, as in fla's
layer, which removes padding tokens before its kernel: the decay is kept as a per-token log decay,
0 past the length, so both forms are the scalar-gated recurrence of fla's simple_gla.

The helpers ``to_chunks``, ``carry_state`` and ``across_chunks`` serve gla.py too.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..contract import VariantInfo
from .fla import FlaKernel, time_first
from .recurrence import Gates, LoopForm, RecurrentVariant, State, loop_info

# The per-token log decay the forms read (B, H, N); not a declared gate: no model makes it.
LOG_DECAY = "log_gamma"
# Triton's dots take float32 inputs as tf32 (10-bit mantissa); fla's own tests allow 5e-3 in float32.
FLA_TOLERANCE = {torch.float32: 5e-3, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def retention_log_decay(num_heads: int) -> torch.Tensor:
    """log gamma_h = log(1 - 2^(-5-h)) for h = 0..H-1, float64 (H,)."""
    return torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(num_heads, dtype=torch.float64)))


def to_chunks(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, N, ...) zero-padded to whole chunks and split: (B, H, ceil(N / size), size, ...).
    Zero tokens are neutral: no key, no value, a log decay of 0."""
    b, h, n = x.shape[:3]
    pad = -n % size
    if pad:
        x = torch.cat([x, x.new_zeros(b, h, pad, *x.shape[3:])], dim=2)
    return x.reshape(b, h, (n + pad) // size, size, *x.shape[3:])


def carry_state(updates: torch.Tensor, decays: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
    """The state entering each chunk (B, H, n, D_k, D_v) and the final one, S_c = decay_c * S_{c-1} + U_c,
    from the chunks' updates U (B, H, n, D_k, D_v) and decays (B, H, n, D_k or 1, 1)."""
    entering = []
    for update, decay in zip(updates.unbind(2), decays.unbind(2), strict=True):
        entering.append(state)
        state = decay * state + update
    return torch.stack(entering, 2), state


def across_chunks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, state: State
) -> tuple[torch.Tensor, State]:
    """What each chunk's queries read from the state entering it, and the final state, for chunked q, k
    (B, H, n, C, Dk), v (B, H, n, C, Dv) and G (B, H, n, C, Dk or 1), the log decay from the chunk's start
    through each token (per key channel, or one per token)."""
    last = g[..., -1:, :]  # (B, H, n, 1, Dk | 1): log decay over the whole chunk
    updates = (k * (last - g).exp()).transpose(-1, -2) @ v  # (B, H, n, Dk, Dv)
    entering, final = carry_state(updates, last.transpose(-1, -2).exp(), state)
    return (q * g.exp()) @ entering, final  # (B, H, n, C, Dv)


class RetNetAttention(RecurrentVariant):
    """Retention with gamma_h = 1 - 2^(-5-h): a loop over time as the definition, chunkwise as the fast form."""

    info = VariantInfo(
        name="retnet",
        family="linear",
        exact=False,
        non_causal=False,
        recurrent=True,
        lengths=True,
        definition="retention S_t = gamma_h S_{t-1} + k_t v_t^T, o_t = D^-1/2 S_t^T q_t, gamma_h = 1 - 2^(-5-h)",
        summary="RetNet retention: linear attention with a fixed decay per head (chunkwise form)",
        paper="Sun et al. 2023, Retentive Network: A Successor to Transformer for Large Language Models",
        source="fla-org/flash-linear-attention, fla/layers/multiscale_retention.py, fla/ops/retention/naive.py",
        departures=(
            "no xPos (rotary) on q and k, no group norm, no swish output gate, no short convolution: they belong to "
            "the layer (fla's MultiScaleRetention), not to the retention it calls; q and k are taken as given",
            "no retention-score normalisation (the paper's decay-mask rows over the root of their sums, scores over "
            "max(|row sum|, 1)): the group norm after retention cancels such per-row scales; fla's kernels omit them",
            "value heads as wide as key heads (one head dim): the paper's are twice as wide (expand_v = 2)",
        ),
    )

    def fixed_gates(self, batch: int, heads: int, n: int, device: torch.device, dtype: torch.dtype) -> Gates:
        """log gamma_h for every token (B, H, N); the base makes it 0 past a key length, so padding leaves
        the state as it is. float32 at least: a bfloat16 log gamma is off in its third digit, and gamma^N
        drifts with it."""
        return {LOG_DECAY: retention_log_decay(heads).to(device, dtype)[None, :, None].expand(batch, heads, n)}

    def recurrent(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State
    ) -> tuple[torch.Tensor, State]:
        """S_t = gamma_t S_{t-1} + k_t v_t^T, o_t = scale * S_t^T q_t, one token at a time."""
        gamma = gates[LOG_DECAY].exp()  # (B, H, N)
        scale = self.scale(q.shape[-1])
        out = []
        # unbind, not q[:, :, t]: each index's backward writes a full-length zero gradient, O(N^2) in all.
        for q_t, k_t, v_t, gamma_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), gamma.unbind(2), strict=True):
            state = gamma_t[..., None, None] * state + k_t[..., :, None] * v_t[..., None, :]  # (B, H, Dk, Dv)
            out.append(scale * (q_t[..., :, None] * state).sum(-2))  # (B, H, Dv); a tiny bmm is ~8x slower on CPU
        return torch.stack(out, 2), state

    def chunked(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State
    ) -> tuple[torch.Tensor, State]:
        """Chunkwise retention: the decay-masked quadratic form within a chunk, the state across chunks."""
        n, size = q.shape[2], self.options.chunk_size
        q, k, v = (to_chunks(x, size) for x in (q, k, v))  # (B, H, n, C, D)
        g = to_chunks(gates[LOG_DECAY], size).cumsum(-1)  # (B, H, n, C): log decay from the chunk start to i
        # D_ij = exp(G_i - G_j) = gamma^(i-j) for i >= j; masked before exp, so no positive exponent is taken.
        causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
        decay = torch.where(causal, g[..., :, None] - g[..., None, :], float("-inf")).exp()  # (B, H, n, C, C)
        intra = (q @ k.transpose(-1, -2) * decay) @ v
        inter, final = across_chunks(q, k, v, g[..., None], state)
        out = self.scale(q.shape[-1]) * (intra + inter)
        return out.flatten(2, 3)[:, :, :n], final


class FlaRetNetAttention(FlaKernel, RetNetAttention):
    """retnet through fla.ops.simple_gla.chunk_simple_gla, the decay given per token as g = log gamma."""

    info = replace(
        RetNetAttention.info,
        name="retnet-fla",
        devices=("cuda",),
        dtypes=(torch.float32, torch.float16, torch.bfloat16),
        packages=("fla",),
        summary="retnet on the flash-linear-attention Triton kernel (chunk_simple_gla, fla >= 0.2)",
        paper="Sun et al. 2023 (RetNet); Yang et al. 2024 (fla)",
        source="fla-org/flash-linear-attention, fla/ops/simple_gla/chunk.py (as fla/ops/retention/chunk.py calls it)",
        departures=(
            *RetNetAttention.info.departures,
            "the decay goes in as a per-token g (B, T, H) rather than the per-head g_gamma of fla's chunk_retention, "
            "so padding keys can leave the state undecayed (one float32 (B, T, H) tensor more to read)",
        ),
        tolerance=FLA_TOLERANCE,
    )

    fla_minimum = (0, 2)
    fla_older = "its kernels took head-first (B, H, T, K) inputs by default"

    def chunked(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: Gates, state: State
    ) -> tuple[torch.Tensor, State]:
        """One call of fla's chunk_simple_gla, the decay as a per-token log decay g (B, T, H) in float32."""
        from fla.ops.simple_gla import chunk_simple_gla

        q_, k_, v_, g = time_first(q, k, v, gates[LOG_DECAY].float())
        scale = self.scale(q.shape[-1])
        out, final = chunk_simple_gla(q=q_, k=k_, v=v_, g=g, scale=scale, initial_state=state, output_final_state=True)
        return out.transpose(1, 2), final


class RetNetLoop(LoopForm, RetNetAttention):
    """RetNetAttention's definition as its fast form: the series the chunked form is timed against."""

    info = loop_info(RetNetAttention.info)
