"""Image: CIFAR-10 as sequences of grayscale pixels (LRA "Image", Tay et al. 2020).

Krizhevsky 2009's CIFAR-10, read from its Python release folder ``cifar-10-batches-py`` as it
ships: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a pickled dict whose
``b"data"`` is a (n, 3072) uint8 array (1024 red, 1024 green, then 1024 blue values, rows of 32)
and ``b"labels"`` a list of n labels 0-9. As in LRA's input pipeline each image becomes grayscale
as ``tf.image.rgb_to_grayscale`` makes it from uint8 (weights 0.2989, 0.5870, 0.1140 on values
scaled to [0, 1], back to uint8 by x * 255.5 truncated), one token per pixel row by row: 1024
tokens, 10 classes. LRA trains on the first 90% of the training set and validates on the last
10%; here those are the first 90% and the last 10% of the five batches in order. The pickles are
read with an unpickler that builds only plain containers and numpy arrays.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .base import FIRST_SYMBOL, DataFormatError, ReleaseParams, Task, TaskData
from .pathfinder import images_to_split

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
GRAY = np.array([0.2989, 0.5870, 0.1140])
SIDE = 32
# What a CIFAR batch pickle may build besides plain containers: numpy arrays and their dtypes.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to build {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: grayscale images (n, 32, 32) uint8 and labels (n,)."""
    if not path.is_file():
        raise DataFormatError(f"missing CIFAR-10 batch file {path}")
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        why = f"a pickled dict with b'data' and b'labels': {err}"
        raise DataFormatError(f"{path}: not a CIFAR-10 batch ({why})") from None
    if data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or data.dtype != np.uint8:
        raise DataFormatError(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 (n, 3072)")
    if labels.shape != (len(data),):
        raise DataFormatError(f"{path}: {len(data)} images but b'labels' has shape {labels.shape}")
    if labels.size and (labels.dtype.kind not in "iu" or not ((labels >= 0) & (labels < 10)).all()):
        bad = next((x for x in labels.tolist() if not (isinstance(x, int) and 0 <= x < 10)), labels.dtype)
        raise DataFormatError(f"{path}: labels must be integers 0-9, found {bad!r}")
    rgb = data.reshape(-1, 3, SIDE, SIDE).astype(np.float64) / 255
    gray = np.floor(np.einsum("nchw,c->nhw", rgb, GRAY) * 255.5).clip(0, 255).astype(np.uint8)
    return gray, labels.astype(np.int64)


def find_cifar(root: Path) -> Path:
    """The cifar-10-batches-py folder: `root/cifar-10-batches-py` or `root` itself."""
    for candidate in (root / "cifar-10-batches-py", root):
        if (candidate / "test_batch").exists() or (candidate / "data_batch_1").exists():
            return candidate
    raise DataFormatError(f"no CIFAR-10 data: expected {root / 'cifar-10-batches-py'}/data_batch_1..5 and test_batch")


def load_release(root: Path) -> TaskData:
    """CIFAR-10 from the Python release folder, grayscale, split 90/10 (train/val) plus the test batch."""
    folder = find_cifar(root)
    parts = [read_batch(folder / name) for name in TRAIN_BATCHES]
    images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test_images, test_labels = read_batch(folder / "test_batch")
    cut = int(0.9 * len(images))
    if cut == 0 or cut == len(images) or not len(test_images):
        raise DataFormatError(f"{folder}: {len(images)} training and {len(test_images)} test images are too few")
    return TaskData(
        name="image",
        kind="classify",
        train=images_to_split(images[:cut], labels[:cut]),
        val=images_to_split(images[cut:], labels[cut:]),
        test=images_to_split(test_images, test_labels),
        vocab_size=FIRST_SYMBOL + 256,
        num_classes=10,
        max_len=SIDE * SIDE,
        description=f"CIFAR-10 grayscale, {SIDE * SIDE} pixels ({folder})",
        params={"data": str(folder)},
    )


def read(root: Path, release: ReleaseParams, params: dict) -> TaskData:
    """The cifar-10-batches-py release under --data-dir."""
    return load_release(root)


TASK = Task("image", "grayscale CIFAR-10 pixel by pixel (LRA Image), from the release", read=read)
