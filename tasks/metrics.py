"""How a task scores predictions on the positions it asks about (labels other than IGNORE).

`accuracy` is the fraction of scored positions predicted right. `macro-accuracy` is the MAD suite's
metric (Poli et al. 2024, athms/mad-lab): torchmetrics' ``MulticlassAccuracy(ignore_index=-100)``,
whose default average is ``macro``, computed on each batch of 128 examples, the batch values
averaged over the split as Lightning averages a logged value over an epoch (weighted by batch size).
"""

from __future__ import annotations

from typing import Literal

import torch

from .base import IGNORE, TaskData

Metric = Literal["accuracy", "macro-accuracy"]
MAD_BATCH = 128  # MAD's batch size, over which its metric is computed


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Correct predictions over scored positions (0 where nothing is scored)."""
    scored = labels != IGNORE
    return int((preds == labels)[scored].sum()) / max(int(scored.sum()), 1)


def macro_accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """torchmetrics' macro multiclass accuracy of one batch: per class, the true positives over the class's
    scored positions, averaged over the classes that are a label or a prediction there (a class predicted but
    never a label counts 0, as torchmetrics counts it); 0 where nothing is scored."""
    scored = labels != IGNORE
    pred, label = preds[scored].long(), labels[scored].long()
    if label.numel() == 0:
        return 0.0
    classes = int(max(pred.max(), label.max())) + 1
    support = torch.bincount(label, minlength=classes)  # true positives + false negatives
    predicted = torch.bincount(pred, minlength=classes)  # true positives + false positives
    hits = torch.bincount(label[pred == label], minlength=classes)
    counted = (support + predicted) > 0
    recall = hits.double() / support.clamp_min(1).double()
    return float(recall[counted].mean())


def score(metric: Metric, preds: torch.Tensor, labels: torch.Tensor) -> float:
    """`preds` (n, ...) against `labels` of the same shape, by the task's metric."""
    if metric == "accuracy":
        return accuracy(preds, labels)
    if metric == "macro-accuracy":
        total = 0.0
        for start in range(0, len(labels), MAD_BATCH):
            chunk = slice(start, start + MAD_BATCH)
            total += macro_accuracy(preds[chunk], labels[chunk]) * len(labels[chunk])
        return total / max(len(labels), 1)
    raise ValueError(f"unknown metric {metric!r} (one of accuracy, macro-accuracy)")


def majority_score(data: TaskData, split: str = "test") -> float:
    """The score of always answering the most common label of the training split."""
    train, labels = data.train.labels, getattr(data, split).labels
    majority = torch.bincount(train[train != IGNORE]).argmax()
    return score(data.metric, torch.full_like(labels, int(majority)), labels)
