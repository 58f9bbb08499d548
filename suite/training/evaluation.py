"""Scoring a task model: the loss and hits of a batch, and accuracy on a split."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...tasks.base import IGNORE, Split
from .model import TaskModel


def loss_and_hits(model: TaskModel, split: Split, idx: torch.Tensor, device: str) -> tuple[torch.Tensor, int, int]:
    """Loss, correct predictions and scored positions for the examples `idx`."""
    tokens = split.tokens[idx].to(device)
    tokens2 = split.tokens2[idx].to(device) if split.tokens2 is not None else None
    labels = split.labels[idx].to(device)
    logits = model(tokens, tokens2)
    if model.kind == "lm":
        logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)
    scored = labels != IGNORE
    hits = int((logits.argmax(-1) == labels)[scored].sum())
    return loss, hits, int(scored.sum())


@torch.no_grad()
def evaluate(model: TaskModel, split: Split, batch_size: int, device: str, limit: int | None = None) -> float:
    """Accuracy on (the first `limit` examples of) a split."""
    model.eval()
    n = len(split) if limit is None else min(limit, len(split))
    hits = total = 0
    for start in range(0, n, batch_size):
        _, h, t = loss_and_hits(model, split, torch.arange(start, min(start + batch_size, n)), device)
        hits, total = hits + h, total + t
    model.train()
    return hits / max(total, 1)
