"""Training runs: every task kind trains, same seed gives the same numbers, runs resume, records land."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from attnbench.suite.cli import main
from attnbench.suite.core.registry import load_registry
from attnbench.suite.runs import schema
from attnbench.suite.runs.records import read_records
from attnbench.suite.training import checkpoints, loop, presets
from attnbench.suite.training.runs import outcome
from attnbench.tasks import load_task

TINY = presets.load_train_preset("tiny")


def run(task, variant="sdpa", seed=0, checkpoint=None, setup=None):
    setup = setup or TINY.tasks[task]
    data = load_task(task, setup.params)
    return loop.train(data, variant, setup, seed, load_registry(), "cpu", checkpoint)


def test_same_seed_same_numbers_other_seed_other_numbers():
    a, b, c = run("mqar", seed=0), run("mqar", seed=0), run("mqar", seed=1)
    assert a["curve"] == b["curve"] and a["test_acc"] == b["test_acc"]
    assert a["curve"] != c["curve"]


@pytest.mark.parametrize("variant", ["sdpa", "linear-elu", "performer", "sliding-window", "naive"])
def test_variants_train_on_the_causal_lm_task(variant):
    result = run("mqar", variant)
    assert result["status"] == "ok" and 0 <= result["test_acc"] <= 1 and result["steps"] == 30
    assert result["curve"][0]["loss"] > result["curve"][-1]["loss"]  # it learns something


def test_classification_kinds_train(tmp_path):
    result = run("listops")
    assert 0 <= result["test_acc"] <= 1 and result["majority_test_acc"] > 0
    assert result["padding_masked"] is True  # sdpa takes the key lengths: padding is never attended
    for key in ("steps_per_s", "tokens_per_s", "peak_bytes", "final_val_acc", "best_val_acc", "best_step"):
        assert result[key] is not None


def test_pair_kind_trains_two_towers(tmp_path):
    folder = tmp_path / "tsv_data"
    folder.mkdir()
    rows = "\n".join(f"{i % 2}\ta{i}\tb{i}\tdoc {i} text\tother {i}" for i in range(40)) + "\n"
    for name in ("train", "eval", "test"):
        (folder / f"new_aan_pairs.{name}.tsv").write_text(rows)
    setup = TINY.tasks["retrieval"]
    data = load_task("retrieval", setup.params, data_dir=tmp_path)
    result = loop.train(data, "sdpa", setup, 0, load_registry(), "cpu")
    assert result["status"] == "ok" and result["padding_masked"] is True
    registry = load_registry([Path(__file__).parent / "plugins" / "no_lengths.py"])
    unmasked = loop.train(data, "no-lengths", setup, 0, registry, "cpu")
    assert unmasked["padding_masked"] is False
    assert outcome(result).endswith("; padding masked")
    assert outcome(unmasked).endswith("; padding attended (the variant takes no key lengths)")


def test_stopped_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ckpt.pt"
    whole = run("mqar", checkpoint=tmp_path / "other.pt")
    real_batches = loop.batches

    def crash_at_15(n, batch_size, seed, step):
        if step == 15:
            raise KeyboardInterrupt
        return real_batches(n, batch_size, seed, step)

    monkeypatch.setattr(loop, "batches", crash_at_15)
    with pytest.raises(KeyboardInterrupt):
        run("mqar", checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=False)["state"]["step"] == 10
    monkeypatch.setattr(loop, "batches", real_batches)
    resumed = run("mqar", checkpoint=checkpoint)
    assert resumed["curve"] == whole["curve"] and resumed["test_acc"] == whole["test_acc"]


def test_a_checkpoint_cut_short_while_saving_leaves_the_previous_one(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ckpt.pt"
    real_save = checkpoints.torch.save
    saves = []

    def crash_on_the_second(obj, path):
        saves.append(path)
        if len(saves) == 2:  # half a file written, then the process is stopped
            Path(path).write_bytes(b"PK\x03\x04 half")
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(checkpoints.torch, "save", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        run("mqar", checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=False)["state"]["step"] == 10  # the first evaluation's, whole
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o666 & ~umask  # as a plain open makes it, not 0600


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_train_command_records_and_skips_a_finished_run(capsys, tmp_path):
    argv = ("train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--out", str(tmp_path))
    code, out, _ = cli(capsys, *argv)
    (record,) = read_records(tmp_path)
    assert code == 0 and "test accuracy" in out
    assert record["kind"] == "train" and record["status"] == "ok" and record["curve"]
    assert record["command"].startswith("attnbench train --task mqar --variant sdpa --preset tiny --seed 0")
    assert record["command"].endswith("--scratch") and str(tmp_path) not in record["command"]
    code, out, _ = cli(capsys, *argv)
    assert "already recorded" in out and len(read_records(tmp_path)) == 1
    # The same folder from another torch is refused, not reported as already recorded.
    env = json.loads((tmp_path / "env.json").read_text())
    env["versions"]["torch"] = "1.0.0"
    (tmp_path / "env.json").write_text(json.dumps(env))
    code, out, err = cli(capsys, *argv)
    assert code != 0 and "another machine" in out + err and "'1.0.0'" in out + err
    assert "already recorded" not in out and len(read_records(tmp_path)) == 1


def test_variant_that_cannot_run_is_recorded_not_crashed(capsys, tmp_path, plugins):
    code, _out, _ = cli(capsys, "train", "--task", "mqar", "--variant", "raises", "--preset", "tiny",
                       "--plugin", str(plugins / "raises.py"), "--out", str(tmp_path))  # fmt: skip
    (record,) = read_records(tmp_path)
    assert code == 1 and record["status"] == "error" and "kernel launch failed" in record["reason"]
    # linformer cannot be causal: the causal LM task is unsupported for it
    code, _, _ = cli(
        capsys, "train", "--task", "mqar", "--variant", "linformer", "--preset", "tiny", "--out", str(tmp_path)
    )
    assert code == 1 and read_records(tmp_path)[-1]["status"] == "unsupported"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "sudoku", "--variant", "sdpa"], "unknown task 'sudoku'"),
        (["--task", "text", "--variant", "sdpa"], "text is real data: give --data-dir"),
        (["--task", "listops", "--variant", "sdpa", "--data-dir", "/nonexistent"], "is not a folder"),
        (["--task", "mqar", "--variant", "sdpa", "--preset", "huge"], "unknown training preset 'huge'"),
        (["--task", "mqar", "--variant", "nope"], "unknown variant 'nope'"),
    ],
)
def test_bad_train_input_is_one_line(capsys, tmp_path, argv, message):
    code, _, err = cli(capsys, "train", "--preset", "tiny", *argv, "--out", str(tmp_path)) if "--preset" not in argv \
        else cli(capsys, "train", *argv, "--out", str(tmp_path))  # fmt: skip
    assert code == 2 and message in err and err.count("\n") == 1


def test_suite_writes_the_accuracy_table(capsys, tmp_path):
    code, _out, _ = cli(capsys, "suite", "--tasks", "mqar", "--variants", "sdpa,linear-elu", "--seeds", "0,1",
                       "--preset", "tiny", "--out", str(tmp_path))  # fmt: skip
    records = read_records(tmp_path)
    assert code == 0 and len(records) == 4
    table = (tmp_path / "accuracy.md").read_text()
    assert "linear-elu" in table and "points lost against sdpa" in table and "5.8" in table
    # Every line as written fits the training schema and names the code and the variant's source.
    lines = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [schema.load(line) for line in lines] == records
    assert all(r["schema_version"] == schema.SCHEMA_VERSION and len(r["code"]["commit"]) == 40 for r in records)
    assert {r["source"]["module"] for r in records} == {"attnbench.variants.exact.sdpa",
                                                        "attnbench.variants.linear.elu"}  # fmt: skip


def test_suite_with_a_preset_file_trains_from_that_file(capsys, tmp_path, monkeypatch):
    """The workers load the preset the command was given: a YAML file by its path, run from another folder."""
    preset = tmp_path / "mine.yaml"
    shipped = Path(__file__).parents[1] / "suite" / "presets" / "train" / "tiny.yaml"
    preset.write_text(shipped.read_text().replace("name: tiny", "name: mine"))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "suite", "--tasks", "mqar", "--variants", "sdpa", "--seeds", "0",
                       "--preset", "mine.yaml", "--out", str(tmp_path / "run"))  # fmt: skip
    (record,) = read_records(tmp_path / "run")
    assert code == 0 and record["status"] == "ok", err
    assert record["preset"] == "mine"


def test_suite_without_tasks_trains_the_presets_suite_tasks_else_all_of_them(capsys, tmp_path):
    shipped = yaml.safe_load((Path(__file__).parents[1] / "suite" / "presets" / "train" / "tiny.yaml").read_text())
    assert shipped["suite_tasks"] == ["mqar", "listops"]
    tasks = {name: shipped["tasks"][name] for name in ("mqar", "mad-compression")}
    preset = tmp_path / "mine.yaml"
    preset.write_text(yaml.safe_dump({"name": "mine", "tasks": tasks}))
    code, _, err = cli(capsys, "suite", "--variants", "sdpa", "--seeds", "0", "--preset", str(preset),
                       "--out", str(tmp_path / "run"))  # fmt: skip
    assert code == 0, err
    assert sorted(r["task"] for r in read_records(tmp_path / "run")) == ["mad-compression", "mqar"]
    preset.write_text(yaml.safe_dump({"name": "mine", "tasks": tasks, "suite_tasks": ["mqar", "listops"]}))
    code, _, err = cli(capsys, "suite", "--variants", "sdpa", "--preset", str(preset), "--out", str(tmp_path / "x"))
    assert code == 2 and "suite_tasks names listops, which the preset has no setup for" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "x").exists()


def test_suite_trains_in_parallel_into_one_table(capsys, tmp_path):
    code, _, _ = cli(capsys, "suite", "--tasks", "mqar", "--variants", "sdpa,linear-elu", "--seeds", "0",
                       "--preset", "tiny", "--out", str(tmp_path), "--parallel", "2")  # fmt: skip
    records = read_records(tmp_path)
    assert code == 0 and sorted(r["variant"] for r in records) == ["linear-elu", "sdpa"]
    assert all(r["status"] == "ok" for r in records) and "linear-elu" in (tmp_path / "accuracy.md").read_text()
    # The tiny preset leaves threads to torch: two runs at once share the cores, as their stored commands say.
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(r["threads"] == threads and f"train.threads={threads}" in r["command"] for r in records)
    code, _, err = cli(capsys, "suite", "--tasks", "mqar", "--variants", "sdpa", "--preset", "tiny",
                       "--out", str(tmp_path), "--parallel", "2", "--executor", "slurm")  # fmt: skip
    assert code == 2 and "--parallel is for the local executor" in err and err.count("\n") == 1


def test_a_train_record_command_reruns_alone_and_leaves_the_run_alone(capsys, tmp_path):
    # An unknown option is refused before anything is written.
    cli(capsys, "train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--option", "sdpa.x=1",
        "--out", str(tmp_path))  # fmt: skip
    assert not (tmp_path / "records.jsonl").exists()
    cli(capsys, "train", "--task", "mqar", "--variant", "linear-elu", "--preset", "tiny", "--out", str(tmp_path))
    (record,) = read_records(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", record["command"]], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"test accuracy {record['test_acc']:.4f}" in done.stdout  # the same run, the same number
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_training_presets_cover_every_task():
    from attnbench.tasks import task_names

    every, mad = set(task_names()), {t for t in task_names() if t.startswith("mad-")}
    assert set(presets.load_train_preset("lra").tasks) == every - {"mqar"} - mad  # MQAR, MAD: not LRA tasks
    assert set(presets.load_train_preset("tiny").tasks) == every - {"pathx"}  # Path-X (16K tokens): a GPU's only
    # cpu has MAD's in-context recall for the hybrids study; MAD's six are cpu-mad's and mad's.
    assert set(presets.load_train_preset("cpu").tasks) == every - {"pathx"} - mad | {"mad-in-context-recall"}
    assert len(mad) == 6 and set(presets.load_train_preset("cpu-mad").tasks) == mad == set(
        presets.load_train_preset("mad").tasks
    )
    lra = presets.load_train_preset("lra").tasks
    assert lra["listops"].params["max_length"] == 2000 and lra["text"].params["max_len"] == 4000
    assert lra["retrieval"].params["max_len"] == 4000 and lra["pathfinder"].params["resolution"] == 32
    assert lra["pathx"].params["resolution"] == 128
    # LRA's model and optimiser (models/transformer/transformer.py, */train.py), the release's ListOps size
    assert (lra["listops"].model.depth, lra["listops"].model.mlp_dim) == (4, 1024)
    for setup in lra.values():
        assert setup.source.startswith("lra_benchmarks/") and setup.model.head == "lra"
        assert setup.train.betas == (0.9, 0.98) and setup.train.eps == 1e-9 and setup.model.dropout >= 0.1
    assert lra["listops"].model.positions == "sinusoidal" and lra["listops"].train.grad_clip is None
    assert lra["listops"].train.schedule == "rsqrt" and lra["listops"].train.lr == 0.05
    own = presets.load_train_preset("lra-attnbench")
    assert own.tasks["listops"].model.head == "attnbench" and "mqar" in own.tasks


def test_lra_preset_dry_run_prints_every_setting_with_its_source(capsys):
    code, out, _ = cli(capsys, "train", "--preset", "lra", "--dry-run")
    assert code == 0
    for task in ("listops", "text", "retrieval", "image", "pathfinder", "pathx"):
        assert f"\n{task}  source: lra_benchmarks/" in out
    assert "base_listops_config.py" in out and "train.betas" in out and "[0.9, 0.98]" in out
    assert "departure: attention dropout" in out
    code, out, _ = cli(capsys, "train", "--preset", "lra", "--dry-run", "--task", "image")
    assert code == 0 and "cifar10/transformer_base.py" in out and "listops" not in out
    code, _, err = cli(capsys, "train", "--preset", "tiny", "--dry-run", "--task", "pathx")
    assert code == 2 and "preset tiny has no setup for task 'pathx'" in err
    code, _, err = cli(capsys, "train", "--task", "listops")
    assert code == 2 and "give --task and --variant" in err


def test_lra_schedule_and_heads_follow_the_release():
    import math

    from attnbench.suite.training.model import ModelConfig, TaskModel, sinusoidal_positions

    settings = presets.TrainSettings(lr=0.05, warmup_steps=1000, schedule="rsqrt")
    factor = loop.schedule(settings)
    for step in (0, 499, 999, 4999):  # constant * linear_warmup * rsqrt_decay at t = step + 1
        t = step + 1
        assert factor(step) == pytest.approx(min(1, t / 1000) / math.sqrt(max(t, 1000)))
    table = sinusoidal_positions(50, 8)
    assert table[3, 0] == pytest.approx(math.sin(3)) and table[3, 1] == pytest.approx(math.cos(3))
    assert table[3, 2] == pytest.approx(math.sin(3 / 10000 ** (2 / 8)))
    registry = load_registry()
    cfg = ModelConfig(dim=16, depth=1, heads=2, qkv_dim=8, mlp_ratio=2, positions="sinusoidal", head="lra")
    model = TaskModel("pair", 20, 2, 12, cfg, registry, "sdpa")
    assert "encoder.pos" not in dict(model.named_parameters())  # fixed, not trained
    assert model.encoder.blocks[0].attn.head_dim == 4  # qkv_dim over heads
    widths = [m.in_features for m in model.head if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 32, 16]  # classifier_head_dual: concat [u, v], mlp, mlp // 2
    assert model(torch.randint(2, 20, (3, 12)), torch.randint(2, 20, (3, 12))).shape == (3, 2)


def train_from_release(capsys, tmp_path, task: str, write) -> tuple[str, dict]:
    """`attnbench train` of sdpa on `task` (tiny) from files that `write` puts in tmp_path/data."""
    write(tmp_path / "data")
    code, out, err = cli(capsys, "train", "--task", task, "--variant", "sdpa", "--preset", "tiny",
                         "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"))  # fmt: skip
    (record,) = read_records(tmp_path / "run")
    assert code == 0 and record["status"] == "ok", err
    return out, record


def test_image_trains_from_a_cifar_release_folder_and_a_bad_batch_is_named(capsys, tmp_path):
    from test_tasks import write_cifar

    _, record = train_from_release(capsys, tmp_path, "image", write_cifar)
    assert record["max_len"] == 1024 and "CIFAR-10 grayscale" in record["data"]
    write_cifar(tmp_path / "bad", corrupt="data_batch_4")
    code, _, err = cli(capsys, "train", "--task", "image", "--variant", "sdpa", "--preset", "tiny",
                       "--data-dir", str(tmp_path / "bad"), "--out", str(tmp_path / "run2"))  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "data_batch_4: not a CIFAR-10 batch" in err and "Traceback" not in err


@pytest.mark.parametrize(
    # Not bigbird: its pattern is laid out for the padded length (its last block is global), as in the original.
    "variant",
    ["sdpa", "chunked", "linear-elu", "linformer", "sliding-window", "nystrom", "no-lengths"],
)
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_more_padding_leaves_a_models_output_alone_where_the_variant_takes_lengths(variant, pooling):
    from attnbench.suite.training.model import ModelConfig, TaskModel

    torch.manual_seed(0)
    cfg = ModelConfig(dim=16, depth=2, heads=2, pooling=pooling)
    options = {"sliding-window": {"window": 3, "compile": False}, "bigbird": {"block_size": 4, "compile": False}}
    registry = load_registry([Path(__file__).parent / "plugins" / "no_lengths.py"])
    model = TaskModel("classify", 20, 3, 40, cfg, registry, variant, options.get(variant)).eval()
    tokens = torch.randint(2, 20, (2, 12))
    tokens[1, 7:] = 0  # the second sequence is 7 long
    padded = torch.cat([tokens, torch.zeros(2, 20, dtype=torch.long)], dim=1)  # 20 more padding positions
    with torch.no_grad():
        short, long = model(tokens), model(padded)
    if model.masks_padding:
        torch.testing.assert_close(long, short, rtol=1e-5, atol=1e-6)
    else:  # a variant without key lengths attends the padding, and says so
        assert variant == "no-lengths" and not torch.allclose(long, short, rtol=1e-5, atol=1e-6)


def _listops_release(root: Path) -> Path:
    """A listops-1000 folder in the release format, 24 short expressions per split."""
    folder = root / "lra_release" / "listops-1000"
    folder.mkdir(parents=True)
    rows = "".join(f"( ( [MAX {i % 10} ) {(i * 3) % 10} ) ] )\t{max(i % 10, (i * 3) % 10)}\n" for i in range(24))
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n" + rows)
    return folder


def test_suite_data_dir_feeds_release_tasks_and_mqar_is_still_generated(capsys, tmp_path):
    _listops_release(tmp_path / "data")
    out = tmp_path / "run"
    code, _, _ = cli(capsys, "suite", "--tasks", "mqar,listops", "--variants", "sdpa", "--seeds", "0",
                     "--preset", "tiny", "--data-dir", str(tmp_path / "data"), "--out", str(out))  # fmt: skip
    records = {r["task"]: r for r in read_records(out)}
    assert code == 0 and {r["status"] for r in records.values()} == {"ok"}
    assert "LRA release" in records["listops"]["data"] and records["listops"]["split_sizes"] == {
        "train": 24, "val": 24, "test": 24,
    }  # fmt: skip
    assert records["listops"]["max_len"] == 32 and records["listops"]["padding_masked"] is True
    assert "| listops" in (out / "accuracy.md").read_text()


def test_a_suite_with_a_refused_run_exits_1_and_a_refused_train_leaves_no_env(capsys, tmp_path):
    code, _, err = cli(capsys, "suite", "--tasks", "listops", "--variants", "sdpa", "--seeds", "0", "--preset",
                       "tiny", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))  # fmt: skip
    assert code == 2 and "--data-dir" in err and "is not a folder" in err and not (tmp_path / "run").exists()
    (tmp_path / "empty").mkdir()
    code, out, _ = cli(capsys, "suite", "--tasks", "text", "--variants", "sdpa", "--seeds", "0", "--preset", "tiny",
                       "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "run"))  # fmt: skip
    assert code == 1 and "1 of 1 runs ended in error" in out
    code, _, err = cli(capsys, "train", "--task", "text", "--variant", "sdpa", "--preset", "tiny",
                       "--data-dir", str(tmp_path), "--out", str(tmp_path / "alone"))  # fmt: skip
    assert code == 2 and "no IMDB data" in err and not (tmp_path / "alone" / "env.json").exists()


def test_text_trains_from_the_imdb_release_folder_with_padding_masked(capsys, tmp_path):
    from test_tasks import write_imdb

    out, record = train_from_release(capsys, tmp_path, "text", write_imdb)
    assert record["padding_masked"] is True and "IMDB" in record["data"] and "padding masked" in out
