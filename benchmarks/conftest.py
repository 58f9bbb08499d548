"""What the speed benchmarks share."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest


def _median_s(call: Callable[[], object], repeats: int) -> float:
    """Seconds of `call()`, the median of `repeats` after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.fixture
def median_s() -> Callable[[Callable[[], object], int], float]:
    return _median_s
