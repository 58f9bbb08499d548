"""Shapes: the output's shape, dtype and device; q and k of different head dims refused; grouped K/V
heads (GQA, MQA) right and, where declared native, never repeated; non-contiguous inputs."""

from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ...variants.contract import attend
from ...variants.gates import make_gates
from ..core.errors import one_line
from .checker import Checker, CheckFailed, Skipped
from .registry import check


@check("output", order=10)
def check_output(c: Checker) -> str:
    """Output shape, dtype and device equal q's."""
    shape = (2, 4, 4, 33, 33, 16)
    variant = c.build(shape, causal=c.modes()[0])
    q, k, v = c.inputs(shape)
    c.run(variant, q, k, v)
    return f"{tuple(q.shape)} {str(c.dtype)[6:]} on {c.device.type}"


@check("head-dim-mismatch", order=140)
def check_head_dim_mismatch(c: Checker) -> str:
    """q and k with different head dims raise an error instead of broadcasting silently."""
    shape = (1, 2, 2, 8, 8, 16)
    variant = c.build(shape, causal=c.modes()[0])
    q, _, v = c.inputs(shape, salt=10)
    raised = []
    # k head dim 8 breaks a matmul; head dim 1 is the one that broadcasts silently.
    for dk in (8, 1):
        k = c.inputs((1, 2, 2, 8, 8, dk), salt=11)[1]
        try:
            with torch.no_grad():
                out = attend(variant, q, k, v)
        except Exception as err:
            raised.append(one_line(err))
            continue
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckFailed(f"q head dim 16 with k head dim {dk} returned {got} instead of raising")
    return f"raised {raised[-1]}"


@check("gqa", order=150)
def check_gqa(c: Checker) -> str:
    """Grouped (H_kv = H/4) and multi-query (H_kv = 1) K/V heads equal the definition."""
    if not c.info.gqa:
        raise Skipped("declares no GQA/MQA support")
    errors = c.sweep(((1, 8, 2, 33, 33, 16), (2, 4, 1, 20, 52, 32)), c.modes(), salt=6)
    return c.within(errors, "GQA/MQA")


class _OutputShapes(TorchDispatchMode):
    """Records the shape of every tensor each aten op allocates. Views (expand, permute, reshape of a
    contiguous tensor) return an alias of their input and allocate nothing: they are left out, so
    xformers' K/V broadcast by ``expand`` is not taken for a repeat."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(r.alias_info is not None for r in func._schema.returns):
            return out
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append((str(func), tuple(t.shape)))
        return out


@check("gqa-native", order=160)
def check_gqa_native(c: Checker) -> str:
    """A variant that declares native GQA never builds K or V repeated to all query heads."""
    if not (c.info.gqa and c.info.gqa_native):
        raise Skipped("declares no native GQA (K/V may be repeated)")
    b, h, _hkv, _nq, nk, d = shape = (1, 8, 2, 24, 40, 16)
    variant = c.build(shape, causal=c.modes()[0])
    q, k, v = c.inputs(shape, salt=13)
    # The gates drawn outside the trace: a per-key input of every query head (a cache policy's prompt
    # queries) has K/V's repeated size, and is the harness's, not the variant's.
    gates = make_gates(variant.info.gates, q, k) if variant.info.gates else None
    with torch.no_grad():
        try:
            with _OutputShapes() as trace:
                attend(variant, q, k, v, gates=gates)
        except NotImplementedError as err:
            if "HigherOrderOperator" not in str(err):
                raise
            # The failed trace leaves torch.compile's caches unusable for this function.
            torch._dynamo.reset()
            raise Skipped("runs inside a higher-order op (FlexAttention) that an op trace cannot look into") from None
    repeated = [f for f, s in trace.shapes if math.prod(s) == b * h * nk * d]
    if repeated:
        raise CheckFailed(f"K/V materialised for all {h} query heads by {repeated[0]} though gqa_native is declared")
    return f"no K/V-sized tensor for all {h} heads among {len(trace.shapes)} ops"


@check("non-contiguous", order=170)
def check_non_contiguous(c: Checker) -> str:
    """Inputs that are transposed views of a (B, N, H, D) layout give the same values."""

    def strided(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).contiguous().transpose(1, 2)

    errors = c.sweep(((2, 4, 4, 37, 37, 16),), c.modes(), salt=7, layout=strided)
    return c.within(errors, "non-contiguous")
