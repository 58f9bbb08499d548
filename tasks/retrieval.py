"""Retrieval: does one paper cite the other? Byte-level document matching (LRA "Retrieval").

Radev et al.'s ACL Anthology Network pairs as released by Long Range Arena (Tay et al. 2020):
``tsv_data/new_aan_pairs.{train,eval,test}.tsv``, no header, five tab-separated fields per line:
label (0/1, may be written as a float), id1, id2, text1, text2. Each document is its UTF-8 bytes,
truncated to 4000 (LRA's length); a two-tower model encodes both with the same encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import FIRST_SYMBOL, DataFormatError, ReleaseParams, Split, Task, TaskData, lra_root, pad_sequences
from .text import encode_bytes


def read_pairs(path: Path, max_len: int) -> Split:
    """One AAN pairs file."""
    if not path.is_file():
        raise DataFormatError(f"missing retrieval file {path}")
    first, second, labels = [], [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise DataFormatError(
                    f"{path}:{lineno}: expected 5 tab-separated fields (label, id1, id2, text1, text2), "
                    f"got {len(fields)}"
                )
            try:
                label = float(fields[0])
            except ValueError:
                label = -1.0
            if label not in (0.0, 1.0):
                raise DataFormatError(f"{path}:{lineno}: label must be 0 or 1, got {fields[0][:20]!r}")
            labels.append(int(label))
            first.append(encode_bytes(fields[3][:max_len]))
            second.append(encode_bytes(fields[4][:max_len]))
    if not labels:
        raise DataFormatError(f"{path}: no examples")
    return Split(pad_sequences(first, max_len), torch.tensor(labels), pad_sequences(second, max_len))


def load_release(root: Path, max_len: int = 4000) -> TaskData:
    """The LRA release's tsv_data folder."""
    folder = root / "tsv_data"
    splits = {
        name: read_pairs(folder / f"new_aan_pairs.{file}.tsv", max_len)
        for name, file in (("train", "train"), ("val", "eval"), ("test", "test"))
    }
    return TaskData(
        name="retrieval",
        kind="pair",
        **splits,
        vocab_size=FIRST_SYMBOL + 256,
        num_classes=2,
        max_len=max_len,
        description=f"AAN citation pairs as bytes, {max_len} max ({folder})",
        params={"data": str(folder), "max_len": max_len},
    )


def read(root: Path, release: ReleaseParams, params: dict) -> TaskData:
    """The LRA release under --data-dir."""
    return load_release(lra_root(root), release.max_len or 4000)


TASK = Task("retrieval", "byte-level document matching (LRA Retrieval), from the release", read=read)
