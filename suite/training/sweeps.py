"""The settings `suite` trains a task at: the preset's own setup, or one per sequence length (by the task's
length rule, `at_length` in tasks/*.py) and model width, for accuracy against length, or the preset's
variations of the task's parameters, one at a time (MAD's settings).

A setting is a set of `--set` overrides, so each of its runs is an ordinary training run whose record and
stored command carry them; only what differs from the preset is set, so the preset's own length is the
preset's own run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ...tasks import get_task
from ..core.errors import UserError, first_problem
from .presets import TrainPreset, with_settings


@dataclass(frozen=True)
class Setting:
    """One setting of a task: its name in tables and charts ('' for the preset's own setup) and its overrides."""

    label: str = ""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def task_settings(
    preset: TrainPreset, task: str, lengths: list[int] | None = None, widths: list[int] | None = None
) -> list[Setting]:
    """Every length x width `task` is trained at (`lengths` and `widths` replace the preset's lists where given),
    each checked against the task's parameters and the model (UserError with one line)."""
    setup = preset.tasks[task]
    lengths = setup.lengths if lengths is None else lengths
    widths = setup.widths if widths is None else widths
    for name, values in (("lengths", lengths), ("widths", widths)):
        if any(v <= 0 for v in values) or len(set(values)) != len(values):
            raise UserError(f"{name}: expected distinct positive integers, got {values}")
    if setup.variations:
        if lengths or widths:
            raise UserError(f"{task}: the preset varies {', '.join(setup.variations)}; give lengths or variations")
        return _variations(preset, task)
    if not lengths and not widths:
        return [Setting()]
    rule = get_task(task).at_length
    if lengths and rule is None:
        raise UserError(f"task {task} has no length rule: its sequence length is not a setting to sweep")
    found = []
    for n in lengths or [None]:
        for width in widths or [None]:
            params = rule(setup.params, n) if rule is not None and n is not None else setup.params
            label = " ".join(([f"N={n}"] if n is not None else []) + ([f"dim={width}"] if width is not None else []))
            settings = {"params": {k: v for k, v in params.items() if setup.params.get(k) != v}}
            settings["model"] = {"dim": width} if width is not None and width != setup.model.dim else {}
            settings = {section: values for section, values in settings.items() if values}
            _check(preset, task, label, settings)
            found.append(Setting(label, settings))
    return found


def _variations(preset: TrainPreset, task: str) -> list[Setting]:
    """The preset's own setting, then each varied parameter at each of its values, the others at the preset's
    (as MAD varies its tasks' difficulty: one change at a time from the baseline)."""
    found = [Setting()]
    for key, values in preset.tasks[task].variations.items():
        for value in values:
            setting = Setting(f"{key}={value}", {"params": {key: value}})
            _check(preset, task, setting.label, setting.settings)
            found.append(setting)
    return found


def _check(preset: TrainPreset, task: str, label: str, settings: dict[str, dict[str, Any]]) -> None:
    """UserError naming the task and setting where its parameters or model do not validate."""
    try:
        params = with_settings(preset, task, settings).tasks[task].params
    except UserError as err:
        raise UserError(f"{task} at {label}: {err}") from None
    schema = get_task(task).params
    if schema is None:
        return
    try:
        schema.model_validate({k: v for k, v in params.items() if k != "data_seed"})
    except ValidationError as err:
        raise UserError(f"{task} at {label}: {first_problem(err, 'params')}") from None
