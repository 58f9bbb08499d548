"""forgetting: the Forgetting Transformer's attention, softmax with a data-dependent forget-gate bias.

Lin, Nikishin, He & Courville 2025, "Forgetting Transformer: Softmax Attention with a Forget Gate"
(ICLR 2025). Each head has a forget gate f_t = sigmoid(w^T x_t + b) per token; the score of query i
and key j gains the log of the gates between them: ``s_ij = q_i . k_j / sqrt(D) + sum_{l=j+1}^{i} log f_l``,
causal only. With c the cumulative sum of log f, the bias is c_i - c_j: a FlexAttention score_mod.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import GateInput, Variant, VariantInfo, accumulate_dtype, check_gates, check_qkv, heads_first
from ..flex_kernel import CompileOptions, FlexKernel
from ..masks import causal, causal_mask


class ForgetGate(nn.Module):
    """FoX's forget gate: log sigmoid(W x + b), one per head and token."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.fgate_proj = nn.Linear(dim, heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"log_f": heads_first(F.logsigmoid(self.fgate_proj(x)), self.heads)}


class ForgettingAttention(Variant):
    """Softmax attention plus c_i - c_j, c the cumulative log forget gate (a score_mod on FlexAttention)."""

    info = VariantInfo(
        name="forgetting",
        family="modified",
        exact=False,
        non_causal=False,
        gqa_native=True,
        compiles=True,
        definition="softmax(q k^T / sqrt(D) + (c_i - c_j)) v, c = cumsum(log f), causal",
        summary="Forgetting Transformer: softmax attention biased by cumulative log forget gates (FoX)",
        paper="Lin et al. 2025, Forgetting Transformer: Softmax Attention with a Forget Gate (ICLR 2025)",
        source="zhixuan-lin/forgetting-transformer, src/forgetting_transformer/ops/forgetting_attention.py",
        departures=(
            "the forget gate is an input: a task model makes it with logsigmoid(W x + b) (gate_layer); bench and "
            "check draw log f = logsigmoid(x), x ~ N(0, 1)",
            "the fast form is FlexAttention with a score_mod; FoX's own Triton kernel is not built; on CPU, gradients "
            "go through the dense definition (torch has no FlexAttention backward there)",
            "FoX's Pro block (output gate, QK-norm, a short shift of keys) belongs to the model, not to this call",
        ),
        gates=(
            GateInput(
                name="log_f",
                law="log-decay",
                description="log forget gate per key token and head, logsigmoid(.)",
            ),
        ),
    )
    Options = CompileOptions

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self._kernel = FlexKernel(lambda nq, nk, device: causal(nq, nk), self.options.compile)

    def gate_layer(self, dim: int) -> ForgetGate:
        return ForgetGate(dim, self.spec.num_heads)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_f: torch.Tensor) -> torch.Tensor:
        check_qkv(q, k, v)
        check_gates(self.info.name, self.info.gates, {"log_f": log_f}, q, k)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, log_f))
        if needs_grad and q.device.type == "cpu":
            acc = accumulate_dtype(q.dtype)
            return self.reference(q.to(acc), k.to(acc), v.to(acc), log_f.to(acc)).to(q.dtype)
        # float32 at least: a sum over the sequence drifts in half precision.
        c = log_f.to(torch.promote_types(log_f.dtype, torch.float32)).cumsum(-1)  # (B, H, Nk)
        offset = k.shape[2] - q.shape[2]

        def forget_bias(score, b, h, q_idx, kv_idx):
            return score + (c[b, h, (q_idx + offset).clamp(min=0)] - c[b, h, kv_idx]).to(score.dtype)

        return self._kernel(q, k, v, score_mod=forget_bias)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_f: torch.Tensor) -> torch.Tensor:
        """The bias written out: D_ij = sum of log f over positions j+1..i, added to the scaled scores."""
        _, h, nq, d = q.shape
        nk = k.shape[2]
        c = log_f.cumsum(-1)  # (B, H, Nk)
        pos = torch.arange(nq, device=q.device) + (nk - nq)
        bias = c[:, :, pos.clamp(min=0)][..., :, None] - c[:, :, None, :]  # (B, H, Nq, Nk)
        g = h // k.shape[1]
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        scores = q @ k.transpose(-1, -2) / d**0.5 + bias
        return causal_softmax(scores, v)


def causal_softmax(scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax over the causal keys of (B, H, Nq, Nk) scores, applied to v (B, H, Nk, D); empty rows zero."""
    mask = causal_mask(scores.shape[-2], scores.shape[-1], scores.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(-1, keepdim=True)
    return scores.masked_fill(empty, 0.0).softmax(-1).masked_fill(~mask, 0.0) @ v
