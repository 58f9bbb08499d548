"""The CPU peak-memory method: ops of known size measure that size."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.measure import memory
from attnbench.suite.measure.memory import CPU_CALLS, cpu_peak_supported, peak_bytes, peak_record
from attnbench.variants.contract import AttentionSpec
from attnbench.variants.exact.chunked import ChunkedAttention
from attnbench.variants.exact.naive import NaiveAttention

pytestmark = pytest.mark.skipif(not cpu_peak_supported(), reason="CPU peak memory needs Linux /proc")


@pytest.mark.parametrize("mib", [16, 128])
def test_an_allocation_of_known_size_measures_that_size(mib):
    size = mib * 2**20
    torch.ones(size // 4)  # the allocator path is warm, as in a worker after warm-up
    measured = peak_bytes(lambda: torch.ones(size // 4), "cpu")
    assert abs(measured - size) <= 0.10 * size


def test_a_temporary_freed_inside_the_call_still_counts():
    size = 64 * 2**20

    def twice():
        a = torch.ones(size // 4)
        b = a * 2  # a and b alive together: peak 2x, though only b is returned
        del a
        return b

    assert abs(peak_bytes(twice, "cpu") - 2 * size) <= 0.10 * 2 * size


def test_naive_attention_peak_is_its_scores_and_probabilities():
    b, h, n, d = 1, 8, 1024, 64
    q = torch.randn(b, h, n, d)
    naive = NaiveAttention(AttentionSpec(num_heads=h, head_dim=d))
    for _ in range(3):
        naive(q, q, q)
    # scores and probabilities (B, H, N, N) float32, plus the scaled q and the output (B, H, N, D)
    analytic = 2 * b * h * n * n * 4 + 2 * b * h * n * d * 4
    assert abs(peak_bytes(lambda: naive(q, q, q), "cpu") - analytic) <= 0.10 * analytic


def test_chunked_attention_peak_grows_linearly():
    chunked = ChunkedAttention(AttentionSpec(num_heads=8, head_dim=64))
    peaks = []
    for n in (1024, 2048):
        q = torch.randn(1, 8, n, 64)
        chunked(q, q, q)
        peaks.append(peak_bytes(lambda q=q: chunked(q, q, q), "cpu"))
    assert peaks[1] / peaks[0] < 2.5  # quadratic growth would be 4


def test_cpu_peak_is_the_least_of_several_calls():
    # A first call that touches 24 MiB of extra pages, later ones 8 MiB: the call's own need is 8.
    sizes: list[int] = []

    def allocate():
        sizes.append(8 * 2**20 if sizes else 24 * 2**20)
        return torch.ones(sizes[-1] // 4)

    measured = peak_bytes(allocate, "cpu")
    assert len(sizes) > 1 and abs(measured - 8 * 2**20) <= 0.10 * 8 * 2**20


def test_the_record_keeps_every_calls_peak():
    size = 16 * 2**20
    fields = peak_record(lambda: torch.ones(size // 4), "cpu")
    samples = fields["peak_bytes_samples"]
    assert len(samples) == CPU_CALLS and fields["peak_bytes"] == min(samples)
    assert max(samples) - min(samples) <= 0.10 * size


def test_holes_left_in_mallocs_heap_by_timing_are_not_counted():
    # Timing runs under glibc's dynamic mmap threshold, which rises after the first large free, so
    # blocks of a few MiB are carved from the heap and leave holes there. Reused by the measured
    # call, a hole stays resident after its block is freed, and temporaries that land in different
    # holes add up: here, 12.2 to 20.4 MiB against 10 before the holes were plugged.
    chunked = ChunkedAttention(AttentionSpec(num_heads=8, head_dim=64))
    q = torch.randn(1, 8, 1024, 64)
    memory._libc().mallopt(memory.M_MMAP_THRESHOLD, 32 * 2**20)  # the dynamic threshold after timing
    blocks = [torch.empty(mib * 2**18) for mib in range(1, 17)]  # 1 to 16 MiB, carved from the heap
    del blocks[::2]  # eight holes, kept apart by the blocks left between them
    with torch.no_grad():
        for _ in range(3):
            chunked(q, q, q)
        memory.release_freed_memory()
        assert memory.malloc_free_bytes() >= 48 * 2**20  # the holes are there
        samples = memory.peak_samples(lambda: chunked(q, q, q), "cpu")
    # q scaled (2 MiB), the accumulator (2), one block's scores (8 x 1024 x 128 fp32, 4) and p @ v (2)
    analytic = 10 * 2**20
    assert all(abs(s - analytic) <= 0.10 * analytic for s in samples), [s / 2**20 for s in samples]


def test_plugged_holes_are_given_back():
    before = memory.malloc_free_bytes()
    memory.unplug(memory.plug_heap_holes())
    assert memory.malloc_free_bytes() >= before - memory.PINNED_THRESHOLD
