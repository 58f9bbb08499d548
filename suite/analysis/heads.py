"""What each head of a trained task model does, and how much it matters.

- Importance (Michel, Levy and Neubig 2019, "Are Sixteen Heads Really Better than One?"): a gate
  xi_h multiplies each head's output; I_h = E_x |dL(x)/dxi_h| over the validation split, each
  example's own gradient (every example gets its own gate, so one backward gives them all), then
  divided by the layer's L2 norm.
- Pruning: test accuracy as heads are masked (gate 0) least important first, and in random
  orders (several seeds).
- Statistics of each head's attention weights on validation examples, over real (non-padding)
  query positions: entropy (divided by the log of the keys the query sees), mean distance |i - j|
  (divided by the distance under uniform weights), and the mass on the previous token, the first
  token and the query itself; each head classified by the thresholds below (docs/heads.md).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...tasks.base import CLS, IGNORE, PAD, Split
from ..core.env import provenance
from ..core.errors import UserError
from ..core.registry import load_registry
from ..training.model import TaskModel
from .trained import Trained, load_trained

# A head is positional when one fixed position (previous, first, itself) takes at least this share
# of its weights; otherwise diffuse when its entropy is at least this share of uniform's; otherwise
# local when its mean distance is at most this share of uniform's; otherwise global.
POSITIONAL_MASS = 0.5
DIFFUSE_ENTROPY = 0.8
LOCAL_DISTANCE = 0.5
CLASSES = ("positional", "local", "global", "diffuse")
STATS = ("entropy", "distance", "previous", "first", "self")


def parse_heads(text: str, layers: int, heads: int) -> list[tuple[int, int]]:
    """'1.2,2.4' (layer.head, from 1) -> [(0, 1), (1, 3)]; UserError naming a head the model lacks."""
    chosen = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        layer, dot, head = item.partition(".")
        if not (dot and layer.isdigit() and head.isdigit()):
            raise UserError(f"head {item!r}: expected LAYER.HEAD counted from 1, e.g. 1.2")
        if not (1 <= int(layer) <= layers and 1 <= int(head) <= heads):
            raise UserError(
                f"head {item} does not exist: the model has {layers} layers x {heads} heads (1.1 .. {layers}.{heads})"
            )
        chosen.append((int(layer) - 1, int(head) - 1))
    return chosen


def _set_gates(model: TaskModel, gates: torch.Tensor | None) -> None:
    """gates: (L, H) or (B, L, H) (one per example), or None to remove them."""
    for layer, attn in enumerate(model.attention_layers):
        attn.head_gate = None if gates is None else gates[..., layer, :]


def _example_losses(model: TaskModel, split: Split, idx: torch.Tensor) -> torch.Tensor:
    """(B,) each example's mean loss over its scored positions."""
    tokens2 = split.tokens2[idx] if split.tokens2 is not None else None
    logits, labels = model(split.tokens[idx], tokens2), split.labels[idx]
    if logits.dim() == 2:  # a label per sequence
        return F.cross_entropy(logits.float(), labels, reduction="none")
    per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    scored = (labels != IGNORE).sum(1).clamp_min(1)
    return per_token.sum(1) / scored


def importance(trained: Trained, batch_size: int = 64, limit: int | None = None) -> torch.Tensor:
    """(L, H) head importance, each layer divided by its L2 norm (Michel et al. 2019)."""
    model, split = trained.model, trained.data.val
    layers, heads = trained.shape
    n = len(split) if limit is None else min(limit, len(split))
    total = torch.zeros(layers, heads)
    try:
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n))
            gates = torch.ones(len(idx), layers, heads, requires_grad=True)
            _set_gates(model, gates)
            (grad,) = torch.autograd.grad(_example_losses(model, split, idx).sum(), gates)
            total += grad.abs().sum(0)
    finally:
        _set_gates(model, None)
    scores = total / n
    return scores / scores.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def accuracy(trained: Trained, masked: list[tuple[int, int]], batch_size: int = 256) -> float:
    """Test accuracy with the heads `masked` (layer, head) gated to zero."""
    model, split = trained.model, trained.data.test
    gates = torch.ones(*trained.shape)
    for layer, head in masked:
        gates[layer, head] = 0.0
    _set_gates(model, gates)
    hits = total = 0
    try:
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            tokens2 = split.tokens2[idx] if split.tokens2 is not None else None
            logits, labels = model(split.tokens[idx], tokens2), split.labels[idx]
            scored = labels != IGNORE
            hits += int((logits.argmax(-1) == labels)[scored].sum())
            total += int(scored.sum())
    finally:
        _set_gates(model, None)
    return hits / max(total, 1)


def masked_accuracy(trained: Trained, mask: str) -> tuple[float, float]:
    """Test accuracy with every head, and with the heads `mask` names ('1.2,2.4': LAYER.HEAD from 1) masked."""
    return accuracy(trained, []), accuracy(trained, parse_heads(mask, *trained.shape))


def pruning_curves(trained: Trained, scores: torch.Tensor, seeds: int) -> dict[str, Any]:
    """Test accuracy after masking 0, 1, ..., all heads: least important first, and in `seeds` random
    orders (torch.randperm from seeds 0..seeds-1)."""
    layers, heads = trained.shape
    every = [(layer, head) for layer in range(layers) for head in range(heads)]
    by_importance = [every[i] for i in torch.argsort(scores.flatten(), stable=True).tolist()]

    def curve(order: list[tuple[int, int]]) -> list[float]:
        return [accuracy(trained, order[:k]) for k in range(len(order) + 1)]

    randoms = {}
    for seed in range(seeds):
        perm = torch.randperm(len(every), generator=torch.Generator().manual_seed(seed)).tolist()
        randoms[str(seed)] = curve([every[i] for i in perm])
    return {
        "order": [f"{layer + 1}.{head + 1}" for layer, head in by_importance],
        "importance": curve(by_importance),
        "random": randoms,
    }


def half_pruned(curves: dict[str, Any]) -> dict[str, float]:
    """Accuracy with the least important half masked against a random half (mean over seeds)."""
    half = (len(curves["importance"]) - 1) // 2
    randoms = [c[half] for c in curves["random"].values()]
    return {
        "heads_masked": half,
        "full": curves["importance"][0],
        "importance": curves["importance"][half],
        "random_mean": sum(randoms) / len(randoms),
        "random_min": min(randoms),
        "random_max": max(randoms),
    }


def head_statistics(trained: Trained, examples: int = 256, batch_size: int = 32) -> list[list[dict[str, float]]] | None:
    """Per layer and head: the five statistics (module docstring), over the real query positions of the
    first `examples` validation examples; None when the variant has no weight matrix."""
    model, split = trained.model, trained.data.val
    layers, heads = trained.shape
    sums = torch.zeros(layers, heads, len(STATS))
    count = 0
    for start in range(0, min(examples, len(split)), batch_size):
        idx = torch.arange(start, min(start + batch_size, examples, len(split)))
        tokens = split.tokens[idx]
        tokens2 = split.tokens2[idx] if split.tokens2 is not None else None
        maps = model.attention_weights(tokens, tokens2)
        if maps is None:
            return None
        if model.prepend_cls:
            tokens = torch.cat([torch.full_like(tokens[:, :1], CLS), tokens], dim=1)  # a real position
        real = tokens != PAD  # (B, N)
        n = real.shape[1]
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        visible = real[:, None, :] & real[:, :, None]  # (B, Nq, Nk)
        if model.causal:
            visible = visible & (j <= i)
        seen = visible.sum(-1)  # (B, Nq) keys each query may see
        queries = real & (seen > 1) & (i.squeeze(1) >= 1)  # a lone key or position 0 says nothing
        dist = (i - j).abs().float()
        uniform_dist = (visible * dist).sum(-1) / seen.clamp_min(1)
        for layer, w in enumerate(maps):
            w = w.float() * visible[:, None]  # (B, H, Nq, Nk)
            entropy = -(w * torch.log(w.clamp_min(1e-12))).sum(-1) / torch.log(seen.clamp_min(2).float())[:, None]
            distance = (w * dist).sum(-1) / uniform_dist.clamp_min(1e-12)[:, None]
            diag = torch.diagonal(w, dim1=-2, dim2=-1)  # (B, H, N)
            previous = F.pad(torch.diagonal(w, offset=-1, dim1=-2, dim2=-1), (1, 0))
            first = w[..., 0]
            stats = torch.stack([entropy, distance, previous, first, diag], dim=-1)  # (B, H, Nq, 5)
            sums[layer] += (stats * queries[:, None, :, None]).sum((0, 2))
        count += int(queries.sum())
    means = sums / max(count, 1)
    return [
        [dict(zip(STATS, means[layer, head].tolist(), strict=True)) for head in range(heads)] for layer in range(layers)
    ]


def classify(stats: dict[str, float]) -> str:
    """positional (previous / first / self), diffuse, local or global, by the thresholds above."""
    position = max(("previous", "first", "self"), key=lambda name: stats[name])
    if stats[position] >= POSITIONAL_MASS:
        return f"positional ({position})"
    if stats["entropy"] >= DIFFUSE_ENTROPY:
        return "diffuse"
    return "local" if stats["distance"] <= LOCAL_DISTANCE else "global"


def shares(classes: list[list[str]]) -> dict[str, float]:
    """Share of heads in each of the four classes."""
    flat = [c.split(" ")[0] for row in classes for c in row]
    return {name: flat.count(name) / len(flat) for name in CLASSES}


def analyse(trained: Trained, seeds: int, examples: int) -> dict[str, Any]:
    """Importance, pruning curves and statistics of one trained model: the body of its heads record."""
    scores = importance(trained)
    curves = pruning_curves(trained, scores, seeds)
    stats = head_statistics(trained, examples)
    classes = [[classify(s) for s in row] for row in stats] if stats is not None else None
    layers, heads = trained.shape
    return {
        "layers": layers,
        "heads": heads,
        "importance": scores.tolist(),
        "pruning": curves,
        "half": half_pruned(curves),
        "pruning_seeds": seeds,
        "stats_examples": min(examples, len(trained.data.val)),
        "stats": stats,
        "classes": classes,
        "shares": shares(classes) if classes else None,
        "stats_missing": None
        if stats is not None
        else f"variant {trained.record['variant']} has no attention-weight matrix",
        "thresholds": {
            "positional_mass": POSITIONAL_MASS,
            "diffuse_entropy": DIFFUSE_ENTROPY,
            "local_distance": LOCAL_DISTANCE,
        },
    }


def model_name(record: dict[str, Any]) -> str:
    """How a trained model is named in heads.jsonl and its charts: task-variant-seedN-<weights file>."""
    return f"{record['task']}-{record['variant']}-seed{record['seed']}-{Path(record['model_path']).stem[:8]}"


def head_record(run: Path, trained: Trained, seeds: int, examples: int) -> dict[str, Any]:
    """The heads record of one trained model of `run`: what it is, the command that remakes it, the code
    that made it, and the analysis (importance, pruning, statistics)."""
    r = trained.record
    command = [
        "attnbench",
        "heads",
        str(run),
        "--task",
        r["task"],
        "--variant",
        r["variant"],
        "--seed",
        str(r["seed"]),
        "--prune-seeds",
        str(seeds),
        "--examples",
        str(examples),
    ]
    return {
        "kind": "heads",
        "name": model_name(r),
        "task": r["task"],
        "variant": r["variant"],
        "seed": r["seed"],
        "kv_layout": r.get("kv_layout") or "MHA",
        "model_path": r["model_path"],
        "train_key": r["key"],
        "command": shlex.join(command),
        **provenance(),
        **analyse(trained, seeds, examples),
    }


def head_job(job: dict[str, Any]) -> dict[str, Any]:
    """`head_record` for the trained model of record `job["record"]` of run `job["run"]`: what a command's
    isolated worker runs (executors/local.call_isolated), the variant's code being a plugin's, maybe."""
    run = Path(job["run"])
    trained = load_trained(run, job["record"], load_registry(job["plugins"]))
    return head_record(run, trained, job["prune_seeds"], job["examples"])


def mask_job(job: dict[str, Any]) -> list[float]:
    """`masked_accuracy` of one trained model (as `head_job`): [every head, with job["mask"] masked]."""
    trained = load_trained(Path(job["run"]), job["record"], load_registry(job["plugins"]))
    return list(masked_accuracy(trained, job["mask"]))
