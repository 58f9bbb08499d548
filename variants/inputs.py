"""What the inputs of an attention call are: q, k, v shapes, packed-batch boundaries, the softmax
scale and the dtype scores accumulate in. The contract, the dense definitions and the variants all
build on these; they import nothing else of attnbench.
"""

from __future__ import annotations

import itertools
import math

import torch


def check_packed(q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    """A packed batch is B = 1, Nq = Nk = cu_seqlens[-1], with boundaries 0 = c0 < c1 < ... (ValueError if not)."""
    if q.shape[0] != 1 or k.shape[0] != 1 or q.shape[-2] != k.shape[-2]:
        raise ValueError(f"a packed batch has B = 1 and Nq = Nk; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    n = k.shape[-2]
    if cu_seqlens.dim() != 1 or len(cu_seqlens) < 2 or cu_seqlens.is_floating_point():
        raise ValueError("cu_seqlens must be a 1-D integer tensor of boundaries 0, ..., N")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != n or any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"cu_seqlens must rise strictly from 0 to N = {n}; got {bounds}")


def per_sequence(call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """What a packed call means: `call(q, k, v)` on each sequence alone, the outputs laid end to end."""
    bounds = cu_seqlens.tolist()
    parts = [call(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :]) for a, b in itertools.pairwise(bounds)]
    return torch.cat(parts, dim=-2)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int, int]:
    """Validate q/k/v shapes against the contract; returns (B, H, H_kv, Nq, Nk, D)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (B, H, N, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, h, nq, d = q.shape
    bk, hkv, nk, dk = k.shape
    if dk != d:
        raise ValueError(f"head dim of q ({d}) and k ({dk}) differ")
    if v.shape != k.shape:
        raise ValueError(f"v shape {tuple(v.shape)} differs from k shape {tuple(k.shape)}")
    if bk != b:
        raise ValueError(f"batch of q ({b}) and k ({bk}) differ")
    if h % hkv:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({hkv})")
    return b, h, hkv, nq, nk, d


def softmax_scale(head_dim: int) -> float:
    """The 1/sqrt(D) temperature of scaled dot-product attention."""
    return 1.0 / math.sqrt(head_dim)


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores are accumulated in: float32 for half types, else the input's own."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
