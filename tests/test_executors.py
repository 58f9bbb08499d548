"""The executors: one sweep through local, Ray and submitit's local cluster gives the same records."""

from __future__ import annotations

import json
import shutil
import sys
import threading

import pytest
from rich.console import Console

from attnbench.suite.cli import main
from attnbench.suite.executors import batch
from attnbench.suite.runs.records import read_records
from attnbench.suite.runs.schema import load
from attnbench.suite.training.jobs import TrainJob

FAST = ["--budget", "0.05", "--repeats", "5", "--warmup", "1", "--threads", "1", "--no-report"]
# Small: a submitit local job is a fresh Python that imports torch (seconds each on 2 cores).
SWEEP = ["bench", "--variants", "naive,sdpa", "--seq", "64", "--mode", "fwd", *FAST]


def bench(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def keys_and_formats(run):
    records = read_records(run)
    lines = (run / "records.jsonl").read_text().splitlines()
    assert all(load(json.loads(line)) for line in lines)  # every line fits the record schema
    return {r["key"] for r in records}, records


@pytest.fixture(scope="module", autouse=True)
def _stop_ray():
    """The Ray these tests start (one per test process) is stopped with them, not left to slow later tests."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    with pytest.raises(SystemExit):
        main([*SWEEP, "--out", str(out)])
    return out


@pytest.mark.parametrize("executor", [["--executor", "ray"], ["--executor", "slurm", "--cluster", "local"]],
                         ids=["ray", "slurm-local"])  # fmt: skip
def test_a_sweep_through_each_executor_gives_the_same_records(local_run, executor, tmp_path, capsys):
    pytest.importorskip(executor[1] if executor[1] == "ray" else "submitit")
    code, out, err = bench(capsys, *SWEEP, *executor, "--out", str(tmp_path))
    assert code == 0, out + err
    local_keys, local_records = keys_and_formats(local_run)
    keys, records = keys_and_formats(tmp_path)
    assert keys == local_keys and len(records) == 2
    assert all(r["status"] == "ok" and r["correct"] for r in records)
    assert {r["executor"] for r in records} == {executor[1]} and all(r["host"] for r in records)
    assert {r["executor"] for r in local_records} == {"local"}
    assert set(records[0]) == set(local_records[0])  # the same fields, whoever measured it


def test_a_job_that_kills_its_ray_worker_is_an_error_and_a_rerun_resumes(plugins, tmp_path, capsys):
    pytest.importorskip("ray")
    argv = ["bench", "--variants", "aborts,sdpa", "--seq", "128", *FAST, "--plugin", str(plugins / "aborts.py"),
            "--executor", "ray", "--out", str(tmp_path)]  # fmt: skip
    code, out, err = bench(capsys, *argv)
    records = {(r["variant"], r["seq"]): r for r in read_records(tmp_path)}
    assert code == 0 and len(records) == 2 and records["aborts", 128]["status"] == "error", out + err
    assert "Ray task failed" in records["aborts", 128]["reason"]
    assert records["sdpa", 128]["status"] == "ok"  # the sweep went on
    code, out, _ = bench(capsys, *argv)
    assert code == 0 and "2 of 2 points already recorded" in out
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 2  # nothing measured twice


def test_unknown_executor_and_missing_extra_are_one_line(tmp_path, capsys, monkeypatch):
    code, _, err = bench(capsys, *SWEEP, "--executor", "mpi", "--out", str(tmp_path / "a"))
    assert code == 2 and "unknown executor 'mpi': choose one of local, ray, slurm" in err and err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if the [slurm] extra were not installed
    code, _, err = bench(capsys, *SWEEP, "--executor", "slurm", "--out", str(tmp_path / "b"))
    assert code == 2 and "pip install 'attnbench[slurm]'" in err and err.count("\n") == 1


def test_slurm_without_slurm_is_one_line(tmp_path, capsys):
    pytest.importorskip("submitit")
    if shutil.which("srun"):
        pytest.skip("this machine has SLURM")
    code, _, err = bench(capsys, *SWEEP, "--executor", "slurm", "--out", str(tmp_path))
    assert code == 2 and "no SLURM here" in err and "--cluster local" in err and err.count("\n") == 1


def test_suite_trains_through_ray_and_writes_the_accuracy_table(tmp_path, capsys):
    pytest.importorskip("ray")
    code, out, err = bench(capsys, "suite", "--tasks", "mqar", "--variants", "sdpa,linear-elu", "--seeds", "0",
                           "--preset", "tiny", "--executor", "ray", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, out + err
    records = read_records(tmp_path)
    assert sorted(r["variant"] for r in records) == ["linear-elu", "sdpa"]
    assert all(r["kind"] == "train" and r["status"] == "ok" and r["executor"] == "ray" for r in records)
    assert all(load(json.loads(line)) for line in (tmp_path / "records.jsonl").read_text().splitlines())
    assert "| linear-elu |" in (tmp_path / "accuracy.md").read_text()


# Slow (a minute: a Ray cluster and six runs): the default run covers its parts, the two stages on the local
# executor (test_protocol.py) and a suite through Ray (above).
@pytest.mark.slow
def test_the_accuracy_protocol_runs_both_stages_through_ray(tmp_path, capsys):
    """The sweep, then the seeds at the choice, each run a Ray task."""
    pytest.importorskip("ray")
    code, out, err = bench(capsys, "suite", "--tasks", "mqar", "--variants", "sdpa,linear-elu", "--preset", "tiny",
                           "--lrs", "0.003,0.01", "--seeds", "0,1", "--executor", "ray",
                           "--out", str(tmp_path))  # fmt: skip
    assert code == 0, out + err
    records = read_records(tmp_path)
    assert len(records) == 2 * 2 + 2 and all(r["executor"] == "ray" and r["status"] == "ok" for r in records)
    choices = json.loads((tmp_path / "protocol.json").read_text())["choices"]
    assert {c["variant"]: c["chosen_lr"] in (0.003, 0.01) for c in choices} == {"sdpa": True, "linear-elu": True}
    assert "vs sdpa [95% CI]" in (tmp_path / "accuracy.md").read_text()


def test_an_executor_that_schedules_gets_a_grids_runs_all_at_once(tmp_path, monkeypatch):
    """Ray and SLURM place runs themselves: every run of the grid is in flight before any returns."""
    barrier = threading.Barrier(4, timeout=30)

    class Cluster:
        name, schedules = "ray", True

        def train(self, job):
            barrier.wait()  # broken (an error) unless all four runs were handed over together
            return {"status": "unavailable", "reason": "not here", "key": job.variant}

        def stop(self):
            raise AssertionError("nothing was interrupted")

    monkeypatch.setattr(batch, "make_executor", lambda choice, out: Cluster())
    jobs = [TrainJob("mqar", f"v{i}", 0, "tiny", "cpu", str(tmp_path)) for i in range(4)]
    failed = batch.train_all(jobs, tmp_path, "cpu", ("ray", {}), 1, Console(quiet=True), lambda: None)
    assert failed == 0 and not barrier.broken


def test_a_ray_training_task_asks_for_its_runs_threads_or_a_gpu():
    from attnbench.suite.executors.ray import RayExecutor

    executor = RayExecutor.__new__(RayExecutor)  # no Ray started: the request is worked out here
    one_thread = TrainJob("mqar", "sdpa", 0, "tiny", "cpu", None, settings={"train": {"threads": 1}})
    assert executor.train_resources(one_thread) == {"num_cpus": 1}  # two such runs share a 2-core node
    on_gpu = TrainJob("mqar", "sdpa", 0, "tiny", "cuda", None, settings={"train": {"threads": 1}})
    assert executor.train_resources(on_gpu) == {"num_gpus": 1, "num_cpus": 1}


def test_a_runs_progress_line_names_its_setting_and_learning_rate():
    job = TrainJob("mqar", "sdpa", 1, "tiny", "cpu", None, settings={"train": {"lr": 0.003}}, label="N=64")
    assert batch.describe(job) == "mqar / sdpa / N=64 / seed 1 / lr 0.003"
    assert batch.describe(TrainJob("mqar", "sdpa", 0, "tiny", "cpu", None)) == "mqar / sdpa / seed 0"
