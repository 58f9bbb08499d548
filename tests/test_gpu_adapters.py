"""The GPU kernels' adapters, run on CPU against stand-ins with the upstream APIs' documented shapes.

Each stand-in checks the arguments as the current release documents them (xformers 0.0.35's
memory_efficient_attention, flash-attn 2.8's flash_attn_func and FA3's flash_attn_interface, fla
0.5.1+'s chunk_linear_attn) and computes what that API means, so the adapter's layout, head
grouping and causal alignment are tested without a GPU. The gpu-marked tests run the real kernels.
"""

from __future__ import annotations

import importlib.machinery

import pytest
import torch
from gpu_fakes import (
    fake_flash_attn,
    fake_parallel_moba,
    fake_parallel_nsa,
    fake_sageattn,
    fake_xformers,
    install,
    module_tree,
)

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec
from attnbench.variants.exact import flash_attn
from attnbench.variants.exact.xformers import xformers_layout
from attnbench.variants.linear import fla
from attnbench.variants.softmax import softmax_attention


def _inputs(h=8, hkv=2, nq=5, nk=13, d=16, grad=False):
    gen = torch.Generator().manual_seed(0)
    shapes = ((2, h, nq, d), (2, hkv, nk, d), (2, hkv, nk, d))
    return [torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_(grad) for s in shapes]


@pytest.mark.parametrize(("h", "hkv", "grad", "dims"), [(8, 8, False, 4), (8, 8, True, 4), (8, 2, False, 5),
                                                          (8, 2, True, 4), (8, 1, False, 5)])  # fmt: skip
def test_xformers_layout_is_4d_without_grouping_and_5d_forward_only_with_it(h, hkv, grad, dims):
    q, k, v = _inputs(h, hkv)
    qx, kx, vx, restore = xformers_layout(q, k, v, needs_grad=grad)
    assert qx.dim() == kx.dim() == vx.dim() == dims
    if dims == 4:
        assert qx.shape == (2, 5, h, 16) and kx.shape == vx.shape == (2, 13, h, 16)
    else:
        assert qx.shape == (2, 5, hkv, h // hkv, 16) and kx.shape == (2, 13, hkv, h // hkv, 16)
        assert kx.stride(3) == 0 and kx.data_ptr() == k.data_ptr()  # broadcast views of k, nothing copied
    assert torch.equal(restore(qx), q)  # the output layout turns back into (B, H, Nq, D)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hkv", [8, 2])
def test_xformers_adapter_forward_and_backward_against_the_documented_api(monkeypatch, causal, hkv):
    install(monkeypatch, fake_xformers())
    spec = AttentionSpec(num_heads=8, num_kv_heads=hkv, head_dim=16, causal=causal)
    variant = load_registry().build("xformers", spec)
    q, k, v = _inputs(8, hkv, grad=True)
    with torch.no_grad():  # grouped heads go 5-D here
        torch.testing.assert_close(variant(q, k, v), softmax_attention(q, k, v, causal=causal))
    grads = torch.autograd.grad(variant(q, k, v).sum(), (q, k, v))  # and 4-D (K/V repeated) with gradients
    want = torch.autograd.grad(softmax_attention(q, k, v, causal=causal).sum(), (q, k, v))
    for got, ref in zip(grads, want, strict=True):
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("module", "returns_lse"), [("flash_attn", False), ("flash_attn_interface", True)])
def test_flash_attn_call_against_the_documented_api(module, returns_lse, causal):
    q, k, v = _inputs(8, 2)
    out = flash_attn.flash_attn_call(fake_flash_attn(module, returns_lse), q, k, v, causal)
    torch.testing.assert_close(out, softmax_attention(q, k, v, causal=causal))


def test_flash_attn_prefers_fa3_on_hopper_only():
    assert flash_attn.candidates((9, 0)) == ["flash_attn_interface", "flash_attn"]
    assert flash_attn.candidates((8, 0)) == ["flash_attn"] == flash_attn.candidates((10, 0))
    assert flash_attn.candidates(None) == ["flash_attn"]


@pytest.fixture
def fresh_resolve():
    flash_attn.resolve.cache_clear()
    yield flash_attn.resolve
    flash_attn.resolve.cache_clear()


def test_flash_attn_that_does_not_import_is_unavailable_with_the_reason(monkeypatch, fresh_resolve):
    """A build against another torch fails to import (undefined symbol): unavailable, not an error per point."""
    spec = importlib.machinery.ModuleSpec("flash_attn", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: spec if name == "flash_attn" else None)

    def broken(name):
        raise ImportError(f"{name}_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi")

    monkeypatch.setattr("importlib.import_module", broken)
    module, reason = fresh_resolve()
    assert module is None and "flash_attn is installed but does not import" in reason and "undefined symbol" in reason


def test_flash_attn_is_found_once_per_process(monkeypatch, fresh_resolve):
    calls = []
    fake = fake_flash_attn("flash_attn", False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: calls.append(name) or fake.__spec__)
    monkeypatch.setattr("importlib.import_module", lambda name: fake)
    assert fresh_resolve() == (fake, None) == fresh_resolve()
    assert calls == ["flash_attn"]  # looked up once, not on every timed call


def _fake_chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False, normalize=True,
                            cu_seqlens=None):  # fmt: skip
    """fla >= 0.5.1: (B, T, H, K) features, causal, each row normalised by q . cumsum_t(k)."""
    assert q.dim() == 4 and q.shape == k.shape and v.shape[:3] == q.shape[:3]
    assert normalize and scale == 1.0 and cu_seqlens is None
    scores = torch.einsum("bthk,bshk->bhts", q, k).tril()
    out = torch.einsum("bhts,bshv->bthv", scores, v) / scores.sum(-1).transpose(1, 2)[..., None]
    return out, None


@pytest.mark.parametrize("hkv", [4, 1])
def test_fla_arguments_against_the_documented_api(hkv):
    q, k, v = _inputs(4, hkv, nq=11, nk=11)
    tensors, kwargs = fla.fla_arguments(q, k, v)
    assert all(t.shape == (2, 11, 4, 16) for t in tensors)  # (B, T, H, K), K/V heads repeated to H
    out = _fake_chunk_linear_attn(*tensors, **kwargs)[0].transpose(1, 2)
    spec = AttentionSpec(num_heads=4, num_kv_heads=hkv, head_dim=16, causal=True)
    torch.testing.assert_close(out, load_registry().get("linear-fla")(spec).reference(q, k, v))


def test_fla_refuses_a_different_number_of_queries_and_keys():
    from attnbench.variants.contract import Unsupported

    with pytest.raises(Unsupported, match="as many queries as keys"):
        fla.fla_arguments(*_inputs(4, 4, nq=3, nk=11))


@pytest.mark.parametrize(("version", "problem"), [("0.3.2", "older than 0.5.1"), ("0.4.2", "older than 0.5.1"),
                                                  ("0.5.0", "a wrong dk in 0.5.0"), ("0.5.1", None),
                                                  ("0.6.0+cu124", None), ("0.6.1.dev3", None),
                                                  (None, "does not say its version")])  # fmt: skip
def test_fla_releases_with_another_layout_or_normaliser_are_refused(version, problem):
    got = fla.version_problem(version)
    assert got is None if problem is None else problem in got


def test_fla_refuses_float16_with_the_reason():
    reason = load_registry().unavailable_reason("linear-fla", "cuda", torch.float16)
    assert "float16" in reason and "range" in reason


def test_the_gpu_preset_sweeps_linear_fla_causal_only():
    from attnbench.suite.core.config import load_preset
    from attnbench.suite.runs.points import expand

    points = [p for p in expand(load_preset("gpu"), "cuda") if p.variant == "linear-fla"]
    assert points and all(p.causal and p.dtype != "float16" for p in points)


# ----- the modern sparse kernels (fla's parallel_moba and parallel_nsa) and sageattention -----


def _kernel_inputs(h, hkv, n, d=16, b=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = ((b, h, n, d), (b, hkv, n, d), (b, hkv, n, d))
    return [torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes]


@pytest.mark.parametrize(("hkv", "top_k"), [(4, 3), (1, 2), (2, 5)])
def test_moba_fla_against_the_documented_api_equals_moba(monkeypatch, hkv, top_k):
    install(monkeypatch, module_tree(**{"fla.ops.moba": {"parallel_moba": fake_parallel_moba}}))
    q, k, v = _kernel_inputs(4, hkv, n=45)
    spec = AttentionSpec(num_heads=4, num_kv_heads=hkv, head_dim=16, causal=True,
                         options={"block_size": 8, "top_k": top_k})  # fmt: skip
    registry = load_registry()
    out = registry.build("moba-fla", spec)(q, k, v)
    torch.testing.assert_close(out, registry.build("moba", spec).reference(q, k, v))


def test_moba_fla_refuses_top_k_one_unequal_lengths_and_odd_head_dims():
    registry = load_registry()
    with pytest.raises(ValueError, match="top_k"):  # fla's topk = 1 is full causal attention
        registry.build("moba-fla", AttentionSpec(num_heads=4, head_dim=16, causal=True, options={"top_k": 1}))
    from attnbench.variants.contract import Unsupported

    variant = registry.build("moba-fla", AttentionSpec(num_heads=4, head_dim=16, causal=True))
    with pytest.raises(Unsupported, match="as many queries as keys"):
        variant(*_inputs(4, 4, nq=3, nk=11))
    odd = registry.build("moba-fla", AttentionSpec(num_heads=4, head_dim=12, causal=True))
    with pytest.raises(Unsupported, match="multiple of 8 up to 256, got 12"):
        odd(*_kernel_inputs(4, 4, n=16, d=12))


@pytest.mark.parametrize("options", [{"block_size": 16, "window": 16}, {"block_size": 16, "window": 5, "top_k": 5}])
def test_nsa_fla_against_the_documented_api_equals_nsa(monkeypatch, options):
    install(monkeypatch, module_tree(**{"fla.ops.nsa": {"parallel_nsa": fake_parallel_nsa}}))
    q, k, v = _kernel_inputs(32, 2, n=150)
    spec = AttentionSpec(num_heads=32, num_kv_heads=2, head_dim=16, causal=True, options=options)
    gates = torch.rand(2, 32, 150, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    registry = load_registry()
    out = registry.build("nsa-fla", spec)(q, k, v, branch_gates=gates)
    torch.testing.assert_close(out, registry.build("nsa", spec).reference(q, k, v, branch_gates=gates))


def test_nsa_fla_refuses_the_shapes_fla_cannot_take():
    from attnbench.variants.contract import Unsupported

    registry = load_registry()
    small_group = registry.build("nsa-fla", AttentionSpec(num_heads=8, num_kv_heads=1, head_dim=16, causal=True))
    gates = torch.rand(2, 8, 64, 3, dtype=torch.float64)
    with pytest.raises(Unsupported, match="16 or more query heads per K/V head"):
        small_group(*_kernel_inputs(8, 1, n=64), branch_gates=gates)
    spec = AttentionSpec(num_heads=16, num_kv_heads=1, head_dim=16, causal=True, options={"block_size": 16})
    too_many = registry.build("nsa-fla", spec)  # keep 1/8 of 256 blocks: 32 > block_size / 2
    with pytest.raises(Unsupported, match="at most block_size / 2 = 8 blocks, this selection needs 32"):
        too_many.block_counts(4096, 4096)
    assert int(too_many.block_counts(1024, 1024).max()) == 8  # 1/8 of 64 blocks: the most the kernel sorts
    for size in (8, 48):
        spec = AttentionSpec(num_heads=16, num_kv_heads=1, head_dim=16, causal=True, options={"block_size": size})
        with pytest.raises(Unsupported, match="a power of two, 16 or more"):
            registry.build("nsa-fla", spec).block_counts(256, 256)


@pytest.mark.parametrize(("causal", "hkv", "n"), [(True, 8, 200), (False, 2, 128)])
def test_sage_triton_against_the_documented_api_leaves_the_keys_alone(monkeypatch, causal, hkv, n):
    install(monkeypatch, module_tree(**{"sageattention": {"sageattn": fake_sageattn}}))
    q, k, v = _kernel_inputs(8, hkv, n=n, d=64)
    k = k + 3.0  # an offset the smoothing removes
    kept = k.clone()
    spec = AttentionSpec(num_heads=8, num_kv_heads=hkv, head_dim=64, causal=causal)
    out = load_registry().build("sage-triton", spec)(q, k, v)
    assert torch.equal(k, kept)  # the package's smooth_k would have subtracted the mean from k itself
    groups = 8 // hkv
    want = softmax_attention(q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), causal=causal)
    torch.testing.assert_close(out, want)


def test_sage_triton_refuses_the_shapes_its_kernels_get_wrong():
    from attnbench.variants.contract import Unsupported

    registry = load_registry()
    variant = registry.build("sage-triton", AttentionSpec(num_heads=4, head_dim=16, causal=False))
    with pytest.raises(Unsupported, match="head dim 64, 96 or 128"):
        variant(*_inputs(4, 4, nq=5, nk=5))
    plain = registry.build("sage-triton", AttentionSpec(num_heads=4, head_dim=64, causal=False))
    with pytest.raises(Unsupported, match="padded keys in the softmax unless Nk % 64 == 0; got 100"):
        plain(*_kernel_inputs(4, 4, n=100, d=64))
    causal = registry.build("sage-triton", AttentionSpec(num_heads=4, head_dim=64, causal=True))
    with pytest.raises(Unsupported, match=r"N % 128 is 1\.\.64; got 130"):
        causal(*_kernel_inputs(4, 4, n=130, d=64))


@pytest.mark.parametrize(("version", "words"), [("1.0.6", None), ("2.2.0", "is not 1.x")])
def test_sage_triton_takes_the_1x_release_only(monkeypatch, version, words):
    from attnbench.variants.modified import sage_triton

    monkeypatch.setattr(sage_triton.metadata, "version", lambda name: version)
    reason = sage_triton.release_problem()
    assert reason is None if words is None else words in reason


@pytest.mark.parametrize(("version", "words"), [("2.8.3", None), ("2.6.3", "flash-attn 2.6.3 is older than 2.7")])
def test_moba_fla_needs_flash_attn_2_7(monkeypatch, version, words):
    from attnbench.variants import fla_release

    monkeypatch.setattr(fla_release.metadata, "version", lambda name: version)
    reason = fla_release.distribution_problem("flash-attn", (2, 7), "its 2.7 internals")
    assert reason is None if words is None else words in reason


@pytest.mark.parametrize("name", ["moba-fla", "nsa-fla", "sage-triton"])
def test_the_modern_kernels_say_why_they_cannot_run_here(name):
    reason = load_registry().unavailable_reason(name, "cpu", torch.float16)
    assert reason == "runs on cuda only"
