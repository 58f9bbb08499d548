"""What the local executor costs a job beyond its measured calls (pytest-benchmark).

Run with `make microbench`. A tiny point (naive, N=64) spends well under a millisecond in its
timed calls, so its wall time is the executor's overhead: the fresh worker process, the variant's
set-up, warm-up, the memory samples and the float64 check. The first job of a command also starts
the fork server (imports torch once); later jobs are forked from it, which this measures.
"""

from __future__ import annotations

import pytest

from attnbench.suite.executors.local import LocalExecutor
from attnbench.suite.measure.point import Point

TINY = Point(variant="naive", batch=1, heads=2, kv_heads=2, q_len=64, seq=64, head_dim=16, dtype="float32",
             causal=False, mode="fwd", device="cpu", threads=1, warmup=1, repeats=5, budget_s=0.0)  # fmt: skip


@pytest.fixture(scope="module")
def executor():
    executor = LocalExecutor()
    assert executor.run(TINY)["status"] == "ok"  # starts the fork server: later jobs are forked from it
    return executor


def test_local_job_overhead(benchmark, executor):
    result = benchmark.pedantic(executor.run, args=(TINY,), rounds=10, iterations=1)
    assert result["status"] == "ok" and result["correct"]
    assert sum(result["times_ms"]) < 50  # the timed calls are a negligible share of the job's wall time
