"""On a CUDA device: the GPU kernels' adapters against the definition, the clock, the backend torch
chooses, and a bench run's roofline. Every test is marked `gpu` and skips itself elsewhere;
`make gpu-check` runs them beside the `gpu` preset. Their CPU halves are tests/test_gpu_adapters.py."""

from __future__ import annotations

import time

import pytest
import torch

from attnbench.suite.core.registry import load_registry
from attnbench.variants.contract import AttentionSpec, Unsupported
from attnbench.variants.softmax import softmax_attention

pytestmark = pytest.mark.gpu


def _available(name: str, dtype: torch.dtype = torch.bfloat16) -> None:
    reason = load_registry().unavailable_reason(name, "cuda", dtype)
    if reason:
        pytest.skip(reason)


def _inputs(h=16, hkv=4, nq=300, nk=1000, d=128, dtype=torch.bfloat16):
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = ((2, h, nq, d), (2, hkv, nk, d), (2, hkv, nk, d))
    return [torch.randn(*s, generator=gen, device="cuda", dtype=dtype).requires_grad_() for s in shapes]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("name", ["xformers", "flash-attn", "sdpa", "sdpa-flash", "sdpa-cudnn", "flash-decoding"])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_heads_forward_and_backward_against_the_definition(name, causal):
    """xformers' grouped heads go 5-D forward-only and 4-D with gradients; every adapter, both passes."""
    _available(name)
    spec = AttentionSpec(num_heads=16, num_kv_heads=4, head_dim=128, causal=causal)
    variant = load_registry().build(name, spec).cuda()
    q, k, v = _inputs()
    ref = softmax_attention(*(t.detach().double() for t in (q, k, v)), causal=causal)
    with torch.no_grad():
        try:
            assert _rel(variant(q, k, v), ref) < 3e-2
        except Unsupported as err:  # a pinned backend that refuses this input says so
            pytest.skip(str(err))
    out = variant(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    want = torch.autograd.grad(softmax_attention(q.float(), k.float(), v.float(), causal=causal).sum(), (q, k, v))
    for got, ref_grad in zip(grads, want, strict=True):
        assert _rel(got, ref_grad) < 5e-2


def test_flash_attn_uses_fa3_on_hopper_where_built():
    from attnbench.variants.exact import flash_attn

    _available("flash-attn")
    module, _ = flash_attn.resolve()
    hopper = torch.cuda.get_device_capability()[0] == 9
    built = flash_attn.importlib.util.find_spec(flash_attn.FA3) is not None
    assert module.__name__ == (flash_attn.FA3 if hopper and built else flash_attn.FA2)


def test_linear_fla_equals_its_definition():
    _available("linear-fla")
    spec = AttentionSpec(num_heads=8, num_kv_heads=2, head_dim=64, causal=True)
    variant = load_registry().build("linear-fla", spec).cuda()
    q, k, v = (t.detach() for t in _inputs(8, 2, 512, 512, 64))
    ref = variant.reference(*(t.double() for t in (q, k, v)))
    assert _rel(variant(q, k, v), ref) < 3e-2


@pytest.mark.parametrize(("name", "hkv", "options"), [("moba-fla", 4, {}), ("nsa-fla", 1, {"top_k": 8})])
def test_fla_sparse_kernels_equal_their_definitions(name, hkv, options):
    """fla's parallel_moba and parallel_nsa at 16 blocks of 64 keys (nsa-fla choosing 5 blocks beyond its 3
    forced): the dense float64 definition within moba's and nsa's own bf16 tolerance. Each block's keys are
    offset along a direction of its own, so the blocks' scores stand apart and the bf16 rounding of fla's
    selection cannot tip a near tie (the tolerance of the variants allows those on random inputs)."""
    _available(name)
    spec = AttentionSpec(num_heads=16, num_kv_heads=hkv, head_dim=64, causal=True, options=options)
    variant = load_registry().build(name, spec).cuda()
    q, k, v = (t.detach() for t in _inputs(16, hkv, 1024, 1024, 64))
    gen = torch.Generator(device="cuda").manual_seed(1)
    offsets = 2 * torch.randn(2, hkv, 16, 1, 64, generator=gen, device="cuda")
    k = (k.view(2, hkv, 16, 64, 64) + offsets.to(k.dtype)).view(k.shape)
    gates = {"branch_gates": torch.rand(2, 16, 1024, 3, device="cuda")} if name == "nsa-fla" else {}
    with torch.no_grad():
        out = variant(q, k, v, **{n: g.to(q.dtype) for n, g in gates.items()})
    ref = variant.reference(*(t.double() for t in (q, k, v)), **{n: g.double() for n, g in gates.items()})
    assert _rel(out, ref) < 3e-2


def test_sage_triton_errs_as_the_emulation_of_its_arithmetic():
    """The sageattention kernel and `sage` (its INT8 QK^T and FP16 PV emulated) against float64 softmax: cosine
    similarity and relative L1, as the SageAttention papers report them, within a factor 2 of each other."""
    _available("sage-triton", torch.float16)
    spec = AttentionSpec(num_heads=16, num_kv_heads=16, head_dim=128, causal=False)
    registry = load_registry()
    q, k, v = (t.detach() for t in _inputs(16, 16, 2048, 2048, 128, torch.float16))
    k = k + 2.0  # a shared offset, as the papers' real keys have: what the smoothing is for
    ref = softmax_attention(q.double(), k.double(), v.double())
    errors = {}
    for name in ("sage-triton", "sage"):
        out = registry.build(name, spec).cuda()(q, k, v).double()
        cosine = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item()
        errors[name] = ((out - ref).abs().sum() / ref.abs().sum()).item()
        assert cosine > 0.999
    assert 0.5 < errors["sage-triton"] / errors["sage"] < 2.0


def test_sdpa_keeps_a_fused_kernel_for_decoding_shapes():
    """Nq < Nk under causality goes as torch's causal_lower_right bias, which the fused kernels take."""
    from attnbench.suite.measure.sdpa_trace import sdpa_backend

    variant = load_registry().build("sdpa", AttentionSpec(num_heads=32, num_kv_heads=8, head_dim=128, causal=True))
    q, k, v = (t.detach() for t in _inputs(32, 8, 4, 8192))
    variant(q, k, v)  # the first call makes the bias outside the trace
    assert sdpa_backend(lambda: variant(q, k, v)) not in (None, "math")


def test_cuda_events_do_not_count_pythons_launch_time():
    """A call whose Python side takes 2 ms before launching a tiny kernel: the GPU's time is the kernel's."""
    from attnbench.suite.measure.timing import time_calls

    x = torch.ones(1024, device="cuda")

    def slow_launch(_):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 2e-4:  # 0.2 ms of Python before the launch, under the 1 ms lead
            pass
        return x + 1

    timing = time_calls(slow_launch, lambda: None, "cuda", repeats=20, budget_s=1.0)
    assert timing.median_ms < 0.1


def test_a_gpu_bench_run_places_its_points_on_the_roofline(tmp_path):
    from attnbench.suite.cli import main
    from attnbench.suite.runs.records import read_env, read_records

    with pytest.raises(SystemExit) as info:
        main(["bench", "--variants", "sdpa,flash-decoding", "--seq", "1024,4096", "--q-len", "1", "--heads", "32",
              "--kv-heads", "8", "--head-dim", "128", "--dtype", "bfloat16", "--causal", "--repeats", "5",
              "--out", str(tmp_path / "run")])  # fmt: skip
    assert (info.value.code or 0) == 0
    env, records = read_env(tmp_path / "run"), read_records(tmp_path / "run")
    assert env["bandwidth_gbs"] > 100 and env["device"] == "cuda"
    assert all(r["status"] == "ok" and 0 < r["bandwidth_fraction"] < 1.5 for r in records)
    assert (tmp_path / "run" / "roofline-cuda-bfloat16.png").is_file()
