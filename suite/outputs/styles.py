"""How a variant looks in every chart: its colour and its line.

Colours come from the registry: the built-ins take a stable palette by their position in it (the
exact family first, then linear, sparse and low-rank, each folder's files in order), so a new
built-in gets a colour of its own with no list edited here; a plugin takes one by a hash of its name.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

import matplotlib
import numpy as np

from ..core.registry import builtin_names

# tab10, then eleven dark or saturated colours chosen to differ from it and from each other.
_APPROX_COLORS = [
    "#000000",
    "#000075",
    "#f032e6",
    "#808000",
    "#e6ab02",
    "#469990",
    "#800000",
    "#ff4500",
    "#6a3d9a",
    "#00cc66",
    "#2f4f4f",
]
BASE = [*matplotlib.colormaps["tab10"].colors, *(matplotlib.colors.to_rgb(c) for c in _APPROX_COLORS)]
# The least RGB distance between two built-ins' colours: closer ones are told apart only by the legend.
MIN_DISTANCE = 0.2
_OPTION_DASHES = [":", "--", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]


def _candidates() -> np.ndarray:
    """Colours to extend the palette with: a 0.1 grid of the RGB cube less the palest (unseen on white), in
    a fixed shuffled order."""
    steps = np.linspace(0.0, 1.0, 11)
    grid = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    grid = grid[grid.min(axis=1) < 0.8]
    return grid[np.random.default_rng(0).permutation(len(grid))]


@functools.cache
def palette(n: int) -> tuple[tuple[float, ...], ...]:
    """`n` colours, each at least MIN_DISTANCE from every other: BASE, then as many more as needed."""
    colours = [tuple(float(x) for x in c) for c in BASE[:n]]
    for candidate in _candidates():
        if len(colours) >= n:
            break
        if np.linalg.norm(np.array(colours) - candidate, axis=1).min() >= MIN_DISTANCE:
            colours.append(tuple(float(x) for x in candidate))
    if len(colours) < n:
        raise ValueError(f"no palette of {n} colours {MIN_DISTANCE} apart")
    return tuple(colours)


def variant_color(name: str) -> Any:
    """The same colour for a variant in every chart: built-ins by position in the registry, plugins by name
    hash. A variant run with options (`chunked[block_size=64]`) keeps its variant's colour."""
    name = name.partition("[")[0]
    names = builtin_names()
    if name in names:
        return palette(len(names))[names.index(name)]
    return matplotlib.colormaps["Set2"](zlib.crc32(name.encode()) % 8)


def line_style(name: str, exact: bool) -> dict[str, Any]:
    """Colour, marker and dash of a variant's line: approximations are dash-dotted with squares, so
    that no two lines are told apart by colour alone; the same variant with other options gets
    another dash (by a hash of the options)."""
    dash = "-" if exact else "-."
    if "[" in name:
        dash = _OPTION_DASHES[zlib.crc32(name.encode()) % len(_OPTION_DASHES)]
    return {"color": variant_color(name), "marker": "o" if exact else "s", "ms": 4, "ls": dash}
