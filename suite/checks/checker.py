"""The conformance checker: a variant class on one device and dtype, and what its checks share.

Every check builds the variant from a spec, feeds it random inputs from a fixed seed and compares
it with its dense definition evaluated in float64 (softmax attention for exact variants; the masked
softmax or quadratic form a non-exact variant declares through ``reference``). Errors are relative
norms, ``||out - ref|| / ||ref||``, against the variant's tolerance for the dtype. A check passes,
fails (with what went wrong), or is skipped with the reason (a declared limit or an input the
variant raises ``Unsupported`` for). The checks themselves live in the modules beside this one,
grouped by what they check, and are found through registry.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...variants.contract import AttentionSpec, Unsupported, Variant, attend, reference
from ..core.errors import one_line
from .registry import checks_for

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


def fmt(x: float) -> str:
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
        """The variant's dense definition on float64 copies of its (already rounded) inputs (and its gates)."""
        with torch.no_grad():
            return reference(variant, q, k, v)

    def run(self, variant: Variant, q, k, v) -> torch.Tensor:
        """Call the variant and check the contract of its output: shape, dtype, device."""
        with torch.no_grad():
            out = attend(variant, q, k, v)
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
            raise CheckFailed(f"rel err {fmt(worst)} > tol {fmt(self.tol)} at {worst_label}")
        return f"max rel err {fmt(worst)} <= {fmt(self.tol)} over {len(errors)} {what} inputs"

    def sweep(self, shapes: tuple[Shape, ...], modes: list[bool], **kw) -> dict[str, float]:
        """Errors over shapes x causal modes; inputs the variant declares unsupported are left out."""
        errors: dict[str, float] = {}
        for causal in modes:
            for shape in shapes:
                try:
                    errors[shape_label(shape, causal)] = self.case(shape, causal, **kw).err
                except Unsupported:
                    continue
        return errors

    # ----- the checks -----

    def results(self, starting: Callable[[str], None] | None = None) -> Iterator[CheckResult]:
        """Run every check, yielding its result as it completes (calling `starting` with its name first)."""
        for registered in checks_for(self.info):
            if starting is not None:
                starting(registered.name)
            try:
                status, detail = "pass", registered.run(self)
            except (Skipped, Unsupported) as why:
                status, detail = "skip", str(why)
            except CheckFailed as why:
                status, detail = "fail", str(why)
            except Exception as err:
                status, detail = "fail", f"raised {one_line(err, 293)}"
            if isinstance(detail, tuple):  # a check that reports instead of judging
                status, detail = detail
            yield CheckResult(registered.name, status, detail)


def shape_label(shape: Shape, causal: bool) -> str:
    """'B=1,H=8/2,Nq=24,Nk=40,D=16,causal': a checked input, as failures name it."""
    b, h, hkv, nq, nk, d = shape
    heads = f"H={h}" if h == hkv else f"H={h}/{hkv}"
    n = f"N={nq}" if nq == nk else f"Nq={nq},Nk={nk}"
    return f"B={b},{heads},{n},D={d}{',causal' if causal else ''}"
