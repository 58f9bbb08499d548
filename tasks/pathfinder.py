"""Pathfinder: are the two dots connected by a dashed path? 2 classes, one token per pixel.

Linsley et al. 2018 (Learning long-range spatial dependencies with horizontal gated recurrent
units); Long Range Arena's "Path" task (Tay et al. 2020) at 32 x 32 = 1024 tokens, with 64 and 128
as harder resolutions. An image holds two marker dots, dashed curved paths and short distractor
paths; the label says whether one path joins the two dots. Positives and negatives carry the same
amount of ink (one full path plus one more in both), so counting pixels does not solve it.

The generator follows that recipe with its own simple renderer: a path is a chain of short
dashes ("paddles") along a random walk whose heading turns by a bounded random angle per step,
drawn anti-aliased. The loader reads the release layout: ``<pattern>/metadata/<n>.npy`` are text
files whose lines name an image (columns 1-2: folder and file under ``<pattern>/``) and its label
(column 4); the images are grayscale PNGs. LRA's published numbers use the "hard" pattern,
``curv_contour_length_14``, split 80 / 10 / 10 in metadata order.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .base import FIRST_SYMBOL, DataFormatError, ReleaseParams, Split, Task, TaskData, lra_root

PATTERNS = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9", "hard": "curv_contour_length_14"}


class PathfinderParams(BaseModel):
    """Generator parameters (sizes in pixels at the chosen resolution)."""

    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(32, description="image side: 32, 64 or 128")
    contour_length: int = Field(14, gt=1, description="paddles per path (LRA 'hard' = 14)")
    paddle_length: float = Field(2.0, gt=0)
    paddle_gap: float = Field(1.0, ge=0)
    max_turn_degrees: float = Field(30.0, ge=0, description="largest heading change between paddles")
    distractors: int = Field(4, ge=0, description="short paths that touch no dot")
    train_size: int = Field(20_000, gt=0)
    val_size: int = Field(2_000, gt=0)
    test_size: int = Field(2_000, gt=0)


def _draw_segment(img: np.ndarray, a: np.ndarray, b: np.ndarray, width: float = 0.7) -> None:
    """Anti-aliased line from a to b (x, y in pixels), intensity max-combined into img."""
    steps = max(2, int(np.linalg.norm(b - a) * 4))
    for t in np.linspace(0, 1, steps):
        x, y = a + t * (b - a)
        for yy in range(int(y) - 1, int(y) + 2):
            for xx in range(int(x) - 1, int(x) + 2):
                if 0 <= yy < img.shape[0] and 0 <= xx < img.shape[1]:
                    d = math.hypot(xx + 0.5 - x, yy + 0.5 - y)
                    img[yy, xx] = max(img[yy, xx], float(np.clip(1.5 - d / width, 0, 1)))


def _draw_dot(img: np.ndarray, center: np.ndarray, radius: float) -> None:
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    d = np.hypot(xs + 0.5 - center[0], ys + 0.5 - center[1])
    np.maximum(img, np.clip(radius + 0.5 - d, 0, 1), out=img)


def _random_path(rng: np.random.Generator, p: PathfinderParams, length: int) -> list[np.ndarray] | None:
    """Points of a random smooth path that stays inside the image, or None if it left it."""
    size = p.resolution
    margin = 2.0
    pos = rng.uniform(margin, size - margin, 2)
    heading = rng.uniform(0, 2 * math.pi)
    step = p.paddle_length + p.paddle_gap
    points = [pos]
    for _ in range(length):
        heading += math.radians(rng.uniform(-p.max_turn_degrees, p.max_turn_degrees))
        pos = pos + step * np.array([math.cos(heading), math.sin(heading)])
        if not (margin <= pos[0] <= size - margin and margin <= pos[1] <= size - margin):
            return None
        points.append(pos)
    return points


def _draw_path(img: np.ndarray, points: list[np.ndarray], p: PathfinderParams) -> None:
    """Dashes: from each point, a paddle of paddle_length toward the next one."""
    step = p.paddle_length + p.paddle_gap
    for a, b in itertools.pairwise(points):
        _draw_segment(img, a, a + (b - a) * (p.paddle_length / step))


def _path(rng: np.random.Generator, p: PathfinderParams, length: int) -> list[np.ndarray]:
    while (points := _random_path(rng, p, length)) is None:
        pass
    return points


def render(rng: np.random.Generator, p: PathfinderParams, connected: bool) -> np.ndarray:
    """One image (resolution x resolution, uint8), connected or not."""
    img = np.zeros((p.resolution, p.resolution), dtype=np.float64)
    first, second = _path(rng, p, p.contour_length), _path(rng, p, p.contour_length)
    for points in (first, second):
        _draw_path(img, points, p)
    for _ in range(p.distractors):
        _draw_path(img, _path(rng, p, max(2, p.contour_length // 3)), p)
    radius = 1.0 + p.resolution / 64
    # Connected: both dots on the ends of one path. Not: one dot on each path.
    ends = (first[0], first[-1]) if connected else (first[0], second[-1])
    for end in ends:
        _draw_dot(img, end, radius)
    return (img * 255).round().astype(np.uint8)


def images_to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """Pixels row by row as tokens (value + FIRST_SYMBOL)."""
    tokens = torch.from_numpy(images.reshape(len(images), -1).astype(np.int64)) + FIRST_SYMBOL
    return Split(tokens, torch.from_numpy(labels.astype(np.int64)))


def _task(splits: dict[str, Split], resolution: int, description: str, params: dict) -> TaskData:
    return TaskData(
        name="pathfinder",
        kind="classify",
        **splits,
        vocab_size=FIRST_SYMBOL + 256,
        num_classes=2,
        max_len=resolution * resolution,
        description=description,
        params=params,
    )


def generate(params: PathfinderParams, seed: int) -> TaskData:
    """Balanced positives and negatives, rendered from one seeded generator."""
    if params.resolution not in (32, 64, 128):
        raise ValueError(f"resolution must be 32, 64 or 128, got {params.resolution}")
    rng = np.random.default_rng(seed)
    splits = {}
    for name, size in (("train", params.train_size), ("val", params.val_size), ("test", params.test_size)):
        labels = rng.permutation(np.arange(size) % 2)
        images = np.stack([render(rng, params, bool(label)) for label in labels])
        splits[name] = images_to_split(images, labels)
    r = params.resolution
    return _task(splits, r, f"Pathfinder {r}x{r}, paths of {params.contour_length} paddles", params.model_dump())


MIN_EXAMPLES = 10  # the fewest that leave every split of 80/10/10 an example


def read_metadata(folder: Path) -> list[tuple[Path, int]]:
    """(image path, label) for every line of every metadata file, files in numeric order."""
    meta = folder / "metadata"
    files = sorted(meta.glob("*.npy"), key=lambda f: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", f.name)])
    if not files:
        raise DataFormatError(f"no metadata files: expected {meta}/*.npy")
    items, listed = [], {}
    for path in files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DataFormatError(f"{path}: not a readable metadata file ({err})") from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            cols = line.split()
            if len(cols) < 4 or cols[3] not in ("0", "1"):
                raise DataFormatError(f"{path}:{lineno}: expected 'folder file _ label(0/1) ...', got {line[:80]!r}")
            image = folder / cols[0] / cols[1]
            if image in listed:
                raise DataFormatError(
                    f"{path}:{lineno}: {cols[0]}/{cols[1]} is listed twice (first at {listed[image]})"
                )
            listed[image] = f"{path.name}:{lineno}"
            items.append((image, int(cols[3])))
    if len(items) < MIN_EXAMPLES:
        raise DataFormatError(f"{meta}: {len(items)} images listed; the 80/10/10 split needs at least {MIN_EXAMPLES}")
    return items


def load_release(root: Path, resolution: int = 32, difficulty: str = "hard") -> TaskData:
    """An LRA pathfinder folder (pathfinder32/curv_contour_length_14 by default), split 80/10/10."""
    from PIL import Image

    if difficulty not in PATTERNS:
        raise DataFormatError(f"unknown pathfinder difficulty {difficulty!r} (one of {', '.join(PATTERNS)})")
    folder = root / f"pathfinder{resolution}" / PATTERNS[difficulty]
    if not folder.is_dir():
        raise DataFormatError(f"missing pathfinder folder {folder}")
    items = read_metadata(folder)
    images = np.zeros((len(items), resolution, resolution), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("L"))
        except (OSError, ValueError) as err:
            raise DataFormatError(f"{path}: not a readable image ({err})") from None
        if pixels.shape != (resolution, resolution):
            raise DataFormatError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]}, expected {resolution}")
        images[i] = pixels
    labels = np.array([label for _, label in items])
    a, b = int(0.8 * len(items)), int(0.9 * len(items))
    splits = {
        "train": images_to_split(images[:a], labels[:a]),
        "val": images_to_split(images[a:b], labels[a:b]),
        "test": images_to_split(images[b:], labels[b:]),
    }
    params = {"data": str(folder), "resolution": resolution, "difficulty": difficulty}
    return _task(splits, resolution, f"Pathfinder {resolution}, LRA release ({folder})", params)


def read(root: Path, release: ReleaseParams, params: dict) -> TaskData:
    """The release under --data-dir at the preset's resolution and difficulty."""
    return load_release(lra_root(root), release.resolution, release.difficulty)


TASK = Task("pathfinder", "are two dots joined by a path, pixel by pixel", PathfinderParams, generate, read)
# LRA's Path-X: Pathfinder at 128 x 128, 16K tokens.
PATHX = Task("pathx", "Pathfinder at 128 x 128 (LRA's Path-X)", PathfinderParams, generate, read, {"resolution": 128})
