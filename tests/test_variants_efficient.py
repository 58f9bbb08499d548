"""Linear, sparse and low-rank variants: their definitions by hand, their fast paths against them."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec, Unsupported
from attnbench.variants.exact.naive import softmax_attention
from attnbench.variants.masks import dense_mask

REGISTRY = load_registry()


def build(name: str, causal: bool = False, heads: int = 2, kv_heads: int | None = None, dim: int = 16, **options):
    spec = AttentionSpec(num_heads=heads, num_kv_heads=kv_heads, head_dim=dim, causal=causal, options=options)
    return REGISTRY.build(name, spec)


def qkv(nq, nk, heads=2, kv_heads=2, dim=16, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, nq, dim, generator=gen)
    k = torch.randn(1, kv_heads, nk, dim, generator=gen)
    v = torch.randn(1, kv_heads, nk, dim, generator=gen)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ----- sparse: the patterns by hand, and the kernels against the masked softmax -----


def mask_of(name, nq, nk, causal=False, **options):
    variant = build(name, causal, **options)
    return dense_mask(variant.mask_mod(nq, nk), nq, nk, "cpu").int().tolist()


def test_sliding_window_pattern_by_hand():
    assert mask_of("sliding-window", 4, 4, window=2) == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    assert mask_of("sliding-window", 4, 4, causal=True, window=2) == [
        [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1],
    ]  # fmt: skip
    # Two queries decoding after four keys sit at positions 4 and 5 of 6.
    assert mask_of("sliding-window", 2, 6, causal=True, window=2) == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]]


def test_strided_pattern_by_hand():
    row = mask_of("strided", 9, 9, causal=True, stride=3)[8]
    assert row == [0, 0, 1, 0, 0, 1, 1, 1, 1]  # previous 3 positions, then every 3rd back


def test_fixed_pattern_by_hand():
    row = mask_of("fixed", 8, 8, causal=True, stride=4, summary=1)[6]
    assert row == [0, 0, 0, 1, 1, 1, 1, 0]  # block 4..7 up to 6, plus summary column 3 of block 0


def test_longformer_pattern_by_hand():
    m = mask_of("longformer", 6, 6, window=2, global_tokens=1)
    assert m[0] == [1] * 6  # the global token sees everything
    assert [row[0] for row in m] == [1] * 6  # and everything sees it
    assert m[3] == [1, 0, 1, 1, 1, 0]


def test_bigbird_pattern_has_window_global_and_random_blocks():
    variant = build("bigbird", block_size=4, window_blocks=3, global_blocks=1, random_blocks=1, seed=3)
    m = dense_mask(variant.mask_mod(64, 64), 64, 64, "cpu")
    blocks = m[::4, ::4]  # one entry per (query block, key block); the pattern is constant inside blocks
    assert torch.equal(m, blocks.repeat_interleave(4, 0).repeat_interleave(4, 1))
    assert blocks[:, 0].all() and blocks[0].all()  # global block
    for qb in range(2, 15):
        window = {qb - 1, qb, qb + 1}
        extra = set(blocks[qb].nonzero().flatten().tolist()) - window - {0}
        assert len(extra) <= 1  # at most the one random block (it may fall in the window)
    again = build("bigbird", block_size=4, window_blocks=3, global_blocks=1, random_blocks=1, seed=3)
    assert torch.equal(dense_mask(again.mask_mod(64, 64), 64, 64, "cpu"), m)  # seeded: reproducible


SPARSE_CASES = {
    "sliding-window": {"window": 40},
    "strided": {"stride": 24},
    "fixed": {"stride": 32, "summary": 4},
    "longformer": {"window": 48, "global_tokens": 3},
    "bigbird": {"block_size": 16, "global_blocks": 1, "random_blocks": 2},
}


@pytest.mark.parametrize("name", sorted(SPARSE_CASES))
@pytest.mark.parametrize(("nq", "nk", "causal"), [(300, 300, False), (300, 300, True), (100, 300, True)])
def test_sparse_kernel_equals_masked_softmax_of_its_mask(name, nq, nk, causal):
    """The compiled FlexAttention kernel against softmax under the declared dense mask."""
    variant = build(name, causal, heads=4, kv_heads=2, **SPARSE_CASES[name])
    q, k, v = qkv(nq, nk, heads=4, kv_heads=2)
    mask = dense_mask(variant.mask_mod(nq, nk), nq, nk, "cpu")
    assert not mask.all(), "the case must leave pairs out"
    want = softmax_attention(q.double(), k.double(), v.double(), mask=mask)
    assert rel(variant(q, k, v), want) < 1e-5


@pytest.mark.parametrize("name", sorted(SPARSE_CASES))
def test_sparse_flops_count_kept_pairs(name):
    variant = build(name, True, **SPARSE_CASES[name])
    mask = dense_mask(variant.mask_mod(300, 300), 300, 300, "cpu")
    assert variant.kept_pairs(300, 300) == int(mask.sum()) < 300 * 301 // 2


def test_fixed_summary_longer_than_stride_is_refused():
    with pytest.raises(ValueError, match="summary"):
        build("fixed", stride=4, summary=8)


# ----- linear -----


def test_linear_elu_causal_bf16_at_4096_is_finite_and_close_to_its_quadratic_form():
    variant = build("linear-elu", causal=True, dim=32)
    q, k, v = qkv(4096, 4096, dim=32, dtype=torch.bfloat16)
    out = variant(q, k, v)
    assert torch.isfinite(out).all()
    assert rel(out, variant.reference(q.double(), k.double(), v.double())) <= 1e-2


def test_linear_elu_fp16_denominator_does_not_overflow():
    # 8192 keys of features ~100: the denominator (~1e6) is past float16's 65504.
    variant = build("linear-elu", causal=False, dim=16)
    q, k, v = qkv(64, 8192, dtype=torch.float16)
    out = variant(q * 100, k * 100, v)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["linear-elu", "performer"])
def test_linear_chunk_size_does_not_change_the_result(name):
    q, k, v = qkv(50, 70, heads=4, kv_heads=2, dtype=torch.float64)
    outs = [build(name, True, heads=4, kv_heads=2, chunk_size=c).double()(q, k, v) for c in (1, 7, 64)]
    assert rel(outs[0], outs[2]) < 1e-12 and rel(outs[1], outs[2]) < 1e-12


def test_performer_causal_ignores_even_extreme_future_keys():
    """A global key stabiliser would let one huge future key underflow every earlier query's features."""
    variant = build("performer", causal=True, dim=32)
    q, k, v = qkv(128, 128, dim=32)
    before = variant(q, k, v)
    k2 = k.clone()
    k2[:, :, 100:] *= 30  # future keys with enormous norms
    after = variant(q, k2, v)
    assert torch.equal(before[:, :, :100], after[:, :, :100])


def test_performer_approaches_softmax_as_features_grow():
    q, k, v = qkv(128, 128, dim=32, dtype=torch.float64)
    q, k = q * 0.5, k * 0.5  # moderate logits, where the random-feature estimator is well behaved
    exact = softmax_attention(q, k, v)
    errors = [rel(build("performer", dim=32, features=m).double()(q, k, v), exact) for m in (32, 512, 8192)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.1


# ----- low-rank -----


def test_linformer_refuses_causal_and_longer_inputs():
    with pytest.raises(Unsupported, match="causal"):
        build("linformer", causal=True)
    spec = AttentionSpec(num_heads=2, head_dim=16, max_seq_len=128)
    variant = REGISTRY.build("linformer", spec)
    q, k, v = qkv(200, 200)
    with pytest.raises(Unsupported, match="128 keys"):
        variant(q, k, v)


def test_linformer_is_softmax_over_projected_keys():
    variant = build("linformer", rank=8).double()
    q, k, v = qkv(32, 32, dtype=torch.float64)
    e, f = variant.proj_k[:, :32].double(), variant.proj_v[:, :32].double()
    torch.testing.assert_close(variant(q, k, v), softmax_attention(q, e @ k, f @ v))


def test_nystrom_with_a_landmark_per_token_is_exact_attention():
    # m >= N: landmarks are the tokens, A is the full softmax matrix, and F A^+ B v = A v.
    variant = build("nystrom", landmarks=64, pinv_iterations=0).double()
    q, k, v = qkv(16, 16, dtype=torch.float64)
    assert rel(variant(q, k, v), softmax_attention(q, k, v)) < 1e-8


def test_nystrom_newton_schulz_converges_to_the_pseudoinverse():
    from attnbench.variants.lowrank.nystrom import iterative_pinv

    a = torch.softmax(torch.randn(3, 16, 16, dtype=torch.float64) * 3, dim=-1)
    assert rel(iterative_pinv(a, 30), torch.linalg.pinv(a)) < 1e-6


@pytest.mark.parametrize(("n", "landmarks", "iterations"), [(64, 8, 6), (50, 8, 6), (37, 5, 0)])
def test_nystrom_forward_equals_its_reference_written_apart(n, landmarks, iterations):
    # Batched, GQA-folded forward against the per-head loop of the paper's formula; N = 50, 37 leave
    # segments of unequal length (adaptive-pool bounds).
    variant = build("nystrom", heads=4, kv_heads=2, landmarks=landmarks, pinv_iterations=iterations).double()
    q, k, v = qkv(n, n, heads=4, kv_heads=2, dtype=torch.float64)
    assert rel(variant(q, k, v), variant.reference(q, k, v)) < 1e-10
