"""Charts, README report, run comparison and heatmaps, from records alone."""

from __future__ import annotations

import shutil

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest

from attnbench.suite.cli import main
from attnbench.suite.core.registry import load_registry
from attnbench.suite.outputs.heatmap import attention_maps
from attnbench.suite.outputs.plots import line_style, variant_color
from attnbench.suite.training.model import ModelConfig, TaskModel
from attnbench.variants import builtin

FAST = ["--budget", "0.05", "--repeats", "3", "--warmup", "1"]


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with pytest.raises(SystemExit):
        main(["bench", "--variants", "naive,sdpa,chunked", "--seq", "128,256,512", *FAST, "--out", str(out)])
    return out


def test_plot_and_report_from_records_alone(bench_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(bench_run, run)
    (run / "summary.md").unlink()
    code, _, _ = cli(capsys, "plot", str(run))
    assert code == 0
    for chart in ("time", "memory", "tflops", "speedup"):
        (png,) = run.glob(f"*-{chart}.png")
        assert matplotlib.image.imread(png).shape[0] > 300  # a real image
        assert png.with_suffix(".svg").read_text().startswith("<?xml")
    charts = {path: path.read_bytes() for path in run.glob("*.[ps][nv]g")}
    code, _, _ = cli(capsys, "report", str(run))  # plots again: the same records, the same bytes
    assert {path: path.read_bytes() for path in run.glob("*.[ps][nv]g")} == charts
    readme = (run / "README.md").read_text()
    assert code == 0 and "## Environment" in readme and "| torch version" in readme
    assert "-time.png)" in readme and "growth in N" in readme


def test_failed_points_are_marked_on_the_chart(tmp_path, plugins, capsys):
    cli(capsys, "bench", "--variants", "fails-long,sdpa", "--seq", "256,512,1024", *FAST,
        "--plugin", str(plugins / "fails_long.py"), "--out", str(tmp_path))  # fmt: skip
    import matplotlib.pyplot as plt

    from attnbench.suite.outputs.plots import bench_charts
    from attnbench.suite.outputs.summary import bench_frame
    from attnbench.suite.runs.records import read_env, read_records

    saved = []
    real_save = plt.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        saved.append(fig)
        return real_save(fig, path, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        bench_charts(bench_frame(read_records(tmp_path)), read_env(tmp_path), tmp_path, "sdpa")
    finally:
        plt.Figure.savefig = real_save
    time_fig = saved[0]
    texts = [t.get_text() for t in time_fig.axes[0].texts]
    labels = [t.get_text() for t in time_fig.axes[0].get_legend().get_texts()]
    assert "error" in texts and any("error at N=1024" in label for label in labels)


def test_every_builtin_has_its_own_colour_and_approximations_their_own_line():
    rgb = np.array([matplotlib.colors.to_rgb(variant_color(name)) for name in builtin()])
    distances = np.linalg.norm(rgb[:, None] - rgb[None, :], axis=-1)[np.triu_indices(len(rgb), 1)]
    assert distances.min() >= 0.2  # tab10's blue against Set1's, once a collision here, is 0.09 apart
    exact, approx = line_style("naive", exact=True), line_style("linformer", exact=False)
    assert (exact["ls"], exact["marker"]) != (approx["ls"], approx["marker"])


def test_corrupt_record_line_is_skipped_and_the_rest_plotted(bench_run, tmp_path, capsys):
    run = tmp_path / "corrupt"
    shutil.copytree(bench_run, run)
    lines = (run / "records.jsonl").read_text().splitlines()
    lines[4] = lines[4][: len(lines[4]) // 2]  # a line cut in half, as by a crash mid-write
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"records.jsonl:5: skipped corrupt record"):
        code, _, _ = cli(capsys, "plot", str(run))
    assert code == 0 and list(run.glob("*-time.png"))


def test_plot_of_a_folder_without_records_is_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "plot", str(tmp_path))
    assert code == 2 and "no records.jsonl here" in err


def test_task_run_charts_and_report(capsys, tmp_path):
    cli(capsys, "suite", "--tasks", "mqar,listops", "--variants", "sdpa,sliding-window", "--seeds", "0,1",
        "--preset", "tiny", "--out", str(tmp_path))  # fmt: skip
    (tmp_path / "accuracy.md").unlink()
    code, _, _ = cli(capsys, "report", str(tmp_path))
    readme = (tmp_path / "README.md").read_text()
    assert code == 0 and "accuracy.png" in readme and "lra-speed-accuracy-memory.png" in readme
    assert (tmp_path / "accuracy.svg").exists()
    header = (tmp_path / "accuracy.md").read_text().splitlines()[2]
    assert [cell.strip() for cell in header.split("|")[1:3]] == ["task", "variant"]


@pytest.mark.parametrize("variant", ["sdpa", "naive", "sliding-window", "linear-elu"])
def test_heatmap_weights_are_rows_that_sum_to_one(variant):
    registry = load_registry()
    cfg = ModelConfig(dim=16, depth=2, heads=2)
    model = TaskModel("lm", 20, 20, 24, cfg, registry, variant, {"window": 4} if variant == "sliding-window" else None)
    tokens = __import__("torch").randint(2, 20, (1, 24))
    maps = attention_maps(model, tokens)
    assert len(maps) == 2 and maps[0].shape == (2, 24, 24)
    sums = maps[0].sum(-1)
    assert (abs(sums - 1) < 1e-4).all()
    assert (maps[0].triu(1) == 0).all()  # causal: no weight on the future
    if variant == "sliding-window":
        assert (maps[0].tril(-4) == 0).all()  # nothing beyond the window


@pytest.mark.parametrize("variant", ["sdpa", "sliding-window", "linear-elu"])
def test_heatmap_of_a_padded_example_shows_the_weights_the_model_applies(variant):
    """Padding keys get no weight, and the real rows sum to one over the real keys alone."""
    import torch

    from attnbench.tasks.base import PAD

    model = TaskModel("classify", 20, 3, 24, ModelConfig(dim=16, depth=2, heads=2), load_registry(), variant,
                      {"window": 4} if variant == "sliding-window" else None)  # fmt: skip
    tokens = torch.randint(2, 20, (2, 24))
    tokens[0, 15:] = PAD  # 15 real tokens, plus the CLS the model prepends: 16 real keys of 25
    maps = attention_maps(model, tokens)
    real = 15 + int(model.prepend_cls)
    assert model.masks_padding and maps[0].shape == (2, 25, 25)
    assert (maps[0][:, :, real:] == 0).all()
    assert (abs(maps[0][:, :real].sum(-1) - 1) < 1e-4).all()


def test_heatmap_command_for_a_trained_model(capsys, tmp_path):
    """A run trained with --set is found by the same --set; without it, its weights are not the preset's."""
    overrides = ["--set", "model.heads=4"]
    cli(capsys, "train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", *overrides, "--out", str(tmp_path))
    out = tmp_path / "heat.png"
    argv = ["heatmap", "--task", "mqar", "--variant", "sdpa", "--run", str(tmp_path), "--out", str(out)]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "no trained weights" in err
    code, _, err = cli(capsys, *argv, *overrides)
    assert code == 0 and matplotlib.image.imread(out).shape[1] > 200, err


def test_heatmap_of_a_variant_without_weights_is_one_line(capsys, tmp_path):
    code, _, err = cli(
        capsys, "heatmap", "--task", "listops", "--variant", "performer", "--out", str(tmp_path / "h.png")
    )
    assert code == 2 and "performer has no attention-weight matrix" in err


def test_run_readme_lists_the_departures_its_variants_recorded(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, _ = cli(capsys, "bench", "--variants", "sdpa,linformer", "--seq", "64", "--repeats", "2", "--warmup",
                     "1", "--out", str(out))  # fmt: skip
    readme = (out / "README.md").read_text()
    assert code == 0 and "## Departures from the sources" in readme
    section = readme.split("## Departures from the sources")[1]
    assert "- **linformer**" in section and "'headwise' sharing" in section and "**sdpa**" not in section
