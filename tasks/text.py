"""Text: byte-level sentiment classification of IMDB reviews (LRA "Text", Tay et al. 2020).

Maas et al. 2011's Large Movie Review Dataset, read from the ``aclImdb`` folder as it ships:
``{train,test}/{pos,neg}/<id>_<rating>.txt``. Each review is its UTF-8 bytes, one token per byte,
truncated to 4096 (LRA's length), so the model has to read characters, not words. The validation
split is a seeded 10% of the training reviews (LRA evaluates on the test set).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import FIRST_SYMBOL, DataFormatError, ReleaseParams, Split, Task, TaskData, pad_sequences, split_train_val


def encode_bytes(text: bytes) -> list[int]:
    """One token per byte."""
    return [b + FIRST_SYMBOL for b in text]


def read_reviews(folder: Path, max_len: int) -> Split:
    """pos/*.txt (label 1) and neg/*.txt (label 0) of one aclImdb split, in sorted file order."""
    sequences, labels = [], []
    for label, sub in ((0, "neg"), (1, "pos")):
        directory = folder / sub
        if not directory.is_dir():
            raise DataFormatError(f"missing IMDB folder {directory}")
        files = sorted(directory.glob("*.txt"))
        if not files:
            raise DataFormatError(f"{directory}: no review files (*.txt)")
        for path in files:
            sequences.append(encode_bytes(path.read_bytes()[:max_len]))
            labels.append(label)
    return Split(pad_sequences(sequences, max_len), torch.tensor(labels))


def find_imdb(root: Path) -> Path:
    """The aclImdb folder: `root` itself or `root/aclImdb`."""
    for candidate in (root, root / "aclImdb"):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    raise DataFormatError(f"no IMDB data: expected {root / 'aclImdb'}/train and /test (the aclImdb release)")


def load_release(root: Path, max_len: int = 4096, seed: int = 0) -> TaskData:
    """IMDB from the aclImdb folder, as bytes."""
    folder = find_imdb(root)
    train_all = read_reviews(folder / "train", max_len)
    train, val = split_train_val(train_all.tokens, train_all.labels, 0.1, seed)
    return TaskData(
        name="text",
        kind="classify",
        train=train,
        val=val,
        test=read_reviews(folder / "test", max_len),
        vocab_size=FIRST_SYMBOL + 256,
        num_classes=2,
        max_len=max_len,
        description=f"IMDB reviews as bytes, {max_len} max ({folder})",
        params={"data": str(folder), "max_len": max_len},
    )


def read(root: Path, release: ReleaseParams, params: dict) -> TaskData:
    """The aclImdb release under --data-dir."""
    return load_release(root, release.max_len or 4096)


TASK = Task("text", "byte-level IMDB sentiment (LRA Text), from the release", read=read)
