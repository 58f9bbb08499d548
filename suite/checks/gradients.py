"""Gradients: dq, dk, dv against the float64 definition's, for variants that declare a backward."""

from __future__ import annotations

import torch

from ...variants.contract import Unsupported, attend, reference
from ...variants.gates import make_gates
from .checker import GRADIENT_SHAPES, Checker, Skipped, shape_label
from .registry import check


@check("gradients", order=200)
def check_gradients(c: Checker) -> str:
    """dq, dk, dv equal the float64 definition's gradients (for variants that declare backward)."""
    if not c.info.has_backward(c.device.type):
        raise Skipped(f"declares no backward on {c.device.type}")
    errors: dict[str, float] = {}
    for causal in c.modes():
        for shape in GRADIENT_SHAPES:
            try:
                variant = c.build(shape, causal)
            except Unsupported:
                continue
            q, k, v = (t.requires_grad_() for t in c.inputs(shape, salt=8))
            grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(8)).to(c.device, c.dtype)
            # One draw of the gates, in the inputs' dtype, for both forms (a float64 draw of its own would be
            # other values at half precision: another selection for a variant that selects).
            gates = make_gates(variant.info.gates, q, k) if variant.info.gates else None
            try:
                out = attend(variant, q, k, v, gates=gates)
            except Unsupported:
                continue
            c.check_output(out, q)
            got = torch.autograd.grad(out, (q, k, v), grad)
            q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
            want = torch.autograd.grad(reference(variant, q64, k64, v64, gates=gates), (q64, k64, v64), grad.double())
            for name, g, w in zip(("dq", "dk", "dv"), got, want, strict=True):
                errors[f"{name} at {shape_label(shape, causal)}"] = c.error(g, w)
    return c.within(errors, "gradient")
