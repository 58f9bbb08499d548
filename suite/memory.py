"""Peak memory one call allocates above what was already allocated (its inputs, the model).

CUDA: torch's allocator statistics, ``max_memory_allocated() - memory_allocated()`` around the
call after ``reset_peak_memory_stats()``.

CPU: torch's CPU allocator keeps no statistics, and the profiler's memory events give no usable
peak, so the worker reads the kernel's: the process's peak resident set (``VmHWM`` in
``/proc/self/status``), reset to the current size by writing 5 to ``/proc/self/clear_refs`` just
before the call, minus the resident size before it. This sees every byte torch (or anything else)
touches during the call. Two conditions make it exact, and the worker provides both: a fresh
process per point (no other work in flight), and no freed memory held back by malloc for reuse:
just before the call glibc's mmap threshold is pinned at 64 KiB (``mallopt``) and its free memory
returned to the kernel (``malloc_trim``), so every block of the call is fresh pages. Pinning slows
later allocations (each is a new mapping), so the worker measures memory after timing.
Even so, some calls touch a few MiB of transient pages beyond the call's own tensors, at random
(chunked at N=2048, 8 x 64, 2 threads: 20.9 to 36.5 MiB over five calls of one process, the least
the same in every process), enough to bend growth exponents fitted over small N. The peak is
therefore the least of ``CPU_CALLS`` calls: what the call itself needs, reproducibly.
Resolution is one page (4 KiB); Linux with glibc only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
PINNED_THRESHOLD = 64 * 1024
CPU_CALLS = 5  # measured calls on CPU; the least peak is kept (see above)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_peak_supported() -> bool:
    """Whether this OS exposes the peak-RSS counters (Linux)."""
    return Path("/proc/self/clear_refs").exists()


def release_freed_memory() -> None:
    """Make glibc map every later large block afresh and give its free memory back to the kernel."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(M_MMAP_THRESHOLD, PINNED_THRESHOLD) != 1:
        raise RuntimeError("mallopt(M_MMAP_THRESHOLD) failed: CPU peak memory needs glibc")
    libc.malloc_trim(0)


class PeakTracker:
    """Peak memory of a longer stretch (a training run) above its start, without pinning malloc.

    Freed blocks that malloc keeps for reuse are not counted again, which is right for a run:
    it reports the most the process held at once beyond what it held when the run began.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        gc.collect()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        elif cpu_peak_supported():
            self.base = _status_kib("VmRSS") * 1024
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def peak(self) -> int | None:
        """Bytes above the start (None where the OS gives no peak)."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        if not cpu_peak_supported():
            return None
        return max(0, _status_kib("VmHWM") * 1024 - self.base)


def peak_bytes(fn: Callable[[], Any], device: str) -> int:
    """Peak bytes allocated by `fn()` above the memory in use just before it."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    if not cpu_peak_supported():
        raise RuntimeError("CPU peak memory needs Linux /proc/self/clear_refs")
    return min(_cpu_peak(fn) for _ in range(CPU_CALLS))


def _cpu_peak(fn: Callable[[], Any]) -> int:
    release_freed_memory()
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return max(0, peak - base) * 1024
