"""Scoring a task model: the loss and hits of a batch, and accuracy on a split."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...tasks.base import IGNORE, Split
from ...tasks.metrics import Metric, score
from .model import TaskModel


def loss_and_hits(model: TaskModel, split: Split, idx: torch.Tensor, device: str) -> tuple[torch.Tensor, int, int]:
    """Loss, correct predictions and scored positions for the examples `idx`."""
    loss, preds, labels = _forward(model, split, idx, device)
    scored = labels != IGNORE
    return loss, int((preds == labels)[scored].sum()), int(scored.sum())


def _forward(
    model: TaskModel, split: Split, idx: torch.Tensor, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss of the examples `idx`, their predictions and their labels (same shape)."""
    tokens = split.tokens[idx].to(device)
    tokens2 = split.tokens2[idx].to(device) if split.tokens2 is not None else None
    labels = split.labels[idx].to(device)
    logits = model(tokens, tokens2)
    per_position = logits.dim() == 3  # (B, N, classes): a label per position
    flat = logits.reshape(-1, logits.shape[-1]) if per_position else logits
    loss = F.cross_entropy(flat.float(), labels.reshape(-1) if per_position else labels, ignore_index=IGNORE)
    return loss, logits.argmax(-1), labels


@torch.no_grad()
def evaluate(
    model: TaskModel,
    split: Split,
    batch_size: int,
    device: str,
    limit: int | None = None,
    metric: Metric = "accuracy",
) -> float:
    """The task's metric on (the first `limit` examples of) a split."""
    model.eval()
    n = len(split) if limit is None else min(limit, len(split))
    preds, labels = [], []
    for start in range(0, n, batch_size):
        _, p, y = _forward(model, split, torch.arange(start, min(start + batch_size, n)), device)
        preds.append(p.cpu())
        labels.append(y.cpu())
    model.train()
    return score(metric, torch.cat(preds), torch.cat(labels))
