"""What a bench run will do before it does it: availability, predicted memory, wall time, and order.

`attnbench bench --dry-run` prints a plan: the points, the variants that run here and why the
others do not, the points predicted to run out of memory, and the expected wall time. With
`--budget-minutes` the sweep runs the most informative points first (`informative_order`) and
skips, recording them, those whose estimate no longer fits.

Both predictions are analytic and say so; neither runs a kernel.
- Peak memory of the measured call: the inputs, output and gradients (measure/roofline.py's
  bytes), plus the (B, H, Nq, Nk) score tensors a variant declares it holds (`score_buffers`, in
  float32 for half inputs: their accumulate dtype), doubled with a backward that keeps them, and a
  float32 copy of K and V for half inputs where a variant declares one (`upcasts_kv`). The
  float64 reference is not counted: it runs after the point is recorded, under its own limit.
- Wall time per point: a fresh worker's start, a compile for variants that declare one, and the
  calls made (warm-up, timed ones up to the time budget, memory, backend probe) at the point's
  softmax FLOPs over half the matmul peak or its bytes over half the bandwidth (whichever is
  longer: decoding shapes are bandwidth-bound), plus the float64 reference; cut at the timeout. The
  constants are this suite's own, read from the committed CPU run's record times.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.config import BenchConfig
from ..core.devices import default_device, parse_dtype
from ..core.env import cpu_model
from ..core.errors import UserError
from ..core.registry import Registry
from ..measure.ceilings import BANDWIDTH, calibrate
from ..measure.flops import attention_flops
from ..measure.memory import CPU_CALLS
from ..measure.point import Point
from ..measure.roofline import dtype_bytes, point_bytes
from ..measure.timing import MIN_CALLS
from .folders import default_run_folder
from .points import expand
from .records import RECORDS, read_records

# Seconds before a worker measures anything (interpreter, torch import, CUDA context and the L2 flush
# buffer), and for a first call that compiles (the inductor cache is warm after the first point).
# CPU: read from the committed CPU run; CUDA: assumed until a GPU run's records (`wall_s`) give them.
STARTUP_S = {"cpu": 2.5, "cuda": 5.0}
COMPILE_S = {"cpu": 7.0, "cuda": 12.0}
EFFICIENCY = 0.5  # attention reaches about half the dense matmul peak
# Planning for a GPU on a machine without one: an H100 SXM class device.
ASSUMED_GPU = {
    "name": "an assumed H100-class GPU",
    "memory": 80 * 2**30,
    "bandwidth_gbs": 3000.0,
    "tflops": {"bfloat16": 700.0, "float16": 700.0, "float32": 50.0, "float64": 50.0},
}
FP64_SLOWDOWN = {"cpu": 2.0, "cuda": 15.0}  # the float64 reference against the point's own dtype


@dataclass(frozen=True)
class Device:
    """What the plan is made against: a name, usable memory in bytes, and matmul TFLOP/s per dtype."""

    kind: str
    name: str
    memory: int
    tflops: dict[str, float]
    bandwidth_gbs: float
    here: bool  # False when planning for a device this machine does not have


def _available_memory() -> int:
    """MemAvailable of /proc/meminfo (bytes), or 0 where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def target_device(kind: str, dtypes: set[str]) -> Device:
    """The device the points run on: measured here, or assumed when this machine has none of that kind."""
    if kind == "cuda" and not torch.cuda.is_available():
        tflops = {d: ASSUMED_GPU["tflops"].get(d, 50.0) for d in dtypes}
        return Device(
            "cuda", ASSUMED_GPU["name"], ASSUMED_GPU["memory"], tflops, ASSUMED_GPU["bandwidth_gbs"], here=False
        )
    # The run's own calibrations (measure/ceilings.py), measured here in this process.
    tflops = {d: calibrate(kind, d, None) for d in dtypes}
    if kind == "cuda":
        name, memory = torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory
    else:
        name, memory = cpu_model(), _available_memory()
    return Device(kind, name, memory, tflops, calibrate(kind, BANDWIDTH, None), here=True)


def device_from_env(env: dict) -> Device:
    """The run's device as its env.json measured it (the workers' calibrations), for a budget's estimates:
    the sweep's own process never touches the GPU."""
    kind = env.get("device", "cpu")
    memory = env.get("memory_bytes") or _available_memory()
    tflops = {d: t for d, t in (env.get("matmul_tflops") or {}).items() if t}
    bandwidth = env.get("bandwidth_gbs") or (ASSUMED_GPU["bandwidth_gbs"] if kind == "cuda" else 10.0)
    return Device(kind, env.get("device_name", kind), memory, tflops, bandwidth, here=True)


def predicted_peak_bytes(point: Point, score_buffers: int, upcasts_kv: bool = False) -> int:
    """Analytic peak bytes of one measured call of `point` (module docstring)."""
    element = dtype_bytes(point.dtype)
    pairs = point.batch * point.heads * point.q_len * point.seq
    scores = score_buffers * pairs * max(element, 4) * (2 if point.mode != "fwd" else 1)
    kv_float32 = 2 * point.batch * point.kv_heads * point.seq * point.head_dim * 4
    return point_bytes(point.to_dict()) + scores + (kv_float32 if upcasts_kv and element < 4 else 0)


def softmax_flops(point: Point) -> float:
    """The point's softmax-attention FLOPs (every pair, or the causal ones): the work estimate for any variant."""
    return attention_flops(
        point.batch, point.heads, point.q_len, point.seq, point.head_dim, causal=point.causal, mode=point.mode
    )


def estimate_seconds(point: Point, device: Device, compiles: bool, runs: bool = True) -> float:
    """Wall seconds one point takes (module docstring); `runs` False: it ends at its availability check."""
    startup = STARTUP_S[device.kind]
    if not runs:
        return startup
    call = max(
        softmax_flops(point) / (EFFICIENCY * device.tflops.get(point.dtype, 1.0) * 1e12),
        point_bytes(point.to_dict()) / (EFFICIENCY * device.bandwidth_gbs * 1e9),
    )
    timed = max(MIN_CALLS, min(point.repeats, int(point.budget_s / call) if call > 0 else point.repeats))
    memory_calls = CPU_CALLS if device.kind == "cpu" else 1
    calls = point.warmup + timed + memory_calls + 2  # + the output check and the backend probe
    reference = (
        call * FP64_SLOWDOWN[device.kind]
        if 24 * point.batch * point.heads * point.q_len * point.seq <= (point.reference_max_bytes)
        else 0.0
    )
    total = startup + (COMPILE_S[device.kind] if compiles else 0.0) + calls * call + reference
    return min(total, point.timeout_s + startup)


@dataclass(frozen=True)
class PlannedPoint:
    point: Point
    unavailable: str | None
    peak_bytes: int
    seconds: float


def plan_points(points: list[Point], registry: Registry, device: Device, probe: bool = True) -> list[PlannedPoint]:
    """Each point with its availability here, predicted peak bytes and estimated seconds. `probe` False: no
    availability check (it may touch the GPU, and a sweep's own process must not); every point counts as
    one that runs."""
    planned = []
    reasons: dict[tuple[str, str], str | None] = {}
    for p in points:
        key = (p.variant, p.dtype)
        if key not in reasons:
            reasons[key] = registry.unavailable_reason(p.variant, p.device, parse_dtype(p.dtype)) if probe else None
        info = registry.get(p.variant).info if reasons[key] is None or device.here is False else None
        peak = predicted_peak_bytes(p, info.score_buffers, info.upcasts_kv) if info else predicted_peak_bytes(p, 0)
        # Planning for a device not here: every point is estimated as if it runs there.
        runs = reasons[key] is None or not device.here
        compiles = bool(info and info.compiles)
        planned.append(PlannedPoint(p, reasons[key], peak, estimate_seconds(p, device, compiles, runs)))
    return planned


def dry_run(
    cfg: BenchConfig, registry: Registry, device: str, plugins: tuple[str, ...], out: Path | None
) -> tuple[list[PlannedPoint], Device, set[str]]:
    """The plan of a bench run, measuring nothing: its points with availability, predicted peak and
    seconds; the device they run on; and the keys already recorded in the run folder (a rerun skips them)."""
    kind = default_device() if device == "auto" else device.lower()
    if kind not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r} (cpu or cuda)")
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a run folder")
    points = expand(cfg, kind, plugins)
    target = target_device(kind, {p.dtype for p in points})
    keys: set[str] = set()
    if target.here:  # a run folder is named for a device this machine has
        run_dir = out or default_run_folder(cfg.name, kind)
        if (run_dir / RECORDS).is_file():
            keys = {r.get("key") for r in read_records(run_dir)}
    return plan_points(points, registry, target), target, keys


def _spread(values: list[int]) -> list[int]:
    """Sequence lengths most informative first: the middle (a reference shape), the ends (the growth),
    then the midpoints of the widest gaps left."""
    values = sorted(values)
    if len(values) <= 2:
        return values[::-1]
    order = [len(values) // 2, len(values) - 1, 0]
    while len(order) < len(values):
        taken = sorted(order)
        gaps = [(b - a, (a + b) // 2) for a, b in itertools.pairwise(taken) if b - a > 1]
        order.append(max(gaps)[1])
    return [values[i] for i in order]


def informative_order(points: list[Point]) -> list[Point]:
    """The points, round-robin over series (everything but N the same), each series' N in `_spread` order:
    a cut anywhere leaves every variant measured at a comparable shape before any gets its full curve."""
    series: dict[tuple, list[Point]] = {}
    for p in points:
        queries = "N" if p.q_len == p.seq else p.q_len  # Nq = N, or one fixed Nq (decoding)
        key = (
            p.variant,
            p.mode,
            p.dtype,
            p.causal,
            p.batch,
            p.heads,
            p.kv_heads,
            p.head_dim,
            queries,
            p.lengths,
            p.layout,
            tuple(sorted(p.options.items(), key=str)),
        )
        series.setdefault(key, []).append(p)
    queues: list[Iterator[Point]] = []
    for members in series.values():
        by_seq = {p.seq: p for p in members}
        ordered = [by_seq[n] for n in _spread(list(by_seq))]
        extra = [p for p in members if p not in ordered]  # several q_len at one N: after the spread
        queues.append(iter(ordered + extra))
    out: list[Point] = []
    while queues:
        for queue in list(queues):
            nxt = next(queue, None)
            if nxt is None:
                queues.remove(queue)
            else:
                out.append(nxt)
    return out


class Budget:
    """Which points still fit a sweep's time budget. A point fits when its estimate, scaled by how the run's
    points so far compared with theirs (wall over estimated seconds), is within what is left. A point that
    started is never stopped, so a sweep can pass its budget by about one point."""

    def __init__(self, estimates: dict[str, float], budget_s: float, started: float) -> None:
        self.estimates, self.budget_s, self.started = estimates, budget_s, started
        self.estimated = self.measured = 0.0

    def fits(self, point: Point) -> bool:
        scale = self.measured / self.estimated if self.estimated else 1.0
        return time.perf_counter() - self.started + self.estimates[point.key()] * scale <= self.budget_s

    def record(self, point: Point, wall_s: float) -> None:
        """A point ended after `wall_s` seconds: later estimates are scaled by what the run has shown."""
        self.estimated += self.estimates[point.key()]
        self.measured += wall_s
