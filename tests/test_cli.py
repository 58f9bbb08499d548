"""The command line: list, check, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from attnbench.suite.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err


def test_every_command_has_help(capsys):
    from attnbench.suite.cli.app import app

    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert len(commands) >= 10 and {"bench", "rerun", "compare", "suite"} <= set(commands)
    for command in commands:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and f"Usage: attnbench {command}" in " ".join(out.split()), command


def test_list_json_names_every_builtin_and_why_some_cannot_run_on_cpu(capsys):
    code, out, _ = run(capsys, "list", "--json", "--device", "cpu")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert set(rows) >= {
        "naive", "sdpa", "sdpa-math", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn",
        "chunked", "flex", "flash-attn", "xformers",
    }  # fmt: skip
    for name in ("flash-attn", "xformers", "sdpa-cudnn", "sdpa-efficient"):
        assert not rows[name]["available"] and rows[name]["reason"]
    assert rows["naive"]["available"] and rows["naive"]["family"] == "exact"


def test_list_details_show_each_variants_source_and_departures(capsys):
    code, out, _ = run(capsys, "list", "--details", "--device", "cpu")
    assert code == 0
    text = " ".join(out.split())
    for name in ("bigbird", "nystrom", "performer", "linformer", "longformer", "fixed", "strided", "sliding-window"):
        block = text.split(f" {name} ", 1)[1]
        assert "source: " in block and "departures: - " in block, name
    assert "google-research/bigbird" in text and "mlpen/Nystromformer" in text and "'headwise' sharing" in text
    assert "departures: none declared" in text  # the exact variants declare none
    code, out, _ = run(capsys, "list", "--json", "--device", "cpu")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["bigbird"]["source"].startswith("google-research/bigbird") and rows["bigbird"]["departures"]


def test_check_prints_a_variants_departures_before_its_checks(capsys):
    code, out, _ = run(capsys, "check", "linformer", "--dtype", "float32")
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("linformer · cpu"))
    assert code == 0 and any("linformer departs from facebookresearch/fairseq" in line for line in lines[:first])


def test_a_declaration_with_departures_as_one_string_is_refused():
    from attnbench.variants.contract import VariantInfo

    with pytest.raises(ValueError, match="departures must be a tuple of non-empty strings"):
        VariantInfo(name="x", family="exact", exact=True, departures="one string")


def test_list_table_shows_reasons(capsys):
    code, out, _ = run(capsys, "list", "--device", "cpu")
    assert code == 0 and "EFFICIENT_ATTENTION" in out and "flash-attn" in out


@pytest.mark.parametrize(
    ("plugin", "check"),
    [("no_scale.py", "scale"), ("leaky_causal.py", "causal-leakage"), ("top_left.py", "causal-alignment"),
     ("wrong_shape.py", "output")],
)  # fmt: skip
def test_check_plugin_exits_1_naming_the_failed_check(capsys, plugins, plugin, check):
    code, out, _ = run(capsys, "check", "--plugin", str(plugins / plugin))
    assert code == 1
    assert any(line.split()[:2] == ["FAIL", check] for line in out.splitlines())


def test_check_correct_plugin_passes(capsys):
    example = ROOT / "examples/query-chunked-plugin/attnbench_query_chunked/__init__.py"
    code, out, _ = run(capsys, "check", "--plugin", str(example), "--json")
    results = json.loads(out)
    assert code == 0
    assert {r["variant"] for r in results} == {"query-chunked"}
    assert all(r["status"] in ("pass", "skip") for r in results)


def test_check_unavailable_variant_is_skipped_with_reason(capsys):
    code, out, _ = run(capsys, "check", "flash-attn", "--device", "cpu")
    assert code == 0 and "skip unavailable: runs on cuda only" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "nope"], "unknown variant 'nope'"),
        (["check", "naive", "--dtype", "fp8"], "unknown dtype 'fp8'"),
        (["check", "--plugin", "/no/such.py"], "plugin file not found"),
        (["list", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(capsys, argv, message):
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_check_without_dtype_checks_every_declared_dtype_and_catches_a_float32_output(capsys, plugins):
    code, out, _ = run(capsys, "check", "--plugin", str(plugins / "fp32_output.py"), "--json")
    results = json.loads(out)
    failed = {r["dtype"] for r in results if r["check"] == "output" and r["status"] == "fail"}
    assert code == 1 and {r["dtype"] for r in results} == {"float32", "float16", "bfloat16"}
    assert failed == {"float16", "bfloat16"}


def test_check_names_a_decoding_misalignment(capsys, plugins):
    code, out, _ = run(capsys, "check", "--plugin", str(plugins / "decode_misaligned.py"), "--dtype", "float32")
    assert code == 1
    assert any(line.split()[:2] == ["FAIL", "causal-offsets"] and "top-left" in line for line in out.splitlines())


def fake_nvidia_smi(folder: Path) -> str:
    """A PATH on which `nvidia-smi -L` lists one H100, as on a box whose driver torch cannot use."""
    exe = folder / "nvidia-smi"
    exe.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-1111-2222-3333-444444444444)"\n')
    exe.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_make_bench_stops_in_one_line_where_nvidia_smi_lists_a_gpu_torch_cannot_see(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA device here: the main job runs the gpu preset")
    env = os.environ | {"PATH": fake_nvidia_smi(tmp_path)}
    stamp = Path(sys.executable).parents[1] / ".installed"
    # make's own setup is not what this exercises: -o keeps it from rebuilding the venv.
    kernels = stamp.parent / ".installed-kernels"
    command = ["make", "-s", "-C", str(ROOT), "-o", str(stamp), "-o", str(kernels), "bench", f"PY={sys.executable}",
               f"VENV={stamp.parent}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("attnbench:")]
    assert done.returncode != 0 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H100 80GB HBM3" in lines[0] and "sees none" in lines[0]
    assert "device detected" not in done.stdout  # nothing ran


def test_bench_preset_auto_is_cpu_without_a_gpu(capsys, monkeypatch, tmp_path):
    from attnbench.suite.core import devices

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
    assert devices.host_preset() == "cpu" and devices.listed_nvidia_gpus() == []
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
    assert devices.host_preset() == "gpu"
