"""Each sparse variant's dense mask against its original rule, written here apart from the variant:
plain loops over (head, query, key) from the paper or the original code, compared entry by entry."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec

REGISTRY = load_registry()


def build(name: str, causal: bool = False, heads: int = 4, **options):
    spec = AttentionSpec(num_heads=heads, head_dim=16, causal=causal, options={"compile": False, **options})
    return REGISTRY.build(name, spec)


def variant_mask(variant, n: int) -> torch.Tensor:
    """(H, N, N) bool: the variant's dense mask for every head."""
    return variant.dense_mask(n, n).expand(variant.spec.num_heads, n, n)


def rule_mask(rule, heads: int, n: int, causal: bool) -> torch.Tensor:
    return torch.tensor([[[rule(h, i, j) and (j <= i or not causal) for j in range(n)] for i in range(n)]
                         for h in range(heads)])  # fmt: skip


def differing(variant, rule, n: int) -> int:
    want = rule_mask(rule, variant.spec.num_heads, n, variant.spec.causal)
    return int((variant_mask(variant, n) != want).sum())


@pytest.mark.parametrize("causal", [False, True])
def test_sliding_window_is_longformers_band(causal):
    # Longformer: a window of w attends w/2 tokens on each side (w = 6: 3 each side).
    assert differing(build("sliding-window", causal, window=6), lambda h, i, j: abs(i - j) <= 3, 40) == 0


@pytest.mark.parametrize("causal", [False, True])
def test_longformer_is_band_plus_symmetric_global_tokens(causal):
    def rule(h, i, j):
        return abs(i - j) <= 4 or i < 2 or j < 2

    assert differing(build("longformer", causal, window=8, global_tokens=2), rule, 40) == 0


def test_strided_causal_is_openais_local_union_strided():
    # openai/sparse_attention get_attn_mask: 'local' keeps 0 <= i - j < ctx, 'strided' keeps i >= j with
    # (i - j) mod ctx == 0; the merged head keeps either.
    def rule(h, i, j):
        return 0 <= i - j < 5 or (i >= j and (i - j) % 5 == 0)

    assert differing(build("strided", True, stride=5), rule, 40) == 0


def test_strided_non_causal_is_the_symmetric_form():
    assert differing(build("strided", stride=5), lambda h, i, j: abs(i - j) < 5 or (i - j) % 5 == 0, 40) == 0


@pytest.mark.parametrize("causal", [False, True])
def test_fixed_is_own_block_plus_each_heads_summary_sub_block(causal):
    # Child et al. 4.3: A(1) = own block of l, A(2) = c summary positions of each block; heads attend to
    # distinct sub-blocks of length c (head h: the (h mod l/c)-th from the block's end).
    block, c = 8, 2

    def rule(h, i, j):
        p = h % (block // c)
        return i // block == j // block or block - (p + 1) * c <= j % block < block - p * c

    variant = build("fixed", causal, heads=6, stride=block, summary=c)
    assert differing(variant, rule, 40) == 0
    same = build("fixed", causal, heads=6, stride=block, summary=c, distinct_heads=False)
    assert differing(same, lambda h, i, j: i // block == j // block or j % block >= block - c, 40) == 0


def bigbird_deterministic(nb: int, qb: int, kb: int) -> bool:
    """BigBird ITC without the random part: first and last blocks global (rows and columns), window of 3."""
    return qb in (0, nb - 1) or kb in (0, nb - 1) or abs(qb - kb) <= 1


@pytest.mark.parametrize(("n", "block", "r"), [(64, 8, 3), (256, 8, 3), (200, 16, 2)])
def test_bigbird_is_window_first_last_global_and_r_random_blocks_outside_them_per_head(n, block, r):
    variant = build("bigbird", heads=4, block_size=block, random_blocks=r, seed=5)
    mask = variant_mask(variant, n)
    nb = -(-n // block)
    blocks = mask[:, ::block, ::block]  # (H, nb, nb): one entry per (query block, key block)
    expected = torch.zeros_like(blocks)
    for h in range(4):
        for qb in range(nb):
            candidates = [kb for kb in range(nb) if not bigbird_deterministic(nb, qb, kb)]
            chosen = [kb for kb in candidates if blocks[h, qb, kb]]
            if qb not in (0, nb - 1):  # a global row sees everything; every other row: exactly r outside
                assert len(chosen) == min(r, len(candidates)), (h, qb, chosen)
            for kb in range(nb):
                expected[h, qb, kb] = bigbird_deterministic(nb, qb, kb) or kb in chosen
    # Entry by entry (the case is N = 64, block 8: 0 differing entries of 4096 per head).
    want = expected.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :n, :n]
    assert int((mask != want).sum()) == 0
    if n == 256:  # random blocks are drawn per head, and from the seed
        assert not torch.equal(blocks[0], blocks[1])
        again = variant_mask(build("bigbird", heads=4, block_size=block, random_blocks=r, seed=5), n)
        other = variant_mask(build("bigbird", heads=4, block_size=block, random_blocks=r, seed=6), n)
        assert torch.equal(again, mask) and not torch.equal(other, mask)


def test_bigbird_layers_draw_their_own_random_blocks_unless_seeded_and_the_window_is_centred():
    torch.manual_seed(0)
    first, second = (variant_mask(build("bigbird", block_size=8), 256) for _ in range(2))
    assert not torch.equal(first, second)  # two layers of one model (the original seeds layer i with i)
    torch.manual_seed(0)
    assert torch.equal(variant_mask(build("bigbird", block_size=8), 256), first)  # the model's seed fixes them
    with pytest.raises(ValueError, match="window_blocks must be odd"):
        build("bigbird", window_blocks=4)
