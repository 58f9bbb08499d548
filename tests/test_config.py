"""Bench configs: presets load, files validate, and a bad field is named in one line."""

from __future__ import annotations

import pytest

from attnbench.suite.core.config import load_config, load_preset, preset_names
from attnbench.suite.core.errors import UserError
from attnbench.suite.measure.point import Point
from attnbench.suite.runs.points import expand


def test_all_presets_load_and_expand():
    assert set(preset_names()) >= {"cpu", "gpu", "gpt2-small", "llama2-7b", "llama3-8b", "heads"}
    for name in preset_names():
        assert expand(load_preset(name), "cpu")


def test_model_presets_have_the_models_shapes():
    llama3 = expand(load_preset("llama3-8b"), "cuda")
    assert {(p.heads, p.kv_heads, p.head_dim) for p in llama3} == {(32, 8, 128)}
    assert {p.dtype for p in llama3} == {"bfloat16"}
    assert {(p.heads, p.head_dim) for p in expand(load_preset("llama2-7b"), "cpu")} == {(32, 128)}
    assert {(p.heads, p.head_dim) for p in expand(load_preset("gpt2-small"), "cpu")} == {(12, 64)}
    heads = expand(load_preset("heads"), "cpu")
    assert {p.heads * p.head_dim for p in heads} == {768}
    assert {p.heads for p in heads} == {4, 6, 8, 12, 16, 24, 32}


def test_gpu_preset_reaches_32k_in_half_precision():
    points = expand(load_preset("gpu"), "cuda")
    assert max(p.seq for p in points) >= 32768
    assert {p.dtype for p in points} == {"bfloat16", "float16"}
    assert {p.mode for p in points} == {"fwd", "fwd_bwd"}


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_files_in_yaml_and_toml(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    if suffix == ".yaml":
        path.write_text("name: t\nsweeps:\n  - variants: [naive]\n    seq: [64, 128]\n    causal: [true]\n")
    else:
        path.write_text('name = "t"\n[[sweeps]]\nvariants = ["naive"]\nseq = [64, 128]\ncausal = [true]\n')
    points = expand(load_config(path), "cpu")
    assert [(p.variant, p.seq, p.causal) for p in points] == [("naive", 64, True), ("naive", 128, True)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sweeps:\n  - variants: [naive]\n    seq: [64, -1]\n", "sweeps.0: Value error|seq must be positive"),
        ("sweeps:\n  - variants: [naive]\n    seq: [64]\n    dtype: [fp8]\n", r"sweeps\.0\.dtype\.0"),
        ("sweeps:\n  - variants: [naive]\n    seq: [64]\n    heads: [12]\n    width: 100\n", "not divisible"),
        ("sweeps:\n  - variants: [naive]\n    seqs: [64]\n", r"sweeps\.0\.seq"),
        ("repeats: many\nsweeps: []\n", "repeats"),
        ("sweeps: [unclosed\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_bad_config_names_the_field_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value) and "bad.yaml" in str(info.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown preset 'cpu2'.*gpt2-small"):
        load_preset("cpu2")


def test_point_roundtrip_and_command():
    point = expand(load_preset("llama3-8b"), "cpu")[0]
    assert Point.from_dict(point.to_dict()) == point
    command = point.command()
    assert "--kv-heads 8" in command and "--head-dim 128" in command and command.endswith("--scratch")
    assert "--out" not in command  # never the run it came from
