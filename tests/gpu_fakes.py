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
import math
import sys
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


def module_tree(**leaves: dict[str, object]) -> dict[str, types.ModuleType]:
    """sys.modules entries for dotted module names holding the given attributes, with their parents: e.g.
    module_tree(**{"fla.ops.moba": {"parallel_moba": f}}) gives fla, fla.ops and fla.ops.moba."""
    modules: dict[str, types.ModuleType] = {}
    for dotted, attributes in leaves.items():
        parts = dotted.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name not in modules:
                modules[name] = types.ModuleType(name)
                modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
            if depth > 1:
                setattr(modules[".".join(parts[: depth - 1])], parts[depth - 1], modules[name])
        for key, value in attributes.items():
            setattr(modules[dotted], key, value)
    return modules


def install(monkeypatch, modules: dict[str, types.ModuleType]) -> None:
    """Put stand-in modules into sys.modules for one test (monkeypatch restores what was there)."""
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def fake_parallel_moba(q, k, v, cu_seqlens, max_seqlen, chunk_size, topk):
    """fla's parallel_moba as its docstring documents it: a packed (1, T, H, D) batch, equal head counts,
    int32 boundaries; per sequence, each token attends its own chunk causally and the `topk - 1` wholly past
    chunks of best q . mean(chunk keys) (float32), in one softmax; `topk - 1 <= 0`: full causal attention."""
    assert q.shape[0] == 1 and q.shape == k.shape and v.shape[:3] == q.shape[:3]
    assert cu_seqlens.dtype == torch.int32 and max_seqlen == int(cu_seqlens.diff().max())
    out = torch.empty_like(q)
    for a, b in itertools.pairwise(cu_seqlens.tolist()):
        qs, ks, vs = (t[0, a:b].transpose(0, 1) for t in (q, k, v))  # (H, n, D)
        n = b - a
        pos = torch.arange(n)
        allowed = pos[None, :] <= pos[:, None]
        if topk > 1:
            chunk = pos // chunk_size
            whole = n // chunk_size  # only complete chunks are ever wholly past
            means = ks[:, : whole * chunk_size].reshape(ks.shape[0], whole, chunk_size, -1).mean(2)
            gate = qs.float() @ means.float().transpose(-1, -2)  # (H, n, whole)
            past = torch.arange(whole)[None, :] < chunk[:, None]
            gate = gate.masked_fill(~past, float("-inf"))
            best = gate.topk(min(topk - 1, whole), dim=-1).indices if whole else gate.new_zeros(*gate.shape[:2], 0)
            chosen = torch.zeros_like(gate, dtype=torch.bool).scatter_(-1, best.long(), True) & past
            keys = chosen.repeat_interleave(chunk_size, -1)
            keys = torch.nn.functional.pad(keys, (0, n - keys.shape[-1]))
            allowed = (keys | (chunk[None, :] == chunk[:, None])) & allowed
        scores = (qs @ ks.transpose(-1, -2)) / qs.shape[-1] ** 0.5
        out[0, a:b] = (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ vs).transpose(0, 1)
    return out


def fake_parallel_nsa(q, k, v, g_cmp=None, g_slc=None, g_swa=None, block_indices=None, block_counts=16,
                      block_size=64, window_size=0, scale=None, cu_seqlens=None):  # fmt: skip
    """fla's parallel_nsa as its docstring and kernels document it, for B sequences of T tokens: q (B, T, HQ, K),
    k and v (B, T, H, K) with HQ / H a power of two >= 16, gates (B, T, HQ), block_counts an int or (B, T, H);
    the keys mean-pooled per block, a query attending the complete pooled blocks; the blocks ranked by that
    attention's probabilities summed over the group's heads, the first block and the last two forced, the
    top block_counts attended causally; a causal window of window_size keys; the three mixed by the gates."""
    b, t, hq, d = q.shape
    h = k.shape[2]
    group = hq // h
    assert k.shape == v.shape == (b, t, h, d) and group >= 16 and not group & (group - 1)
    assert all(g.shape == (b, t, hq) for g in (g_cmp, g_slc, g_swa)) and block_indices is None and cu_seqlens is None
    counts = torch.full((b, t, h), block_counts) if isinstance(block_counts, int) else block_counts
    assert counts.shape == (b, t, h) and 2 ** math.ceil(math.log2(int(counts.max()))) <= block_size // 2
    qs, ks, vs = (x.transpose(1, 2) for x in (q, k, v))  # (B, heads, T, D)
    ks, vs = ks.repeat_interleave(group, 1), vs.repeat_interleave(group, 1)
    pos = torch.arange(t)
    whole = t // block_size
    pooled_k, pooled_v = (x[:, :, : whole * block_size].unflatten(2, (whole, block_size)).mean(3) for x in (ks, vs))
    complete = (torch.arange(whole)[None, :] + 1) * block_size - 1 <= pos[:, None]
    cmp_scores = (qs @ pooled_k.transpose(-1, -2) * scale).masked_fill(~complete, float("-inf"))
    probs = cmp_scores.softmax(-1).nan_to_num(0.0)
    o_cmp = probs @ pooled_v
    n_blocks = math.ceil(t / block_size)
    importance = torch.nn.functional.pad(probs.unflatten(1, (h, group)).sum(2), (0, n_blocks - whole))
    block, own = torch.arange(n_blocks), pos // block_size
    forced = (block[None, :] == 0) | (block[None, :] == own[:, None]) | (block[None, :] == own[:, None] - 1)
    importance = importance.masked_fill(forced, float(group) + 1).masked_fill(block[None, :] > own[:, None], -1.0)
    rank = importance.argsort(-1, descending=True).argsort(-1)  # (B, H, T, blocks): each block's place
    chosen = (rank < counts.permute(0, 2, 1)[..., None]) & (block[None, :] <= own[:, None])
    causal = pos[None, :] <= pos[:, None]
    keys = chosen.repeat_interleave(block_size, -1)[..., :t].repeat_interleave(group, 1) & causal
    scores = qs @ ks.transpose(-1, -2) * scale
    o_slc = scores.masked_fill(~keys, float("-inf")).softmax(-1) @ vs
    window = causal & (pos[:, None] - pos[None, :] < window_size)
    o_swa = scores.masked_fill(~window, float("-inf")).softmax(-1) @ vs
    gates = [g.transpose(1, 2)[..., None] for g in (g_cmp, g_slc, g_swa)]
    return (gates[0] * o_cmp + gates[1] * o_slc + gates[2] * o_swa).transpose(1, 2)


def fake_sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, smooth_k=True, **_):
    """sageattention 1.0.6's sageattn as documented: (B, H, N, D) in HND, K/V heads dividing the query heads,
    head dim 64, 96 or 128, last dims contiguous, causal only with as many queries as keys; smooth_k subtracts
    the keys' mean from `k` in place. Its meaning is softmax attention (the quantization aside)."""
    assert tensor_layout == "HND" and q.shape[-1] in (64, 96, 128) and q.shape[1] % k.shape[1] == 0
    assert all(t.stride(-1) == 1 for t in (q, k, v)) and (not is_causal or q.shape[2] == k.shape[2])
    if smooth_k:
        k -= k.mean(dim=2, keepdim=True)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    return softmax_attention(q, k, v, causal=is_causal, scale=sm_scale)
