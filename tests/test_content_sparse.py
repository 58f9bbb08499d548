"""NSA, MoBA and DSA against definitions written here from their sources, one query at a time in float64;
the selection helpers they share; the bench's blocked check at long N; their records."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.suite.measure.point import Point
from attnbench.suite.measure.worker import make_inputs, reference_error
from attnbench.variants.contract import AttentionSpec, attend, reference
from attnbench.variants.gates import make_gates
from attnbench.variants.sparse.dsa import DsaAttention
from attnbench.variants.sparse.moba import MobaAttention
from attnbench.variants.sparse.nsa import NsaAttention
from attnbench.variants.sparse.selection import (
    causal_keys,
    chosen_block_attention,
    masked_attention,
    ranked_choice,
    window_attention,
)

SHAPES = [(2, 4, 2, 70, 70), (1, 2, 1, 29, 75), (1, 2, 2, 40, 23)]  # (B, H, H_kv, Nq, Nk), D = 8
D = 8


def _inputs(b, h, hkv, nq, nk, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, nq, D, generator=g, dtype=torch.float64),
            torch.randn(b, hkv, nk, D, generator=g, dtype=torch.float64),
            torch.randn(b, hkv, nk, D, generator=g, dtype=torch.float64))  # fmt: skip


def _softmax_over(q_row, keys, values):
    """softmax(q . k / sqrt(D)) v over the given keys (rows of `keys`), zeros when there are none."""
    if len(keys) == 0:
        return torch.zeros_like(q_row)
    w = torch.softmax(keys @ q_row / math.sqrt(D), dim=0)
    return w @ values


def _count(seen, keep, minimum):
    """A share of what a query sees, rounded up (0.3 x 50 is 15), at least `minimum`, at most all."""
    return min(max(minimum, math.ceil(keep * seen - 1e-9)), seen)


def moba_by_query(q, k, v, size, count):
    """moba_naive.py one query at a time: gate q . mean(chunk keys) over wholly past chunks, own chunk forced and
    counted in top-k (`count(seen)` blocks of the `seen` a query can see), causal inside it."""
    b, h, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            kk, vv = k[bi, hi // (h // hkv)], v[bi, hi // (h // hkv)]
            for i in range(nq):
                t = i + nk - nq
                if t < 0:
                    continue
                own = t // size
                gates = {c: float(q[bi, hi, i] @ kk[c * size : (c + 1) * size].mean(0)) for c in range(own)}
                past = sorted(gates, key=lambda c: -gates[c])[: count(own + 1) - 1]
                keys = [j for j in range(t + 1) if j // size in past or j // size == own]
                out[bi, hi, i] = _softmax_over(q[bi, hi, i], kk[keys], vv[keys])
    return out


def nsa_by_query(q, k, v, gates, size, keep, window):
    """fla's naive_nsa one query at a time: compressed (mean-pooled, complete blocks), selected (importance from
    the compressed probabilities averaged over the K/V group; blocks 0, own, own - 1 forced), sliding."""
    b, h, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    g = h // hkv
    out = torch.zeros_like(q)
    for bi in range(b):
        for kv in range(hkv):
            kk, vv = k[bi, kv], v[bi, kv]
            pooled_k = [kk[c * size : (c + 1) * size].mean(0) for c in range(nk // size)]
            pooled_v = [vv[c * size : (c + 1) * size].mean(0) for c in range(nk // size)]
            for i in range(nq):
                t = i + nk - nq
                if t < 0:
                    continue
                visible = [c for c in range(nk // size) if (c + 1) * size - 1 <= t]
                own = t // size
                heads = range(kv * g, (kv + 1) * g)
                probs = {}
                for hi in heads:
                    if visible:
                        scores = torch.stack([pooled_k[c] for c in visible]) @ q[bi, hi, i] / math.sqrt(D)
                        for c, p in zip(visible, torch.softmax(scores, 0).tolist(), strict=True):
                            probs[c] = probs.get(c, 0.0) + p / g
                forced = {c for c in (0, own, own - 1) if 0 <= c <= own}
                rest = sorted(set(visible) - forced, key=lambda c: -probs[c])
                chosen = (sorted(forced) + rest)[: _count(own + 1, keep, 3)]
                slc = [j for j in range(t + 1) if j // size in chosen]
                swa = [j for j in range(t + 1) if t - j < window]
                for hi in heads:
                    o_cmp = (_softmax_over(q[bi, hi, i], torch.stack([pooled_k[c] for c in visible]),
                                           torch.stack([pooled_v[c] for c in visible]))
                             if visible else torch.zeros(D, dtype=q.dtype))  # fmt: skip
                    o_slc = _softmax_over(q[bi, hi, i], kk[slc], vv[slc])
                    o_swa = _softmax_over(q[bi, hi, i], kk[swa], vv[swa])
                    w = gates[bi, hi, i]
                    out[bi, hi, i] = w[0] * o_cmp + w[1] * o_slc + w[2] * o_swa
    return out


def dsa_by_query(q, k, v, iq, ik, iw, keep):
    """The lightning indexer one query at a time: sum over the group's heads of w relu(q_I . k_I), top tokens
    (ties: the later token first), softmax over them."""
    b, h, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    g = h // hkv
    out = torch.zeros_like(q)
    for bi in range(b):
        for kv in range(hkv):
            for i in range(nq):
                t = i + nk - nq
                if t < 0:
                    continue
                heads = range(kv * g, (kv + 1) * g)
                score = {
                    s: sum(float(iw[bi, hi, i]) * max(0.0, float(iq[bi, hi, i] @ ik[bi, kv, s])) for hi in heads)
                    for s in range(t + 1)
                }
                kept = sorted(score, key=lambda s: (-score[s], -s))[: _count(t + 1, keep, 1)]
                for hi in heads:
                    out[bi, hi, i] = _softmax_over(q[bi, hi, i], k[bi, kv, kept], v[bi, kv, kept])
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_moba_is_its_source_query_by_query(shape):
    q, k, v = _inputs(*shape)
    variant = MobaAttention(AttentionSpec(shape[1], D, shape[2], causal=True, options={"block_size": 8, "keep": 0.3}))
    want = moba_by_query(q, k, v, 8, lambda seen: _count(seen, 0.3, 1))
    assert torch.allclose(variant.reference(q, k, v), want, atol=1e-12)
    assert torch.allclose(attend(variant, q.float(), k.float(), v.float()).double(), want, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_nsa_is_its_source_query_by_query(shape):
    q, k, v = _inputs(*shape)
    opts = {"block_size": 8, "keep": 0.3, "window": 6}
    variant = NsaAttention(AttentionSpec(shape[1], D, shape[2], causal=True, options=opts))
    gates = make_gates(variant.info.gates, q, k, seed=3)
    want = nsa_by_query(q, k, v, gates["branch_gates"], 8, 0.3, 6)
    assert torch.allclose(variant.reference(q, k, v, **gates), want, atol=1e-12)
    got = attend(variant, q.float(), k.float(), v.float(), gates={n: g.float() for n, g in gates.items()})
    assert torch.allclose(got.double(), want, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_dsa_is_its_source_query_by_query(shape):
    q, k, v = _inputs(*shape)
    variant = DsaAttention(AttentionSpec(shape[1], D, shape[2], causal=True, options={"keep": 0.3}))
    gates = make_gates(variant.info.gates, q, k, seed=4)
    want = dsa_by_query(q, k, v, gates["index_q"], gates["index_k"], gates["index_w"], 0.3)
    assert torch.allclose(variant.reference(q, k, v, **gates), want, atol=1e-12)
    got = attend(variant, q.float(), k.float(), v.float(), gates={n: g.float() for n, g in gates.items()})
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_a_fixed_top_k_replaces_the_share():
    q, k, v = _inputs(1, 2, 2, 64, 64)
    variant = MobaAttention(AttentionSpec(2, D, causal=True, options={"block_size": 8, "top_k": 3}))
    want = moba_by_query(q, k, v, 8, lambda seen: min(3, seen))  # its own block and the two best past ones
    assert torch.allclose(variant.reference(q, k, v), want, atol=1e-12)
    with pytest.raises(ValueError, match=r"keep .* or top_k"):
        MobaAttention(AttentionSpec(2, D, causal=True, options={"keep": 0.5, "top_k": 3}))


def test_kept_pairs_count_what_the_definitions_attend():
    nq = nk = 200
    moba = MobaAttention(AttentionSpec(2, D, causal=True, options={"block_size": 16}))
    dsa = DsaAttention(AttentionSpec(2, D, causal=True))
    q, k, _ = _inputs(1, 2, 2, nq, nk)
    from attnbench.variants.sparse.moba import moba_choice, own_blocks
    from attnbench.variants.sparse.selection import blocks_to_keys, choice_mask

    blocks = choice_mask(moba_choice(q, k, moba.options), math.ceil(nk / 16)) | own_blocks(nq, nk, 16, "cpu")
    kept = blocks_to_keys(blocks, nk, 16) & causal_keys(nq, nk, "cpu")
    assert moba.kept_pairs(nq, nk) == int(kept[0, 0].sum()) == int(kept[0, 1].sum())
    # DSA keeps ceil(t / 8) of the t + 1 tokens a query sees.
    assert dsa.kept_pairs(nq, nk) == sum(min(max(1, math.ceil((t + 1) / 8)), t + 1) for t in range(nk))
    assert 0 < moba.kept_pairs(nq, nk) < nq * (nq + 1) // 2


def test_ranked_choice_gives_a_tie_at_the_cut_to_the_earlier_column():
    scores = torch.tensor([[1.0, 5.0, 5.0, 5.0, 0.0], [3.0, 2.0, 1.0, float("-inf"), 0.0]])
    got = ranked_choice(scores, torch.tensor([2, 4]))
    assert got[0].tolist() == [1, 2, -1, -1]  # of three 5s, the first two; -1: unused slots
    assert got[1].tolist() == [0, 1, 2, 4]  # -inf is no candidate
    assert ranked_choice(scores, torch.tensor([0, 0])).shape[-1] == 0


@pytest.mark.parametrize("nq, nk, window", [(10, 10, 3), (37, 90, 7), (45, 17, 5), (1, 64, 16), (65, 64, 100)])
def test_window_attention_is_the_masked_softmax(nq, nk, window):
    q, k, v = _inputs(1, 4, 2, nq, nk)
    pos = torch.arange(nq) + nk - nq
    mask = causal_keys(nq, nk, "cpu") & (pos[:, None] - torch.arange(nk)[None, :] < window)
    want = masked_attention(q, k, v, mask.expand(1, 4, nq, nk), 0.3)
    assert torch.allclose(window_attention(q, k, v, window, 0.3), want, atol=1e-12)


def test_chosen_block_attention_is_the_masked_softmax_over_its_blocks():
    nq, nk, size = 50, 83, 8
    q, k, v = _inputs(2, 4, 2, nq, nk)
    g = torch.Generator().manual_seed(1)
    own = (torch.arange(nq) + nk - nq) // size
    # Random past blocks per query, -1 padded, each at most once.
    chosen = torch.full((2, 4, nq, 4), -1)
    for i in range(nq):
        past = torch.randperm(int(own[i]), generator=g)[:4] if own[i] > 0 else torch.tensor([], dtype=torch.long)
        chosen[:, :, i, : len(past)] = past
    mask = torch.zeros(2, 4, nq, math.ceil(nk / size) + 1, dtype=torch.bool)
    mask.scatter_(-1, torch.where(chosen < 0, mask.shape[-1] - 1, chosen), True)
    mask = mask[..., :-1] | (torch.arange(mask.shape[-1] - 1)[None, :] == own[:, None])
    keys = mask.repeat_interleave(size, -1)[..., :nk] & causal_keys(nq, nk, "cpu")
    want = masked_attention(q, k, v, keys, 0.4)
    assert torch.allclose(chosen_block_attention(q, k, v, chosen, size, 0.4), want, atol=1e-12)


def test_bench_checks_long_n_in_blocks_of_queries():
    """Past the float64 limit a causal sparse point is checked on blocks of queries, each against the keys up
    to its last query; the record says how many."""
    point = Point(variant="moba", batch=1, heads=2, kv_heads=2, q_len=512, seq=512, head_dim=16, dtype="float32",
                  causal=True, mode="fwd", device="cpu", reference_max_bytes=2**20)  # fmt: skip
    variant = MobaAttention(AttentionSpec(2, 16, causal=True, options={"block_size": 32}))
    q, k, v, layout = make_inputs(point, requires_grad=False)
    result = reference_error(variant, point, q, k, v, layout)
    assert result["correct"] and result["error"] < 1e-5 and 0 < result["error_queries"] < 512
    assert "blocks" in result["error_note"]
    # A wrong fast form is caught there too.
    variant.forward = lambda q, k, v: torch.zeros_like(q)  # type: ignore[method-assign]
    assert not reference_error(variant, point, q, k, v, layout)["correct"]


def test_gates_are_drawn_in_the_inputs_dtype_for_the_definition_too():
    """reference() widens the gates attend drew (rounded to bfloat16), so a selection sees the same values."""
    q, k, v = (t.bfloat16() for t in _inputs(1, 2, 2, 64, 64))
    variant = DsaAttention(AttentionSpec(2, D, causal=True))
    assert torch.allclose(attend(variant, q, k, v).double(), reference(variant, q, k, v), atol=2e-2)


def test_the_gradient_check_gives_both_forms_one_half_precision_draw_of_the_indexer():
    # A float64 draw of its own for the definition is other values at float16: another top-k, dk 12% off.
    from attnbench.suite.checks.checker import Checker
    from attnbench.suite.checks.gradients import check_gradients

    assert "gradient" in check_gradients(Checker(DsaAttention, "cpu", torch.float16))


@pytest.mark.parametrize("cls", [MobaAttention, NsaAttention])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_fast_forms_by_chunks_of_queries_are_the_whole(cls, shape, monkeypatch):
    from attnbench.variants.sparse import selection

    q, k, v = _inputs(*shape)
    variant = cls(AttentionSpec(shape[1], D, shape[2], causal=True, options={"block_size": 8, "keep": 0.3}))
    gates = make_gates(variant.info.gates, q, k, seed=6)
    whole = attend(variant, q.float(), k.float(), v.float(), gates={n: g.float() for n, g in gates.items()})
    monkeypatch.setattr(selection, "QUERY_CHUNK", 16)  # chunks that cut blocks, and (Nq > Nk) come before keys
    chunked = attend(variant, q.float(), k.float(), v.float(), gates={n: g.float() for n, g in gates.items()})
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert torch.allclose(chunked.double(), variant.reference(q, k, v, **gates), atol=1e-5)
