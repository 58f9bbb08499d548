"""Measures one point in this (fresh) process: ``python -m attnbench.suite.worker POINT_JSON RESULT_PATH``.

Order inside the worker: build the variant and random-normal inputs; warm up (the first call,
which includes any compilation, is timed and recorded apart as ``first_call_s``); time repeats;
measure the peak memory of one call; then, if it fits, the error against the float64 definition.
Whatever happens, the result file says what: ``ok``, or ``unsupported``, ``unavailable``, ``oom``,
``error`` with a one-line reason. A crash or hang is recorded by the executor instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
from typing import Any

import torch

from attnbench.suite import failures
from attnbench.suite.devices import parse_dtype
from attnbench.suite.flops import attention_flops
from attnbench.suite.memory import peak_bytes
from attnbench.suite.points import Point
from attnbench.suite.registry import load_registry
from attnbench.suite.timing import time_calls
from attnbench.variants.contract import AttentionSpec, Unsupported, Variant


class PointFailed(Exception):
    """Ends a point early with a status and a reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def classify(err: BaseException) -> tuple[str, str]:
    """Status and one-line reason for an exception raised while measuring."""
    if isinstance(err, PointFailed):
        return err.status, str(err)
    return failures.classify(err)


def make_inputs(point: Point, requires_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random normal q, k, v (never zeros), built outside any timed region."""
    dtype = parse_dtype(point.dtype)
    gen = torch.Generator(device=point.device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=point.device, dtype=dtype).requires_grad_(requires_grad)

    q = randn(point.batch, point.heads, point.q_len, point.head_dim)
    k = randn(point.batch, point.kv_heads, point.seq, point.head_dim)
    v = randn(point.batch, point.kv_heads, point.seq, point.head_dim)
    return q, k, v


def _call_plan(variant: Variant, point: Point, q, k, v):
    """(setup, fn) for the mode: setup runs untimed before each timed fn(setup())."""
    if point.mode == "fwd":

        def forward(_: None) -> torch.Tensor:
            with torch.no_grad():
                return variant(q, k, v)

        return (lambda: None), forward
    grad = torch.randn_like(q)

    def backward(out: torch.Tensor) -> None:
        out.backward(grad)

    if point.mode == "bwd":
        return (lambda: variant(q, k, v)), backward

    def forward_backward(_: None) -> None:
        variant(q, k, v).backward(grad)

    return (lambda: None), forward_backward


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reference_error(variant: Variant, point: Point, q, k, v) -> dict[str, Any]:
    """Relative-norm error against the float64 definition (and exact softmax, for non-exact ones)."""
    from attnbench.variants.exact.naive import softmax_attention

    # The float64 definition materialises about three (B, H, Nq, Nk) float64 tensors.
    need = 3 * 8 * point.batch * point.heads * point.q_len * point.seq
    if need > point.reference_max_bytes:
        return {"error_note": f"float64 reference needs ~{need / 2**30:.1f} GiB, over the limit"}
    with torch.no_grad():
        out = variant(q, k, v).double()
        q64, k64, v64 = (t.detach().double() for t in (q, k, v))
        ref = variant.reference(q64, k64, v64)
        result: dict[str, Any] = {"error": ((out - ref).norm() / ref.norm()).item()}
        if not variant.info.exact:
            exact = softmax_attention(q64, k64, v64, causal=point.causal)
            result["error_vs_softmax"] = ((out - exact).norm() / exact.norm()).item()
    return result


def measure(point: Point) -> tuple[dict[str, Any], Any]:
    """Time, memory and FLOPs of `point` (raises on failure), and a closure for its error."""
    dtype = parse_dtype(point.dtype)
    registry = load_registry(point.plugins)
    reason = registry.unavailable_reason(point.variant, point.device, dtype)
    if reason is not None:
        raise PointFailed("unavailable", reason)
    cls = registry.get(point.variant)
    if point.mode != "fwd" and not cls.info.has_backward(point.device):
        raise PointFailed("unsupported", f"{point.variant} declares no backward on {point.device}")
    spec = AttentionSpec(
        num_heads=point.heads,
        head_dim=point.head_dim,
        num_kv_heads=point.kv_heads,
        causal=point.causal,
        max_seq_len=max(point.seq, point.q_len),
        options=point.options,
    )
    try:
        variant = cls(spec).to(point.device)
    except ValueError as err:
        if isinstance(err, Unsupported):
            raise
        raise PointFailed("error", f"cannot build {point.variant}: {err}") from None
    q, k, v = make_inputs(point, requires_grad=point.mode != "fwd")
    setup, fn = _call_plan(variant, point, q, k, v)

    t0 = time.perf_counter()
    fn(setup())
    _sync(point.device)
    first_call_s = time.perf_counter() - t0
    for _ in range(point.warmup - 1):
        fn(setup())
    _sync(point.device)

    timing = time_calls(fn, setup, point.device, point.repeats, point.budget_s)
    memory = peak_bytes(functools.partial(fn, setup()), point.device)  # after timing: see memory.py

    record: dict[str, Any] = {
        "status": "ok",
        "first_call_s": first_call_s,
        **timing.as_record(),
        "peak_bytes": memory,
        "family": cls.info.family,
        "exact": cls.info.exact,
    }
    # FLOPs are softmax attention's count over the pairs computed: every pair for exact variants,
    # the kept pairs for sparse ones. Linear and low-rank forms do other work; no count is given.
    pairs_fn = getattr(variant, "kept_pairs", None)
    if cls.info.exact or pairs_fn is not None:
        flops = attention_flops(
            point.batch, point.heads, point.q_len, point.seq, point.head_dim,
            causal=point.causal, mode=point.mode, pairs=pairs_fn(point.q_len, point.seq) if pairs_fn else None,
        )  # fmt: skip
        record |= {"flops": flops, "tflops": flops / (timing.median_ms * 1e-3) / 1e12}
    return record, lambda: reference_error(variant, point, q, k, v)


def _write(path: str, result: dict[str, Any]) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


def run_point(point: Point, path: str) -> dict[str, Any]:
    """measure() with every failure turned into a status and reason, written to `path`.

    The measurement is written before the float64 error is computed, so a reference that
    exhausts memory costs only the error, not the point.
    """
    if point.threads is not None:
        torch.set_num_threads(point.threads)
    torch.manual_seed(0)
    try:
        result, error_of = measure(point)
    except Exception as err:
        status, reason = classify(err)
        result, error_of = {"status": status, "reason": reason}, None
        if status == "error" and os.environ.get("ATTNBENCH_DEBUG"):
            traceback.print_exc()
    result["threads"] = torch.get_num_threads()
    _write(path, result)
    if error_of is not None:
        try:
            result |= error_of()
        except Exception as err:
            result["error_note"] = f"float64 reference failed: {classify(err)[1]}"
        _write(path, result)
    return result


def calibrate(device: str, dtype: torch.dtype, threads: int | None) -> float:
    """Measured dense matmul throughput (TFLOP/s) of this device for `dtype`: the run's peak line."""
    if threads is not None:
        torch.set_num_threads(threads)
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = time_calls(lambda _: a @ b, lambda: None, device, repeats=10, budget_s=5.0)
    return 2 * n**3 / (timing.median_ms * 1e-3) / 1e12


def main(argv: list[str]) -> int:
    """Entry point of a worker process."""
    if argv[:1] == ["--calibrate"]:
        _, device, dtype, threads, path = argv
        value = calibrate(device, parse_dtype(dtype), int(threads) if threads != "none" else None)
        with open(path, "w") as f:
            json.dump({"tflops": value}, f)
        return 0
    run_point(Point.from_dict(json.loads(argv[0])), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
