"""retnet and gla: the chunked forms against their recurrent definitions (float64) in outputs, final states and
gradients; the definitions against the papers' parallel forms; the fla adapters against stand-ins with fla's API."""

from __future__ import annotations

import time

import pytest
import torch
from gpu_fakes import install, module_tree

from attnbench.variants import builtin, fla_release
from attnbench.variants.contract import AttentionSpec, attend, reference
from attnbench.variants.gates import make_gates
from attnbench.variants.linear.gla import FlaGlaAttention, GlaAttention
from attnbench.variants.linear.retnet import FlaRetNetAttention, RetNetAttention, retention_log_decay

VARIANTS = [RetNetAttention, GlaAttention]
FLA_VARIANTS = [FlaRetNetAttention, FlaGlaAttention]


def _build(cls, chunk=16, h=4, hkv=2, d=8):
    spec = AttentionSpec(num_heads=h, head_dim=d, num_kv_heads=hkv, causal=True, options={"chunk_size": chunk})
    return cls(spec)


def _inputs(cls, nk, nq=None, b=2, h=4, hkv=2, d=8, dtype=torch.float64, seed=0, grad=False):
    """q, k, v, the gates drawn from their laws, and an initial state, all in `dtype`."""
    gen = torch.Generator().manual_seed(seed)
    shapes = ((b, h, nq or nk, d), (b, hkv, nk, d), (b, hkv, nk, d), (b, h, d, d))
    q, k, v, state = (torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes)
    gates = make_gates(cls.info.gates, q, k, seed=seed)
    if grad:
        for t in (q, k, v, state, *gates.values()):
            t.requires_grad_()
    return q, k, v, gates, state


def _rel(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("n", [1, 17, 100, 257])
def test_chunked_equals_the_recurrence_with_lengths_and_a_carried_state(cls, chunk, n):
    variant = _build(cls, chunk)
    q, k, v, gates, state = _inputs(cls, n)
    lengths = torch.tensor([n, (n + 1) // 2])
    out, final = variant(q, k, v, key_lengths=lengths, initial_state=state, return_state=True, **gates)
    want, want_final = variant.reference(q, k, v, lengths, initial_state=state, return_state=True, **gates)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, want_final, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", VARIANTS)
def test_padding_neither_writes_nor_decays_the_state(cls):
    """The final state of a sequence of length L padded to N is the state after its L real tokens."""
    variant = _build(cls, chunk=16)
    q, k, v, gates, state = _inputs(cls, 50, b=1)
    short = {name: g[:, :, :30] for name, g in gates.items()}
    padded, padded_final = variant(q, k, v, torch.tensor([30]), initial_state=state, return_state=True, **gates)
    alone, alone_final = variant(
        q[:, :, :30], k[:, :, :30], v[:, :, :30], initial_state=state, return_state=True, **short
    )
    torch.testing.assert_close(padded_final, alone_final, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(padded[:, :, :30], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("n", [100, 257])
def test_two_halves_through_the_carried_state_equal_one_pass(cls, chunk, n):
    variant = _build(cls, chunk)
    q, k, v, gates, state = _inputs(cls, n)
    whole, whole_final = variant(q, k, v, initial_state=state, return_state=True, **gates)
    cut = n // 2 + 3  # off the chunk grid
    halves = [slice(0, cut), slice(cut, n)]
    outs = []
    for part in halves:
        part_gates = {name: g[:, :, part] for name, g in gates.items()}
        out, state = variant(q[:, :, part], k[:, :, part], v[:, :, part], initial_state=state, return_state=True,
                             **part_gates)  # fmt: skip
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 2), whole, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state, whole_final, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", VARIANTS)
def test_fewer_queries_than_keys_are_the_last_rows(cls):
    variant = _build(cls, chunk=16)
    q, k, v, gates, _ = _inputs(cls, 40)
    full = variant(q, k, v, **gates)
    torch.testing.assert_close(variant(q[:, :, -7:], k, v, **gates), full[:, :, -7:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(variant(q[:, :, -1:], k, v, **gates), full[:, :, -1:], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize(("n", "chunk"), [(17, 16), (100, 16), (100, 64), (100, 24), (17, 8)])  # 24: padded sub-chunks
def test_gradients_of_chunked_equal_those_of_the_recurrence(cls, n, chunk):
    variant = _build(cls, chunk)
    q, k, v, gates, state = _inputs(cls, n, grad=True)
    lengths = torch.tensor([n, n - 5])
    leaves = (q, k, v, state, *gates.values())
    weights = torch.randn(2, 4, n, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)

    def loss(run):
        out, final = run(q, k, v, lengths, initial_state=state, return_state=True, **gates)
        return (out * weights[0]).sum() + (final * weights[1]).sum()

    got = torch.autograd.grad(loss(variant), leaves)
    want = torch.autograd.grad(loss(variant.reference), leaves)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk", [16, 64])
def test_low_precision_chunked_is_within_the_declared_tolerance(cls, dtype, chunk):
    variant = _build(cls, chunk, d=16)
    q, k, v, _, _ = _inputs(cls, 257, d=16, dtype=dtype)
    lengths = torch.tensor([257, 200])
    err = _rel(attend(variant, q, k, v, key_lengths=lengths), reference(variant, q, k, v, key_lengths=lengths))
    print(f"{cls.info.name} {dtype} chunk {chunk}: rel err {err:.2e} (tolerance {variant.info.tolerance_for(dtype)})")
    assert err < variant.info.tolerance_for(dtype)


def test_gla_chunked_stays_finite_under_strong_gates():
    """Log decays of up to -30 a token: exp(-G_j) would overflow float32 within a chunk; no exponent here is > 0."""
    variant = _build(GlaAttention, chunk=64, d=16)
    q, k, v, _, _ = _inputs(GlaAttention, 200, d=16, dtype=torch.float32)
    g = -30 * torch.rand(2, 4, 200, 16, generator=torch.Generator().manual_seed(1))
    out = variant(q, k, v, g=g)
    assert torch.isfinite(out).all()
    assert _rel(out, variant.reference(q.double(), k.double(), v.double(), g=g.double())) < 1e-5


def test_retnet_decays_are_the_papers():
    h = torch.arange(6, dtype=torch.float64)
    torch.testing.assert_close(retention_log_decay(6).exp(), 1 - 2.0 ** (-5 - h), rtol=1e-15, atol=0)


def _parallel(q, k, v, log_decay):
    """The parallel (quadratic) form, as fla's naive_retention / naive_parallel_simple_gla: o_i =
    scale sum_{j<=i} (q_i * exp(G_i - G_j)) . k_j v_j, G the cumulative log decay, per channel or per head."""
    g = log_decay.cumsum(2)  # (B, H, N[, D])
    if g.dim() == 3:
        g = g[..., None].expand_as(q)
    decay = (g[:, :, :, None, :] - g[:, :, None, :, :]).exp()  # (B, H, N, N, D), only i >= j kept below
    scores = torch.einsum("bhid,bhjd,bhijd->bhij", q, k, decay).tril()
    return q.shape[-1] ** -0.5 * scores @ v


@pytest.mark.parametrize("cls", VARIANTS)
def test_the_recurrence_is_the_papers_parallel_form(cls):
    variant = _build(cls, hkv=4)
    q, k, v, gates, _ = _inputs(cls, 40, hkv=4)
    log_decay = gates["g"] if gates else retention_log_decay(4)[None, :, None].expand(2, 4, 40)
    torch.testing.assert_close(variant.reference(q, k, v, **gates), _parallel(q, k, v, log_decay))


def test_the_variants_are_registered():
    names = builtin()
    assert names["retnet"] == "attnbench.variants.linear.retnet:RetNetAttention"
    assert names["retnet-fla"] == "attnbench.variants.linear.retnet:FlaRetNetAttention"
    assert names["gla"] == "attnbench.variants.linear.gla:GlaAttention"
    assert names["gla-fla"] == "attnbench.variants.linear.gla:FlaGlaAttention"


@pytest.mark.parametrize("cls", FLA_VARIANTS)
def test_fla_variants_say_why_they_cannot_run_on_cpu(cls):
    assert "cuda" in cls.unavailable_reason("cpu")
    assert cls.unavailable_reason("cpu", torch.float32) is not None


@pytest.mark.parametrize(("version", "problem"), [("0.1.2", "older than 0.2"), ("0.2.0", None), ("0.5.2", None),
                                                  (None, "does not say its version")])  # fmt: skip
def test_fla_releases_with_head_first_inputs_are_refused(monkeypatch, version, problem):
    monkeypatch.setattr(fla_release, "installed_version", lambda: version)
    got = fla_release.release_problem(FlaGlaAttention.fla_minimum, FlaGlaAttention.fla_older)
    assert got is None if problem is None else problem in got


def test_an_fla_that_does_not_import_is_refused_with_its_error(monkeypatch):
    def broken():
        raise ImportError("libcudart.so.12: cannot open shared object file")

    monkeypatch.setattr(fla_release, "installed_version", broken)
    assert "does not import (ImportError: libcudart.so.12" in fla_release.release_problem((0, 2), "")


def _fake_chunk(q, k, v, g, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None):
    """fla >= 0.2's chunk_simple_gla / chunk_gla as their naive recurrences document them: (B, T, H, K) inputs,
    g (B, T, H) or (B, T, H, K), a float32 initial state (B, H, K, V); returns (o (B, T, H, V), final or None)."""
    b, t, h, dk = q.shape
    assert k.shape == q.shape and v.shape[:3] == (b, t, h) and g.shape in ((b, t, h), (b, t, h, dk))
    assert g.dtype == torch.float32 and all(x.is_contiguous() for x in (q, k, v, g)) and cu_seqlens is None
    assert initial_state is None or (initial_state.dtype == torch.float32 and initial_state.shape == (b, h, dk, dk))
    decay = (g if g.dim() == 4 else g[..., None].expand(b, t, h, dk)).double().exp()
    state = q.new_zeros(b, h, dk, v.shape[-1], dtype=torch.float64) if initial_state is None else initial_state.double()
    out = []
    for i in range(t):
        state = decay[:, i, :, :, None] * state + k[:, i, :, :, None].double() * v[:, i, :, None, :].double()
        out.append(scale * (q[:, i, :, None, :].double() @ state).squeeze(-2))
    return torch.stack(out, 1).to(q.dtype), state.float() if output_final_state else None


@pytest.mark.parametrize("cls", FLA_VARIANTS)
def test_fla_adapters_against_the_documented_api(monkeypatch, cls):
    leaves = {"fla.ops.simple_gla": {"chunk_simple_gla": _fake_chunk}, "fla.ops.gla": {"chunk_gla": _fake_chunk}}
    install(monkeypatch, module_tree(**leaves))
    variant = _build(cls, chunk=64)
    q, k, v, gates, state = _inputs(cls, 30, nq=26, dtype=torch.float32)
    lengths = torch.tensor([30, 21])
    out, final = variant(q, k, v, lengths, initial_state=state, return_state=True, **gates)
    want, want_final = variant.reference(
        q.double(), k.double(), v.double(), lengths, initial_state=state.double(), return_state=True,
        **{name: g.double() for name, g in gates.items()},
    )  # fmt: skip
    assert out.dtype == torch.float32 and out.shape == q.shape
    assert _rel(out, want) < 1e-6 and _rel(final, want_final) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("cls", VARIANTS)
def test_time_of_chunked_against_the_recurrence(cls):
    """Prints (asserts nothing): both forms at N = 4096, B = 1, H = 4, D = 64 in float32, forward alone and
    forward with backward, best of two."""
    variant = _build(cls, chunk=64, hkv=4, d=64)
    q, k, v, gates, _ = _inputs(cls, 4096, b=1, hkv=4, d=64, dtype=torch.float32)
    q, k, v, gates = variant._prepare(q, k, v, None, gates, torch.float32)
    state = q.new_zeros(1, 4, 64, 64)

    def forward(form):
        with torch.no_grad():
            form(q, k, v, gates, state)

    def forward_backward(form):
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        out, _ = form(*leaves, gates, state)
        torch.autograd.grad(out.sum(), leaves)

    for run in (forward, forward_backward):
        times = {}
        for form in (variant.chunked, variant.recurrent):
            runs = []
            for _ in range(2):
                start = time.perf_counter()
                run(form)
                runs.append(time.perf_counter() - start)
            times[form.__name__] = min(runs)
        chunked, recurrent = times["chunked"], times["recurrent"]
        print(f"\n{cls.info.name} N=4096 float32 {run.__name__}: chunked {chunked:.3f} s, "
              f"recurrent {recurrent:.3f} s, recurrent / chunked = {recurrent / chunked:.1f}", end="")  # fmt: skip
