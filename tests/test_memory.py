"""The CPU peak-memory method: ops of known size measure that size."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.memory import cpu_peak_supported, peak_bytes
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
