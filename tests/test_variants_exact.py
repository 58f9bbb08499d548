"""Built-in exact variants beyond the conformance suite: blocks, grouped heads, half precision."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec
from attnbench.variants.exact.chunked import ChunkedAttention
from attnbench.variants.exact.naive import softmax_attention


@pytest.mark.parametrize("block", [1, 4, 64])
@pytest.mark.parametrize(("nq", "causal"), [(9, False), (9, True), (15, True)])
def test_chunked_any_block_size_forward_and_backward(block, nq, causal):
    # Nq = 15 > Nk = 11 under causality: rows with no key must have zero gradient, not NaN.
    # Small on purpose: gradcheck perturbs every input element (GQA kept: 2 query heads per K/V head).
    spec = AttentionSpec(num_heads=2, num_kv_heads=1, head_dim=4, causal=causal, options={"block_size": block})
    q = torch.randn(1, 2, nq, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 11, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 11, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ChunkedAttention(spec), (q, k, v))
    torch.testing.assert_close(ChunkedAttention(spec)(q, k, v), softmax_attention(q, k, v, causal=causal))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_naive_half_inputs_do_not_overflow(dtype):
    # Logits ~1e4 overflow float16 unless scores are accumulated in float32.
    spec = AttentionSpec(num_heads=2, head_dim=64)
    q = (torch.randn(1, 2, 16, 64) * 100).to(dtype)
    out = load_registry().build("naive", spec)(q, q, q)
    assert out.dtype == dtype and torch.isfinite(out).all()
