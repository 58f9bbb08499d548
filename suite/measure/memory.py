"""Peak memory one call allocates above what was already allocated (its inputs, the model).

CUDA: torch's allocator statistics, ``max_memory_allocated() - memory_allocated()`` around the
call after ``reset_peak_memory_stats()``.

CPU: torch's CPU allocator keeps no statistics, and the profiler's memory events give no usable
peak, so the worker reads the kernel's: the process's peak resident set (``VmHWM`` in
``/proc/self/status``), reset to the current size by writing 5 to ``/proc/self/clear_refs`` just
before the call, minus the resident size before it. This sees every byte torch (or anything else)
touches during the call. It is exact when every block of the call is fresh pages, returned to the
kernel when freed, and the worker provides that: a fresh process per point (no other work in
flight), and just before the call

- glibc's mmap threshold is pinned at 64 KiB (``mallopt``), so a large block is mapped afresh
  and unmapped when freed, and malloc's free memory is given back to the kernel (``malloc_trim``);
- the holes malloc's heap kept from warm-up and timing are plugged: allocated, untouched, until
  the call returns. Pinning alone leaves them, because malloc consults the threshold only when its
  heap must grow. Timing runs with glibc's own dynamic threshold, which rises to the size of the
  first large block freed, so later blocks of a few MiB are carved from the heap; ``malloc_trim``
  makes their pages non-resident but keeps the holes. The measured call reused them, and a hole
  stays resident after its block is freed, so temporaries that landed in different holes added up
  instead of replacing each other. How many depended on the heap's layout after timing (how many
  repeats the budget allowed, the machine's load): chunked attention at N=2048 (8 x 64, fp32)
  measured 20.3 MiB in some processes and 25 to 76 MiB in others, with 9 to 37 MiB of holes.
  Plugged, every call of every process measures 20.2 to 20.4 MiB.

Each of ``CPU_CALLS`` calls is measured; the record keeps every sample and the least as the peak.
Pinning slows later allocations (each is a new mapping), so the worker measures memory after
timing. Resolution is one page (4 KiB); Linux with glibc only (the holes are found with
``mallinfo2``, glibc 2.33 or later; older glibc measures without plugging, and the samples show the
spread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
PINNED_THRESHOLD = 64 * 1024
CPU_CALLS = 5  # measured calls on CPU; every sample is recorded, the least is the peak


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``: byte and block counts of malloc's arenas (all of them)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_peak_supported() -> bool:
    """Whether this OS exposes the peak-RSS counters (Linux)."""
    return Path("/proc/self/clear_refs").exists()


@functools.cache
def _libc() -> ctypes.CDLL:
    # Once per process: find_library runs ldconfig in a subprocess.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.restype, libc.free.argtypes = None, [ctypes.c_void_p]
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


def release_freed_memory() -> None:
    """Make glibc map every later large block afresh and give its free memory back to the kernel."""
    libc = _libc()
    if libc.mallopt(M_MMAP_THRESHOLD, PINNED_THRESHOLD) != 1:
        raise RuntimeError("mallopt(M_MMAP_THRESHOLD) failed: CPU peak memory needs glibc")
    libc.malloc_trim(0)


def malloc_free_bytes() -> int | None:
    """Bytes free inside malloc's heaps, holes and top (None without glibc's mallinfo2)."""
    libc = _libc()
    return libc.mallinfo2().fordblks if hasattr(libc, "mallinfo2") else None


def plug_heap_holes() -> list[int]:
    """Allocate, untouched, every free block of malloc's heaps a large request could reuse; return them.

    Halving from the total free size, a request the heap can serve takes a hole (or the top); one it
    cannot is mapped afresh, seen as one more mapped block, and given back. Holes under the pinned
    threshold stay: a request that small is served from the heap whatever the threshold.
    """
    libc = _libc()
    if not hasattr(libc, "mallinfo2"):
        return []
    held: list[int] = []
    size = libc.mallinfo2().fordblks
    while size >= PINNED_THRESHOLD:
        mapped = libc.mallinfo2().hblks
        block = libc.malloc(size)
        if block and libc.mallinfo2().hblks == mapped:
            held.append(block)
        else:
            libc.free(block)
            size //= 2
    return held


def unplug(held: list[int]) -> None:
    """Free the blocks `plug_heap_holes` allocated."""
    libc = _libc()
    for block in reversed(held):
        libc.free(block)


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


def peak_bytes(fn: Callable[..., Any], device: str, setup: Callable[[], Any] | None = None) -> int:
    """Peak bytes allocated by `fn()` (or `fn(setup())`) above the memory in use just before `fn`: `setup`
    runs first, outside the measurement (the forward whose graph a measured backward consumes)."""
    return min(peak_samples(fn, device, setup))


def peak_samples(fn: Callable[..., Any], device: str, setup: Callable[[], Any] | None = None) -> list[int]:
    """`peak_bytes` of every measured call: one on CUDA (its allocator counts exactly), `CPU_CALLS` on CPU."""
    gc.collect()
    if setup is None:
        call = fn
        fn, setup = (lambda _: call()), (lambda: None)
    if device == "cuda":
        arg = setup()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(arg)
        torch.cuda.synchronize()
        return [torch.cuda.max_memory_allocated() - base]
    if not cpu_peak_supported():
        raise RuntimeError("CPU peak memory needs Linux /proc/self/clear_refs")
    return [_cpu_peak(fn, setup) for _ in range(CPU_CALLS)]


def memory_method(device: str) -> str:
    """How peak memory is measured on `device`, as records name it."""
    if device == "cuda":
        return "torch.cuda max_memory_allocated"
    return f"VmHWM, heap holes plugged, least of {CPU_CALLS} calls"


def peak_record(fn: Callable[..., Any], device: str, setup: Callable[[], Any] | None = None) -> dict[str, Any]:
    """The record fields of one point's peak memory of `fn(setup())`: `peak_bytes` (the least call) and
    `peak_bytes_samples` (every measured call, so a comparison can see the spread)."""
    samples = peak_samples(fn, device, setup)
    return {"peak_bytes": min(samples), "peak_bytes_samples": samples}


def _cpu_peak(fn: Callable[[Any], Any], setup: Callable[[], Any]) -> int:
    arg = setup()
    release_freed_memory()
    held = plug_heap_holes()
    try:
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
            f.write("5")
        result = fn(arg)
        peak = _status_kib("VmHWM")
        del result
    finally:
        unplug(held)
    del arg
    return max(0, peak - base) * 1024
