"""The variant contract: spec and option validation, shape checks, declared support."""

from __future__ import annotations

import pytest
import torch

from attnbench.variants.contract import AttentionSpec, Unsupported, check_qkv
from attnbench.variants.exact.chunked import ChunkedAttention
from attnbench.variants.exact.flex import FlexAttention
from attnbench.variants.exact.naive import NaiveAttention


def test_spec_defaults_kv_heads_to_heads():
    spec = AttentionSpec(num_heads=8, head_dim=64)
    assert spec.num_kv_heads == 8 and spec.groups == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_heads": 8, "head_dim": 64, "num_kv_heads": 3}, "multiple of num_kv_heads"),
        ({"num_heads": 0, "head_dim": 64}, "spec.num_heads must be a positive integer"),
        ({"num_heads": 8, "head_dim": 6.5}, "spec.head_dim must be a positive integer"),
    ],
)
def test_spec_rejects_bad_shapes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionSpec(**kwargs)


def test_unknown_option_is_named_with_the_known_ones():
    spec = AttentionSpec(num_heads=2, head_dim=8, options={"blok_size": 4})
    with pytest.raises(ValueError, match=r"option blok_size: .*\(options: block_size\)"):
        ChunkedAttention(spec)


def test_option_type_is_validated():
    spec = AttentionSpec(num_heads=2, head_dim=8, options={"block_size": -1})
    with pytest.raises(ValueError, match="block_size"):
        ChunkedAttention(spec)


def test_options_reach_the_variant():
    spec = AttentionSpec(num_heads=2, head_dim=8, options={"block_size": 7})
    assert ChunkedAttention(spec).options.block_size == 7


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((1, 2, 4, 8), (1, 2, 4, 4), (1, 2, 4, 4)), "head dim of q"),
        (((1, 3, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)), "multiple of key/value heads"),
        (((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 5, 8)), "v shape"),
        (((2, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)), "batch of q"),
        (((2, 4, 8), (2, 4, 8), (2, 4, 8)), "must be 4-D"),
    ],
)
def test_check_qkv_rejects_mismatches(shapes, message):
    q, k, v = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        check_qkv(q, k, v)


def test_check_qkv_returns_sizes():
    q, k = torch.zeros(2, 8, 5, 16), torch.zeros(2, 2, 7, 16)
    assert check_qkv(q, k, k) == (2, 8, 2, 5, 7, 16)


def test_declared_limits_raise_unsupported():
    class NonCausal(NaiveAttention):
        info = NaiveAttention.info.__class__(name="nc", family="exact", exact=True, causal=False, gqa=False)

    with pytest.raises(Unsupported, match="causal"):
        NonCausal(AttentionSpec(num_heads=2, head_dim=8, causal=True))
    with pytest.raises(Unsupported, match="GQA"):
        NonCausal(AttentionSpec(num_heads=4, head_dim=8, num_kv_heads=2))


def test_availability_reasons():
    assert NaiveAttention.unavailable_reason("cpu", torch.float32) is None
    assert "cpu" in FlexAttention.unavailable_reason("tpu")
    assert FlexAttention.info.has_backward("cuda") and not FlexAttention.info.has_backward("cpu")
