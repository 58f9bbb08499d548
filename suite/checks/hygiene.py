"""Contract hygiene: the forward and the backward write nothing into their inputs, and two calls on the
same input give the same output."""

from __future__ import annotations

import torch

from ...variants.contract import attend
from .checker import GRADIENT_SHAPES, REFERENCE_SHAPES, Checker, CheckFailed, fmt, shape_label
from .registry import check


def _written(names: tuple[str, ...], now: tuple[torch.Tensor, ...], before: tuple[torch.Tensor, ...]) -> str | None:
    """'q (12 of 4096 elements changed)' for the first tensor that differs bitwise from its copy, else None."""
    for name, t, saved in zip(names, now, before, strict=True):
        t = t.detach()
        if not torch.equal(t, saved):
            changed = int((t != saved).sum())
            return f"{name} ({changed} of {t.numel()} elements changed)"
    return None


@check("inputs-unchanged", order=180)
def check_inputs_unchanged(c: Checker) -> str:
    """q, k, v are bitwise unchanged by the forward, and with grad_out by the backward: nothing is written in place."""
    shape = REFERENCE_SHAPES[0]  # already run by `reference`: no new kernel for compiled variants
    for causal in c.modes():
        variant = c.build(shape, causal)
        qkv = c.inputs(shape)
        saved = tuple(t.clone() for t in qkv)
        c.run(variant, *qkv)
        written = _written(("q", "k", "v"), qkv, saved)
        if written:
            raise CheckFailed(f"the forward wrote into its input {written} ({shape_label(shape, causal)})")
    if not c.info.has_backward(c.device.type):
        return f"forward leaves q, k, v unchanged (declares no backward on {c.device.type})"
    shape, causal = GRADIENT_SHAPES[0], c.modes()[0]  # as `gradients` runs it: no new backward kernel
    variant = c.build(shape, causal)
    q, k, v = (t.requires_grad_() for t in c.inputs(shape, salt=8))
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(8)).to(c.device, c.dtype)
    saved = tuple(t.detach().clone() for t in (q, k, v, grad))
    out = attend(variant, q, k, v)
    c.check_output(out, q)
    torch.autograd.grad(out, (q, k, v), grad)
    written = _written(("q", "k", "v", "grad_out"), (q, k, v, grad), saved)
    if written:
        raise CheckFailed(f"the backward wrote into its input {written} ({shape_label(shape, causal)})")
    return "forward and backward leave q, k, v (and grad_out) unchanged"


@check("deterministic", order=190)
def check_deterministic(c: Checker) -> str:
    """Two calls on the same input give the same output, within a tenth of the dtype's tolerance."""
    # Not bitwise: GPU kernels may reduce with atomics in any order, a legitimate rounding-level
    # difference; a tenth of the tolerance still catches noise, state kept between calls or a
    # read of uninitialised memory.
    shape = REFERENCE_SHAPES[0]
    changes: dict[str, float] = {}
    for causal in c.modes():
        variant = c.build(shape, causal)
        q, k, v = c.inputs(shape)
        first = c.run(variant, q, k, v)
        second = c.run(variant, q, k, v)
        same = torch.allclose(first, second, rtol=0.0, atol=0.0, equal_nan=True)  # bitwise, NaN at the same places
        changes[shape_label(shape, causal)] = 0.0 if same else c.error(second, first.double())
    label, worst = max(changes.items(), key=lambda kv: kv[1])
    if not worst <= c.tol / 10:
        raise CheckFailed(
            f"two calls on the same input differ by rel {fmt(worst)} > tol/10 {fmt(c.tol / 10)} at {label}: "
            "the output is not deterministic"
        )
    if worst == 0:
        return f"bitwise equal over two calls ({len(changes)} inputs)"
    return f"two calls differ by rel {fmt(worst)} <= tol/10 {fmt(c.tol / 10)}"
