"""The KV-cache policies (StreamingLLM, H2O, SnapKV) against their sources' rules written here one token at
a time in float64; what they keep when the prompt holds a token every query attends to; the decode plan
that times the cut cache; the records; training refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.suite.cli import main
from attnbench.suite.measure.point import Point
from attnbench.suite.measure.worker import _call_plan, make_inputs
from attnbench.suite.runs.records import read_records
from attnbench.variants.contract import AttentionSpec, attend
from attnbench.variants.gates import make_gates
from attnbench.variants.sparse.cache_h2o import H2OCache
from attnbench.variants.sparse.cache_snapkv import SnapKVCache
from attnbench.variants.sparse.cache_streaming import StreamingCache

D = 8
# (B, H, H_kv, Nq, Nk, options)
SHAPES = [(2, 2, 2, 1, 200, {}), (1, 4, 2, 4, 150, {"keep": 0.25}), (1, 2, 1, 3, 90, {"top_k": 40})]


def _inputs(b, h, hkv, nq, nk, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, nq, D, generator=g, dtype=torch.float64)
    k, v = (torch.randn(b, hkv, nk, D, generator=g, dtype=torch.float64) for _ in range(2))
    prompt_q = torch.randn(b, h, nk, D, generator=g, dtype=torch.float64)
    return q, k, v, prompt_q


def _budget(prompt, options):
    if "top_k" in options:
        return min(options["top_k"], prompt)
    return min(max(1, math.ceil(options.get("keep", 0.125) * prompt - 1e-9)), prompt)


def _received(prompt_q, k, rows):
    """(B, H, P) float64: the causal softmax weight each prompt token gets from the prompt queries `rows`."""
    b, h, p, _ = prompt_q.shape
    group = h // k.shape[1]
    got = torch.zeros(b, h, p, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for i in rows:
                keys = k[bi, hi // group, : i + 1]
                got[bi, hi, : i + 1] += torch.softmax(keys @ prompt_q[bi, hi, i] / math.sqrt(D), dim=0)
    return got.view(b, k.shape[1], group, p).sum(2)  # a K/V group's cache, by its heads' summed scores


def streaming_kept(k, prompt_q, prompt, keep, sinks=4):
    first = min(sinks, keep)
    return [[sorted(set(range(first)) | set(range(prompt - (keep - first), prompt)))] * k.shape[1]] * k.shape[0]


def h2o_kept(k, prompt_q, prompt, keep, recent_share=0.5):
    """H2OKVCache_LayerWise at the end of the prompt: the recent tokens, then the top received attention."""
    scores = _received(prompt_q[:, :, :prompt], k[:, :, :prompt], range(prompt))
    recent = int(keep * recent_share)
    kept = []
    for row in scores:
        per_head = []
        for s in row:
            older = s[: prompt - recent].tolist()
            heavy = sorted(range(len(older)), key=lambda j: -older[j])[: keep - recent]
            per_head.append(sorted(heavy) + list(range(prompt - recent, prompt)))
        kept.append(per_head)
    return kept


def snapkv_kept(k, prompt_q, prompt, keep, window=32, kernel=5):
    """SnapKVCluster.update_kv: the window's summed weights on the older tokens, average-pooled, top, the window."""
    window = min(window, keep)
    if window == keep:
        return streaming_kept(k, prompt_q, prompt, keep, sinks=0)
    scores = _received(prompt_q[:, :, :prompt], k[:, :, :prompt], range(prompt - window, prompt))
    kept = []
    for row in scores:
        per_head = []
        for s in row:
            older = s[: prompt - window]
            padded = F.pad(older, (kernel // 2, kernel // 2))
            pooled = [float(padded[j : j + kernel].sum()) / kernel for j in range(len(older))]
            heavy = sorted(range(len(pooled)), key=lambda j: -pooled[j])[: keep - window]
            per_head.append(sorted(heavy) + list(range(prompt - window, prompt)))
        kept.append(per_head)
    return kept


def decode_by_query(q, k, v, kept):
    """Each query over the kept prompt tokens of its K/V head and its own tokens up to itself, float64."""
    b, h, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    prompt = nk - nq
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            g = hi // (h // hkv)
            for i in range(nq):
                keys = list(kept[bi][g]) + list(range(prompt, prompt + i + 1))
                w = torch.softmax(k[bi, g, keys] @ q[bi, hi, i] / math.sqrt(D), dim=0)
                out[bi, hi, i] = w @ v[bi, g, keys]
    return out


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


POLICIES = [(StreamingCache, streaming_kept), (H2OCache, h2o_kept), (SnapKVCache, snapkv_kept)]


@pytest.mark.parametrize("cls,kept_by_source", POLICIES, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_each_policy_is_its_source_token_by_token(cls, kept_by_source, shape):
    b, h, hkv, nq, nk, options = shape
    q, k, v, prompt_q = _inputs(b, h, hkv, nq, nk)
    variant = cls(AttentionSpec(h, D, hkv, causal=True, options=options))
    gates = {"prompt_q": prompt_q} if variant.info.gates else {}
    prompt = nk - nq
    keep = _budget(prompt, options)
    want = decode_by_query(q, k, v, kept_by_source(k, prompt_q, prompt, keep))
    for form in (variant.forward, variant.reference):
        torch.testing.assert_close(form(q, k, v, **gates), want, rtol=1e-9, atol=1e-9)
    assert variant.cache_tokens(nq, nk) == keep + nq
    assert variant.kept_pairs(nq, nk) == nq * keep + nq * (nq + 1) // 2


def test_a_prompt_within_the_budget_is_kept_whole():
    q, k, v, prompt_q = _inputs(1, 2, 2, 4, 12)
    variant = H2OCache(AttentionSpec(2, D, causal=True, options={"top_k": 8}))
    whole = torch.softmax((q @ k.mT / math.sqrt(D)).masked_fill(torch.ones(4, 12).triu(9).bool(), -math.inf), -1) @ v
    torch.testing.assert_close(variant(q, k, v, prompt_q=prompt_q), whole)


def _planted(seed=1, b=1, h=4, hkv=2, nq=1, nk=400, heavy=150):
    """A prompt whose token `heavy` (mid-prompt, neither sink nor recent) every query attends to."""
    q, k, v, prompt_q = _inputs(b, h, hkv, nq, nk, seed)
    toward = torch.ones(D, dtype=torch.float64) / math.sqrt(D)
    q, prompt_q = q + 2 * toward, prompt_q + 2 * toward
    k[:, :, heavy] = 12 * toward
    v[:, :, heavy] = 5.0
    return q, k, v, prompt_q


@pytest.mark.parametrize("cls", [H2OCache, SnapKVCache])
def test_the_scoring_policies_keep_a_token_everyone_attends_to_and_streaming_loses_it(cls):
    q, k, v, prompt_q = _planted()
    spec = AttentionSpec(4, D, 2, causal=True)
    scored, streaming = cls(spec), StreamingCache(spec)
    assert bool((scored.kept_tokens(k, 399, prompt_q) == 150).any(-1).all())
    assert not bool((streaming.kept_tokens(k, 399, None) == 150).any())
    whole = torch.softmax(q @ k.repeat_interleave(2, 1).mT / math.sqrt(D), -1) @ v.repeat_interleave(2, 1)

    def error(variant, **gates):
        return float((variant(q, k, v, **gates) - whole).norm() / whole.norm())

    assert error(scored, prompt_q=prompt_q) < 0.5 * error(streaming)


def test_decoding_times_the_cut_cache_and_the_record_holds_its_bytes(tmp_path, capsys):
    point = Point(variant="cache-snapkv", batch=1, heads=4, kv_heads=2, q_len=4, seq=512, head_dim=D,
                  dtype="float32", causal=True, mode="fwd", device="cpu")  # fmt: skip
    variant = SnapKVCache(AttentionSpec(4, D, 2, causal=True))
    q, k, v, layout = make_inputs(point, requires_grad=False)
    layout["gates"] = make_gates(variant.info.gates, q, k)
    setup, step = _call_plan(variant, point, q, k, v, layout)
    calls = []
    variant.choose = lambda *args: calls.append(1) or SnapKVCache.choose(variant, *args)
    out = step(setup())
    assert calls == [] and torch.allclose(out, attend(variant, q, k, v, **layout))  # the cut was made before

    fast = ["--budget", "0.05", "--repeats", "3", "--warmup", "1", "--threads", "1", "--no-report"]
    argv = ["bench", "--variants", "cache-streaming,cache-h2o,cache-snapkv", "--seq", "300", "--q-len", "1,4",
            "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--causal", *fast,
            "--out", str(tmp_path)]  # fmt: skip
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    records = read_records(tmp_path)
    assert len(records) == 6 and all(r["status"] == "ok" and r["correct"] for r in records)
    for r in records:
        keep = math.ceil((r["seq"] - r["q_len"]) / 8)
        per_token = 2 * 2 * 16 * 4  # K and V, 2 K/V heads of 16 float32
        assert r["kept_cache_bytes"] == per_token * (keep + r["q_len"]) and r["kv_cache_bytes"] == per_token * 300
        assert r["kept_fraction"] == pytest.approx(
            (keep * r["q_len"] + r["q_len"] * (r["q_len"] + 1) / 2) / (300 * r["q_len"])
        )
        assert r["error_vs_softmax"] > 0.1  # random inputs: 7/8 of the cache dropped shows


def test_training_with_a_cache_policy_is_refused_in_one_line(tmp_path, capsys):
    code, _, err = cli(
        capsys, "train", "--task", "mqar", "--variant", "cache-h2o", "--preset", "tiny", "--out", str(tmp_path)
    )
    assert code != 0 and "KV-cache policy for decoding" in err and "Traceback" not in err
