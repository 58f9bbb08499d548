"""The modified softmaxes (gated, diff, sigmoid, forgetting, sink-logit, sage) against float64 definitions written here
from their papers, entry by entry; and the content-selected and gated variants training in a task model."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.suite.cli import main
from attnbench.suite.runs.records import read_records
from attnbench.variants.contract import OUTPUT_GATE, AttentionSpec, attend, reference
from attnbench.variants.gates import make_gates
from attnbench.variants.modified.diff import DiffAttention
from attnbench.variants.modified.forgetting import ForgettingAttention
from attnbench.variants.modified.gated import GatedAttention, GatedHeadAttention
from attnbench.variants.modified.sage import SageAttention
from attnbench.variants.modified.sigmoid import SigmoidAttention
from attnbench.variants.modified.sink_logit import SinkLogitAttention

D = 8
SHAPES = [(2, 4, 2, 23, 23), (1, 2, 1, 9, 30), (1, 2, 2, 30, 11)]  # (B, H, H_kv, Nq, Nk)


def _inputs(b, h, hkv, nq, nk, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, nq, D, generator=g, dtype=torch.float64),
            torch.randn(b, hkv, nk, D, generator=g, dtype=torch.float64),
            torch.randn(b, hkv, nk, D, generator=g, dtype=torch.float64))  # fmt: skip


def _each(q, k, causal):
    """(b, h, i, kv head, position t, the keys j it sees) for every query of q."""
    b, h, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    for bi in range(b):
        for hi in range(h):
            for i in range(nq):
                t = i + nk - nq
                seen = list(range(min(t + 1, nk))) if causal else list(range(nk))
                yield bi, hi, i, hi // (h // hkv), t, seen


def _softmax_sum(scores, values):
    """sum_j exp(s_j) v_j / sum_j exp(s_j), written out; zeros over no key."""
    if not scores:
        return torch.zeros(D, dtype=torch.float64)
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cls", [GatedAttention, GatedHeadAttention])
def test_gated_is_sigmoid_of_its_gate_times_softmax_attention(cls, causal):
    q, k, v = _inputs(*SHAPES[0])
    variant = cls(AttentionSpec(4, D, 2, causal=causal))
    gates = make_gates(variant.info.gates, q, k, seed=2)
    g = gates[OUTPUT_GATE]
    want = torch.zeros_like(q)
    for b, h, i, kv, _t, seen in _each(q, k, causal):
        o = _softmax_sum([float(q[b, h, i] @ k[b, kv, j]) / math.sqrt(D) for j in seen], [v[b, kv, j] for j in seen])
        gate = g[b, h, i] if g.dim() == 4 else g[b, h, i].expand(D)
        want[b, h, i] = o / (1 + torch.exp(-gate))
    assert torch.allclose(variant.reference(q, k, v, **gates), want, atol=1e-12)
    assert torch.allclose(attend(variant, q, k, v, gates=gates), want, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_sigmoid_attention_sums_unnormalised_sigmoids_with_bias_minus_log_n(shape, causal):
    q, k, v = _inputs(*shape)
    variant = SigmoidAttention(AttentionSpec(shape[1], D, shape[2], causal=causal))
    nk = shape[4]
    want = torch.zeros_like(q)
    for b, h, i, kv, _t, seen in _each(q, k, causal):
        for j in seen:
            z = float(q[b, h, i] @ k[b, kv, j]) / math.sqrt(D) - math.log(nk)
            want[b, h, i] += v[b, kv, j] / (1 + math.exp(-z))
    assert torch.allclose(variant.reference(q, k, v), want, atol=1e-12)
    assert torch.allclose(attend(variant, q, k, v), want, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_forgetting_adds_the_log_forget_gates_between_key_and_query(shape):
    q, k, v = _inputs(*shape)
    variant = ForgettingAttention(AttentionSpec(shape[1], D, shape[2], causal=True, options={"compile": False}))
    gates = make_gates(variant.info.gates, q, k, seed=3)
    log_f = gates["log_f"]
    want = torch.zeros_like(q)
    for b, h, i, kv, t, seen in _each(q, k, True):
        scores = [
            float(q[b, h, i] @ k[b, kv, j]) / math.sqrt(D) + float(log_f[b, h, j + 1 : t + 1].sum()) for j in seen
        ]
        want[b, h, i] = _softmax_sum(scores, [v[b, kv, j] for j in seen])
    assert torch.allclose(variant.reference(q, k, v, **gates), want, atol=1e-12)
    assert torch.allclose(attend(variant, q.float(), k.float(), v.float(), gates={"log_f": log_f.float()}).double(),
                          want, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_sink_logit_joins_the_denominator_only(shape, causal):
    q, k, v = _inputs(*shape)
    variant = SinkLogitAttention(AttentionSpec(shape[1], D, shape[2], causal=causal)).double()
    with torch.no_grad():
        variant.sinks.copy_(torch.linspace(-1.0, 2.0, shape[1]))
    want = torch.zeros_like(q)
    for b, h, i, kv, _t, seen in _each(q, k, causal):
        scores = [float(q[b, h, i] @ k[b, kv, j]) / math.sqrt(D) for j in seen]
        numerator = sum((math.exp(s) * v[b, kv, j] for s, j in zip(scores, seen, strict=True)), torch.zeros(D))
        want[b, h, i] = numerator / (math.exp(float(variant.sinks[h].detach())) + sum(math.exp(s) for s in scores))
    assert torch.allclose(variant.reference(q, k, v), want, atol=1e-12)
    assert torch.allclose(attend(variant, q, k, v).double(), want, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_diff_subtracts_two_maps_then_normalises_each_head(shape, causal):
    q, k, v = _inputs(*shape)
    variant = DiffAttention(AttentionSpec(shape[1], D, shape[2], causal=causal, options={"layer": 3})).double()
    half = D // 2
    init = 0.8 - 0.6 * math.exp(-0.3 * 2)
    lam = (
        math.exp(float(variant.lambda_q1 @ variant.lambda_k1))
        - math.exp(float(variant.lambda_q2 @ variant.lambda_k2))
        + init
    )
    want = torch.zeros_like(q)
    for b, h, i, kv, _t, seen in _each(q, k, causal):
        if not seen:
            continue

        def probs(part, b=b, h=h, i=i, kv=kv, seen=seen):
            s = [float(q[b, h, i, part] @ k[b, kv, j, part]) / math.sqrt(half) for j in seen]
            e = [math.exp(x - max(s)) for x in s]
            return [x / sum(e) for x in e]

        p1, p2 = probs(slice(0, half)), probs(slice(half, D))
        mixed = sum(((a - lam * c) * v[b, kv, j] for a, c, j in zip(p1, p2, seen, strict=True)), torch.zeros(D))
        want[b, h, i] = mixed / torch.sqrt((mixed**2).mean() + 1e-5) * (1 - init)
    assert torch.allclose(variant.reference(q, k, v), want, atol=1e-12)
    assert torch.allclose(attend(variant, q, k, v).double(), want, atol=1e-10)


def test_diff_pairs_each_half_with_its_own_group_head():
    """Under GQA a query head's halves meet the halves of its own K/V head: the output is that of the K/V heads
    repeated to every query head (the original's layout would pair the second half with another head)."""
    q, k, v = _inputs(1, 4, 2, 12, 12)
    grouped = DiffAttention(AttentionSpec(4, D, 2, causal=True)).double()
    full = DiffAttention(AttentionSpec(4, D, 4, causal=True)).double()
    full.load_state_dict(grouped.state_dict())
    repeated = (k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    assert torch.allclose(attend(grouped, q, k, v), attend(full, q, *repeated), atol=1e-12)


@pytest.mark.parametrize("variant", ["nsa", "moba", "dsa", "gated"])
def test_the_new_variants_train_and_name_their_projections(variant, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--task", "mqar", "--variant", variant, "--preset", "tiny", "--out", str(tmp_path)])
    assert (info.value.code or 0) == 0, capsys.readouterr()
    (record,) = read_records(tmp_path)
    assert record["status"] == "ok" and record["test_acc"] is not None
    names = [p.split(":")[0] for p in record["projections"][variant]]
    assert {"q", "kv", "out"} <= set(names)
    own = {"nsa": "gate_layer.g_proj", "dsa": "gate_layer.wq", "gated": "gate_layer.gate_proj"}
    if variant in own:
        assert own[variant] in names
    else:  # MoBA chooses with the attention's own keys: no projection of its own
        assert not [n for n in names if n.startswith("gate_layer")]


def sage_by_hand(q, k, v, block):
    """SageAttention's arithmetic spelled out: keys less their mean; one INT8 scale per block of tokens of q / sqrt(D)
    and of k (max |x| / 127, round to nearest); scores the integer products times the scales; float32 softmax;
    P and V rounded to float16."""
    _, h, n, d = q.shape
    k = k - k.mean(dim=2, keepdim=True)
    out = torch.zeros_like(q)
    for hi in range(h):

        def quantize(x):
            values, scales = torch.zeros_like(x), torch.zeros(len(x))
            for start in range(0, len(x), block):
                rows = x[start : start + block]
                scale = float(rows.abs().max()) / 127
                values[start : start + block] = torch.round(rows / scale)
                scales[start : start + block] = scale
            return values, scales

        qv, qs = quantize(q[0, hi] / math.sqrt(d))
        kv_, ks = quantize(k[0, hi])
        for i in range(n):
            scores = torch.tensor([float(qv[i] @ kv_[j]) * float(qs[i]) * float(ks[j]) for j in range(n)])
            probs = torch.softmax(scores, 0).half().float()
            out[0, hi, i] = probs @ v[0, hi].half().float()
    return out


def test_sage_is_its_arithmetic_spelled_out():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 10, 8, generator=g) for _ in range(3))
    variant = SageAttention(AttentionSpec(2, 8, options={"block_q": 4, "block_k": 4}))
    by_hand = sage_by_hand(q, k, v, 4)
    # Within a float16 step of P (a probability on a rounding boundary may round the other way), where a
    # step missed (the smoothing) is a hundred times that.
    assert torch.allclose(attend(variant, q, k, v), by_hand, atol=2e-4)
    rough = SageAttention(AttentionSpec(2, 8, options={"block_q": 4, "block_k": 4, "smooth_k": False}))
    assert not torch.allclose(attend(rough, q, k, v), by_hand, atol=2e-3)


@pytest.mark.parametrize("causal", [False, True])
def test_sage_error_is_the_quantizations_and_smoothing_halves_it(causal):
    """On keys sharing an offset (the outlier SageAttention smooths away): cosine similarity and relative L1 against
    float64 softmax attention, the measures its papers report; FP16 PV within 2%, FP8 PV within 5%."""
    g = torch.Generator().manual_seed(0)
    q, v = torch.randn(1, 8, 512, 64, generator=g), torch.randn(1, 8, 512, 64, generator=g)
    k = torch.randn(1, 8, 512, 64, generator=g) + 3 * torch.randn(1, 8, 1, 64, generator=g)

    def measured(**options):
        variant = SageAttention(AttentionSpec(8, 64, causal=causal, options=options))
        out, ref = attend(variant, q, k, v).double(), reference(variant, q, k, v)
        cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item()
        return cos, ((out - ref).abs().sum() / ref.abs().sum()).item()

    cos16, l1_16 = measured()
    cos8, l1_8 = measured(pv="fp8")
    _, l1_rough = measured(smooth_k=False)
    assert cos16 > 0.9999 and l1_16 < 0.02
    assert cos8 > 0.999 and l1_8 < 0.05
    assert l1_rough > 1.5 * l1_16
