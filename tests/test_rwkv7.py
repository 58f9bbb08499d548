"""rwkv7: the chunked form against the recurrent definition (values, state, gradients, lengths), and
rwkv7-fla's call of fla's chunk_rwkv7 against a stand-in computing what fla documents."""

from __future__ import annotations

import time

import pytest
import torch
from gpu_fakes import install, module_tree

from attnbench.variants.contract import AttentionSpec
from attnbench.variants.gates import make_gates
from attnbench.variants.linear.rwkv7 import FlaRwkv7, Rwkv7

H, H_KV, D = 4, 2, 16


def build(chunk: int = 16, heads: int = H, kv_heads: int = H_KV, dim: int = D, cls: type = Rwkv7) -> Rwkv7:
    spec = AttentionSpec(
        num_heads=heads, head_dim=dim, num_kv_heads=kv_heads, causal=True, options={"chunk_size": chunk}
    )
    return cls(spec)


def inputs(variant, nq, nk, batch=2, dtype=torch.float64, seed=0):
    """q, k, v (drawn in float64, then cast) and the variant's gates drawn from their laws."""
    spec = variant.spec
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, spec.num_heads, nq, spec.head_dim, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(batch, spec.num_kv_heads, nk, spec.head_dim, generator=gen, dtype=torch.float64) for _ in "kv")
    gates = make_gates(variant.info.gates, q, k, seed=seed)
    return q.to(dtype), k.to(dtype), v.to(dtype), {name: g.to(dtype) for name, g in gates.items()}


def rel(out, ref) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def piece(variant, q, k, v, gates, start, stop, state=None):
    """The variant on tokens start:stop from `state`: (output, final state)."""
    part, gates = slice(start, stop), {name: g[:, :, start:stop] for name, g in gates.items()}
    return variant(q[:, :, part], k[:, :, part], v[:, :, part], initial_state=state, return_state=True, **gates)


@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("n", [1, 17, 100, 257])
def test_chunked_equals_the_recurrence(n, chunk):
    variant = build(chunk)
    q, k, v, gates = inputs(variant, n, n)
    out, final = variant(q, k, v, return_state=True, **gates)
    ref, ref_final = variant.reference(q, k, v, return_state=True, **gates)
    assert rel(out, ref) < 1e-12 and rel(final, ref_final) < 1e-12


def test_key_lengths_and_fewer_queries():
    variant = build(16)
    q, k, v, gates = inputs(variant, 60, 100)
    lengths = torch.tensor([100, 37])
    out, final = variant(q, k, v, key_lengths=lengths, return_state=True, **gates)
    ref = variant.reference(q, k, v, key_lengths=lengths, **gates)
    assert rel(out, ref) < 1e-12
    # Padding updates nothing: the second sequence's final state is its state after 37 keys.
    second = {name: g[1:, :, :37] for name, g in gates.items()}
    _, short = variant.reference(q[1:, :, :1], k[1:, :, :37], v[1:, :, :37], return_state=True, **second)
    assert rel(final[1:], short) < 1e-12


def test_state_carried_across_calls_equals_one_pass():
    variant = build(16)
    q, k, v, gates = inputs(variant, 100, 100)
    start = 0.1 * torch.randn(2, H, D, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole, final = variant(q, k, v, initial_state=start, return_state=True, **gates)
    ref, ref_final = variant.reference(q, k, v, initial_state=start, return_state=True, **gates)
    assert rel(whole, ref) < 1e-12 and rel(final, ref_final) < 1e-12
    head, state = piece(variant, q, k, v, gates, 0, 37, start)
    tail, carried = piece(variant, q, k, v, gates, 37, 100, state)
    assert rel(torch.cat([head, tail], dim=2), whole) < 1e-12 and rel(carried, final) < 1e-12


def test_gradients_of_chunked_equal_the_recurrence():
    variant = build(16)
    q, k, v, gates = inputs(variant, 40, 40)
    start = 0.1 * torch.randn(2, H, D, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (q, k, v, gates["w"], gates["a"], start)]
    probe = torch.Generator().manual_seed(2)
    out_w = torch.randn(2, H, 40, D, generator=probe, dtype=torch.float64)
    state_w = torch.randn(2, H, D, D, generator=probe, dtype=torch.float64)

    def grads(form):
        out, final = form(q, k, v, initial_state=start, return_state=True, **gates)
        return torch.autograd.grad((out * out_w).sum() + (final * state_w).sum(), leaves)

    names = ("q", "k", "v", "w", "a", "state")
    for name, got, want in zip(names, grads(variant), grads(variant.reference), strict=True):
        assert rel(got, want) < 1e-10, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunk", [16, 64])
def test_lower_precision_within_the_declared_tolerance(dtype, chunk):
    variant = build(chunk, dim=64)
    q, k, v, gates = inputs(variant, 257, 257, dtype=dtype)
    out = variant(q, k, v, **gates)
    assert out.dtype == dtype
    ref = variant.reference(q.double(), k.double(), v.double(), **{name: g.double() for name, g in gates.items()})
    assert rel(out, ref) <= variant.info.tolerance_for(dtype)


def test_state_stays_bounded_over_long_sequences():
    variant = build(64, dim=64)
    n, step = 2048, 256
    q, k, v, gates = inputs(variant, n, n, batch=1, dtype=torch.float32)
    state, norms = None, []
    for start in range(0, n, step):
        _, state = piece(variant, q, k, v, gates, start, start + step, state)
        norms.append(state.norm(dim=(-2, -1)).max().item())
    assert all(torch.isfinite(torch.tensor(norms)))
    # After the first window the norm is stationary: decay and the delta rule's removal balance the writes.
    assert max(norms[1:]) <= 1.5 * norms[0], norms


def fake_chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, **_):
    """What fla's chunk_rwkv7 computes (fla/ops/generalized_delta_rule/dplr/naive.py, fla/ops/rwkv7/
    fused_recurrent.py): (B, T, H, K) inputs, w the log decay, state (B, H, K, V) in float32,
    S = exp(w) S + b (a^T S) + k v^T and o = scale S^T r; in float64 here."""
    assert r.dim() == 4 and r.shape == w.shape == k.shape == a.shape == b.shape and v.shape[:3] == r.shape[:3]
    assert w.dtype == torch.float32 and bool((w <= 0).all()) and initial_state.dtype == torch.float32
    dtype = v.dtype
    r, w, k, v, a, b = (t.double() for t in (r, w, k, v, a, b))
    state = initial_state.double()
    out = []
    for t in range(r.shape[1]):
        read = (a[:, t, :, :, None] * state).sum(-2, keepdim=True)
        state = w[:, t].exp()[..., None] * state + b[:, t, :, :, None] * read + k[:, t, :, :, None] * v[:, t, :, None]
        out.append(scale * (r[:, t, :, :, None] * state).sum(-2))
    return torch.stack(out, dim=1).to(dtype), (state.float() if output_final_state else None)


def test_fla_call_against_the_documented_kernel(monkeypatch):
    install(monkeypatch, module_tree(**{"fla.ops.rwkv7": {"chunk_rwkv7": fake_chunk_rwkv7}}))
    fla_variant, variant = build(cls=FlaRwkv7), build()
    q, k, v, gates = inputs(variant, 30, 45, dtype=torch.float32)
    lengths = torch.tensor([45, 20])
    start = 0.1 * torch.randn(2, H, D, D, generator=torch.Generator().manual_seed(1))
    out, final = fla_variant(q, k, v, key_lengths=lengths, initial_state=start, return_state=True, **gates)
    ref, ref_final = variant.reference(q, k, v, key_lengths=lengths, initial_state=start, return_state=True, **gates)
    assert out.shape == (2, H, 30, D) and rel(out, ref) < 1e-6 and rel(final, ref_final) < 1e-6


def test_fla_variant_says_why_it_is_unavailable_on_cpu():
    assert FlaRwkv7.unavailable_reason("cpu") == "runs on cuda only"


@pytest.mark.slow
def test_print_chunked_and_recurrent_times():
    variant = build(64, heads=4, kv_heads=4, dim=64)
    q, k, v, gates = inputs(variant, 4096, 4096, batch=1, dtype=torch.float32)
    state = torch.zeros(1, 4, 64, 64)

    def seconds(form) -> float:
        begin = time.perf_counter()
        form(q, k, v, gates, state)
        return time.perf_counter() - begin

    with torch.no_grad():
        seconds(variant.chunked)  # warm-up
        chunked = min(seconds(variant.chunked) for _ in range(3))
        recurrent = seconds(variant.recurrent)
    print(f"\nrwkv7 N=4096 B=1 H=4 D=64 float32, chunk 64, {torch.get_num_threads()} threads: chunked {chunked:.3f} s")
    print(f"recurrent {recurrent:.3f} s ({recurrent / chunked:.0f}x the chunked form's time)")
