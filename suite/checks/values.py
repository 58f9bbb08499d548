"""Values: the output equals the float64 definition on ordinary shapes, at head dim 128 and beyond
1024 keys, with the 1/sqrt(D) scale, under large logits; a non-exact variant's distance from exact
softmax is reported, never failed."""

from __future__ import annotations

import math

import torch

from ...variants.contract import Unsupported
from ...variants.softmax import softmax_attention
from .checker import REFERENCE_SHAPES, Checker, CheckFailed, Shape, Skipped, Status, fmt, shape_label
from .registry import check

# Head dim 128 and N past 1024 together, one head, so that the float64 reference stays cheap
# (1100^2 doubles). On a failure the two are told apart on the smaller shapes below.
LARGE_SHAPE: Shape = (1, 1, 1, 1100, 1100, 128)
LARGE_HEAD_DIM_ONLY: Shape = (1, 1, 1, 64, 64, 128)
LONG_ONLY: Shape = (1, 1, 1, 1100, 1100, 32)


@check("reference", order=20)
def check_reference(c: Checker) -> str:
    """Values equal the float64 definition over random shapes, N odd and Nq != Nk included."""
    modes = c.modes()
    errors = c.sweep(REFERENCE_SHAPES[:-1], modes)
    # Nq > Nk only non-causally: causally it leaves queries with no key (its own check below).
    errors |= c.sweep(REFERENCE_SHAPES[-1:], [m for m in modes if not m])
    if not any("Nq=" not in label for label in errors):
        raise CheckFailed("raised Unsupported for every Nq == Nk input")
    return c.within(errors, "random")


@check("large-shapes", order=30)
def check_large_shapes(c: Checker) -> str:
    """Head dim 128 and more than 1024 keys equal the definition (one input per causal mode)."""
    errors = c.sweep((LARGE_SHAPE,), c.modes(), salt=15)
    try:
        return c.within(errors, "large")
    except CheckFailed as failed:
        raise CheckFailed(f"{failed}{_large_shape_culprit(c, errors)}") from None


def _large_shape_culprit(c: Checker, errors: dict[str, float]) -> str:
    """Which of head dim 128 or N > 1024 alone reproduces a large-shape failure, as a suffix."""
    causal = max(errors.items(), key=lambda kv: kv[1])[0].endswith("causal")
    found = []
    for shape, what in (
        (LARGE_HEAD_DIM_ONLY, "at head dim 128 (already at N=64)"),
        (LONG_ONLY, "beyond N=1024 (already at D=32)"),
    ):
        try:
            if not c.case(shape, causal, salt=15).err <= c.tol:
                found.append(what)
        except Unsupported:
            continue
    return f": wrong {' and '.join(found)}" if len(found) == 1 else ""


@check("scale", order=40)
def check_scale(c: Checker) -> str:
    """The softmax temperature is 1/sqrt(D): a missing or wrong scale is named."""
    if not c.info.scaled:
        raise Skipped(f"definition is not softmax-scaled ({c.info.definition})")
    shape = (1, 2, 2, 48, 48, 64)
    case = c.case(shape, causal=c.modes()[0], salt=1)
    if case.err <= c.tol:
        return f"matches 1/sqrt({shape[-1]}) (rel err {fmt(case.err)})"
    variant, (q, k, v), out = case.variant, case.qkv, case.out
    # A softmax scale s is the reference applied to q * s * sqrt(D).
    d = shape[-1]
    wrong = {"1 (no scaling)": 1.0, "1/D": 1.0 / d, "sqrt(D) (multiplied, not divided)": math.sqrt(d)}
    for label, s in wrong.items():
        if c.error(out, c.reference(variant, q * (s * math.sqrt(d)), k, v)) <= c.tol:
            raise CheckFailed(f"output matches softmax scale {label}, not 1/sqrt(D)")
    raise CheckFailed(f"rel err {fmt(case.err)} > tol {fmt(c.tol)} against the 1/sqrt(D) definition")


@check("large-logits", order=90)
def check_large_logits(c: Checker) -> str:
    """Inputs scaled by 100 (logits ~1e4) give finite outputs: no overflow in the softmax (where the
    definition itself stays within the dtype's range)."""
    shape = (1, 2, 2, 64, 64, 64)
    out_errors, beyond = [], []
    for causal in c.modes():
        variant = c.build(shape, causal)
        q, k, v = c.inputs(shape, salt=5)
        q, k = q * 100, k * 100
        out = c.run(variant, q, k, v)
        ref = c.reference(variant, q, k, v)
        # An unnormalised form (a recurrence read with scale 1) may itself leave the dtype's range:
        # no output in that dtype can hold it, so only the representable entries are asked to be finite.
        fits = ref.abs() <= torch.finfo(c.dtype).max
        if not torch.isfinite(out[fits]).all():
            raise CheckFailed(f"NaN/inf with q, k scaled by 100 ({shape_label(shape, causal)})")
        if not fits.all():
            beyond.append(f"{fits.logical_not().float().mean().item():.0%} of the definition's entries")
            continue
        out_errors.append(c.error(out, ref))
    if beyond:
        where = f"; rel err vs definition {fmt(max(out_errors))}" if out_errors else ""
        return f"finite where representable ({', '.join(beyond)} beyond {c.dtype}'s range){where}"
    return f"finite; rel err vs definition {fmt(max(out_errors))}"


@check("vs-softmax", order=1000, applies=lambda info: not info.exact)
def report_vs_softmax(c: Checker) -> tuple[Status, str]:
    """Non-exact variants: how far the output is from exact softmax attention (reported, never failed)."""
    shape = (1, 4, 4, 1024, 1024, 32)
    parts = []
    for causal in c.modes():
        try:
            variant = c.build(shape, causal)
            q, k, v = c.inputs(shape, salt=9)
            out = c.run(variant, q, k, v)
        except Unsupported:
            continue
        exact = softmax_attention(q.double(), k.double(), v.double(), causal=causal)
        parts.append(f"{'causal' if causal else 'full'} {fmt(c.error(out, exact))}")
    return "report", f"rel err vs exact softmax at N=1024: {', '.join(parts) or 'no supported input'}"
