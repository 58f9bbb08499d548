"""deltanet and gated-deltanet: the chunked WY / UT form against the float64 loop (outputs, states, gradients),
and the bugs that comparison must catch."""

from __future__ import annotations

import time

import pytest
import torch

from attnbench.variants import fla_release
from attnbench.variants.contract import AttentionSpec, attend, reference
from attnbench.variants.gates import make_gates
from attnbench.variants.linear.deltanet import (
    DeltaNetAttention,
    FlaDeltaNetAttention,
    chunked_delta_rule,
    l2_normalise,
)
from attnbench.variants.linear.gated_deltanet import FlaGatedDeltaNetAttention, GatedDeltaNetAttention

VARIANTS = [DeltaNetAttention, GatedDeltaNetAttention]
H, HKV, D = 4, 2, 16


def build(cls, chunk: int = 16, heads: int = H, kv_heads: int = HKV, dim: int = D):
    spec = AttentionSpec(
        num_heads=heads, head_dim=dim, num_kv_heads=kv_heads, causal=True, options={"chunk_size": chunk}
    )
    return cls(spec)


def inputs(n, nq=None, batch=2, heads=H, kv_heads=HKV, dim=D, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, nq or n, dim, generator=gen, dtype=torch.float64)
    k = torch.randn(batch, kv_heads, n, dim, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, kv_heads, n, dim, generator=gen, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def gates_of(variant, q, k) -> dict[str, torch.Tensor]:
    return make_gates(variant.info.gates, q, k)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def far(a: torch.Tensor, b: torch.Tensor) -> bool:
    """More than 1e-3 apart, relatively (NaN or inf count as far)."""
    return not rel(a, b) <= 1e-3


# ----- the chunked form is the recurrence -----


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("n", [1, 17, 100, 257])
@pytest.mark.parametrize("chunk", [16, 64])
def test_chunked_equals_the_recurrence(cls, n, chunk):
    variant = build(cls, chunk)
    q, k, v = inputs(n)
    gates = gates_of(variant, q, k)
    assert rel(variant(q, k, v, **gates), variant.reference(q, k, v, **gates)) < 1e-12


@pytest.mark.parametrize("cls", VARIANTS)
def test_fewer_queries_read_the_last_positions(cls):
    variant = build(cls)
    q, k, v = inputs(70, nq=23)
    gates = gates_of(variant, q, k)
    out = variant(q, k, v, **gates)
    assert out.shape == q.shape
    assert rel(out, variant.reference(q, k, v, **gates)) < 1e-12
    # The same queries at the end of a full-length query sequence.
    q_full = torch.cat([torch.randn(2, H, 47, D, dtype=torch.float64), q], dim=2)
    assert rel(out, variant(q_full, k, v, **gates)[:, :, -23:]) < 1e-12


@pytest.mark.parametrize("cls", VARIANTS)
def test_key_lengths_stop_the_state_at_the_length(cls):
    variant = build(cls)
    q, k, v = inputs(100)
    gates = gates_of(variant, q, k)
    lengths = torch.tensor([100, 37])
    out, state = variant(q, k, v, key_lengths=lengths, return_state=True, **gates)
    ref, ref_state = variant.reference(q, k, v, key_lengths=lengths, return_state=True, **gates)
    assert rel(out, ref) < 1e-12 and rel(state, ref_state) < 1e-12
    # Sequence 1 alone, cut at its length: the same outputs up to it and the same final state.
    cut = {name: g[1:, :, :37] for name, g in gates.items()}
    alone, alone_state = variant(q[1:, :, :37], k[1:, :, :37], v[1:, :, :37], return_state=True, **cut)
    assert rel(out[1:, :, :37], alone) < 1e-12 and rel(state[1:], alone_state) < 1e-12
    # Padding keys and values change nothing.
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 37:], v2[1, :, 37:] = 5.0, -3.0
    assert torch.equal(variant(q, k2, v2, key_lengths=lengths, **gates), out)


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("form", ["chunked", "recurrent"])
def test_the_final_state_of_one_half_starts_the_other(cls, form):
    variant = build(cls)
    run = variant.forward if form == "chunked" else variant.reference
    q, k, v = inputs(90)
    gates = gates_of(variant, q, k)
    s0 = torch.randn(2, H, D, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def part(span: slice, state: torch.Tensor):
        sliced = {name: g[:, :, span] for name, g in gates.items()}
        return run(q[:, :, span], k[:, :, span], v[:, :, span], initial_state=state, return_state=True, **sliced)

    whole, whole_state = run(q, k, v, initial_state=s0, return_state=True, **gates)
    first, mid = part(slice(None, 41), s0)
    second, end = part(slice(41, None), mid)
    assert rel(torch.cat([first, second], dim=2), whole) < 1e-12
    assert rel(end, whole_state) < 1e-12


@pytest.mark.parametrize("cls", VARIANTS)
def test_the_chunked_final_state_is_the_recurrence(cls):
    variant = build(cls, chunk=16)
    q, k, v = inputs(57)
    gates = gates_of(variant, q, k)
    s0 = torch.randn(2, H, D, D, dtype=torch.float64)
    _, state = variant(q, k, v, initial_state=s0, return_state=True, **gates)
    _, ref_state = variant.reference(q, k, v, initial_state=s0, return_state=True, **gates)
    assert rel(state, ref_state) < 1e-12


def test_gated_deltanet_with_no_decay_is_deltanet():
    gated, plain = build(GatedDeltaNetAttention), build(DeltaNetAttention)
    q, k, v = inputs(50)
    beta = gates_of(plain, q, k)["beta"]
    assert rel(gated(q, k, v, g=torch.zeros_like(beta), beta=beta), plain(q, k, v, beta=beta)) < 1e-12


@pytest.mark.parametrize("cls", VARIANTS)
def test_gradients_of_the_chunked_form_are_the_recurrence(cls):
    variant = build(cls, chunk=16)
    q, k, v = inputs(45)
    gates = gates_of(variant, q, k)
    s0 = torch.randn(2, H, D, D, dtype=torch.float64)
    leaves = [q, k, v, s0, *gates.values()]
    for t in leaves:
        t.requires_grad_()
    grad_out = torch.randn(q.shape, dtype=torch.float64)

    def grads(run):
        out, state = run(q, k, v, initial_state=s0, return_state=True, **gates)
        return torch.autograd.grad((out * grad_out).sum() + state.sum(), leaves)

    for got, want in zip(grads(variant.forward), grads(variant.reference), strict=True):
        assert rel(got, want) < 1e-10


@pytest.mark.parametrize("cls", VARIANTS)
def test_float32_is_within_the_declared_tolerance(cls):
    variant = build(cls, chunk=64, dim=64)
    q, k, v = inputs(257, dim=64, dtype=torch.float32)
    out = attend(variant, q, k, v)  # gates drawn in float32, and in float64 by `reference`
    assert out.dtype == torch.float32
    assert rel(out, reference(variant, q, k, v)) <= cls.info.tolerance_for(torch.float32)


# ----- named bugs the comparison with the definition catches -----


def buggy_loop(q, k, v, beta, g, state, decay_after=False, beta_on_v_only=False):
    """The recurrence with one of two bugs switched on (q scaled, q and k normalised already)."""
    outs = []
    for t in range(k.shape[2]):
        k_t, b_t = k[:, :, t], beta[:, :, t, None, None]
        decay = g[:, :, t, None, None].exp()
        if not decay_after:
            state = state * decay
        read = torch.einsum("bhkv,bhk->bhv", state, k_t)
        if beta_on_v_only:
            state = state + k_t[..., :, None] * (b_t[..., 0] * v[:, :, t] - read)[..., None, :]
        else:
            state = state + b_t * k_t[..., :, None] * (v[:, :, t] - read)[..., None, :]
        if decay_after:
            state = state * decay
        outs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, :, t]))
    return torch.stack(outs, dim=2), state


class DecayAfterUpdate(GatedDeltaNetAttention):
    """Bug (a): forgets after writing, so the delta rule reads the undecayed state."""

    def chunked(self, q, k, v, gates, state):
        q, k = l2_normalise(q) * self.scale(q.shape[-1]), l2_normalise(k)
        return buggy_loop(q, k, v, gates["beta"], gates["g"], state, decay_after=True)


class BetaOnValuesOnly(DeltaNetAttention):
    """Bug (b): S + k (beta v - S^T k)^T: the erase of the old value is not scaled by beta."""

    def chunked(self, q, k, v, gates, state):
        q, k = l2_normalise(q) * self.scale(q.shape[-1]), l2_normalise(k)
        no_decay = torch.zeros_like(gates["beta"])
        return buggy_loop(q, k, v, gates["beta"], no_decay, state, beta_on_v_only=True)


class NoL2Norm(DeltaNetAttention):
    """Bug (c): q and k enter the delta rule unnormalised."""

    def chunked(self, q, k, v, gates, state):
        return chunked_delta_rule(q, k, v, gates["beta"], state, self.options.chunk_size, self.scale(q.shape[-1]))


class StateOneTokenLate(DeltaNetAttention):
    """Bug (d): the state handed to the next chunk has also taken that chunk's first token."""

    def chunked(self, q, k, v, gates, state):
        q, k, beta = l2_normalise(q), l2_normalise(k), gates["beta"]
        c, scale = self.options.chunk_size, self.scale(q.shape[-1])
        outs = []
        for s in range(0, k.shape[2], c):
            chunk = [t[:, :, s : s + c] for t in (q, k, v, beta)]
            late = [t[:, :, s : s + c + 1] for t in (q, k, v, beta)]  # one token past the chunk's end
            outs.append(chunked_delta_rule(*chunk, state, c, scale)[0])
            state = chunked_delta_rule(*late, state, c + 1, scale)[1]
        return torch.cat(outs, dim=2), state


@pytest.mark.parametrize("bug", [DecayAfterUpdate, BetaOnValuesOnly, NoL2Norm, StateOneTokenLate])
def test_a_named_bug_is_far_from_the_definition(bug):
    variant = build(bug, chunk=16)
    q, k, v = inputs(100)
    gates = gates_of(variant, q, k)
    assert far(variant(q, k, v, **gates), variant.reference(q, k, v, **gates))


# ----- the fla kernels -----


def fla_l2norm(x):
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + 1e-6)


def fla_contract(q, k, v, *gates, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, chunk_size):
    """fla's chunk kernels as their docstrings describe them, on the CPU: (B, T, H, ...) tensors, g before beta
    (chunk_delta_rule takes beta alone), a float32 state; the loop of fla/ops/gated_delta_rule/naive.py."""
    assert use_qk_l2norm_in_kernel and chunk_size in (16, 32, 64)
    dtype = q.dtype
    *g, beta = (t.transpose(1, 2).float() for t in gates)  # (B, H, T)
    g = g[0] if g else torch.zeros_like(beta)
    q, k, v = (t.transpose(1, 2).float() for t in (q, k, v))  # (B, H, T, D)
    q, k = fla_l2norm(q) * scale, fla_l2norm(k)
    h = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1]) if initial_state is None else initial_state.float()
    o = torch.empty_like(v)
    for t in range(q.shape[2]):
        h = h * g[:, :, t].exp()[..., None, None]
        b_v = (v[:, :, t] - (h * k[:, :, t, :, None]).sum(-2)) * beta[:, :, t, None]
        h = h + k[:, :, t, :, None] * b_v[..., None, :]
        o[:, :, t] = torch.einsum("bhd,bhdm->bhm", q[:, :, t], h)
    return o.transpose(1, 2).to(dtype), h if output_final_state else None


@pytest.mark.parametrize("cls", [FlaDeltaNetAttention, FlaGatedDeltaNetAttention])
def test_the_fla_call_follows_fla_conventions(cls):
    """The tensors, keywords and gate order the variant hands fla, run through fla's own loop on the CPU."""

    class OnCpu(cls):
        fla_kernel = staticmethod(lambda: fla_contract)

    variant = build(OnCpu)
    q, k, v = inputs(60, nq=41, dtype=torch.float32)
    gates = gates_of(variant, q, k)
    s0, lengths = torch.randn(2, H, D, D), torch.tensor([60, 33])
    out, state = variant(q, k, v, key_lengths=lengths, initial_state=s0, return_state=True, **gates)
    ref, ref_state = variant.reference(q, k, v, key_lengths=lengths, initial_state=s0, return_state=True, **gates)
    assert out.shape == q.shape and rel(out, ref) < 1e-5 and rel(state, ref_state) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [FlaDeltaNetAttention, FlaGatedDeltaNetAttention])
def test_the_fla_kernels_are_the_definition(cls):
    reason = cls.unavailable_reason("cuda", torch.bfloat16)
    if reason:
        pytest.skip(reason)
    variant = build(cls, chunk=64, dim=64).cuda()
    q, k, v = (t.cuda().requires_grad_() for t in inputs(300, nq=250, dim=64, dtype=torch.bfloat16))
    gates = gates_of(variant, q, k)
    s0, lengths = torch.randn(2, H, 64, 64, device="cuda"), torch.tensor([300, 170], device="cuda")
    out, state = variant(q, k, v, key_lengths=lengths, initial_state=s0, return_state=True, **gates)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, ref_state = variant.reference(
        q64,
        k64,
        v64,
        key_lengths=lengths,
        initial_state=s0,
        return_state=True,
        **{n: g.double() for n, g in gates.items()},
    )
    tol = cls.info.tolerance_for(torch.bfloat16)
    assert rel(out, ref) <= tol and rel(state, ref_state) <= tol
    grad_out = torch.randn_like(ref)
    got = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype))
    want = torch.autograd.grad(ref, (q64, k64, v64), grad_out)
    assert all(rel(a, b) <= tol for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("cls", [FlaDeltaNetAttention, FlaGatedDeltaNetAttention])
def test_the_fla_variants_say_why_they_cannot_run_on_cpu(cls):
    assert cls.unavailable_reason("cpu", torch.bfloat16) == "runs on cuda only"


def test_deltanet_fla_refuses_float32_with_fla_reason():
    assert "fla's chunk_delta_rule asserts its inputs are not float32" in FlaDeltaNetAttention.unavailable_reason(
        "cuda", torch.float32
    )


def test_the_fla_chunk_size_is_one_fla_takes():
    with pytest.raises(ValueError, match="deltanet-fla: option chunk_size"):
        build(FlaDeltaNetAttention, chunk=48)
    assert build(FlaGatedDeltaNetAttention, chunk=32).options.chunk_size == 32


@pytest.mark.parametrize(
    "version, words",
    [("0.5.1", "older than 0.5.2"), (None, "does not say its version"), ("0.5.2", None), ("0.6.0+cu124", None)],
)
def test_fla_releases_before_the_floor_are_refused(monkeypatch, version, words):
    monkeypatch.setattr(fla_release, "installed_version", lambda: version)
    reason = fla_release.release_problem(FlaDeltaNetAttention.fla_minimum, FlaDeltaNetAttention.fla_older)
    assert reason is None if words is None else words in reason


@pytest.mark.slow
@pytest.mark.parametrize("cls", VARIANTS)
def test_chunked_and_recurrent_time_at_4096(cls):
    variant = build(cls, chunk=64, heads=4, kv_heads=4, dim=64)
    q, k, v = inputs(4096, batch=1, heads=4, kv_heads=4, dim=64, dtype=torch.float32)
    gates = gates_of(variant, q, k)
    state = torch.zeros(1, 4, 64, 64)
    with torch.no_grad():
        times = {}
        # The best of a few runs (one of the slow loop): the machine may be shared.
        for form, repeats in ((variant.chunked, 3), (variant.recurrent, 1)):
            form(q[:, :, :128], k[:, :, :128], v[:, :, :128], {n: g[:, :, :128] for n, g in gates.items()}, state)
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                form(q, k, v, gates, state)
                runs.append(time.perf_counter() - start)
            times[form.__name__] = min(runs)
    print(
        f"\n{cls.info.name} N=4096 B=1 H=4 D=64 float32 on {torch.get_num_threads()} threads: "
        f"chunked {times['chunked']:.3f} s, recurrent {times['recurrent']:.3f} s "
        f"({times['recurrent'] / times['chunked']:.0f}x)"
    )
