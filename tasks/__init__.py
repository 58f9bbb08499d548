"""Long-range tasks: ListOps, Pathfinder and Path-X (Pathfinder at 128 x 128), MQAR (generated from a
seed, or read from the LRA release), Text, Retrieval and Image (read from the released files).
`load_task` is the single entry point."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .base import DataFormatError, TaskData
from .cache import cached

TASKS = ("listops", "pathfinder", "pathx", "mqar", "text", "retrieval", "image")
RELEASE_TASKS = ("listops", "pathfinder", "pathx", "text", "retrieval", "image")  # the ones --data-dir can feed
PATHX_RESOLUTION = 128  # LRA's Path-X: Pathfinder at 128 x 128, 16K tokens


class _ReleaseParams(BaseModel):
    """What may be set when a task is read from released files."""

    model_config = ConfigDict(extra="forbid")
    max_len: int | None = None
    resolution: int = 32
    difficulty: str = "hard"


def lra_root(data_dir: Path) -> Path:
    """The unpacked LRA release: `data_dir/lra_release` if present, else `data_dir` itself."""
    return data_dir / "lra_release" if (data_dir / "lra_release").is_dir() else data_dir


def _params(model: type[BaseModel], params: dict[str, Any], task: str) -> BaseModel:
    try:
        return model(**params)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise DataFormatError(f"task {task}: {where}: {first['msg']}") from None


def load_task(
    name: str,
    params: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> TaskData:
    """The task's splits: from `data_dir` when given (release files), else generated and cached.

    Generated data depends only on the task parameters (including `data_seed`), never on the
    training seed, so every variant and seed trains on the same examples.
    """
    from . import image, listops, mqar, pathfinder, retrieval, text

    params = dict(params or {})
    if name not in TASKS:
        raise DataFormatError(f"unknown task {name!r} (one of {', '.join(TASKS)})")
    if name == "pathx":  # Pathfinder at one resolution, under its own name
        if params.setdefault("resolution", PATHX_RESOLUTION) != PATHX_RESOLUTION:
            raise DataFormatError(f"task pathx: resolution is {PATHX_RESOLUTION} (Path-X), got {params['resolution']}")
        return dataclasses.replace(load_task("pathfinder", params, data_dir, cache_dir), name="pathx")
    if data_dir is not None:
        if name == "mqar":
            raise DataFormatError("mqar is synthetic: it is generated, not read from --data-dir")
        params.pop("data_seed", None)
        release = _params(_ReleaseParams, {k: v for k, v in params.items() if k in _ReleaseParams.model_fields}, name)
        root = Path(data_dir)
        if not root.is_dir():
            raise DataFormatError(f"--data-dir {root} is not a folder")
        if name == "listops":
            # A preset's generator length bounds the release's expressions too (longer ones are left out).
            return listops.load_release(lra_root(root), release.max_len or params.get("max_length") or 2000)
        if name == "pathfinder":
            return pathfinder.load_release(lra_root(root), release.resolution, release.difficulty)
        if name == "text":
            return text.load_release(root, release.max_len or 4096)
        if name == "image":
            return image.load_release(root)
        return retrieval.load_release(lra_root(root), release.max_len or 4000)
    if name in ("text", "retrieval", "image"):
        raise DataFormatError(f"{name} is real data: give --data-dir (see `attnbench train --help`)")
    data_seed = int(params.pop("data_seed", 0))
    module, model = {
        "listops": (listops, listops.ListOpsParams),
        "pathfinder": (pathfinder, pathfinder.PathfinderParams),
        "mqar": (mqar, mqar.MqarParams),
    }[name]
    validated = _params(model, params, name)
    return cached(name, validated.model_dump(), data_seed, lambda: module.generate(validated, data_seed), cache_dir)


__all__ = ["RELEASE_TASKS", "TASKS", "DataFormatError", "TaskData", "load_task"]
