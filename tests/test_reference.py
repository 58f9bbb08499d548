"""The readable definition (naive.softmax_attention) against hand-computed values."""

from __future__ import annotations

import math

import torch

from attnbench.variants.masks import causal_mask
from attnbench.variants.softmax import softmax_attention


def test_equal_scores_average_the_values():
    q = torch.zeros(1, 1, 3, 4, dtype=torch.float64)
    k = torch.randn(1, 1, 5, 4, dtype=torch.float64)
    v = torch.randn(1, 1, 5, 4, dtype=torch.float64)
    out = softmax_attention(q, k, v)
    torch.testing.assert_close(out, v.mean(dim=2, keepdim=True).expand(1, 1, 3, 4))


def test_two_keys_by_hand():
    # One query, two keys: weights are softmax([q.k1, q.k2] / sqrt(D)).
    q = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]], dtype=torch.float64)
    k = torch.tensor([[[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]]], dtype=torch.float64)
    w1 = math.exp(2 / 2) / (math.exp(2 / 2) + 1)  # D = 4: scale 1/2
    out = softmax_attention(q, k, v)
    torch.testing.assert_close(out[0, 0, 0, :2], torch.tensor([w1, 1 - w1], dtype=torch.float64))


def test_causal_mask_is_bottom_right():
    # 2 queries, 4 keys: the queries are positions 2 and 3.
    assert causal_mask(2, 4, "cpu").tolist() == [[True, True, True, False], [True, True, True, True]]
    # 3 queries, 2 keys: the first query sees nothing.
    assert causal_mask(3, 2, "cpu").tolist() == [[False, False], [True, False], [True, True]]


def test_last_query_of_a_decode_step_sees_every_key():
    q = torch.randn(1, 2, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 2, 6, 8, dtype=torch.float64)
    v = torch.randn(1, 2, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(softmax_attention(q, k, v, causal=True), softmax_attention(q, k, v))


def test_query_without_keys_outputs_zero():
    q = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    k = torch.randn(1, 1, 2, 4, dtype=torch.float64)
    out = softmax_attention(q, k, k, causal=True)
    assert torch.isfinite(out).all()
    assert out[0, 0, 0].abs().max() == 0


def test_grouped_heads_equal_repeated_heads():
    q = torch.randn(2, 6, 5, 8, dtype=torch.float64)
    k = torch.randn(2, 2, 7, 8, dtype=torch.float64)
    v = torch.randn(2, 2, 7, 8, dtype=torch.float64)
    for causal in (False, True):
        grouped = softmax_attention(q, k, v, causal=causal)
        repeated = softmax_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), causal=causal)
        torch.testing.assert_close(grouped, repeated)
