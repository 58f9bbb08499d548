"""The run's ceilings on its device, measured once per run: the dense matmul peak per dtype and the
memory bandwidth. Every point's TFLOP/s and bytes are placed against them (roofline.py)."""

from __future__ import annotations

import torch

from ..core.devices import parse_dtype
from .timing import time_calls

# What a run measures once: "bandwidth" (GB/s), or a dtype's matmul peak (TFLOP/s).
BANDWIDTH = "bandwidth"


def calibrate(device: str, what: str, threads: int | None) -> float:
    """One of the run's ceilings on this device: the dense matmul throughput (TFLOP/s) of dtype `what`, or
    the memory bandwidth (GB/s) when `what` is "bandwidth"."""
    if threads is not None:
        torch.set_num_threads(threads)
    if what == BANDWIDTH:
        return bandwidth(device)
    dtype = parse_dtype(what)
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = time_calls(lambda _: a @ b, lambda: None, device, repeats=10, budget_s=5.0)
    return 2 * n**3 / (timing.median_ms * 1e-3) / 1e12


def bandwidth(device: str) -> float:
    """Memory bandwidth in GB/s: a copy between two buffers far larger than any cache (1 GiB on a GPU,
    256 MiB on a CPU), counting the bytes read and the bytes written."""
    size = 2**30 if device == "cuda" else 2**28
    src = torch.ones(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    timing = time_calls(lambda _: dst.copy_(src), lambda: None, device, repeats=10, budget_s=5.0)
    return 2 * size / (timing.median_ms * 1e-3) / 1e9


def calibrate_here(device: str, what: str, threads: int | None) -> float:
    """`calibrate` in this process: a cluster job's body."""
    return calibrate(device, what, threads)
