"""`attnbench check`: conformance checks that catch the classic attention bugs before any number is published.

Every check builds the variant from a spec, feeds it random inputs from a fixed seed and compares
it with its dense definition evaluated in float64 (softmax attention for exact variants; the masked
softmax or quadratic form a non-exact variant declares through ``reference``). Errors are relative
norms, ``||out - ref|| / ||ref||``, against the variant's tolerance for the dtype. A check passes,
fails (with what went wrong), or is skipped with the reason (a declared limit or an input the
variant raises ``Unsupported`` for). Non-exact variants also get their error against exact softmax
attention reported, never failed.

Beyond the values on ordinary shapes (``reference``), the checks cover the shapes where kernels
break: head dim 128 and more than 1024 keys (``large-shapes``), causal alignment at odd and even
offsets Nk - Nq and for a single decoding query (``causal-offsets``, which also names a mask that
is aligned top-left or excludes the diagonal); and the contract around the values: inputs left
untouched by the forward and the backward (``inputs-unchanged``) and the same output from two calls
(``deterministic``). :func:`default_dtypes` lists the dtypes a variant is checked in by default.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ...variants.contract import AttentionSpec, Unsupported, Variant, attend, per_sequence
from ...variants.exact.naive import softmax_attention
from ...variants.masks import key_mask

Status = Literal["pass", "fail", "skip", "report"]
Shape = tuple[int, int, int, int, int, int]  # (B, H, H_kv, Nq, Nk, D)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one variant and dtype."""

    check: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Case:
    """One run of a variant: the instance, its inputs, its output, its error against the definition."""

    variant: Variant
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    out: torch.Tensor
    err: float


class CheckFailed(Exception):
    """Raised inside a check with the one-line reason it failed."""


class Skipped(Exception):
    """Raised inside a check with the reason it does not apply."""


# Reference shapes: a plain one, N not a power of two, several key blocks with a ragged tail,
# one long enough for sparse patterns to leave blocks out, and fewer / more queries than keys.
REFERENCE_SHAPES: tuple[Shape, ...] = (
    (2, 4, 4, 64, 64, 32),
    (1, 2, 2, 37, 37, 16),
    (1, 3, 3, 200, 200, 64),
    (1, 2, 2, 600, 600, 32),
    (2, 2, 2, 17, 45, 16),
    (1, 2, 2, 45, 17, 32),
)


# Causal offsets Nk - Nq: 0, 1, 2 and 7 for an odd number of queries, and single-token decoding
# (Nq = 1) at Nk = 1, 2, 17, 64. Small heads: the shapes are many, the arithmetic is not the point.
OFFSET_SHAPES: tuple[Shape, ...] = tuple(
    (1, 2, 2, nq, nk, 16) for nq, nk in ((9, 9), (9, 10), (9, 11), (9, 16), (1, 1), (1, 2), (1, 17), (1, 64))
)

# Head dim 128 and N past 1024 together, one head, so that the float64 reference stays cheap
# (1100^2 doubles). On a failure the two are told apart on the smaller shapes below.
LARGE_SHAPE: Shape = (1, 1, 1, 1100, 1100, 128)
LARGE_HEAD_DIM_ONLY: Shape = (1, 1, 1, 64, 64, 128)
LONG_ONLY: Shape = (1, 1, 1, 1100, 1100, 32)

# Gradients: one square input and one grouped with Nq < Nk.
GRADIENT_SHAPES: tuple[Shape, ...] = ((1, 2, 2, 40, 40, 16), (1, 4, 2, 19, 41, 32))


def default_dtypes(cls: type[Variant], device: str) -> list[torch.dtype]:
    """The dtypes `cls` is checked in when none is asked for: those it declares that `device` runs, float64 aside."""
    # float64 is the dtype of the definition itself: checking it measures the formula against
    # itself at 1e-10 and costs the most, while the dtype bugs (overflow, a float32 output for
    # half inputs) live in the half types. It stays available through an explicit --dtype.
    # float16 is kept on CPU too: torch runs it there (slowly, but the checks' shapes are small)
    # and a variant that declares it must get it right wherever it runs.
    usable = [
        dt
        for dt in cls.info.dtypes
        if dt != torch.float64 and not (dt == torch.bfloat16 and device == "cuda" and not _cuda_has_bf16())
    ]
    # A variant that declares float64 only is still checked in something.
    return usable or list(cls.info.dtypes[:1])


def _cuda_has_bf16() -> bool:
    """Whether the visible CUDA device computes in bfloat16 (compute capability 8.0 or newer)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def _fmt(x: float) -> str:
    return f"{x:.1e}"


def allow_recompiles(config: Any, limit: int) -> None:
    """Let a compiled variant recompile `limit` times (once per checked shape; torch's default is 8), so
    the checks test the compiled kernel rather than an eager fallback. torch 2.7 renamed the setting
    from cache_size_limit to recompile_limit; torch>=2.5 is supported."""
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), limit))


class Checker:
    """Runs the conformance checks for one variant class on one device and dtype."""

    def __init__(
        self, cls: type[Variant], device: str, dtype: torch.dtype, seed: int = 0, options: dict | None = None
    ) -> None:
        self.cls = cls
        self.options = dict(options or {})
        self.info = cls.info
        self.device = torch.device(device)
        self.dtype = dtype
        self.seed = seed
        self.tol = self.info.tolerance_for(dtype)
        allow_recompiles(torch._dynamo.config, 64)

    # ----- helpers shared by the checks -----

    def modes(self) -> list[bool]:
        """The causal settings the variant declares support for."""
        return [c for c in (False, True) if (self.info.causal if c else self.info.non_causal)]

    def build(self, shape: Shape, causal: bool) -> Variant:
        _b, h, hkv, nq, nk, d = shape
        spec = AttentionSpec(
            num_heads=h,
            head_dim=d,
            num_kv_heads=hkv,
            causal=causal,
            max_seq_len=max(nq, nk, 256),
            options=self.options,
        )
        return self.cls(spec).to(self.device)

    def inputs(self, shape: Shape, salt: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random normal q, k, v in the checked dtype (drawn on CPU so every device sees the same)."""
        b, h, hkv, nq, nk, d = shape
        gen = torch.Generator().manual_seed(self.seed * 1000 + salt * 100 + sum(shape))
        q = torch.randn(b, h, nq, d, generator=gen)
        k = torch.randn(b, hkv, nk, d, generator=gen)
        v = torch.randn(b, hkv, nk, d, generator=gen)
        return tuple(t.to(self.device, self.dtype) for t in (q, k, v))

    @staticmethod
    def reference(variant: Variant, q, k, v) -> torch.Tensor:
        """The variant's dense definition on float64 copies of its (already rounded) inputs."""
        with torch.no_grad():
            return variant.reference(q.double(), k.double(), v.double())

    def run(self, variant: Variant, q, k, v) -> torch.Tensor:
        """Call the variant and check the contract of its output: shape, dtype, device."""
        with torch.no_grad():
            out = variant(q, k, v)
        self.check_output(out, q)
        return out

    def check_output(self, out: object, q: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor):
            raise CheckFailed(f"returned {type(out).__name__}, not a tensor")
        if tuple(out.shape) != tuple(q.shape):
            raise CheckFailed(f"output shape {tuple(out.shape)} != q shape {tuple(q.shape)}")
        if out.dtype != q.dtype:
            raise CheckFailed(f"output dtype {out.dtype} != input dtype {q.dtype}")
        if out.device != q.device:
            raise CheckFailed(f"output on {out.device}, inputs on {q.device}")

    @staticmethod
    def error(out: torch.Tensor, ref: torch.Tensor) -> float:
        """Relative-norm error of `out` against `ref` (absolute where `ref` is zero); inf if not finite."""
        out = out.double()
        if not torch.isfinite(out).all():
            return math.inf
        denom = ref.norm().item()
        diff = (out - ref).norm().item()
        return diff / denom if denom > 0 else diff

    def case(self, shape: Shape, causal: bool, salt: int = 0, layout: Callable | None = None) -> Case:
        """Build the variant, run it on one random input of `shape`, and measure its error."""
        variant = self.build(shape, causal)
        q, k, v = self.inputs(shape, salt)
        if layout is not None:
            q, k, v = (layout(t) for t in (q, k, v))
        out = self.run(variant, q, k, v)
        return Case(variant, (q, k, v), out, self.error(out, self.reference(variant, q, k, v)))

    def within(self, errors: dict[str, float], what: str) -> str:
        """Pass/fail over labelled errors against the tolerance."""
        if not errors:
            raise Skipped(f"no {what} input is supported")
        worst_label, worst = max(errors.items(), key=lambda kv: kv[1])
        if not worst <= self.tol:
            raise CheckFailed(f"rel err {_fmt(worst)} > tol {_fmt(self.tol)} at {worst_label}")
        return f"max rel err {_fmt(worst)} <= {_fmt(self.tol)} over {len(errors)} {what} inputs"

    def sweep(self, shapes: tuple[Shape, ...], modes: list[bool], **kw) -> dict[str, float]:
        """Errors over shapes x causal modes; inputs the variant declares unsupported are left out."""
        errors: dict[str, float] = {}
        for causal in modes:
            for shape in shapes:
                try:
                    errors[_label(shape, causal)] = self.case(shape, causal, **kw).err
                except Unsupported:
                    continue
        return errors

    # ----- the checks -----

    def results(self) -> Iterator[CheckResult]:
        """Run every check, yielding its result as it completes."""
        checks = CHECKS if self.info.exact else (*CHECKS, ("vs-softmax", report_vs_softmax))
        for name, method in checks:
            try:
                status, detail = "pass", method(self)
            except (Skipped, Unsupported) as why:
                status, detail = "skip", str(why)
            except CheckFailed as why:
                status, detail = "fail", str(why)
            except Exception as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                status, detail = "fail", f"raised {type(err).__name__}: {first}"[:300]
            if isinstance(detail, tuple):  # a check that reports instead of judging
                status, detail = detail
            yield CheckResult(name, status, detail)


def _label(shape: Shape, causal: bool) -> str:
    b, h, hkv, nq, nk, d = shape
    heads = f"H={h}" if h == hkv else f"H={h}/{hkv}"
    n = f"N={nq}" if nq == nk else f"Nq={nq},Nk={nk}"
    return f"B={b},{heads},{n},D={d}{',causal' if causal else ''}"


def check_output(c: Checker) -> str:
    """Output shape, dtype and device equal q's."""
    shape = (2, 4, 4, 33, 33, 16)
    variant = c.build(shape, causal=c.modes()[0])
    q, k, v = c.inputs(shape)
    c.run(variant, q, k, v)
    return f"{tuple(q.shape)} {str(c.dtype)[6:]} on {c.device.type}"


def check_reference(c: Checker) -> str:
    """Values equal the float64 definition over random shapes, N odd and Nq != Nk included."""
    modes = c.modes()
    errors = c.sweep(REFERENCE_SHAPES[:-1], modes)
    # Nq > Nk only non-causally: causally it leaves queries with no key (its own check below).
    errors |= c.sweep(REFERENCE_SHAPES[-1:], [m for m in modes if not m])
    if not any("Nq=" not in label for label in errors):
        raise CheckFailed("raised Unsupported for every Nq == Nk input")
    return c.within(errors, "random")


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


def check_scale(c: Checker) -> str:
    """The softmax temperature is 1/sqrt(D): a missing or wrong scale is named."""
    if not c.info.scaled:
        raise Skipped(f"definition is not softmax-scaled ({c.info.definition})")
    shape = (1, 2, 2, 48, 48, 64)
    case = c.case(shape, causal=c.modes()[0], salt=1)
    if case.err <= c.tol:
        return f"matches 1/sqrt({shape[-1]}) (rel err {_fmt(case.err)})"
    variant, (q, k, v), out = case.variant, case.qkv, case.out
    # A softmax scale s is the reference applied to q * s * sqrt(D).
    d = shape[-1]
    wrong = {"1 (no scaling)": 1.0, "1/D": 1.0 / d, "sqrt(D) (multiplied, not divided)": math.sqrt(d)}
    for label, s in wrong.items():
        if c.error(out, c.reference(variant, q * (s * math.sqrt(d)), k, v)) <= c.tol:
            raise CheckFailed(f"output matches softmax scale {label}, not 1/sqrt(D)")
    raise CheckFailed(f"rel err {_fmt(case.err)} > tol {_fmt(c.tol)} against the 1/sqrt(D) definition")


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
                f"{_label(shape, True)}: outputs of queries 0..{t} changed (rel {_fmt(change)}) "
                f"when only keys >= {future} changed: the future leaks"
            )
        checked.append(_label(shape, True))
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


def check_causal_alignment(c: Checker) -> str:
    """With Nq < Nk the queries are the last Nq positions (bottom-right), not the first."""
    if not c.info.causal:
        raise Skipped("declares no causal support")
    case = c.case((1, 2, 2, 16, 48, 16), causal=True, salt=3)
    if case.err <= c.tol:
        return f"bottom-right at Nq=16, Nk=48 (rel err {_fmt(case.err)})"
    bug = _causal_bug(c, [case])
    if bug:
        raise CheckFailed(bug)
    raise CheckFailed(f"rel err {_fmt(case.err)} > tol {_fmt(c.tol)} against bottom-right causality (Nq=16, Nk=48)")


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
        return f"bottom-right at {len(passed)} offsets, Nq=1 included (max rel err {_fmt(max(passed))})"

    def where(case: Case) -> str:
        nq, nk = case.qkv[0].shape[2], case.qkv[1].shape[2]
        return f"{nk - nq} (Nq={nq},Nk={nk})"

    offsets = ", ".join(where(case) for case in failed)
    worst = max(failed, key=lambda case: case.err)
    bug = _causal_bug(c, failed) or f"rel err {_fmt(worst.err)} > tol {_fmt(c.tol)} at offset {where(worst)}"
    raise CheckFailed(f"wrong at offset Nk-Nq = {offsets}: {bug}")


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
        raise CheckFailed(f"rows that see no key are not zero (max |out| {_fmt(head.abs().max().item())})")
    if not case.err <= c.tol:
        raise CheckFailed(f"rel err {_fmt(case.err)} > tol {_fmt(c.tol)} at Nq=40, Nk=16")
    return f"{empty} empty rows are zero; rest rel err {_fmt(case.err)}"


def check_large_logits(c: Checker) -> str:
    """Inputs scaled by 100 (logits ~1e4) give finite outputs: no overflow in the softmax."""
    shape = (1, 2, 2, 64, 64, 64)
    out_errors = []
    for causal in c.modes():
        variant = c.build(shape, causal)
        q, k, v = c.inputs(shape, salt=5)
        q, k = q * 100, k * 100
        out = c.run(variant, q, k, v)
        if not torch.isfinite(out).all():
            raise CheckFailed(f"NaN/inf with q, k scaled by 100 ({_label(shape, causal)})")
        out_errors.append(c.error(out, c.reference(variant, q, k, v)))
    return f"finite; rel err vs definition {_fmt(max(out_errors))}"


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
            ref = variant.reference(q.double(), k.double(), v.double(), lengths)
        errors[_label(shape, causal) + f",lengths={list(LENGTHS)}"] = c.error(out, ref)
    return c.within(errors, "length-masked")


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
            raise CheckFailed(f"NaN/inf in the output with padded keys ({_label(shape, causal)})")
        # Per sequence: a one-key sequence must not hide in the others' norm.
        parts = {f"the output of sequence {seq} (length {n} of {shape[4]}) changes with the padding keys' values":
                 (a[seq], b[seq]) for seq, n in enumerate(LENGTHS)}  # fmt: skip
        worst = max(worst, _largest_change(c, parts, _label(shape, causal)))
        cases += 1
    if not cases:
        raise Skipped("no padded input is supported")
    return f"no output changes with the padding (rel diff {_fmt(worst)}) at lengths {list(LENGTHS)}, {cases} cases"


def _largest_change(c: Checker, parts: dict[str, tuple[torch.Tensor, torch.Tensor]], where: str) -> float:
    """The largest rel diff between the two outputs of each part; CheckFailed naming the first beyond tolerance."""
    worst = 0.0
    for failure, (before, after) in parts.items():
        err = c.error(after, before.double())
        if not err <= c.tol:
            raise CheckFailed(f"{failure}: rel diff {_fmt(err)} > tol {_fmt(c.tol)} at {where}")
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


def check_packed(c: Checker) -> str:
    """A packed batch equals each sequence's definition computed alone, laid end to end."""
    errors = {}
    for causal, variant in _packed_variants(c):
        try:
            out, (q, k, v), cu_seqlens = _packed_case(c, variant, loud_salt=None)
        except Unsupported:
            continue
        ref = per_sequence(functools.partial(c.reference, variant), q, k, v, cu_seqlens)
        errors[_label(PACKED_SHAPE, causal) + f",packed={list(PACKED_LENGTHS)}"] = c.error(out, ref)
    return c.within(errors, "packed")


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
        parts = {f"sequence {seq} (positions {a}..{b - 1}) sees sequence {LOUD_SEQUENCE}: its output changes with "
                 f"the other's keys": (plain[..., a:b, :], loud[..., a:b, :])
                 for seq, (a, b) in spans if seq != LOUD_SEQUENCE}  # fmt: skip
        worst = max(worst, _largest_change(c, parts, _label(PACKED_SHAPE, causal)))
        cases += 1
    if not cases:
        raise Skipped("no packed input is supported")
    return f"no sequence sees another (rel diff {_fmt(worst)}) packed as {list(PACKED_LENGTHS)}, {cases} cases"


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
                out = variant(q, k, v)
        except Exception as err:
            raised.append(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
            continue
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckFailed(f"q head dim 16 with k head dim {dk} returned {got} instead of raising")
    return f"raised {raised[-1]}"


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


def check_gqa_native(c: Checker) -> str:
    """A variant that declares native GQA never builds K or V repeated to all query heads."""
    if not (c.info.gqa and c.info.gqa_native):
        raise Skipped("declares no native GQA (K/V may be repeated)")
    b, h, _hkv, _nq, nk, d = shape = (1, 8, 2, 24, 40, 16)
    variant = c.build(shape, causal=c.modes()[0])
    q, k, v = c.inputs(shape, salt=13)
    with torch.no_grad():
        try:
            with _OutputShapes() as trace:
                variant(q, k, v)
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


def check_non_contiguous(c: Checker) -> str:
    """Inputs that are transposed views of a (B, N, H, D) layout give the same values."""

    def strided(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).contiguous().transpose(1, 2)

    errors = c.sweep(((2, 4, 4, 37, 37, 16),), c.modes(), salt=7, layout=strided)
    return c.within(errors, "non-contiguous")


def _written(names: tuple[str, ...], now: tuple[torch.Tensor, ...], before: tuple[torch.Tensor, ...]) -> str | None:
    """'q (12 of 4096 elements changed)' for the first tensor that differs bitwise from its copy, else None."""
    for name, t, saved in zip(names, now, before, strict=True):
        t = t.detach()
        if not torch.equal(t, saved):
            changed = int((t != saved).sum())
            return f"{name} ({changed} of {t.numel()} elements changed)"
    return None


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
            raise CheckFailed(f"the forward wrote into its input {written} ({_label(shape, causal)})")
    if not c.info.has_backward(c.device.type):
        return f"forward leaves q, k, v unchanged (declares no backward on {c.device.type})"
    shape, causal = GRADIENT_SHAPES[0], c.modes()[0]  # as `gradients` runs it: no new backward kernel
    variant = c.build(shape, causal)
    q, k, v = (t.requires_grad_() for t in c.inputs(shape, salt=8))
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(8)).to(c.device, c.dtype)
    saved = tuple(t.detach().clone() for t in (q, k, v, grad))
    out = variant(q, k, v)
    c.check_output(out, q)
    torch.autograd.grad(out, (q, k, v), grad)
    written = _written(("q", "k", "v", "grad_out"), (q, k, v, grad), saved)
    if written:
        raise CheckFailed(f"the backward wrote into its input {written} ({_label(shape, causal)})")
    return "forward and backward leave q, k, v (and grad_out) unchanged"


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
        changes[_label(shape, causal)] = 0.0 if same else c.error(second, first.double())
    label, worst = max(changes.items(), key=lambda kv: kv[1])
    if not worst <= c.tol / 10:
        raise CheckFailed(
            f"two calls on the same input differ by rel {_fmt(worst)} > tol/10 {_fmt(c.tol / 10)} at {label}: "
            "the output is not deterministic"
        )
    if worst == 0:
        return f"bitwise equal over two calls ({len(changes)} inputs)"
    return f"two calls differ by rel {_fmt(worst)} <= tol/10 {_fmt(c.tol / 10)}"


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
            try:
                out = variant(q, k, v)
            except Unsupported:
                continue
            c.check_output(out, q)
            got = torch.autograd.grad(out, (q, k, v), grad)
            q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
            want = torch.autograd.grad(variant.reference(q64, k64, v64), (q64, k64, v64), grad.double())
            for name, g, w in zip(("dq", "dk", "dv"), got, want, strict=True):
                errors[f"{name} at {_label(shape, causal)}"] = c.error(g, w)
    return c.within(errors, "gradient")


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
        parts.append(f"{'causal' if causal else 'full'} {_fmt(c.error(out, exact))}")
    return "report", f"rel err vs exact softmax at N=1024: {', '.join(parts) or 'no supported input'}"


CHECKS: tuple[tuple[str, Callable], ...] = (
    ("output", check_output),
    ("reference", check_reference),
    ("large-shapes", check_large_shapes),
    ("scale", check_scale),
    ("causal-leakage", check_causal_leakage),
    ("causal-alignment", check_causal_alignment),
    ("causal-offsets", check_causal_offsets),
    ("fully-masked-rows", check_fully_masked_rows),
    ("large-logits", check_large_logits),
    ("key-lengths", check_key_lengths),
    ("padding", check_padding),
    ("packed", check_packed),
    ("packed-isolation", check_packed_isolation),
    ("head-dim-mismatch", check_head_dim_mismatch),
    ("gqa", check_gqa),
    ("gqa-native", check_gqa_native),
    ("non-contiguous", check_non_contiguous),
    ("inputs-unchanged", check_inputs_unchanged),
    ("deterministic", check_deterministic),
    ("gradients", check_gradients),
)
