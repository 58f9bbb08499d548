"""What a task is: tokenized splits, and what the model needs to know about them.

Every task shares one token convention: 0 is padding, 1 is the classification token (CLS), and a
task's own symbols start at 2. Classification tasks have one label per sequence; the language
modelling tasks (MQAR, MAD's) have one label per position, -100 where nothing is asked; the pair task
(retrieval) has two sequences per example; the autoencoding task (MAD's compression) labels every
position, to be rebuilt from one vector. Tasks know nothing of timing or of attention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

PAD, CLS, FIRST_SYMBOL = 0, 1, 2
IGNORE = -100

Kind = Literal["classify", "lm", "pair", "autoencode"]


class DataFormatError(ValueError):
    """A data file is missing or not in the format its loader reads; the message names it."""


@dataclass
class Split:
    """One split: tokens (n, L) padded with PAD, labels (n,) or (n, L), and a second tower for pairs."""

    tokens: torch.Tensor
    labels: torch.Tensor
    tokens2: torch.Tensor | None = None
    skipped: int = 0  # examples of the source files left out (longer than the task's max_len)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __post_init__(self) -> None:
        if self.tokens.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.tokens.shape[0]} sequences but {self.labels.shape[0]} labels")


@dataclass
class TaskData:
    """A task's splits and shape."""

    name: str
    kind: Kind
    train: Split
    val: Split
    test: Split
    vocab_size: int
    num_classes: int
    max_len: int
    metric: Literal["accuracy", "macro-accuracy"] = "accuracy"  # tasks/metrics.py scores it
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def pad_sequences(sequences: list[list[int]], max_len: int) -> torch.Tensor:
    """(n, max_len) int64, each sequence truncated to max_len and right-padded with PAD."""
    out = torch.full((len(sequences), max_len), PAD, dtype=torch.long)
    for i, seq in enumerate(sequences):
        seq = seq[:max_len]
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def split_train_val(tokens: torch.Tensor, labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """A seeded split of one set into train and validation."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(len(labels) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return Split(tokens[train], labels[train]), Split(tokens[val], labels[val])


class ReleaseParams(BaseModel):
    """What a preset may set when a task is read from released files (--data-dir)."""

    model_config = ConfigDict(extra="forbid")
    max_len: int | None = None
    resolution: int = 32
    difficulty: str = "hard"


def lra_root(data_dir: Path) -> Path:
    """The unpacked LRA release: `data_dir/lra_release` if present, else `data_dir` itself."""
    return data_dir / "lra_release" if (data_dir / "lra_release").is_dir() else data_dir


@dataclass(frozen=True)
class Task:
    """A task as the registry finds it in its module (tasks/__init__.py scans them): its name, and how
    its splits are made: generated from validated parameters and a data seed, read from the released
    files under --data-dir, or both."""

    name: str
    summary: str
    # The generator's parameters and the generator (validated parameters, data seed); None for real data only.
    params: type[BaseModel] | None = None
    generate: Callable[[Any, int], TaskData] | None = None
    # The reader of the release (the --data-dir folder, release parameters, the preset's parameters); None
    # for a synthetic task.
    read: Callable[[Path, ReleaseParams, dict[str, Any]], TaskData] | None = None
    # Parameters the task pins (Path-X is Pathfinder at resolution 128): another value is refused.
    fixed: Mapping[str, Any] = field(default_factory=dict)
    # The length rule of accuracy-against-length sweeps: a preset's parameters -> the parameters that make
    # sequences of n tokens (what else grows with n is the task's to say); None where n is not the task's to set.
    at_length: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
