"""Micro-benchmarks of a few fixed shapes (pytest-benchmark), for catching speed regressions in CI.

Not part of `make test`. Save a baseline, then compare against it with a failure threshold:

    .venv/bin/pytest benchmarks --benchmark-autosave
    .venv/bin/pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%

The second command exits non-zero when any benchmark's median is more than 10% slower than the
saved run. Compare runs from the same machine only; `make microbench` runs the first form.
"""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec

SHAPES = {
    "N1024-H8-D64": (1, 8, 8, 1024, 64),
    "N2048-H8-D64-gqa": (1, 8, 2, 2048, 64),
}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.mark.parametrize("name", ["naive", "sdpa", "chunked"])
@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_forward(benchmark, registry, name, shape, causal):
    b, h, hkv, n, d = SHAPES[shape]
    variant = registry.build(name, AttentionSpec(num_heads=h, num_kv_heads=hkv, head_dim=d, causal=causal))
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, h, n, d, generator=gen)
    k = torch.randn(b, hkv, n, d, generator=gen)
    v = torch.randn(b, hkv, n, d, generator=gen)
    benchmark.extra_info.update(variant=name, threads=torch.get_num_threads())
    with torch.no_grad():
        out = benchmark(variant, q, k, v)
    assert out.shape == q.shape
