"""`attnbench heatmap`: every head's attention weights for one input, a row of heads per layer.

The weights are captured at each layer's attention core (TaskModel.attention_weights): the (q, k)
the variant receives, and the weights the variant says it applies to v (exact: the softmax; sparse:
the masked softmax; linear-elu: its normalised kernel). Variants that have no such matrix
(Performer's random features, the low-rank ones) say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch

from ...tasks.base import IGNORE, PAD, TaskData
from ..analysis.trained import model_for
from ..core.errors import UserError
from ..core.registry import load_registry
from ..training.model import TaskModel
from ..training.presets import load_setup


def attention_maps(model: TaskModel, tokens: torch.Tensor, tokens2: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per layer, the (H, Nq, Nk) weights of the first sequence in `tokens`."""
    model.eval()
    maps = model.attention_weights(tokens[:1], None if tokens2 is None else tokens2[:1])
    if maps is None:
        raise ValueError(f"variant {model.variant} has no attention-weight matrix to show")
    return [weights[0].cpu() for weights in maps]


def heatmap_figure(maps: list[torch.Tensor], title: str, length: int | None = None) -> plt.Figure:
    """A grid: rows are layers, columns heads; each cell the query x key weights."""
    layers, heads = len(maps), maps[0].shape[0]
    fig, axes = plt.subplots(layers, heads, figsize=(2.6 * heads, 2.6 * layers + 0.6), squeeze=False)
    for layer, weights in enumerate(maps):
        for head in range(heads):
            ax = axes[layer][head]
            w = weights[head] if length is None else weights[head, :length, :length]
            ax.imshow(w.numpy(), cmap="viridis", interpolation="nearest", aspect="auto")
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[layer][0].set_ylabel("query")
    for ax in axes[-1]:
        ax.set_xlabel("key")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_example_heatmap(model: TaskModel, data: TaskData, example: int, state: str, out: Path) -> Path:
    """The heatmap of test example `example` of the task's data (UserError when there is none such, or the
    variant has no weight matrix to show); `state` says which model it is (untrained, trained)."""
    split = data.test
    if not 0 <= example < len(split):
        raise UserError(f"--example must be in 0..{len(split) - 1}")
    tokens = split.tokens[example : example + 1]
    tokens2 = split.tokens2[example : example + 1] if split.tokens2 is not None else None
    label = split.labels[example]
    answer = f"label {int(label)}" if label.dim() == 0 else f"{int((label != IGNORE).sum())} positions asked"
    title = f"{model.variant} on {data.name}, test example {example} ({answer}), {state} model"
    try:
        return save_heatmap(model, tokens, tokens2, title, out)
    except ValueError as err:
        raise UserError(str(err)) from None


def save_heatmap(model: TaskModel, tokens: torch.Tensor, tokens2: torch.Tensor | None, title: str, out: Path) -> Path:
    """Capture, draw and save (PNG, and SVG beside it)."""
    length = int((tokens[0] != PAD).sum()) + int(model.prepend_cls)
    fig = heatmap_figure(attention_maps(model, tokens, tokens2), title, length)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    fig.savefig(out.with_suffix(".svg"))
    plt.close(fig)
    return out


def heatmap_job(job: dict[str, Any]) -> str:
    """The heatmap `attnbench heatmap` draws, from its options (`job`), made in its isolated worker
    (executors/local.call_isolated): the model runs the variant's code, a plugin's maybe. Returns the PNG's path."""
    setups = load_setup(job["preset"], job["options"], job["task"], job["settings"])
    run = Path(job["run"]) if job["run"] else None
    data_dir = Path(job["data_dir"]) if job["data_dir"] else None
    registry = load_registry(job["plugins"])
    model, data, state = model_for(job["task"], job["variant"], setups, job["seed"], run, data_dir, registry)
    return str(save_example_heatmap(model, data, job["example"], state, Path(job["out"])))
