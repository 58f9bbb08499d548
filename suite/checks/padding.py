"""Padding and packing: per-sequence key lengths equal the definition and padding keys reach no query;
a packed batch equals each sequence alone and no sequence sees another."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import torch

from ...variants.contract import Unsupported, Variant, attend, per_sequence, reference
from ...variants.masks import key_mask
from .checker import Checker, CheckFailed, Shape, Skipped, fmt, shape_label
from .registry import check

# B=3 sequences padded to 45 keys, GQA: self-attention (Nq = Nk) and decoding (7 queries after 45 keys).
LENGTHS_SHAPES = ((3, 4, 2, 45, 45, 16), (3, 4, 2, 7, 45, 16))
LENGTHS = (45, 29, 1)


def _lengths_case(c: Checker, variant: Variant, shape: Shape, pad_salt: int) -> tuple:
    """(out, the inputs, key_lengths) with padding keys and values drawn from `pad_salt`, loud (x30)."""
    q, k, v = c.inputs(shape, salt=6)
    _, pad_k, pad_v = c.inputs(shape, salt=pad_salt)
    lengths = torch.tensor(LENGTHS, device=c.device)
    real = key_mask(lengths, shape[4])[:, None, :, None]
    k, v = torch.where(real, k, pad_k * 30), torch.where(real, v, pad_v * 30)
    with torch.no_grad():
        out = attend(variant, q, k, v, lengths)
    c.check_output(out, q)
    return out, (q, k, v), lengths


def _lengths_cases(c: Checker) -> Iterator[tuple[Shape, bool, Variant]]:
    if not c.info.lengths:
        raise Skipped("declares no key lengths (such inputs are refused)")
    for causal in c.modes():
        for shape in LENGTHS_SHAPES:
            yield shape, causal, c.build(shape, causal)  # one build per case: its own parameters stay put


@check("key-lengths", order=100)
def check_key_lengths(c: Checker) -> str:
    """With per-sequence key lengths, values equal the definition under the same lengths (every row:
    by definition no query of a sequence sees the keys past its length)."""
    errors = {}
    for shape, causal, variant in _lengths_cases(c):
        try:
            out, (q, k, v), lengths = _lengths_case(c, variant, shape, pad_salt=7)
        except Unsupported:
            continue
        with torch.no_grad():
            ref = reference(variant, q, k, v, lengths)
        errors[shape_label(shape, causal) + f",lengths={list(LENGTHS)}"] = c.error(out, ref)
    return c.within(errors, "length-masked")


@check("padding", order=110)
def check_padding(c: Checker) -> str:
    """Padding keys reach no query: other values in them leave every output row as it was."""
    worst, cases = 0.0, 0
    for shape, causal, variant in _lengths_cases(c):
        try:
            a, _, _ = _lengths_case(c, variant, shape, pad_salt=7)
            b, _, _ = _lengths_case(c, variant, shape, pad_salt=8)
        except Unsupported:
            continue
        if not torch.isfinite(a).all() or not torch.isfinite(b).all():
            raise CheckFailed(f"NaN/inf in the output with padded keys ({shape_label(shape, causal)})")
        # Per sequence: a one-key sequence must not hide in the others' norm.
        parts = {
            f"the output of sequence {seq} (length {n} of {shape[4]}) changes with the padding keys' values": (
                a[seq],
                b[seq],
            )
            for seq, n in enumerate(LENGTHS)
        }
        worst = max(worst, _largest_change(c, parts, shape_label(shape, causal)))
        cases += 1
    if not cases:
        raise Skipped("no padded input is supported")
    return f"no output changes with the padding (rel diff {fmt(worst)}) at lengths {list(LENGTHS)}, {cases} cases"


def _largest_change(c: Checker, parts: dict[str, tuple[torch.Tensor, torch.Tensor]], where: str) -> float:
    """The largest rel diff between the two outputs of each part; CheckFailed naming the first beyond tolerance."""
    worst = 0.0
    for failure, (before, after) in parts.items():
        err = c.error(after, before.double())
        if not err <= c.tol:
            raise CheckFailed(f"{failure}: rel diff {fmt(err)} > tol {fmt(c.tol)} at {where}")
        worst = max(worst, err)
    return worst


# A packed batch: four sequences end to end (one a single token), GQA, long enough that key blocks
# (chunked's default 128, FlexAttention's 128) hold several sequences and a sequence several blocks.
PACKED_LENGTHS = (70, 1, 150, 39)
PACKED_SHAPE: Shape = (1, 4, 2, sum(PACKED_LENGTHS), sum(PACKED_LENGTHS), 16)
LOUD_SEQUENCE = 2  # the sequence whose keys and values the isolation check replaces


def _packed_case(c: Checker, variant: Variant, loud_salt: int | None) -> tuple:
    """(out, the inputs, cu_seqlens); with `loud_salt`, sequence LOUD_SEQUENCE's k, v redrawn loud (x30)."""
    q, k, v = c.inputs(PACKED_SHAPE, salt=11)
    cu_seqlens = torch.tensor((0, *PACKED_LENGTHS), device=c.device).cumsum(0)
    if loud_salt is not None:
        _, loud_k, loud_v = c.inputs(PACKED_SHAPE, salt=loud_salt)
        a, b = cu_seqlens[LOUD_SEQUENCE].item(), cu_seqlens[LOUD_SEQUENCE + 1].item()
        k, v = k.clone(), v.clone()
        k[..., a:b, :], v[..., a:b, :] = loud_k[..., a:b, :] * 30, loud_v[..., a:b, :] * 30
    with torch.no_grad():
        out = attend(variant, q, k, v, cu_seqlens=cu_seqlens)
    c.check_output(out, q)
    return out, (q, k, v), cu_seqlens


def _packed_variants(c: Checker) -> Iterator[tuple[bool, Variant]]:
    if not c.info.packed:
        raise Skipped("declares no packed sequences (such inputs are refused)")
    for causal in c.modes():
        yield causal, c.build(PACKED_SHAPE, causal)


@check("packed", order=120)
def check_packed(c: Checker) -> str:
    """A packed batch equals each sequence's definition computed alone, laid end to end."""
    errors = {}
    for causal, variant in _packed_variants(c):
        try:
            out, (q, k, v), cu_seqlens = _packed_case(c, variant, loud_salt=None)
        except Unsupported:
            continue
        ref = per_sequence(functools.partial(c.reference, variant), q, k, v, cu_seqlens)
        errors[shape_label(PACKED_SHAPE, causal) + f",packed={list(PACKED_LENGTHS)}"] = c.error(out, ref)
    return c.within(errors, "packed")


@check("packed-isolation", order=130)
def check_packed_isolation(c: Checker) -> str:
    """Packed sequences do not see each other: other keys and values in one leave every other's rows as they were."""
    worst, cases = 0.0, 0
    for causal, variant in _packed_variants(c):
        try:
            plain, _, cu_seqlens = _packed_case(c, variant, loud_salt=None)
            loud, _, _ = _packed_case(c, variant, loud_salt=12)
        except Unsupported:
            continue
        spans = enumerate(itertools.pairwise(cu_seqlens.tolist()))
        parts = {
            f"sequence {seq} (positions {a}..{b - 1}) sees sequence {LOUD_SEQUENCE}: its output changes with "
            f"the other's keys": (plain[..., a:b, :], loud[..., a:b, :])
            for seq, (a, b) in spans
            if seq != LOUD_SEQUENCE
        }
        worst = max(worst, _largest_change(c, parts, shape_label(PACKED_SHAPE, causal)))
        cases += 1
    if not cases:
        raise Skipped("no packed input is supported")
    return f"no sequence sees another (rel diff {fmt(worst)}) packed as {list(PACKED_LENGTHS)}, {cases} cases"
