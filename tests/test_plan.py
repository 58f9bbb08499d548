"""Before a run and around it: the dry-run plan, the time budget, per-device preset sizes, the GPU
make targets and the optional kernels' installer (all on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import tomllib
import torch
from conftest import ROOT

from attnbench.suite.cli import main
from attnbench.suite.core.config import load_preset
from attnbench.suite.core.registry import load_registry
from attnbench.suite.runs import plan
from attnbench.suite.runs.points import expand
from attnbench.suite.runs.records import read_records


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="plans for a GPU this machine does not have")
def test_gpu_dry_run_on_cpu_prints_the_plan_in_seconds(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    code, out, _ = run(capsys, "bench", "--preset", "gpu", "--dry-run")
    assert code == 0 and time.perf_counter() - started < 30
    lines = out.splitlines()
    points = len(expand(load_preset("gpu"), "cuda"))
    assert f"{points} points, 32 variants" in out
    assert any(line.startswith("device: cuda, an assumed H100-class GPU (not on this machine") for line in lines)
    assert any(line.split()[:2] == ["xformers", "package"] for line in lines)  # unavailable, with the reason
    assert "predicted out of memory (> 80.0 GiB): 0 points" in out
    minutes = int(next(line for line in lines if line.startswith("estimated wall time:")).split()[3])
    assert 5 <= minutes <= 30  # the preset is planned to fit 30 minutes
    assert not (tmp_path / "results").exists()  # nothing measured, nothing written


def test_dry_run_predicts_out_of_memory_points_against_the_device(capsys, monkeypatch):
    """Naive attention holds two (B, H, N, N) tensors: at N=32K, 16 heads, that is 128 GiB in float32."""
    monkeypatch.setattr(plan, "_available_memory", lambda: 64 * 2**30)
    code, out, _ = run(capsys, "bench", "--variants", "naive,chunked", "--seq", "1024,32768", "--heads", "16",
                       "--dry-run")  # fmt: skip
    assert code == 0
    assert "predicted out of memory (> 64.0 GiB): 1 points" in out
    oom = out.split("predicted out of memory")[1].split("estimated wall time")[0]
    assert "naive N=32768" in oom and "~128.5 GiB" in oom and "chunked" not in oom and "N=1024" not in oom


def test_predicted_peak_memory_matches_the_committed_cpu_run():
    """The analytic peak of a materialising variant against what the CPU run measured."""
    registry = load_registry()
    records = [r for r in read_records(ROOT / "results" / "cpu-epyc-2core") if r["status"] == "ok"]
    naive = {(r["seq"], r["mode"]): r for r in records if r["variant"] == "naive"}
    for key in ((4096, "fwd"), (2048, "fwd_bwd")):
        r = naive[key]
        point = next(p for p in expand(load_preset("cpu"), "cpu") if p.variant == "naive" and (p.seq, p.mode) == key)
        predicted = plan.predicted_peak_bytes(point, registry.get("naive").info.score_buffers)
        assert 0.85 < r["peak_bytes"] / predicted < 1.15, (key, r["peak_bytes"], predicted)


def test_the_most_informative_points_come_first():
    assert plan._spread([256, 512, 1024, 2048, 4096]) == [1024, 4096, 256, 2048, 512]
    points = expand(load_preset("cpu"), "cpu")
    ordered = plan.informative_order(points)
    assert sorted(p.key() for p in ordered) == sorted(p.key() for p in points)
    series = len({(p.variant, p.mode, p.causal) for p in points})
    first_round = ordered[:series]
    assert len({(p.variant, p.mode, p.causal) for p in first_round}) == series  # every series once, first
    assert {p.seq for p in first_round if p.mode == "fwd"} == {1024}  # at the middle length


def test_a_budget_runs_what_fits_and_records_what_it_skipped(capsys, monkeypatch, tmp_path):
    """Points whose estimate cannot fit what is left are skipped and listed; the rest run, most informative first."""
    # An estimate that no minute holds for N=2048 and a tenth of a second elsewhere: what fits does not
    # depend on this machine's speed.
    monkeypatch.setattr(plan, "estimate_seconds", lambda point, *_, **__: 1000.0 if point.seq == 2048 else 0.1)
    out = tmp_path / "run"
    code, text, _ = run(capsys, "bench", "--variants", "sdpa,naive", "--seq", "256,512,1024,2048", "--budget", "0.05",
                        "--repeats", "3", "--budget-minutes", "1", "--out", str(out))  # fmt: skip
    assert code == 0
    env = json.loads((out / "env.json").read_text())
    measured = read_records(out)
    assert env["budget"] == {"minutes": 1, "skipped": ["sdpa N=2048 B=1 H=8 D=64 float32 fwd",
                                                        "naive N=2048 B=1 H=8 D=64 float32 fwd"]}  # fmt: skip
    assert [(r["variant"], r["seq"]) for r in measured] == [("sdpa", 1024), ("naive", 1024), ("sdpa", 256),
                                                             ("naive", 256), ("sdpa", 512), ("naive", 512)]  # fmt: skip
    assert "2 points skipped" in text
    readme = (out / "README.md").read_text()
    assert "skipped by the 1-minute budget" in readme and "- naive N=2048 B=1 H=8 D=64 float32 fwd" in readme


def test_the_decode_preset_runs_smaller_caches_on_a_cpu():
    cfg = load_preset("decode")
    cpu, cuda = expand(cfg, "cpu"), expand(cfg, "cuda")
    assert max(p.seq for p in cuda) == 131072 and {p.batch for p in cuda} == {1, 8, 64}
    assert max(p.seq for p in cpu) == 16384 and {p.batch for p in cpu} == {1, 8}
    for p in cpu + cuda:
        assert (p.heads, p.kv_heads, p.head_dim, p.causal) == (32, 8, 128, True) and p.q_len in (1, 4)
    assert "flash-decoding" in {p.variant for p in cpu}


def test_the_command_line_beats_a_device_override(capsys):
    code, out, _ = run(capsys, "bench", "--preset", "decode", "--seq", "2048", "--dry-run", "--device", "cpu")
    assert code == 0 and "20 points" in out  # 5 variants x Nq 1, 4 x batch 1, 8 at N=2048


def test_a_bad_device_override_is_one_line(capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("sweeps: [{variants: [sdpa], seq: [64]}]\ndevice_overrides: {cpu: {sequence: [32]}}\n")
    code, _, err = run(capsys, "bench", "--config", str(config), "--dry-run")
    assert code == 2
    assert err.strip() == "attnbench: error: config bad.yaml: device_overrides.cpu: unknown sweep field 'sequence'"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_gpu_check_stops_at_once_without_a_gpu(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    code, out, err = run(capsys, "gpu-check")
    assert code == 2 and err.count("\n") == 1 and "no GPU visible" in err and not out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_make_gpu_check_stops_at_once_with_one_line_before_any_setup(tmp_path):
    env = os.environ | {"PATH": "/usr/bin:/bin"}  # make and the shell, no nvidia-smi
    started = time.perf_counter()
    # VENV in a fresh folder: had the target set anything up first, it would have had to build a venv there.
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "gpu-check", f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode != 0 and time.perf_counter() - started < 10
    assert done.stdout.strip() == (
        "make gpu-check: no GPU visible (nvidia-smi lists none); run it on a machine with a CUDA GPU"
    )
    assert not (tmp_path / "venv").exists()


def test_a_host_torch_in_the_user_site_is_lent_to_the_venv(tmp_path):
    """A host python whose torch lives in its user site (a pre-release, as NVIDIA's containers ship) is reused,
    not replaced by a wheel; the Makefile's venv step alone, with a stand-in torch."""
    host = "/usr/bin/python3"
    if not Path(host).exists() or subprocess.run([host, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("needs a system python3 without torch of its own")
    version = subprocess.run([host, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    fake = tmp_path / "userbase" / "lib" / f"python{version}" / "site-packages" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "2.5.0a0+872d972e41"\n')
    venv = tmp_path / "venv"
    env = os.environ | {"PYTHONUSERBASE": str(tmp_path / "userbase")}
    done = subprocess.run(["make", "-s", "-C", str(ROOT), f"{venv}/bin/python", f"VENV={venv}", f"PYTHON={host}"],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "using the torch of /usr/bin/python3: 2.5.0a0+872d972e41" in done.stdout
    got = subprocess.run([venv / "bin" / "python", "-c", "import torch; print(torch.__version__, torch.__file__)"],
                         capture_output=True, text=True, env=env).stdout.split()  # fmt: skip
    assert got == ["2.5.0a0+872d972e41", str(fake / "__init__.py")]


def test_the_torch_requirement_admits_a_containers_pre_release():
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(Requirement(d) for d in deps if d.startswith("torch"))
    assert torch_req.specifier.contains("2.5.0a0+872d972e41") and torch_req.specifier.contains("2.13.0")
    assert not torch_req.specifier.contains("2.4.1")


def test_the_gpu_kernels_install_from_wheels_without_replacing_torch(capsys, monkeypatch, tmp_path):
    from attnbench.suite.core import kernels

    assert kernels.gpu_extra() == ["xformers", "flash-linear-attention", "flash-attn", "sageattention<2"]
    command = kernels.pip_command("xformers", tmp_path / "c.txt", python="py")
    assert command == ["py", "-m", "pip", "install", "-q", "--only-binary=:all:", "-c", str(tmp_path / "c.txt"),
                       "xformers"]  # fmt: skip
    assert kernels.torch_pin() == f"torch=={torch.__version__}"
    monkeypatch.setattr(kernels.torch.cuda, "is_available", lambda: False)
    assert kernels.install_gpu_kernels() == 0
    assert "no CUDA device" in capsys.readouterr().out
    calls = []
    monkeypatch.setattr(kernels.torch.cuda, "is_available", lambda: True)

    def pip(command, **_):
        calls.append(Path(command[command.index("-c") + 1]).read_text())
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for flash-attn\n")

    monkeypatch.setattr(kernels.subprocess, "run", pip)
    kernels.install_gpu_kernels()
    out = capsys.readouterr().out.splitlines()
    assert calls == [f"torch=={torch.__version__}\n"] * 4  # every install pinned to the torch already here
    assert out[2] == (f"flash-attn: not installed, no wheel for torch {torch.__version__} here "
                      "(ERROR: No matching distribution found for flash-attn)")  # fmt: skip


def test_decoding_series_keep_each_number_of_queries_apart():
    """Nq = 1 and Nq = 4 against the same caches are two series in the summary, not one (the last hiding the first)."""
    from attnbench.suite.outputs.summary import bench_frame, series_tables

    base = {"variant": "sdpa", "status": "ok", "device": "cpu", "dtype": "float32", "mode": "fwd", "causal": True,
            "batch": 1, "heads": 32, "kv_heads": 8, "head_dim": 128, "peak_bytes": 1, "correct": True}  # fmt: skip
    records = [base | {"q_len": nq, "seq": n, "time_ms": nq * n / 1000} for nq in (1, 4) for n in (1024, 4096)]
    tables = dict(series_tables(bench_frame(records), None))
    title = "cpu float32 fwd causal B=1 H=32/8 D=128 Nq={}"
    assert set(tables) == {title.format(1), title.format(4)}
    assert tables[title.format(1)]["time (ms)"].loc["sdpa", 4096] == "4.096"


def test_a_budget_reaches_every_number_of_queries_early():
    """The decode preset's first round holds Nq = 1 and Nq = 4 of every variant: a cut never loses all of one."""
    points = expand(load_preset("decode"), "cpu")
    first_round = plan.informative_order(points)[: len(points) // 3]  # three cache lengths per series
    assert {(p.variant, p.q_len, p.batch) for p in first_round} == {(p.variant, p.q_len, p.batch) for p in points}


@pytest.mark.skipif(torch.cuda.is_available(), reason="plans for a GPU this machine does not have")
def test_a_half_precision_cache_copied_to_float32_is_predicted_out_of_memory(capsys):
    """flash-decoding converts a bf16 cache to float32 (a copy twice its size): 64 x 128K x 8 x 128 is 64 GiB more."""
    code, out, _ = run(capsys, "bench", "--preset", "decode", "--device", "cuda", "--dry-run")
    oom = out.split("predicted out of memory")[1].split("estimated wall time")[0]
    assert code == 0 and "flash-decoding Nq=4,N=131072 B=64 H=32/8 D=128 bfloat16 causal fwd" in oom
    assert "sdpa" not in oom and "N=32768" not in oom


def test_the_budget_learns_from_the_points_it_measured():
    points = expand(load_preset("cpu"), "cpu")[:3]
    budget = plan.Budget({p.key(): 10.0 for p in points}, budget_s=25.0, started=time.perf_counter())
    assert budget.fits(points[0])
    budget.record(points[0], wall_s=30.0)  # three times slower than estimated
    assert not budget.fits(points[1])  # 10 s estimated now counts as 30 s


def test_a_later_run_clears_the_points_a_budget_skipped(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(plan, "estimate_seconds", lambda point, *_, **__: 1000.0 if point.seq == 512 else 0.1)
    out = str(tmp_path / "run")
    fast = ["--variants", "sdpa", "--budget", "0.05", "--repeats", "3", "--out", out]
    assert run(capsys, "bench", "--seq", "256,512", "--budget-minutes", "1", *fast)[0] == 0
    assert json.loads((tmp_path / "run" / "env.json").read_text())["budget"]["skipped"] == [
        "sdpa N=512 B=1 H=8 D=64 float32 fwd"
    ]
    assert run(capsys, "bench", "--seq", "256,512", *fast)[0] == 0  # no budget: the skipped point is measured
    assert json.loads((tmp_path / "run" / "env.json").read_text())["budget"]["skipped"] == []
    assert "skipped by the" not in (tmp_path / "run" / "README.md").read_text()


def test_an_unknown_variant_in_a_device_override_is_one_line(capsys, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("sweeps: [{variants: [sdpa], seq: [64]}]\ndevice_overrides: {cpu: {variants: [nope]}}\n")
    code, _, err = run(capsys, "bench", "--config", str(config), "--scratch")
    assert code == 2 and err.count("\n") == 1 and "nope" in err


def test_a_dry_run_into_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    target = str(tmp_path / "file")
    code, _, err = run(capsys, "bench", "--variants", "sdpa", "--seq", "64", "--dry-run", "--out", target)
    assert code == 2 and "is a file, not a run folder" in err
