"""Built-in exact variants beyond the conformance suite: blocks, grouped heads, half precision."""

from __future__ import annotations

import pytest
import torch
from gpu_fakes import fake_flash_attn, fake_xformers

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec
from attnbench.variants.exact.chunked import ChunkedAttention
from attnbench.variants.softmax import softmax_attention


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


@pytest.mark.parametrize("causal", [False, True])
def test_chunked_packed_gradients_match_the_definition(causal):
    """Blocks of 4 over sequences of 5, 1 and 6 tokens: blocks that cross boundaries, in both passes."""
    from attnbench.variants.contract import attend

    spec = AttentionSpec(num_heads=2, num_kv_heads=1, head_dim=4, causal=causal, options={"block_size": 4})
    q = torch.randn(1, 2, 12, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 12, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 12, 4, dtype=torch.float64, requires_grad=True)
    cu_seqlens = torch.tensor([0, 5, 6, 12])
    assert torch.autograd.gradcheck(lambda *qkv: attend(ChunkedAttention(spec), *qkv, cu_seqlens=cu_seqlens), (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("variant", ["flash-attn", "xformers"])
def test_packed_batches_reach_the_gpu_kernels_in_their_documented_layout(monkeypatch, request, variant, causal):
    """On CPU, stand-ins with the upstream signatures check the arguments the adapters build for a packed
    batch (varlen boundaries, block-diagonal bias, layouts, GQA) and compute what those APIs document."""
    import sys

    from attnbench.variants.contract import attend

    fakes = {"flash_attn": fake_flash_attn()} if variant == "flash-attn" else fake_xformers()
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: fakes.get(name) and fakes[name].__spec__)
    from attnbench.variants.exact.flash_attn import resolve

    resolve.cache_clear()  # found once per process: find the stand-in, and forget it after
    request.addfinalizer(resolve.cache_clear)
    spec = AttentionSpec(num_heads=4, num_kv_heads=2, head_dim=16, causal=causal)
    q, k, v = torch.randn(1, 4, 23, 16), torch.randn(1, 2, 23, 16), torch.randn(1, 2, 23, 16)
    cu_seqlens = torch.tensor([0, 9, 10, 23])
    out = attend(load_registry().build(variant, spec), q, k, v, cu_seqlens=cu_seqlens)
    want = attend(load_registry().build("naive", spec), q, k, v, cu_seqlens=cu_seqlens)
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("split", [1, 5, 16])
@pytest.mark.parametrize(("nq", "causal"), [(1, True), (4, True), (4, False), (30, True)])
def test_flash_decoding_merges_any_number_of_splits_exactly(split, nq, causal):
    """Several splits, a padded last one, and (Nq = 30 > Nk = 23, causal) queries that see no key, with
    gradients: split-K merged by log-sum-exp is softmax attention."""
    from attnbench.variants.exact.flash_decoding import FlashDecodingAttention

    spec = AttentionSpec(num_heads=4, num_kv_heads=2, head_dim=4, causal=causal, options={"split_size": split})
    q = torch.randn(2, 4, nq, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 23, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 23, 4, dtype=torch.float64, requires_grad=True)
    variant = FlashDecodingAttention(spec)
    torch.testing.assert_close(variant(q, k, v), softmax_attention(q, k, v, causal=causal))
    if split == 5:  # gradcheck perturbs every element: one split size is enough
        assert torch.autograd.gradcheck(variant, (q, k, v))
