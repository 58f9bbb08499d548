"""Stand-ins for the GPU kernels' Python APIs, as their current releases document them, computing what
each call means in plain torch: the adapters' arguments and layouts are tested on CPU against them.

xformers 0.0.35: memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None) on
(B, M, H, K), or (B, M, G, H, K) for grouped heads in the forward pass only (with an input that
requires grad the call raises); block-diagonal biases need B = 1. flash-attn 2.8 (and FA3's
flash_attn_interface, some builds of which return (out, lse)): flash_attn_func on (B, S, H, D) with
K/V heads dividing H, flash_attn_varlen_func on (total, H, D) with int32 cu_seqlens; causal masks
aligned bottom-right.
"""

from __future__ import annotations

import importlib.machinery
import itertools
import types

import torch

from attnbench.variants.softmax import softmax_attention


def bmhk_attention(q, k, v, causal, scale):
    """softmax attention on (B, M, H, K) inputs with K/V heads dividing the query heads, bottom-right causal."""
    groups = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(groups, 2), v.repeat_interleave(groups, 2)
    out = softmax_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal, scale=scale)
    return out.transpose(1, 2)


def per_sequence_softmax(q, k, v, bounds, causal, scale):
    """The documented meaning of a varlen call, in (tokens, heads, D) layout: each sequence alone."""
    out = torch.empty_like(q)
    for a, b in itertools.pairwise(bounds):
        qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
        groups = qs.shape[1] // ks.shape[1]
        ks, vs = ks.repeat_interleave(groups, 1), vs.repeat_interleave(groups, 1)
        out[a:b] = softmax_attention(qs, ks, vs, causal=causal, scale=scale)[0].transpose(0, 1)
    return out


def fake_flash_attn(name: str = "flash_attn", returns_lse: bool = False) -> types.ModuleType:
    """flash_attn (FA2) or flash_attn_interface (FA3) with flash_attn_func and flash_attn_varlen_func."""

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_):
        assert q.dim() == k.dim() == v.dim() == 4 and q.shape[2] % k.shape[2] == 0 and q.stride(-1) == 1
        out = bmhk_attention(q, k, v, causal, softmax_scale)
        return (out, torch.zeros(1)) if returns_lse else out

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                               softmax_scale=None, causal=False, **_):  # fmt: skip
        assert q.dim() == k.dim() == v.dim() == 3 and q.stride(-1) == 1  # (total, heads, D), last dim contiguous
        assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
        assert max_seqlen_q == int(cu_seqlens_q.diff().max()) and isinstance(max_seqlen_k, int)
        assert q.shape[0] == int(cu_seqlens_q[-1]) and q.shape[1] % k.shape[1] == 0
        out = per_sequence_softmax(q, k, v, cu_seqlens_q.tolist(), causal, softmax_scale)
        return (out, torch.zeros(1)) if returns_lse else out

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.flash_attn_func, module.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    return module


def fake_xformers() -> dict[str, types.ModuleType]:
    """xformers, xformers.ops, xformers.ops.fmha and its attn_bias, for sys.modules."""

    class LowerTriangularFromBottomRightMask:
        pass

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

    def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None):
        assert query.dim() in (4, 5) and key.shape == value.shape and key.dim() == query.dim()
        grouped = query.dim() == 5
        if grouped:
            if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
                raise NotImplementedError("No operator found for `memory_efficient_attention_backward`: BMGHK")
            assert key.shape[3] == query.shape[3] and key.stride(3) == 0  # K/V expanded over the group, not copied
        else:
            assert key.shape[2] == query.shape[2]  # 4-D: equal head counts
        q, k, v = (t.flatten(2, 3) if grouped else t for t in (query, key, value))  # (B, M, heads, K)
        if isinstance(attn_bias, BlockDiagonalMask):
            assert query.shape[0] == 1  # a block-diagonal bias needs B = 1
            bounds = [0, *torch.tensor(attn_bias.seqlens).cumsum(0).tolist()]
            out = per_sequence_softmax(q[0], k[0], v[0], bounds, attn_bias.causal, scale)[None]
        else:
            out = bmhk_attention(q, k, v, isinstance(attn_bias, LowerTriangularFromBottomRightMask), scale)
        return out.view(query.shape)

    bias = types.ModuleType("xformers.ops.fmha.attn_bias")
    bias.LowerTriangularFromBottomRightMask = LowerTriangularFromBottomRightMask
    bias.BlockDiagonalMask, bias.BlockDiagonalCausalMask = BlockDiagonalMask, BlockDiagonalCausalMask
    fmha = types.ModuleType("xformers.ops.fmha")
    fmha.attn_bias = bias
    ops = types.ModuleType("xformers.ops")
    ops.fmha, ops.memory_efficient_attention = fmha, memory_efficient_attention
    root = types.ModuleType("xformers")
    root.ops = ops
    return {"xformers": root, "xformers.ops": ops, "xformers.ops.fmha": fmha, "xformers.ops.fmha.attn_bias": bias}
