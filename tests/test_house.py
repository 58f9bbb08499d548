"""The house: a variant, a task or a check is its file; nothing central is edited to add one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnbench import tasks as task_registry
from attnbench.suite.checks import registry as check_registry
from attnbench.suite.checks.checker import Checker, CheckFailed, Skipped
from attnbench.suite.checks.registry import all_checks, check, checks_for
from attnbench.suite.outputs.styles import MIN_DISTANCE, palette
from attnbench.tasks.base import DataFormatError
from attnbench.variants.exact.naive import NaiveAttention
from attnbench.variants.linear.elu import LinearEluAttention

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("causality", "gradients", "hygiene", "padding", "recurrence", "selection", "shapes", "values")


@pytest.fixture
def scratch_checks():
    """Checks a test registers are gone after it."""
    before = dict(check_registry._REGISTERED)
    yield
    check_registry._REGISTERED.clear()
    check_registry._REGISTERED.update(before)


def test_every_group_module_registers_its_checks_in_the_running_order():
    checks = all_checks()
    assert {c.run.__module__.rsplit(".", 1)[1] for c in checks} == set(GROUPS)
    assert [c.order for c in checks] == sorted(c.order for c in checks)
    assert checks[0].name == "output" and checks[-1].name == "vs-softmax"
    # vs-softmax reports a non-exact variant's distance from softmax: it does not concern exact ones.
    assert "vs-softmax" not in [c.name for c in checks_for(NaiveAttention.info)]
    assert "vs-softmax" in [c.name for c in checks_for(LinearEluAttention.info)]


def test_a_family_adds_a_check_from_its_own_module_where_its_order_puts_it(scratch_checks):
    @check("linear-only", order=25, applies=lambda info: info.family == "linear")
    def linear_only(c: Checker) -> str:
        if c.info.name != "linear-elu":
            raise CheckFailed("ran on the wrong variant")
        return "ran"

    @check("always-skips", order=26)
    def always_skips(c: Checker) -> str:
        raise Skipped("nothing to check")

    elu = [(r.check, r.status, r.detail) for r in Checker(LinearEluAttention, "cpu", torch.float32).results()]
    names = [name for name, _, _ in elu]
    assert names.index("linear-only") == names.index("reference") + 1  # order 25: after reference (20)
    assert ("linear-only", "pass", "ran") in elu and ("always-skips", "skip", "nothing to check") in elu
    assert "linear-only" not in [c.name for c in checks_for(NaiveAttention.info)]
    with pytest.raises(RuntimeError, match="check 'linear-only' registered twice"):
        check("linear-only", order=1)(always_skips)


def test_tasks_are_found_by_scanning_their_folder(monkeypatch, tmp_path):
    assert task_registry.task_names() == [
        "image", "listops", "mad-compression", "mad-selective-copying", "mad-fuzzy-in-context-recall",
        "mad-memorization", "mad-in-context-recall", "mad-noisy-in-context-recall", "mqar", "pathfinder", "pathx",
        "retrieval", "text",
    ]  # fmt: skip
    with pytest.raises(DataFormatError, match="unknown task 'sudoku' \\(one of image, listops"):
        task_registry.load_task("sudoku")
    # A new task is one file in the folder: here a folder added to the package's path, with a module that
    # declares a synthetic task built on MQAR's generator.
    (tmp_path / "echo.py").write_text(
        "from attnbench.tasks.base import Task\n"
        "from attnbench.tasks.mqar import MqarParams, generate\n"
        "TASK = Task('echo', 'MQAR under another name', MqarParams, generate)\n"
    )
    monkeypatch.setattr(task_registry, "__path__", [*task_registry.__path__, str(tmp_path)])
    task_registry.tasks.cache_clear()
    try:
        assert "echo" in task_registry.task_names()
        params = {"train_size": 4, "val_size": 2, "test_size": 2, "seq_len": 32, "num_kv_pairs": 2, "vocab_size": 16}
        data = task_registry.load_task("echo", params, cache_dir=tmp_path / "cache")
        assert data.name == "echo" and data.train.tokens.shape == (4, 32)
        with pytest.raises(DataFormatError, match="echo is synthetic"):
            task_registry.load_task("echo", params, data_dir=tmp_path)
    finally:
        task_registry.tasks.cache_clear()


def test_the_palette_gives_any_number_of_built_ins_colours_far_apart():
    colours = torch.tensor(palette(60))
    distances = torch.cdist(colours, colours)[torch.triu(torch.ones(60, 60, dtype=torch.bool), 1)]
    assert distances.min() >= MIN_DISTANCE
    assert palette(21) == palette(60)[:21]  # by position: a longer registry keeps the earlier colours


@pytest.fixture(scope="module")
def twin_tree(tmp_path_factory) -> Path:
    """The package copied, with variants/exact/naive.py copied to naive_twin.py and only its name changed."""
    root = tmp_path_factory.mktemp("tree")
    top = {"results", "site", "test-artefacts", "build", "dist"}  # data and outputs of the checkout, not code

    def ignore(folder: str, names: list[str]) -> set[str]:
        at_top = Path(folder) == REPO
        return {n for n in names if n.startswith(".") or n == "__pycache__" or (at_top and n in top)}

    shutil.copytree(REPO, root / "attnbench", ignore=ignore)
    exact = root / "attnbench" / "variants" / "exact"
    source = (exact / "naive.py").read_text()
    assert source.count('name="naive"') == 1
    (exact / "naive_twin.py").write_text(source.replace('name="naive"', 'name="naive-twin"'))
    return root


def _attnbench(tree: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "attnbench", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_a_builtin_is_one_file_listed_checked_measured_and_coloured(twin_tree, tmp_path):
    listed = _attnbench(twin_tree, "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["naive-twin"]["available"] and rows["naive-twin"]["origin"] == "built-in"
    checked = _attnbench(twin_tree, "check", "naive-twin", "--dtype", "float32", cwd=tmp_path)
    assert checked.returncode == 0 and "0 failed" in checked.stdout, checked.stdout[-2000:]
    run = tmp_path / "run"
    fast = ("--seq", "64,128", "--repeats", "2", "--budget", "0.05", "--warmup", "1", "--threads", "1", "--no-report")
    bench = _attnbench(twin_tree, "bench", "--variants", "naive,naive-twin", *fast, "--out", str(run), cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert {(r["variant"], r["status"]) for r in records} == {("naive", "ok"), ("naive-twin", "ok")} and len(
        records
    ) == 4
    plotted = _attnbench(twin_tree, "plot", str(run), cwd=tmp_path)
    assert plotted.returncode == 0 and list(run.glob("*-time.svg")), plotted.stderr
    program = (
        "import json; from attnbench.suite.core.registry import builtin_names; "
        "from attnbench.suite.outputs.styles import variant_color; "
        "print(json.dumps({n: list(variant_color(n)[:3]) for n in builtin_names()}))"
    )
    env = os.environ | {"PYTHONPATH": str(twin_tree)}
    colours = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True)
    by_name = json.loads(colours.stdout)
    twin = torch.tensor(by_name.pop("naive-twin"))
    others = torch.tensor(list(by_name.values()))
    assert (others - twin).norm(dim=1).min() >= MIN_DISTANCE  # a colour of its own among the built-ins
    svg = next(run.glob("*-time.svg")).read_text()
    assert "naive-twin" in svg
