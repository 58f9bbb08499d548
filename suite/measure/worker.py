"""Measures one point in this (fresh) process; the executors start it (executors/entry.py).

Order inside the worker: build the variant and random-normal inputs; warm up (the first call,
which includes any compilation, is timed and recorded apart as ``first_call_s``); time repeats;
measure the peak memory of one call; then, if it fits, the error against the float64 definition,
judged against the variant's tolerance. Results go down the pipe ``FD`` as JSON lines (no file is
left behind if anyone is killed). Whatever happens, the last line says what: ``ok``, or
``unsupported``, ``unavailable``, ``oom``, ``error`` with a one-line reason. A crash or hang is
recorded by the executor instead.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from typing import Any

import torch

from ...variants.contract import AttentionSpec, Unsupported, Variant, attend, per_sequence
from ...variants.gates import make_gates
from ...variants.softmax import softmax_attention
from ..core.devices import parse_dtype
from ..core.lengths import parse_lengths
from ..core.registry import load_registry
from . import failures
from .flops import attention_flops, causal_pairs
from .memory import memory_method, peak_record
from .point import Point
from .sdpa_trace import sdpa_backend
from .timing import clock_name, time_calls


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


def make_inputs(point: Point, requires_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Random normal q, k, v (never zeros), built outside any timed region, and the batch's layout:
    ``{}``, ``{"key_lengths": (B,)}`` (padded) or ``{"cu_seqlens": (S + 1,)}`` (packed)."""
    dtype = parse_dtype(point.dtype)
    gen = torch.Generator(device=point.device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=point.device, dtype=dtype).requires_grad_(requires_grad)

    lengths = sequence_lengths(point)
    batch, tokens, layout = point.batch, point.seq, {}
    if point.layout == "packed":
        batch, tokens = 1, sum(lengths)
        layout["cu_seqlens"] = torch.tensor([0, *lengths], device=point.device).cumsum(0)
    elif point.ragged:
        layout["key_lengths"] = torch.tensor(lengths, device=point.device)
    q = randn(batch, point.heads, point.q_len if not point.ragged else tokens, point.head_dim)
    k = randn(batch, point.kv_heads, tokens, point.head_dim)
    v = randn(batch, point.kv_heads, tokens, point.head_dim)
    return q, k, v, layout


def sequence_lengths(point: Point) -> list[int]:
    """The length of each of the point's B sequences."""
    return parse_lengths(point.lengths).draw(point.batch, point.seq)


def _check_output(out: object, q: torch.Tensor) -> None:
    """The variant's output has q's shape, dtype and device, or the point is an error saying which."""
    if not isinstance(out, torch.Tensor):
        raise PointFailed("error", f"the variant returned {type(out).__name__}, not a tensor")
    for what, got, want in (
        ("shape", tuple(out.shape), tuple(q.shape)),
        ("dtype", out.dtype, q.dtype),
        ("device", out.device, q.device),
    ):
        if got != want:
            raise PointFailed("error", f"output {what} {got} != q {what} {want}")


def _call_plan(variant: Variant, point: Point, q, k, v, layout: dict):
    """(setup, fn) for the mode: setup runs untimed before each timed fn(setup()).

    Every call builds its own graph (a backward never reuses a freed one), and gradients are
    returned by ``torch.autograd.grad``, never accumulated into ``.grad`` inside the timed call.
    The parameters of a variant that has some (Linformer's projections) get gradients too, as in
    training.
    """
    if point.mode == "fwd" and variant.info.recurrent and point.q_len < point.seq and not point.ragged:
        return _carried_state_plan(variant, point, q, k, v, layout.get("gates", {}))
    if point.mode == "fwd" and variant.info.evicts and not point.ragged:
        return _cut_cache_plan(variant, q, k, v, layout.get("gates", {}))
    if point.mode == "fwd":

        def forward(_: None) -> torch.Tensor:
            with torch.no_grad():
                return attend(variant, q, k, v, **layout)

        return (lambda: None), forward
    grad = torch.randn_like(q)
    wrt = (q, k, v, *(p for p in variant.parameters() if p.requires_grad))

    def backward(out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(out, wrt, grad)

    if point.mode == "bwd":
        return (lambda: attend(variant, q, k, v, **layout)), backward

    def forward_backward(_: None) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(attend(variant, q, k, v, **layout), wrt, grad)

    return (lambda: None), forward_backward


def _carried_state_plan(variant: Variant, point: Point, q, k, v, gates: dict):
    """Decoding with a recurrence: the state of the cache's tokens is made once, untimed, and each timed
    call runs the last q_len tokens from it, as a decoder does (its cost does not grow with N)."""
    prefix = point.seq - point.q_len
    b, h, _, d = q.shape
    with torch.no_grad():
        old_gates = {name: g[:, :, :prefix] for name, g in gates.items()}
        _, state = variant(
            q.new_zeros(b, h, prefix, d), k[..., :prefix, :], v[..., :prefix, :], return_state=True, **old_gates
        )
    k_new, v_new = k[..., prefix:, :], v[..., prefix:, :]
    new_gates = {name: g[:, :, prefix:] for name, g in gates.items()}

    def step(_: None) -> torch.Tensor:
        with torch.no_grad():
            return variant(q, k_new, v_new, initial_state=state, **new_gates)

    return (lambda: None), step


def _cut_cache_plan(variant: Variant, q, k, v, gates: dict):
    """Decoding with a KV-cache policy: the prompt's cache is cut once, untimed (at prefill, where the sources
    cut it), and each timed call attends over the cut cache."""
    with torch.no_grad():
        cut_k, cut_v = variant.evict(k, v, q.shape[2], gates.get("prompt_q"))

    def step(_: None) -> torch.Tensor:
        with torch.no_grad():
            return variant.attend_cache(q, cut_k, cut_v)

    return (lambda: None), step


def cache_record(variant: Variant, point: Point, dtype: torch.dtype) -> dict[str, int]:
    """A KV-cache policy's cache after the cut beside the whole cache (one layer, K and V)."""
    per_token = 2 * point.batch * point.kv_heads * point.head_dim * (torch.finfo(dtype).bits // 8)
    return {
        "kept_cache_bytes": per_token * variant.cache_tokens(point.q_len, point.seq),
        "kv_cache_bytes": per_token * point.seq,
    }


def state_record(variant: Variant, point: Point, dtype: torch.dtype) -> dict[str, int]:
    """A recurrence's state next to the K/V cache an attention layer keeps at the same N (one layer)."""
    itemsize = torch.finfo(dtype).bits // 8
    return {
        "state_bytes": variant.state_bytes(point.batch, dtype),
        "kv_cache_bytes": 2 * point.batch * point.kv_heads * point.seq * point.head_dim * itemsize,
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# About a minute of the float64 loop on a CPU core: beyond it a recurrence's point records no error.
RECURRENCE_STEPS_LIMIT = 2e10


def reference_error(variant: Variant, point: Point, q, k, v, layout: dict) -> dict[str, Any]:
    """Relative-norm error against the float64 definition, judged against the variant's tolerance
    for the dtype (and, for non-exact variants, the error against exact softmax, reported only)."""
    # The float64 definition materialises about three (B, H, Nq, Nk) float64 tensors (a packed batch:
    # (1, H, L, L) for one sequence at a time), beside float64 copies of q, k, v and the output (a long
    # K/V cache's copy can outweigh the scores).
    pairs = max(sequence_lengths(point)) ** 2 if "cu_seqlens" in layout else point.batch * point.q_len * point.seq
    # A recurrence's definition is a loop over time: no (Nq, Nk) tensor, one state per head.
    scores = 0 if variant.info.recurrent else 3 * 8 * point.heads * pairs
    need = scores + 8 * (2 * q.numel() + k.numel() + v.numel())
    if need > point.reference_max_bytes:
        if point.causal and variant.info.family in BLOCKED_FAMILIES and not point.ragged and "cu_seqlens" not in layout:
            return blocked_reference_error(variant, point, q, k, v, layout)
        return {"error_note": f"float64 reference needs ~{need / 2**30:.1f} GiB, over the limit"}
    # A recurrence's definition is a Python loop over time touching its whole state each step.
    state_steps = point.seq * point.batch * point.heads * point.head_dim**2 if variant.info.recurrent else 0
    if state_steps > RECURRENCE_STEPS_LIMIT:
        return {"error_note": f"float64 loop over time needs ~{state_steps:.1e} state updates, over the limit"}

    plain = {name: value for name, value in layout.items() if name != "gates"}

    def definition(call, q64, k64, v64, **gates):  # under the batch's layout
        if "cu_seqlens" in plain:
            return per_sequence(call, q64, k64, v64, plain["cu_seqlens"])
        return call(q64, k64, v64, **plain, **gates)

    with torch.no_grad():
        out = attend(variant, q, k, v, **layout).double()
        q64, k64, v64 = (t.detach().double() for t in (q, k, v))
        gates64 = {name: g.double() for name, g in layout.get("gates", {}).items()}
        ref = definition(variant.reference, q64, k64, v64, **gates64)
        error = ((out - ref).norm() / ref.norm()).item()
        tolerance = variant.info.tolerance_for(parse_dtype(point.dtype))
        # NaN compares false: a NaN output is not correct.
        result: dict[str, Any] = {"error": error, "tolerance": tolerance, "correct": bool(error <= tolerance)}
        if not variant.info.exact:

            def exact_softmax(q_, k_, v_, key_lengths=None):
                return softmax_attention(q_, k_, v_, causal=point.causal, key_lengths=key_lengths)

            exact = definition(exact_softmax, q64, k64, v64)
            result["error_vs_softmax"] = ((out - exact).norm() / exact.norm()).item()
    return result


# Families whose causal outputs for a block of queries are those of the sequence cut after the block's last
# query (a query depends on the keys up to its position, and on their positions, not on Nk): exact softmax,
# position patterns, and the selections, whose kept share follows the query's position (sparse/selection.py).
BLOCKED_FAMILIES = ("exact", "sparse")
BLOCKS_CHECKED = 3


def blocked_reference_error(variant: Variant, point: Point, q, k, v, layout: dict) -> dict[str, Any]:
    """The float64 definition where the whole does not fit: on three blocks of queries (the first, a middle
    one, the last), each against the keys up to its last query. The error is over the rows checked."""
    nq, nk = point.q_len, point.seq
    per_row = 3 * 8 * point.batch * point.heads * nk + 8 * (k.numel() + v.numel()) // max(nq, 1)
    rows = max(1, min(nq // BLOCKS_CHECKED, int(point.reference_max_bytes // per_row)))
    starts = sorted({0, (nq - rows) // 2, nq - rows})
    gates = layout.get("gates", {})
    kinds = {g.name: g for g in variant.info.gates}
    with torch.no_grad():
        out = attend(variant, q, k, v, **layout).double()
        got, want = [], []
        for start in starts:
            stop = start + rows
            keys = stop + nk - nq
            sliced = {
                name: (g[:, :, start:stop] if kinds[name].queries else g[:, :, :keys]).double()
                for name, g in gates.items()
            }
            q64, k64, v64 = (t.detach().double() for t in (q[:, :, start:stop], k[:, :, :keys], v[:, :, :keys]))
            want.append(variant.reference(q64, k64, v64, **sliced))
            got.append(out[:, :, start:stop])
        got_all, want_all = torch.cat(got, dim=2), torch.cat(want, dim=2)
        error = ((got_all - want_all).norm() / want_all.norm()).item()
    tolerance = variant.info.tolerance_for(parse_dtype(point.dtype))
    return {
        "error": error,
        "tolerance": tolerance,
        "correct": bool(error <= tolerance),
        "error_queries": len(starts) * rows,
        "error_note": f"float64 definition on {len(starts)} blocks of {rows} queries of {nq}",
    }


def ragged_record(point: Point, pairs) -> dict[str, Any]:
    """For a ragged or packed batch: its lengths, and the share of a padded batch's pairs that are padding."""
    lengths = sequence_lengths(point)
    real = sum(pairs(n, n) for n in lengths)
    return {
        "seq_lengths": lengths,
        "real_tokens": sum(lengths),
        "padding_waste": 1 - real / (point.batch * pairs(point.seq, point.seq)),
    }


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
    q, k, v, layout = make_inputs(point, requires_grad=point.mode != "fwd")
    if variant.info.gates:  # drawn from their laws once, untimed, as q, k, v are
        layout["gates"] = make_gates(variant.info.gates, q, k)
    setup, fn = _call_plan(variant, point, q, k, v, layout)

    t0 = time.perf_counter()
    first = fn(setup())
    _sync(point.device)
    first_call_s = time.perf_counter() - t0
    if point.mode != "fwd":  # the timed call returns gradients: the output is checked from a forward
        with torch.no_grad():
            first = attend(variant, q, k, v, **layout)
    _check_output(first, q)  # a point is never `ok` with an output the contract refuses
    for _ in range(point.warmup - 1):
        fn(setup())
    _sync(point.device)

    timing = time_calls(fn, setup, point.device, point.repeats, point.budget_s)
    memory = peak_record(fn, point.device, setup)  # after timing: see memory.py

    record: dict[str, Any] = {
        "status": "ok",
        "first_call_s": first_call_s,
        **timing.as_record(),
        **memory,
        "family": cls.info.family,
        "exact": cls.info.exact,
        "clock": clock_name(point.device),
        "memory_method": memory_method(point.device),
    }
    if cls.info.recurrent:
        record |= state_record(variant, point, parse_dtype(point.dtype))
    if cls.info.evicts:
        record |= cache_record(variant, point, parse_dtype(point.dtype))
    # FLOPs are softmax attention's count over the pairs computed: every pair for exact variants,
    # the kept pairs for sparse ones; in a ragged or packed batch, the real pairs only (so padded and
    # packed forms of one batch compare in TFLOP/s). Linear and low-rank forms do other work: no count.
    kept = getattr(variant, "kept_pairs", None)
    exact_pairs = causal_pairs if point.causal else (lambda nq, nk: nq * nk)
    if point.ragged:
        record |= ragged_record(point, exact_pairs)
    if cls.info.exact or kept is not None:
        pairs = kept or exact_pairs
        if point.ragged:
            total = sum(pairs(n, n) for n in record["seq_lengths"])
        else:
            total = point.batch * pairs(point.q_len, point.seq)
        flops = attention_flops(1, point.heads, 1, 1, point.head_dim, mode=point.mode, pairs=total)
        if kept is not None:  # the share of (query, key) pairs attended, beside the point's time
            everything = (
                sum(n * n for n in record["seq_lengths"]) if point.ragged else point.batch * point.q_len * point.seq
            )
            record["kept_fraction"] = total / everything
        # A content selection scores candidates first: 2 D FLOPs a (query, candidate) pair, forward only.
        selection = getattr(variant, "selection_pairs", None)
        if selection is not None:
            flops += 2.0 * point.batch * point.heads * point.head_dim * selection(point.q_len, point.seq)
        record |= {"flops": flops, "tflops": flops / (timing.median_ms * 1e-3) / 1e12}

    def after() -> dict[str, Any]:
        # The backend last: tracing a compiled variant can spoil torch.compile's caches for later calls.
        error = reference_error(variant, point, q, k, v, layout)
        return error | {"sdpa_backend": sdpa_backend(lambda: attend(variant, q, k, v, **layout))}

    return record, after


def send(fd: int, result: dict[str, Any]) -> None:
    """One JSON line to the executor's pipe; the last whole line it reads is the result."""
    os.write(fd, (json.dumps(result) + "\n").encode())


def run_point(point: Point, fd: int) -> dict[str, Any]:
    """measure() with every failure turned into a status and reason, sent down pipe `fd`.

    The measurement is sent before the float64 error is computed, so a reference that
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
    result["host"] = platform.node()  # the machine that measured it (a cluster run has many)
    send(fd, result)
    if error_of is not None:
        try:
            result |= error_of()
        except Exception as err:
            result["error_note"] = f"float64 reference failed: {classify(err)[1]}"
        send(fd, result)
    return result


def measure_here(data: dict[str, Any]) -> dict[str, Any]:
    """Measure one point (`Point.to_dict()`) in this process and return its result: a cluster job's body.

    The caller gives each job a fresh process (Ray's `max_calls=1`, a submitit job), as the local
    executor does. The result names the host it was measured on.
    """
    with open(os.devnull, "wb") as sink:
        return run_point(Point.from_dict(data), sink.fileno())
