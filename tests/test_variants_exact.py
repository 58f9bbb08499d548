"""Built-in exact variants beyond the conformance suite: blocks, grouped heads, half precision."""

from __future__ import annotations

import itertools

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


def _per_sequence_softmax(q, k, v, bounds, causal, scale):
    """The documented meaning of a varlen call, in (tokens, heads, D) layout: each sequence alone."""
    out = torch.empty_like(q)
    for a, b in itertools.pairwise(bounds):
        qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
        out[a:b] = softmax_attention(qs, ks, vs, causal=causal, scale=scale)[0].transpose(0, 1)
    return out


def _fake_flash_attn():
    """A stand-in for the flash_attn module with flash_attn_varlen_func's documented signature and checks."""
    import importlib.machinery
    import types

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                               softmax_scale=None, causal=False):  # fmt: skip
        assert q.dim() == k.dim() == v.dim() == 3 and q.stride(-1) == 1  # (total, heads, D), last dim contiguous
        assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
        assert max_seqlen_q == int(cu_seqlens_q.diff().max()) and isinstance(max_seqlen_k, int)
        assert q.shape[0] == int(cu_seqlens_q[-1]) and k.shape[1] <= q.shape[1]
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        return _per_sequence_softmax(q, k, v, cu_seqlens_q.tolist(), causal, softmax_scale)

    module = types.ModuleType("flash_attn")
    module.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)
    module.flash_attn_varlen_func = flash_attn_varlen_func
    return module


def _fake_xformers():
    """Stand-ins for xformers.ops.memory_efficient_attention and its block-diagonal biases (5-D layout)."""
    import types

    class BlockDiagonalMask:
        causal = False

        def __init__(self, seqlens):
            self.seqlens = seqlens

        @classmethod
        def from_seqlens(cls, q_seqlen, kv_seqlen=None):
            assert kv_seqlen is None and all(isinstance(n, int) for n in q_seqlen)
            return cls(q_seqlen)

    class BlockDiagonalCausalMask(BlockDiagonalMask):
        causal = True

    def memory_efficient_attention(query, key, value, attn_bias=None, scale=None):
        assert query.dim() == 5 and query.shape[0] == 1  # (1, tokens, Hkv, G, D): a block-diagonal bias needs B = 1
        bounds = [0, *torch.tensor(attn_bias.seqlens).cumsum(0).tolist()]
        q, k, v = (t[0].flatten(1, 2) for t in (query, key, value))  # (tokens, Hkv * G, D)
        return _per_sequence_softmax(q, k, v, bounds, attn_bias.causal, scale).view(query.shape)

    bias = types.ModuleType("xformers.ops.fmha.attn_bias")
    bias.BlockDiagonalMask, bias.BlockDiagonalCausalMask = BlockDiagonalMask, BlockDiagonalCausalMask
    fmha = types.ModuleType("xformers.ops.fmha")
    fmha.attn_bias = bias
    ops = types.ModuleType("xformers.ops")
    ops.fmha, ops.memory_efficient_attention = fmha, memory_efficient_attention
    root = types.ModuleType("xformers")
    root.ops = ops
    return {"xformers": root, "xformers.ops": ops, "xformers.ops.fmha": fmha, "xformers.ops.fmha.attn_bias": bias}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("variant", ["flash-attn", "xformers"])
def test_packed_batches_reach_the_gpu_kernels_in_their_documented_layout(monkeypatch, variant, causal):
    """On CPU, stand-ins with the upstream signatures check the arguments the adapters build for a packed
    batch (varlen boundaries, block-diagonal bias, layouts, GQA) and compute what those APIs document."""
    import sys

    from attnbench.variants.contract import attend

    fakes = {"flash_attn": _fake_flash_attn()} if variant == "flash-attn" else _fake_xformers()
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: fakes.get(name) and fakes[name].__spec__)
    spec = AttentionSpec(num_heads=4, num_kv_heads=2, head_dim=16, causal=causal)
    q, k, v = torch.randn(1, 4, 23, 16), torch.randn(1, 2, 23, 16), torch.randn(1, 2, 23, 16)
    cu_seqlens = torch.tensor([0, 9, 10, 23])
    out = attend(load_registry().build(variant, spec), q, k, v, cu_seqlens=cu_seqlens)
    want = attend(load_registry().build("naive", spec), q, k, v, cu_seqlens=cu_seqlens)
    torch.testing.assert_close(out, want)
