"""gated, gated-head: softmax attention times a sigmoid gate of the query's own token, after attention.

Qiu et al. 2025, "Gated Attention for Large Language Models: Non-linearity, Sparsity, and
Attention-Sink-Free" (Qwen; NeurIPS 2025), the gate Qwen3-Next ships: ``o = sigmoid(g) * softmax(q k^T / sqrt(D)) v``,
g = W_g x from the query token's hidden state, one per channel (`gated`, the paper's best, G1
elementwise) or one per head (`gated-head`, its head-wise form). The gate goes after attention and
before the output projection; applied before the softmax it would be another variant (the
output-gate check names that bug).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..contract import OUTPUT_GATE, GateInput, Variant, VariantInfo, check_gates, heads_first
from ..exact.sdpa import SdpaAttention
from ..softmax import softmax_attention


class OutputGate(nn.Module):
    """Qwen's gate: a linear map of the hidden state (Qwen3-Next widens q_proj by it), per head or channel."""

    def __init__(self, dim: int, heads: int, width: int) -> None:
        super().__init__()
        self.heads = heads
        self.gate_proj = nn.Linear(dim, heads * width, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {OUTPUT_GATE: heads_first(self.gate_proj(x), self.heads)}


class GatedAttention(Variant):
    """sdpa, then sigmoid(gate) per query token and channel."""

    info = VariantInfo(
        name="gated",
        family="modified",
        exact=False,
        gqa_native=True,
        lengths=True,
        definition="sigmoid(g) * softmax(q k^T / sqrt(D)) v, g per query token and channel",
        summary="gated attention: a sigmoid output gate per channel after softmax attention (Qwen3-Next)",
        paper="Qiu et al. 2025, Gated Attention for Large Language Models (NeurIPS 2025)",
        source="qiuzh20/gated_attention; huggingface/transformers, models/qwen3_next/modeling_qwen3_next.py",
        departures=(
            "the gate is an input: a task model makes it with a bias-free linear map of the hidden state "
            "(gate_layer; Qwen3-Next takes it from a widened q_proj, the same map); bench and check draw it N(0, 1)",
        ),
        gates=(
            GateInput(
                name=OUTPUT_GATE,
                law="normal",
                per_channel=True,
                queries=True,
                description="gate logits per query token and channel, applied as sigmoid after attention",
            ),
        ),
    )

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.attention = SdpaAttention(spec)

    def gate_layer(self, dim: int) -> OutputGate:
        per_channel = self.info.gates[0].per_channel
        return OutputGate(dim, self.spec.num_heads, self.spec.head_dim if per_channel else 1)

    def _gate(self, gate: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(gate if gate.dim() == 4 else gate[..., None])

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None, **gates
    ) -> torch.Tensor:
        check_gates(self.info.name, self.info.gates, gates, q, k)
        out = self.attention(q, k, v, key_lengths=key_lengths)
        return (out * self._gate(gates[OUTPUT_GATE]).to(out.dtype)).to(q.dtype)

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None, **gates
    ) -> torch.Tensor:
        """Softmax attention written out, then the sigmoid gate."""
        out = softmax_attention(q, k, v, causal=self.spec.causal, key_lengths=key_lengths)
        return out * self._gate(gates[OUTPUT_GATE])


class GatedHeadAttention(GatedAttention):
    """sdpa, then sigmoid(gate) per query token and head."""

    info = replace(
        GatedAttention.info,
        name="gated-head",
        definition="sigmoid(g) * softmax(q k^T / sqrt(D)) v, g per query token and head",
        summary="gated attention, one sigmoid output gate per head (the paper's head-wise form)",
        gates=(
            GateInput(
                name=OUTPUT_GATE,
                law="normal",
                queries=True,
                description="gate logits per query token and head, applied as sigmoid after attention",
            ),
        ),
    )
