"""`attnbench check` catches each classic bug in a deliberately broken plugin, and passes the built-ins."""

from __future__ import annotations

import pytest
import torch

from attnbench.suite.checks.checker import Checker, default_dtypes
from attnbench.suite.checks.registry import checks_for
from attnbench.suite.core.registry import load_plugin_file, load_registry
from attnbench.variants import builtin

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
    "decode_misaligned.py": {"causal-offsets": "(Nq=1,Nk=17), 63 (Nq=1,Nk=64): causal mask is aligned top-left"},
    "strict_causal.py": {
        "causal-offsets": "causal mask excludes the diagonal",
        "causal-alignment": "causal mask excludes the diagonal",
    },
    "writes_inputs.py": {"inputs-unchanged": "the forward wrote into its input q"},
    "nondeterministic.py": {"deterministic": "the output is not deterministic"},
    "breaks_at_d128.py": {"large-shapes": "wrong at head dim 128"},
    "breaks_beyond_1024.py": {"large-shapes": "wrong beyond N=1024"},
    "fp32_output.py": {"output": "output dtype torch.float32 != input dtype torch.bfloat16"},
    "attends_padding.py": {
        "padding": "the output of sequence 1 (length 29 of 45) changes with the padding keys' values",
        "key-lengths": "lengths=[45, 29, 1]",
    },
    "packed_leaks.py": {
        "packed-isolation": "sequence 0 (positions 0..69) sees sequence 2",
        "packed": "packed=[70, 1, 150, 39]",
    },
    "causal_ignores_lengths.py": {
        "padding": "changes with the padding keys' values",
        "key-lengths": "lengths=[45, 29, 1]",
    },
    "future_blocks.py": {"selection-future": "the selection can pick a future block or token"},
    "gate_before_softmax.py": {"output-gate": "a gate applied before the softmax"},
}
# The dtype a plugin is checked in where float32 would not show its bug.
BROKEN_DTYPE = {"fp32_output.py": torch.bfloat16}


def _results(cls, device="cpu", dtype=torch.float32):
    return {r.check: r for r in Checker(cls, device, dtype).results()}


@pytest.mark.parametrize("plugin", sorted(BROKEN))
def test_each_broken_plugin_fails_the_right_check(plugins, plugin):
    (cls,) = load_plugin_file(plugins / plugin)
    results = _results(cls, dtype=BROKEN_DTYPE.get(plugin, torch.float32))
    for check, words in BROKEN[plugin].items():
        assert results[check].status == "fail", results[check]
        assert words in results[check].detail


def test_a_correct_variant_fails_nothing(plugins):
    from attnbench.variants.exact.sdpa import SdpaAttention

    results = _results(SdpaAttention)
    assert {r.status for r in results.values()} <= {"pass", "skip"}
    # Every check that concerns softmax attention ran (the recurrences' own do not concern it).
    ran = [c.name for c in checks_for(SdpaAttention.info) if c.name != "vs-softmax"]
    assert [r.check for r in results.values()] == ran


def test_the_variant_is_built_with_the_options_given():
    from attnbench.variants.exact.chunked import ChunkedAttention

    checker = Checker(ChunkedAttention, "cpu", torch.float32, options={"block_size": 7})
    assert checker.build((1, 2, 2, 8, 8, 16), causal=False).options.block_size == 7


def test_a_variant_without_key_lengths_is_refused_them_in_one_line():
    from attnbench.variants.contract import AttentionSpec, Unsupported, attend
    from attnbench.variants.exact.flash_attn import FlashAttnAttention

    q = torch.randn(2, 2, 8, 16)
    with pytest.raises(Unsupported, match="flash-attn does not take per-sequence key lengths"):
        attend(FlashAttnAttention(AttentionSpec(num_heads=2, head_dim=16)), q, q, q, torch.tensor([8, 3]))


def test_a_variant_without_packing_is_refused_a_packed_batch_in_one_line():
    from attnbench.variants.contract import AttentionSpec, Unsupported, attend
    from attnbench.variants.linear.elu import LinearEluAttention

    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(Unsupported, match="linear-elu does not take packed sequences"):
        attend(LinearEluAttention(AttentionSpec(num_heads=2, head_dim=16)), q, q, q, cu_seqlens=torch.tensor([0, 3, 8]))


@pytest.mark.parametrize(
    "bounds, words",
    [([0, 3, 7], "rise strictly from 0 to N = 8"), ([0, 3, 3, 8], "rise strictly"), ([1, 8], "rise strictly"),
     ([8], "1-D integer tensor")],
)  # fmt: skip
def test_packed_boundaries_that_do_not_fit_are_refused(bounds, words):
    from attnbench.variants.contract import AttentionSpec, attend
    from attnbench.variants.exact.naive import NaiveAttention

    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match=words):
        attend(NaiveAttention(AttentionSpec(num_heads=2, head_dim=16)), q, q, q, cu_seqlens=torch.tensor(bounds))


def test_a_packed_batch_is_one_sequence_of_batch_one():
    from attnbench.variants.contract import AttentionSpec, attend
    from attnbench.variants.exact.naive import NaiveAttention

    q = torch.randn(2, 2, 8, 16)
    with pytest.raises(ValueError, match="B = 1 and Nq = Nk"):
        attend(NaiveAttention(AttentionSpec(num_heads=2, head_dim=16)), q, q, q, cu_seqlens=torch.tensor([0, 8]))


@pytest.mark.parametrize(
    "plugin",
    ["decode_misaligned.py", "breaks_at_d128.py", "breaks_beyond_1024.py", "attends_padding.py", "packed_leaks.py"],
)
def test_a_bug_of_one_shape_fails_only_its_own_check(plugins, plugin):
    (cls,) = load_plugin_file(plugins / plugin)
    failed = {r.check for r in _results(cls).values() if r.status == "fail"}
    assert failed == set(BROKEN[plugin])


def test_default_dtypes_are_the_declared_ones_but_float64():
    from attnbench.variants.exact.naive import NaiveAttention

    assert default_dtypes(NaiveAttention, "cpu") == [torch.float32, torch.float16, torch.bfloat16]


def test_default_dtypes_of_a_float64_only_variant_is_float64():
    from dataclasses import replace

    from attnbench.variants.exact.naive import NaiveAttention

    class Float64Only(NaiveAttention):
        info = replace(NaiveAttention.info, name="float64-only", dtypes=(torch.float64,))

    assert default_dtypes(Float64Only, "cpu") == [torch.float64]


def test_the_default_dtypes_catch_a_float32_output(plugins):
    (cls,) = load_plugin_file(plugins / "fp32_output.py")
    failed = {dt for dt in default_dtypes(cls, "cpu") if _results(cls, dtype=dt)["output"].status == "fail"}
    assert failed == {torch.float16, torch.bfloat16}


def _cpu_builtins(*families: str) -> list[str]:
    """The built-ins of `families` that run on this CPU, from the registry (a new file is tested with no edit)."""
    registry = load_registry()
    return [
        n
        for n in builtin()
        if registry.get(n).info.family in families and registry.unavailable_reason(n, "cpu") is None
    ]


EXACT_CPU = _cpu_builtins("exact")
# Eager FlexAttention in the default run: the same masks and math as the compiled kernel, without
# a CPU compile per checked shape (minutes each, cold); the compiled kernel is checked by the slow
# tests below and by the sparse variant tests.
EAGER = {"flex": {"compile": False}}
EFFICIENT_CPU = _cpu_builtins("linear", "low-rank")
SPARSE = _cpu_builtins("sparse")
MODIFIED = _cpu_builtins("modified")


def _eager(name: str) -> dict:
    """{"compile": False} for a variant on FlexAttention (its Options have `compile`), else no options."""
    return {"compile": False} if "compile" in load_registry().get(name).Options.model_fields else {}


# The recurrences: their chunked forms in float32 by default (half inputs are computed in float32, and their
# own tests bound half precision); bfloat16, and the *-loop series (their definition as the fast form), slow.
RECURRENT = [n for n in EFFICIENT_CPU if load_registry().get(n).info.recurrent]
RECURRENT_CASES = [
    pytest.param(name, dtype, marks=pytest.mark.slow if name.endswith("-loop") or dtype != torch.float32 else ())
    for name in RECURRENT
    for dtype in (torch.float32, torch.bfloat16)
]


def _failures(name, device, dtype, options=None):
    registry = load_registry()
    reason = registry.unavailable_reason(name, device, dtype)
    if reason:
        pytest.skip(reason)
    return [r for r in Checker(registry.get(name), device, dtype, options=options).results() if r.status == "fail"]


@pytest.mark.parametrize("name", EXACT_CPU + [n for n in EFFICIENT_CPU if n not in RECURRENT])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_cpu_builtin_passes(name, dtype):
    assert not _failures(name, "cpu", dtype, EAGER.get(name))


@pytest.mark.parametrize("name, dtype", RECURRENT_CASES)
def test_every_cpu_recurrence_passes(name, dtype):
    assert not _failures(name, "cpu", dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_flex_passes(dtype):
    assert not _failures("flex", "cpu", dtype)


@pytest.mark.parametrize("name", SPARSE)
def test_sparse_builtins_pass(name):
    # Eager FlexAttention: the same masks and math as the compiled kernel (which the sparse
    # variant tests and the slow test below run), without a compile per checked shape.
    assert not _failures(name, "cpu", torch.float32, _eager(name))


@pytest.mark.parametrize("name", MODIFIED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_modified_softmaxes_pass(name, dtype):
    assert not _failures(name, "cpu", dtype, _eager(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_builtins_pass_compiled(name, dtype):
    assert not _failures(name, "cpu", dtype)


def test_the_cpu_lists_hold_what_runs_here():
    # The families found: every exact CPU path torch 2.13 has, and the approximations.
    assert {"naive", "sdpa", "sdpa-math", "sdpa-flash", "chunked", "flex"} <= set(EXACT_CPU)
    assert {"linear-elu", "performer", "linformer", "nystrom"} <= set(EFFICIENT_CPU)
    assert {"sliding-window", "strided", "fixed", "longformer", "bigbird"} <= set(SPARSE)
    assert {"nsa", "moba", "dsa", "sink-window", "cache-streaming", "cache-h2o", "cache-snapkv"} <= set(SPARSE)
    assert {"gated", "gated-head", "diff", "sigmoid", "forgetting", "sink-logit", "sage"} <= set(MODIFIED)


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


# FlexAttention-based variants (those with a `compile` option): one compile per checked shape, so the
# default GPU run checks them eagerly and the slow one compiled. The others take no such option.
FLEX_BASED = [n for n in builtin() if _eager(n)]
CUDA_NAMES = [n for n in builtin() if n != "naive"]


def test_only_flex_based_variants_are_given_the_compile_option():
    assert {"flex", "sliding-window", "bigbird"} <= set(FLEX_BASED)
    assert not {"nsa", "moba", "moba-fla", "sage", "sdpa"} & set(FLEX_BASED)


@pytest.mark.gpu
@pytest.mark.parametrize("name", CUDA_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_builtins_pass(name, dtype):
    assert not _failures(name, "cuda", dtype, _eager(name) or None)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLEX_BASED))
def test_cuda_flex_based_pass_compiled(name):
    assert not _failures(name, "cuda", torch.bfloat16)


def test_gqa_native_allows_broadcast_views():
    """xformers broadcasts K/V to the query heads with `expand` (a view, nothing allocated): not a repeat."""
    from attnbench.variants.contract import VariantInfo, check_qkv
    from attnbench.variants.exact.sdpa import SdpaAttention

    class ExpandsViews(SdpaAttention):
        info = VariantInfo(name="expands-views", family="exact", exact=True, gqa_native=True)

        def forward(self, q, k, v):
            b, h, hkv, _, nk, d = check_qkv(q, k, v)
            broadcast = k[:, :, None].expand(b, hkv, h // hkv, nk, d)  # (B, Hkv, G, N, D) view of k
            assert broadcast.data_ptr() == k.data_ptr()
            return super().forward(q, k, v)

    assert _results(ExpandsViews)["gqa-native"].status == "pass"


@pytest.mark.parametrize("name", ["recompile_limit", "cache_size_limit"])
def test_the_recompile_allowance_is_set_under_either_name_torch_has_used(name):
    """torch 2.5/2.6 call it cache_size_limit, 2.7 on recompile_limit: neither crashes the checker."""
    from types import SimpleNamespace

    from attnbench.suite.checks.checker import allow_recompiles

    config = SimpleNamespace(**{name: 8})
    allow_recompiles(config, 64)
    assert vars(config) == {name: 64}
    allow_recompiles(config, 16)  # never lowered
    assert vars(config) == {name: 64}
