"""`attnbench check` catches each classic bug in a deliberately broken plugin, and passes the built-ins."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.conformance import CHECKS, Checker
from attnbench.suite.registry import load_plugin_file, load_registry

# plugin file -> the checks it must fail (and the words the failure must contain)
BROKEN = {
    "no_scale.py": {"scale": "softmax scale 1 (no scaling)", "reference": "rel err"},
    "leaky_causal.py": {"causal-leakage": "the future leaks"},
    "top_left.py": {"causal-alignment": "aligned top-left"},
    "wrong_shape.py": {"output": "output shape"},
    "nan_softmax.py": {"large-logits": "NaN/inf", "fully-masked-rows": "NaN/inf"},
    "raises.py": {"output": "raised RuntimeError: kernel launch failed"},
    "broadcast_head_dim.py": {"head-dim-mismatch": "k head dim 1 returned"},
    "fake_native_gqa.py": {"gqa-native": "K/V materialised"},
}


def _results(cls, device="cpu", dtype=torch.float32):
    return {r.check: r for r in Checker(cls, device, dtype).results()}


@pytest.mark.parametrize("plugin", sorted(BROKEN))
def test_each_broken_plugin_fails_the_right_check(plugins, plugin):
    (cls,) = load_plugin_file(plugins / plugin)
    results = _results(cls)
    for check, words in BROKEN[plugin].items():
        assert results[check].status == "fail", results[check]
        assert words in results[check].detail


def test_a_correct_variant_fails_nothing(plugins):
    from attnbench.variants.exact.sdpa import SdpaAttention

    results = _results(SdpaAttention)
    assert {r.status for r in results.values()} <= {"pass", "skip"}
    assert [r.check for r in results.values()] == [name for name, _ in CHECKS]


EXACT_CPU = ["naive", "sdpa", "sdpa-math", "sdpa-flash", "chunked", "flex"]
EFFICIENT_CPU = ["linear-elu", "performer", "linformer", "nystrom"]
SPARSE = ["sliding-window", "strided", "fixed", "longformer", "bigbird"]
CPU_BUILTINS = EXACT_CPU + EFFICIENT_CPU + SPARSE


def _failures(name, device, dtype, options=None):
    registry = load_registry()
    reason = registry.unavailable_reason(name, device, dtype)
    if reason:
        pytest.skip(reason)
    return [r for r in Checker(registry.get(name), device, dtype, options=options).results() if r.status == "fail"]


@pytest.mark.parametrize("name", EXACT_CPU + EFFICIENT_CPU)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_cpu_builtin_passes(name, dtype):
    assert not _failures(name, "cpu", dtype)


@pytest.mark.parametrize("name", SPARSE)
def test_sparse_builtins_pass(name):
    # Eager FlexAttention: the same masks and math as the compiled kernel (which the sparse
    # variant tests and the slow test below run), without a compile per checked shape.
    assert not _failures(name, "cpu", torch.float32, {"compile": False})


@pytest.mark.slow
@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_builtins_pass_compiled(name, dtype):
    assert not _failures(name, "cpu", dtype)


def test_every_builtin_that_runs_on_cpu_is_in_the_list():
    registry = load_registry()
    runnable = [n for n in registry.names() if registry.unavailable_reason(n, "cpu") is None]
    assert sorted(runnable) == sorted(CPU_BUILTINS)


def test_unsupported_inputs_are_skipped_not_failed():
    from attnbench.variants.contract import Unsupported, VariantInfo
    from attnbench.variants.exact.naive import NaiveAttention

    class SquareOnly(NaiveAttention):
        info = VariantInfo(name="square-only", family="exact", exact=True, gqa_native=True)

        def forward(self, q, k, v):
            if q.shape[2] != k.shape[2]:
                raise Unsupported("needs Nq == Nk")
            return super().forward(q, k, v)

    results = _results(SquareOnly)
    assert results["reference"].status == "pass"
    assert results["causal-alignment"].status == "skip"
    assert "needs Nq == Nk" in results["causal-alignment"].detail


@pytest.mark.gpu
@pytest.mark.parametrize("name", [n for n in load_registry().names() if n != "naive"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_builtins_pass(name, dtype):
    assert not _failures(name, "cuda", dtype)
