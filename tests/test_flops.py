"""The FLOP count against hand counts: full, causal (Nq = Nk and not), GQA, sparse, modes."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.measure.flops import attention_flops, causal_pairs


def test_full_attention_by_hand():
    # B=2, H=3, Nq=5, Nk=7, D=4: 2*3 heads x 35 pairs x (2*4 for q.k + 2*4 for p.v)
    assert attention_flops(2, 3, 5, 7, 4) == 2 * 3 * 35 * 16


def test_causal_square_is_n_times_n_plus_one_over_two():
    assert causal_pairs(4, 4) == 4 + 3 + 2 + 1
    assert attention_flops(1, 1, 4, 4, 8, causal=True) == 10 * 4 * 8


def test_causal_fewer_queries_than_keys_is_not_half():
    # Nq=2, Nk=5, bottom-right: the queries are positions 3 and 4, seeing 4 and 5 keys.
    assert causal_pairs(2, 5) == 4 + 5
    assert causal_pairs(1, 1000) == 1000  # one decode step sees the whole cache


def test_causal_more_queries_than_keys_counts_empty_rows_as_zero():
    # Nq=5, Nk=2: the first three queries see nothing, then 1 and 2 keys.
    assert causal_pairs(5, 2) == 0 + 0 + 0 + 1 + 2


@pytest.mark.parametrize("nq", range(1, 9))
@pytest.mark.parametrize("nk", range(1, 9))
def test_causal_pairs_equal_the_dense_mask(nq, nk):
    assert causal_pairs(nq, nk) == int(torch.ones(nq, nk).tril(nk - nq).sum())


def test_gqa_counts_query_heads_not_kv_heads():
    # The count takes H (query heads): GQA shares K/V storage, not work.
    assert attention_flops(1, 32, 128, 128, 128) == 32 * 128 * 128 * 4 * 128


def test_sparse_kept_pairs_override():
    assert attention_flops(1, 2, 100, 100, 16, pairs=300) == 2 * 300 * 4 * 16


def test_modes():
    fwd = attention_flops(1, 1, 8, 8, 8)
    assert attention_flops(1, 1, 8, 8, 8, mode="bwd") == 2.5 * fwd
    assert attention_flops(1, 1, 8, 8, 8, mode="fwd_bwd") == 3.5 * fwd
    with pytest.raises(ValueError, match="mode"):
        attention_flops(1, 1, 8, 8, 8, mode="train")
