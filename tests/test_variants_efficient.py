"""Linear, sparse and low-rank variants: their definitions by hand, their fast paths against them."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec, Unsupported
from attnbench.variants.softmax import softmax_attention

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
    return variant.dense_mask(nq, nk).int().tolist()


def test_sliding_window_pattern_by_hand():
    # window = band width w: one key on each side for w = 2 (and for w = 3).
    assert mask_of("sliding-window", 4, 4, window=2) == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    assert mask_of("sliding-window", 4, 4, window=3) == mask_of("sliding-window", 4, 4, window=2)
    assert mask_of("sliding-window", 4, 4, causal=True, window=2) == [
        [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1],
    ]  # fmt: skip
    # Two queries decoding after four keys sit at positions 4 and 5 of 6.
    assert mask_of("sliding-window", 2, 6, causal=True, window=2) == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]]


def test_strided_pattern_by_hand():
    row = mask_of("strided", 9, 9, causal=True, stride=3)[8]
    assert row == [0, 0, 1, 0, 0, 1, 1, 1, 1]  # previous 3 positions, then every 3rd back


def test_fixed_pattern_by_hand():
    row = mask_of("fixed", 8, 8, causal=True, stride=4, summary=1, distinct_heads=False)[6]
    assert row == [0, 0, 0, 1, 1, 1, 1, 0]  # block 4..7 up to 6, plus summary column 3 of block 0
    heads = build("fixed", True, stride=4, summary=1).dense_mask(8, 8).int().tolist()
    assert heads[1][6] == [0, 0, 1, 0, 1, 1, 1, 0]  # head 1: the sub-block before the last (column 2)


def test_longformer_pattern_by_hand():
    m = mask_of("longformer", 6, 6, window=2, global_tokens=1)
    assert m[0] == [1] * 6  # the global token sees everything
    assert [row[0] for row in m] == [1] * 6  # and everything sees it
    assert m[3] == [1, 0, 1, 1, 1, 0]


SPARSE_CASES = {
    "sliding-window": {"window": 80},
    "strided": {"stride": 24},
    "fixed": {"stride": 32, "summary": 4},
    "longformer": {"window": 48, "global_tokens": 3},
    "bigbird": {"block_size": 16, "global_blocks": 2, "random_blocks": 2},
}


@pytest.mark.parametrize("name", sorted(SPARSE_CASES))
@pytest.mark.parametrize(("nq", "nk", "causal"), [(300, 300, False), (300, 300, True), (100, 300, True)])
def test_sparse_kernel_equals_masked_softmax_of_its_mask(name, nq, nk, causal):
    """The compiled FlexAttention kernel against softmax under the declared dense mask."""
    variant = build(name, causal, heads=4, kv_heads=2, **SPARSE_CASES[name])
    q, k, v = qkv(nq, nk, heads=4, kv_heads=2)
    mask = variant.dense_mask(nq, nk)
    assert not mask.all(), "the case must leave pairs out"
    want = softmax_attention(q.double(), k.double(), v.double(), mask=mask)
    assert rel(variant(q, k, v), want) < 1e-5


@pytest.mark.parametrize("name", sorted(SPARSE_CASES))
def test_sparse_flops_count_kept_pairs(name):
    variant = build(name, True, **SPARSE_CASES[name])
    mask = variant.dense_mask(300, 300).expand(variant.spec.num_heads, 300, 300)
    assert variant.kept_pairs(300, 300) == round(int(mask.sum()) / variant.spec.num_heads) < 300 * 301 // 2


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
    seed = {"seed": 0} if name == "performer" else {}
    outs = [build(name, True, heads=4, kv_heads=2, chunk_size=c, **seed).double()(q, k, v) for c in (1, 7, 64)]
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


def test_performer_kernel_estimate_is_exp_qk_within_its_standard_error():
    """E[phi(q) . phi(k)] = exp(q . k / sqrt(D)): the mean over 8192 features within 4 standard errors."""
    import math

    from attnbench.variants.linear.performer import log_features, orthogonal_features

    d, m = 16, 8192
    for pair in range(6):
        gen = torch.Generator().manual_seed(pair)
        q, k = (torch.randn(d, generator=gen, dtype=torch.float64) * 0.5 for _ in range(2))
        w = orthogonal_features(m, d, torch.Generator().manual_seed(100 + pair))
        x = torch.exp(log_features(q, w) + log_features(k, w))  # one estimate per feature
        exact = math.exp(float(q @ k) / math.sqrt(d))
        assert abs(x.mean().item() - exact) < 4 * x.std().item() / math.sqrt(m)


def test_performer_blocks_are_the_qr_with_positive_diagonal():
    """Haar directions: each block is the Q of the unique QR of its Gaussian draw with diag(R) > 0."""
    from attnbench.variants.linear.performer import orthogonal_features

    w = orthogonal_features(16, 16, torch.Generator().manual_seed(3))
    directions = w / w.norm(dim=1, keepdim=True)
    a = torch.randn(16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    r = directions @ a  # Q^T A
    assert (torch.diagonal(r) > 0).all()
    torch.testing.assert_close(r.tril(-1), torch.zeros_like(r), atol=1e-10, rtol=0)


def test_performer_layers_draw_their_own_features_and_redraw_only_on_request():
    torch.manual_seed(0)
    first, second = build("performer"), build("performer")
    assert not torch.equal(first.w, second.w)  # two layers of one model
    torch.manual_seed(0)
    assert torch.equal(build("performer").w, first.w)  # the model's seed fixes them
    assert torch.equal(build("performer", seed=4).w, build("performer", seed=4).w)
    q, k, v = qkv(8, 8)
    drawn = first.w.clone()
    first.train()
    for _ in range(3):
        first(q, k, v)
    assert torch.equal(first.w, drawn)  # default: never redrawn
    redrawing = build("performer", redraw_interval=2)
    redrawing.train()
    before = redrawing.w.clone()
    redrawing(q, k, v)
    assert torch.equal(redrawing.w, before)
    redrawing(q, k, v)
    assert not torch.equal(redrawing.w, before)  # every 2 training calls
    seeded = build("performer", seed=3, redraw_interval=1)
    seeded.train()
    start = seeded.w.clone()
    seeded(q, k, v)
    assert not torch.equal(seeded.w, start)  # a seed fixes where the stream starts, not that it stops
    redrawing.eval()
    after = redrawing.w.clone()
    for _ in range(4):
        redrawing(q, k, v)
    assert torch.equal(redrawing.w, after)  # never in eval mode


@pytest.mark.parametrize("features", [0, 32])
@pytest.mark.parametrize("causal", [False, True])
def test_performer_relu_kernel_equals_its_quadratic_form(features, causal):
    variant = build("performer", causal, heads=4, kv_heads=2, kernel="relu", features=features, seed=1).double()
    q, k, v = qkv(40, 40, heads=4, kv_heads=2, dtype=torch.float64)
    lengths = torch.tensor([40])
    assert rel(variant(q, k, v), variant.reference(q, k, v)) < 1e-10
    assert rel(variant(q, k, v, lengths), variant.reference(q, k, v, lengths)) < 1e-10
    if features == 0:  # LRA's deterministic generalized kernel: relu(x) + 1e-3, no projection
        fq, fk = torch.relu(q) + 1e-3, torch.relu(k) + 1e-3
        scores = fq @ fk.repeat_interleave(2, 1).transpose(-2, -1)
        if causal:
            scores = scores.tril()
        assert rel(variant(q, k, v), (scores @ v.repeat_interleave(2, 1)) / scores.sum(-1, keepdim=True)) < 1e-10


def test_performer_softmax_features_carry_the_originals_epsilon():
    """K_ij = sum_f (exp(lq - c_i) + 1e-4)(exp(lk - r) + 1e-4), written out for a non-causal head."""
    from attnbench.variants.linear.performer import log_features

    variant = build("performer", heads=1, features=8, seed=2).double()
    q, k, v = qkv(6, 6, heads=1, kv_heads=1, dtype=torch.float64)
    lq, lk = log_features(q[0, 0], variant.w.double()), log_features(k[0, 0], variant.w.double())
    fq = torch.exp(lq - lq.amax(-1, keepdim=True)) + 1e-4
    fk = torch.exp(lk - lk.max()) + 1e-4  # the original's key max over all keys and features
    kernel = fq @ fk.T
    torch.testing.assert_close(variant(q, k, v)[0, 0], (kernel @ v[0, 0]) / kernel.sum(-1, keepdim=True))


def test_performer_softmax_kernel_needs_features():
    with pytest.raises(ValueError, match="needs random features"):
        build("performer", features=0)


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
    # m >= N: landmarks are the tokens, A is the full softmax matrix, and F A^+ B v = A v (without the conv on V).
    variant = build("nystrom", landmarks=64, pinv_iterations=0, conv_kernel=0).double()
    q, k, v = qkv(16, 16, dtype=torch.float64)
    assert rel(variant(q, k, v), softmax_attention(q, k, v)) < 1e-8


def test_nystrom_newton_schulz_converges_to_the_pseudoinverse():
    from attnbench.variants.lowrank.nystrom import iterative_pinv

    a = torch.softmax(torch.randn(3, 16, 16, dtype=torch.float64) * 3, dim=-1)
    assert rel(iterative_pinv(a, 30), torch.linalg.pinv(a)) < 1e-6


def test_nystrom_adds_the_originals_depthwise_convolution_on_v():
    q, k, v = qkv(40, 40, heads=4, kv_heads=2, dtype=torch.float64)
    with_conv = build("nystrom", heads=4, kv_heads=2, landmarks=8, conv_kernel=5).double()
    without = build("nystrom", heads=4, kv_heads=2, landmarks=8, conv_kernel=0).double()
    taps = with_conv.conv.weight  # (Hkv, 1, 5, 1): one filter per K/V head
    assert taps.shape == (2, 1, 5, 1) and build("nystrom").conv.weight.shape[2] == 35  # the original's LRA size
    # out = nystrom(q, k, v) + conv(v): head 3 uses K/V head 1; position 10 sees values 8..12.
    direct = sum(taps[1, 0, t, 0] * v[0, 1, 10 + t - 2] for t in range(5))
    torch.testing.assert_close(with_conv(q, k, v)[0, 3, 10] - without(q, k, v)[0, 3, 10], direct)
    with pytest.raises(ValueError, match="conv_kernel must be odd"):
        build("nystrom", conv_kernel=4)
    with pytest.raises(Unsupported, match="Nq <= Nk"):
        with_conv(*qkv(50, 40, heads=4, kv_heads=2, dtype=torch.float64))


@pytest.mark.parametrize(("n", "landmarks", "iterations"), [(64, 8, 6), (50, 8, 6), (37, 5, 0)])
def test_nystrom_forward_equals_its_reference_written_apart(n, landmarks, iterations):
    # Batched, GQA-folded forward against the per-head loop of the paper's formula; N = 50, 37 leave
    # segments of unequal length (adaptive-pool bounds).
    variant = build("nystrom", heads=4, kv_heads=2, landmarks=landmarks, pinv_iterations=iterations).double()
    q, k, v = qkv(n, n, heads=4, kv_heads=2, dtype=torch.float64)
    assert rel(variant(q, k, v), variant.reference(q, k, v)) < 1e-10
