"""`attnbench check`: conformance checks that catch the classic attention bugs before any number is published.

Every check builds the variant from a spec, feeds it random inputs from a fixed seed and compares
it with its dense definition evaluated in float64 (softmax attention for exact variants; the masked
softmax or quadratic form a non-exact variant declares through ``reference``). Errors are relative
norms, ``||out - ref|| / ||ref||``, against the variant's tolerance for the dtype. A check passes,
fails (with what went wrong), or is skipped with the reason (a declared limit or an input the
variant raises ``Unsupported`` for). Non-exact variants also get their error against exact softmax
attention reported, never failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnbench.variants.contract import AttentionSpec, Unsupported, Variant
from attnbench.variants.exact.naive import softmax_attention

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


def _fmt(x: float) -> str:
    return f"{x:.1e}"


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
        # Compiled variants recompile once per checked shape; allow more than torch's default 8
        # so that the checks test the compiled kernel rather than an eager fallback.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)

    # ----- helpers shared by the checks -----

    def modes(self) -> list[bool]:
        """The causal settings the variant declares support for."""
        return [c for c in (False, True) if (self.info.causal if c else self.info.non_causal)]

    def build(self, shape: Shape, causal: bool) -> Variant:
        _b, h, hkv, nq, nk, d = shape
        spec = AttentionSpec(num_heads=h, head_dim=d, num_kv_heads=hkv, causal=causal, max_seq_len=max(nq, nk, 256))
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


def check_causal_alignment(c: Checker) -> str:
    """With Nq < Nk the queries are the last Nq positions (bottom-right), not the first."""
    if not c.info.causal:
        raise Skipped("declares no causal support")
    case = c.case((1, 2, 2, 16, 48, 16), causal=True, salt=3)
    if case.err <= c.tol:
        return f"bottom-right at Nq=16, Nk=48 (rel err {_fmt(case.err)})"
    top_left = torch.ones(16, 48, dtype=torch.bool, device=c.device).tril()
    if c.info.exact:
        wrong = softmax_attention(*(t.double() for t in case.qkv), mask=top_left)
        if c.error(case.out, wrong) <= c.tol:
            raise CheckFailed("causal mask is aligned top-left (torch is_causal); queries must be the last Nq keys")
    raise CheckFailed(f"rel err {_fmt(case.err)} > tol {_fmt(c.tol)} against bottom-right causality (Nq=16, Nk=48)")


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
    """Records the shape of every tensor each aten op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
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


def check_gradients(c: Checker) -> str:
    """dq, dk, dv equal the float64 definition's gradients (for variants that declare backward)."""
    if not c.info.has_backward(c.device.type):
        raise Skipped(f"declares no backward on {c.device.type}")
    errors: dict[str, float] = {}
    for causal in c.modes():
        for shape in ((1, 2, 2, 40, 40, 16), (1, 4, 2, 19, 41, 32)):
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
    ("scale", check_scale),
    ("causal-leakage", check_causal_leakage),
    ("causal-alignment", check_causal_alignment),
    ("fully-masked-rows", check_fully_masked_rows),
    ("large-logits", check_large_logits),
    ("head-dim-mismatch", check_head_dim_mismatch),
    ("gqa", check_gqa),
    ("gqa-native", check_gqa_native),
    ("non-contiguous", check_non_contiguous),
    ("gradients", check_gradients),
)
