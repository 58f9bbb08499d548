"""Gated attention with its gate on the queries, before the softmax (a bug): its definition shares it, so only
the output-gate check can name it."""

import torch

from attnbench.variants.contract import OUTPUT_GATE, GateInput, Variant, VariantInfo
from attnbench.variants.softmax import softmax_attention


class GateBeforeSoftmax(Variant):
    info = VariantInfo(
        name="gate-before-softmax",
        family="modified",
        exact=False,
        gates=(GateInput(name=OUTPUT_GATE, law="normal", per_channel=True, queries=True),),
    )

    def forward(self, q, k, v, **gates):
        return self.reference(q, k, v, **gates)

    def reference(self, q, k, v, **gates):
        return softmax_attention(q * torch.sigmoid(gates[OUTPUT_GATE]), k, v, causal=self.spec.causal)
