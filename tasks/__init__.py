"""Long-range tasks, found by scanning this folder: a task is its file.

Every module here that declares a :class:`~.base.Task` (ListOps, Pathfinder and Path-X, MQAR, MAD's
six tasks, Text, Retrieval, Image) is imported once and registered under the task's name: adding a task takes
a new file (and its entries in the training presets) and nothing else. `load_task` is the single
entry point to a task's splits.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .base import DataFormatError, ReleaseParams, Task, TaskData
from .cache import cached


@functools.cache
def tasks() -> dict[str, Task]:
    """Every task declared in this folder, by name, modules in sorted order."""
    found: dict[str, Task] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for task in (value for value in vars(module).values() if isinstance(value, Task)):
            if found.get(task.name, task) is not task:
                raise RuntimeError(f"task name {task.name!r} declared twice (second time in {module.__name__})")
            found[task.name] = task
    return found


def task_names() -> list[str]:
    """The names of every task."""
    return list(tasks())


def get_task(name: str) -> Task:
    """The task called `name` (DataFormatError naming the known ones)."""
    if name not in tasks():
        raise DataFormatError(f"unknown task {name!r} (one of {', '.join(tasks())})")
    return tasks()[name]


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
    task = get_task(name)
    params = dict(params or {})
    for key, value in task.fixed.items():
        if params.setdefault(key, value) != value:
            raise DataFormatError(f"task {name}: {key} is fixed at {value}, got {params[key]}")
    if data_dir is not None:
        if task.read is None:
            raise DataFormatError(f"{name} is synthetic: it is generated, not read from --data-dir")
        params.pop("data_seed", None)
        release = {k: v for k, v in params.items() if k in ReleaseParams.model_fields}
        root = Path(data_dir)
        if not root.is_dir():
            raise DataFormatError(f"--data-dir {root} is not a folder")
        data = task.read(root, _params(ReleaseParams, release, name), params)
    elif task.generate is None or task.params is None:
        raise DataFormatError(f"{name} is real data: give --data-dir (see `attnbench train --help`)")
    else:
        data_seed = int(params.pop("data_seed", 0))
        validated = _params(task.params, params, name)
        build = functools.partial(task.generate, validated, data_seed)
        data = cached(task.name, validated.model_dump(), data_seed, build, cache_dir)
    return dataclasses.replace(data, name=task.name)


__all__ = ["DataFormatError", "Task", "TaskData", "get_task", "load_task", "task_names", "tasks"]
