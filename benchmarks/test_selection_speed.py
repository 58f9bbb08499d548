"""The content-selected sparse variants against causal SDPA at long N (issue 39's target).

Not part of `make test`: ratios of medians measured in one run, on one machine,

    .venv/bin/pytest benchmarks/test_selection_speed.py -s

Targets, on a CPU (B = 1, 8 heads of 64, float32, causal forward, `keep` 1/8):
- `moba` and `nsa` at N = 16384 faster than causal SDPA;
- their peak memory growing at most linearly in N (16384 against 4096: at most 4x, and a tenth over for noise).
And the reason their fast forms are a loop over chosen key blocks, not a FlexAttention block mask: a block
mask keeps a key block for a whole block of queries when any of them chose it, and on random inputs the
queries of a 64-query block choose between them nearly every block they can see.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.suite.core.registry import load_registry
from attnbench.suite.measure.memory import peak_record
from attnbench.variants.contract import AttentionSpec, attend
from attnbench.variants.gates import make_gates
from attnbench.variants.sparse.moba import moba_choice
from attnbench.variants.sparse.nsa import compressed_probs, nsa_choice
from attnbench.variants.sparse.selection import choice_mask

B, H, D = 1, 8, 64


def _setup(name: str, n: int):
    registry = load_registry()
    spec = AttentionSpec(num_heads=H, head_dim=D, causal=True, max_seq_len=n)
    variant, sdpa = registry.build(name, spec), registry.build("sdpa", spec)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, n, D, generator=gen) for _ in range(3))
    gates = make_gates(variant.info.gates, q, k)
    return variant, sdpa, q, k, v, gates


@pytest.mark.parametrize("name", ["moba", "nsa"])
def test_faster_than_causal_sdpa_at_16384(name, median_s):
    variant, sdpa, q, k, v, gates = _setup(name, 16384)
    with torch.no_grad():
        selected = median_s(lambda: attend(variant, q, k, v, gates=gates), repeats=3)
        exact = median_s(lambda: attend(sdpa, q, k, v), repeats=3)
    kept = variant.kept_pairs(16384, 16384) / 16384**2
    print(
        f"\n{name} N=16384 B={B} H={H} D={D} float32 causal fwd, {torch.get_num_threads()} threads, kept fraction "
        f"{kept:.4f}: {selected * 1e3:.0f} ms, causal sdpa {exact * 1e3:.0f} ms ({selected / exact:.2f}x)"
    )
    assert selected < exact, f"{name} is {selected / exact:.2f}x causal sdpa at N = 16384 (target: under 1x)"


def _peak_bytes(name: str, n: int) -> int:
    variant, _, q, k, v, gates = _setup(name, n)
    with torch.no_grad():
        return peak_record(lambda _: attend(variant, q, k, v, gates=gates), "cpu", lambda: None)["peak_bytes"]


@pytest.mark.parametrize("name", ["moba", "nsa"])
def test_memory_grows_at_most_linearly(name):
    peaks = {n: _peak_bytes(name, n) for n in (4096, 16384)}
    growth = peaks[16384] / peaks[4096]
    print(
        f"\n{name} peak {peaks[4096] / 2**20:.0f} MiB at 4096, {peaks[16384] / 2**20:.0f} MiB at 16384 ({growth:.1f}x)"
    )
    assert growth <= 4 * 1.1, f"{name}'s peak memory grows {growth:.1f}x from N = 4096 to 16384 (linear: 4x)"


def test_a_block_mask_would_compute_nearly_every_visible_block():
    n, size, query_block = 8192, 64, 64
    moba_variant, _, q, k, _, _ = _setup("moba", n)
    nsa_variant = _setup("nsa", n)[0]
    blocks = math.ceil(n / size)
    moba = choice_mask(moba_choice(q, k, moba_variant.options), blocks)
    nsa = choice_mask(nsa_choice(compressed_probs(q, k, size), n, H, nsa_variant.options), blocks)
    visible = (torch.arange(blocks)[None, :] * size <= torch.arange(0, n, query_block)[:, None] + query_block - 1).sum()
    for name, chosen in (("moba", moba), ("nsa", nsa)):
        per_query = chosen.float().sum(-1).mean().item()
        union = chosen.view(B, H, n // query_block, query_block, blocks).any(3)
        share = union.sum().item() / (B * H * visible.item())
        print(
            f"\n{name} N={n}: a query chooses {per_query:.1f} past blocks; a block of {query_block} queries "
            f"together {share:.0%} of the blocks they can see"
        )
        assert share > 0.9, f"{name}: a block mask would skip {1 - share:.0%} of the visible blocks: it may pay now"
