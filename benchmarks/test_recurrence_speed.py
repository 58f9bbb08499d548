"""The chunked recurrences against causal SDPA and against their own loop over time (issue 29's target).

Not part of `make test`: ratios of medians measured in one run, on one machine,

    .venv/bin/pytest benchmarks/test_recurrence_speed.py -s

Target, on a CPU: chunked GLA and DeltaNet at N = 4096 (B = 1, 8 heads of 64, float32, causal forward)
within 2x of causal SDPA's time and at least 10x faster than their recurrent loop. Each test prints the
three medians and the two ratios, then asserts the target.
"""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec, attend
from attnbench.variants.gates import make_gates

B, H, N, D = 1, 8, 4096, 64


@pytest.mark.parametrize("name", ["gla", "deltanet"])
def test_chunked_is_near_sdpa_and_far_from_its_loop(name, median_s):
    registry = load_registry()
    spec = AttentionSpec(num_heads=H, head_dim=D, causal=True)
    variant, loop, sdpa = (registry.build(n, spec) for n in (name, f"{name}-loop", "sdpa"))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, generator=gen) for _ in range(3))
    gates = make_gates(variant.info.gates, q, k)
    with torch.no_grad():
        chunked = median_s(lambda: attend(variant, q, k, v, gates=gates), repeats=7)
        exact = median_s(lambda: attend(sdpa, q, k, v), repeats=7)
        token_by_token = median_s(lambda: attend(loop, q, k, v, gates=gates), repeats=3)
    print(
        f"\n{name} N={N} B={B} H={H} D={D} float32 causal fwd, {torch.get_num_threads()} threads: chunked "
        f"{chunked * 1e3:.1f} ms, sdpa {exact * 1e3:.1f} ms ({chunked / exact:.2f}x), {name}-loop "
        f"{token_by_token * 1e3:.0f} ms ({token_by_token / chunked:.1f}x the chunked)"
    )
    assert chunked <= 2 * exact, f"chunked {name} is {chunked / exact:.2f}x causal sdpa (target 2x)"
    assert token_by_token >= 10 * chunked, f"its loop is only {token_by_token / chunked:.1f}x slower (target 10x)"
