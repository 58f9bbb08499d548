"""What the MAD tasks share (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures";
code athms/mad-lab, mad/data/instances.py and configs/tasks/).

Each MAD task draws its training examples with MAD's training targets and its validation and test
examples with MAD's test targets, from one generator seeded by the task's data seed, in that order.
MAD's token i is our token i + 2 (0 and 1 stay PAD and CLS); its targets likewise, IGNORE where MAD
ignores a position. MAD scores its macro accuracy (tasks/metrics.py). Departures from mad-lab, for
every MAD task: MAD has no validation split (it selects on its test set; here the protocol selects on
validation and reports test), and its data come from its own sequence of random draws, so the
examples are drawn alike, not the same.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .base import FIRST_SYMBOL, IGNORE, Kind, Split, Task, TaskData

# (examples, training targets?, generator) -> inputs (n, L) and targets (n, L) in MAD's tokens
Examples = Callable[[int, bool, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class MadSizes(BaseModel):
    """Examples per split: MAD's 12,800 training and 1,280 test examples, and as many for validation."""

    model_config = ConfigDict(extra="forbid")

    train_size: int = Field(12_800, gt=0)
    val_size: int = Field(1_280, gt=0)
    test_size: int = Field(1_280, gt=0)


def mad_data(
    name: str,
    kind: Kind,
    params: MadSizes,
    rng: np.random.Generator,
    vocab_size: int,
    examples: Examples,
    description: str,
) -> TaskData:
    """The task's three splits from `examples` drawing on `rng` (seeded by the data seed): MAD's training
    targets for train, its test targets for the others; `vocab_size` is MAD's, before the shift past PAD and
    CLS."""
    splits = {}
    for split, size, training in (
        ("train", params.train_size, True),
        ("val", params.val_size, False),
        ("test", params.test_size, False),
    ):
        inputs, targets = examples(size, training, rng)
        labels = np.where(targets == IGNORE, IGNORE, targets + FIRST_SYMBOL)
        splits[split] = Split(torch.from_numpy(inputs + FIRST_SYMBOL), torch.from_numpy(labels))
    return TaskData(
        name=name,
        kind=kind,
        **splits,
        vocab_size=FIRST_SYMBOL + vocab_size,
        num_classes=FIRST_SYMBOL + vocab_size,
        max_len=splits["train"].tokens.shape[1],
        metric="macro-accuracy",
        description=description,
        params=params.model_dump(),
    )


def mad_task(
    name: str,
    summary: str,
    params: type[MadSizes],
    examples: Callable[[Any, int, bool, np.random.Generator], tuple[np.ndarray, np.ndarray]],
    describe: Callable[[Any], str],
    kind: Kind = "lm",
) -> Task:
    """A MAD task for the registry: `examples(params, n, training, rng)` draws its examples, `describe(params)`
    names its data; its generator seeds one numpy generator with the data seed."""

    def generate(values: Any, seed: int) -> TaskData:
        draw = partial(examples, values)
        return mad_data(name, kind, values, np.random.default_rng(seed), values.vocab_size, draw, describe(values))

    return Task(name, summary, params, generate)
