"""Masks and causality: no leak from the future, bottom-right alignment at every offset Nk - Nq and for
a single decoding query (naming a mask aligned top-left or without its diagonal), and zeros, not NaN,
for queries that see no key."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...variants.contract import Unsupported
from ...variants.softmax import softmax_attention
from .checker import Case, Checker, CheckFailed, Shape, Skipped, fmt, shape_label
from .registry import check

# Causal offsets Nk - Nq: 0, 1, 2 and 7 for an odd number of queries, and single-token decoding
# (Nq = 1) at Nk = 1, 2, 17, 64. Small heads: the shapes are many, the arithmetic is not the point.
OFFSET_SHAPES: tuple[Shape, ...] = tuple(
    (1, 2, 2, nq, nk, 16) for nq, nk in ((9, 9), (9, 10), (9, 11), (9, 16), (1, 1), (1, 2), (1, 17), (1, 64))
)


@check("causal-leakage", order=50)
def check_causal_leakage(c: Checker) -> str:
    """Under causality, changing a future key or value never changes an earlier output."""
    if not c.info.causal:
        raise Skipped("declares no causal support")
    checked = []
    for shape in ((1, 2, 2, 48, 48, 16), (1, 2, 2, 16, 48, 16)):
        _, _, _, nq, nk, _ = shape
        try:
            variant = c.build(shape, causal=True)
            q, k, v = c.inputs(shape, salt=2)
            before = c.run(variant, q, k, v)
        except Unsupported:
            continue
        t = nq // 2  # queries 0..t see keys 0..t + (nk - nq); everything later is the future
        future = t + (nk - nq) + 1
        _, k2, v2 = c.inputs(shape, salt=12)
        k2[:, :, :future], v2[:, :, :future] = k[:, :, :future], v[:, :, :future]
        after = c.run(variant, q, k2, v2)
        change = c.error(after[:, :, : t + 1], before[:, :, : t + 1].double())
        if not change <= c.tol:
            raise CheckFailed(
                f"{shape_label(shape, True)}: outputs of queries 0..{t} changed (rel {fmt(change)}) "
                f"when only keys >= {future} changed: the future leaks"
            )
        checked.append(shape_label(shape, True))
    if not checked:
        raise Skipped("no causal input is supported")
    return f"no leak at {'; '.join(checked)}"


# Causal masks that are wrong in a known way, each with the bug it names; (Nq, Nk) -> (Nq, Nk) bool.
WRONG_CAUSAL_MASKS: dict[str, Callable[[int, int], torch.Tensor]] = {
    "causal mask is aligned top-left (torch is_causal); queries must be the last Nq keys": (
        lambda nq, nk: torch.ones(nq, nk, dtype=torch.bool).tril()
    ),
    "causal mask excludes the diagonal (query sees only strictly earlier keys)": (
        lambda nq, nk: torch.ones(nq, nk, dtype=torch.bool).tril(nk - nq - 1)
    ),
}


def _matches_mask(c: Checker, case: Case, mask: torch.Tensor) -> bool | None:
    """Whether the output equals softmax attention under `mask` on the rows that see a key; None if none does."""
    # Rows that see no key under the wrong mask are left out: the variant may give them zeros,
    # NaN or anything, and the rows that do see keys are enough to recognise the mask.
    rows = mask.any(dim=-1).to(c.device)
    if not bool(rows.any()):
        return None
    wrong = softmax_attention(*(t.double() for t in case.qkv), mask=mask.to(c.device))
    return c.error(case.out[:, :, rows], wrong[:, :, rows]) <= c.tol


def _causal_bug(c: Checker, cases: list[Case]) -> str | None:
    """The known causal bug whose mask every failed case matches (exact variants), else None."""
    if not c.info.exact:
        return None
    for bug, wrong_mask in WRONG_CAUSAL_MASKS.items():
        verdicts = [_matches_mask(c, case, wrong_mask(case.qkv[0].shape[2], case.qkv[1].shape[2])) for case in cases]
        if False not in verdicts and True in verdicts:
            return bug
    return None


@check("causal-alignment", order=60)
def check_causal_alignment(c: Checker) -> str:
    """With Nq < Nk the queries are the last Nq positions (bottom-right), not the first."""
    if not c.info.causal:
        raise Skipped("declares no causal support")
    case = c.case((1, 2, 2, 16, 48, 16), causal=True, salt=3)
    if case.err <= c.tol:
        return f"bottom-right at Nq=16, Nk=48 (rel err {fmt(case.err)})"
    bug = _causal_bug(c, [case])
    if bug:
        raise CheckFailed(bug)
    raise CheckFailed(f"rel err {fmt(case.err)} > tol {fmt(c.tol)} against bottom-right causality (Nq=16, Nk=48)")


@check("causal-offsets", order=70)
def check_causal_offsets(c: Checker) -> str:
    """Bottom-right causality holds at odd and even offsets Nk - Nq, and for a single decoding query."""
    if not c.info.causal:
        raise Skipped("declares no causal support")
    passed: list[float] = []
    failed: list[Case] = []
    for shape in OFFSET_SHAPES:
        try:
            case = c.case(shape, causal=True, salt=14)
        except Unsupported:
            continue
        if case.err <= c.tol:
            passed.append(case.err)
        else:
            failed.append(case)
    if not (passed or failed):
        raise Skipped("no causal input at these offsets is supported")
    if not failed:
        return f"bottom-right at {len(passed)} offsets, Nq=1 included (max rel err {fmt(max(passed))})"

    def where(case: Case) -> str:
        nq, nk = case.qkv[0].shape[2], case.qkv[1].shape[2]
        return f"{nk - nq} (Nq={nq},Nk={nk})"

    offsets = ", ".join(where(case) for case in failed)
    worst = max(failed, key=lambda case: case.err)
    bug = _causal_bug(c, failed) or f"rel err {fmt(worst.err)} > tol {fmt(c.tol)} at offset {where(worst)}"
    raise CheckFailed(f"wrong at offset Nk-Nq = {offsets}: {bug}")


@check("fully-masked-rows", order=80)
def check_fully_masked_rows(c: Checker) -> str:
    """Queries that see no key (causal, Nq > Nk) give zeros, not NaN."""
    if not c.info.causal:
        raise Skipped("declares no causal support")
    case = c.case((1, 2, 2, 40, 16, 16), causal=True, salt=4)
    empty = 40 - 16
    head = case.out[:, :, :empty]
    if not torch.isfinite(head).all():
        raise CheckFailed(f"NaN/inf in the {empty} query rows that see no key")
    if head.abs().max().item() != 0:
        raise CheckFailed(f"rows that see no key are not zero (max |out| {fmt(head.abs().max().item())})")
    if not case.err <= c.tol:
        raise CheckFailed(f"rel err {fmt(case.err)} > tol {fmt(c.tol)} at Nq=40, Nk=16")
    return f"{empty} empty rows are zero; rest rel err {fmt(case.err)}"
