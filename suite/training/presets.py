"""Training presets: per task, its parameters, model, schedule and variant options, from YAML, and the
`--set` overrides of one task's setup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...tasks import get_task
from ..core.errors import UserError, first_problem
from .model import ModelConfig

TRAIN_PRESETS = Path(__file__).parents[1] / "presets" / "train"


class TrainSettings(BaseModel):
    """Optimisation and evaluation schedule."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, gt=0, description="optimizer steps at most")
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(100, ge=0)
    eval_every: int = Field(200, gt=0)
    eval_size: int = Field(1000, gt=0, description="validation examples scored during training (all at the end)")
    patience: int = Field(5, ge=0, description="evaluations without improvement before stopping; 0 never stops")
    grad_clip: float | None = Field(1.0, gt=0, description="gradient norm clip (null: none)")
    schedule: Literal["cosine", "rsqrt", "constant"] = Field(
        "cosine",
        description="cosine: linear warm-up to lr, cosine to 0; rsqrt: LRA's lr * warmup(t) / sqrt(max(t, w)); "
        "constant: linear warm-up to lr, then lr (MAD's, as it trains)",
    )
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    threads: int | None = Field(None, gt=0)


class TaskSetup(BaseModel):
    """How one task is trained under a preset."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("", description="where the values come from (a file of the original release)")
    params: dict[str, Any] = Field(default_factory=dict, description="task parameters (generator or loader)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainSettings = Field(default_factory=TrainSettings)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-variant options")
    lengths: list[int] = Field(
        default_factory=list,
        description="sequence lengths `suite` trains at, each by the task's length rule (empty: the params' own)",
    )
    widths: list[int] = Field(
        default_factory=list, description="model widths (model.dim) `suite` trains at each length (empty: the model's)"
    )
    variations: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="task parameters `suite` varies one at a time from params (MAD's 'changes'): the params' own "
        "setting, then one per key and value",
    )

    @field_validator("lengths", "widths")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if any(v <= 0 for v in values) or len(set(values)) != len(values):
            raise ValueError(f"expected distinct positive integers, got {values}")
        return values


class Protocol(BaseModel):
    """A preset's protocol: what is swept, the seeds, the baseline and the least effect its verdicts use."""

    model_config = ConfigDict(extra="forbid")

    lrs: list[float] = Field(
        default_factory=list, description="learning rates swept; the protocol runs where listed (or given by --lrs)"
    )
    weight_decays: list[float] = Field(
        default_factory=list,
        description="weight decays swept with every learning rate (MAD: 0 and 0.1); empty: the setup's own",
    )
    seeds: list[int] = Field([0, 1, 2], min_length=2, description="seeds trained at the chosen learning rate")
    sweep_seed: int = Field(0, description="the one seed each learning rate of the sweep is trained with")
    baseline: str = Field("sdpa", description="the variant each verdict is against (at the same setting)")
    baseline_setting: str = Field(
        "", description="the setting (a study arm) each verdict is against, at the same variant; '' compares variants"
    )
    least_effect: float = Field(2.0, gt=0, description="test-accuracy points that count as a difference")
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="training settings of every protocol run (its step cap, patience on validation, eval_every)",
    )


class TrainPreset(BaseModel):
    """A named set of task setups: tiny (tests), cpu (minutes on 2 cores), lra (LRA sizes, GPU)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    tasks: dict[str, TaskSetup]
    departures: list[str] = Field(default_factory=list, description="where the preset differs from its source")
    protocol: Protocol = Field(default_factory=Protocol, description="how `suite` measures accuracy (protocol.py)")
    suite_tasks: list[str] = Field(
        default_factory=list, description="the tasks `suite` trains without --tasks (default: all of them)"
    )

    @model_validator(mode="after")
    def _suite_tasks_known(self) -> TrainPreset:
        if unknown := [t for t in self.suite_tasks if t not in self.tasks]:
            raise ValueError(f"suite_tasks names {', '.join(unknown)}, which the preset has no setup for")
        return self

    def default_tasks(self) -> list[str]:
        """What `suite` trains when --tasks is not given."""
        return self.suite_tasks or list(self.tasks)


def preset_rows(setup: TaskSetup) -> list[tuple[str, str]]:
    """(setting, value) for every parameter, model and training field of one task's setup, defaults included."""
    rows = [(f"params.{k}", json.dumps(v)) for k, v in setup.params.items()]
    rows += [(f"model.{k}", json.dumps(v)) for k, v in setup.model.model_dump().items()]
    rows += [(f"train.{k}", json.dumps(v)) for k, v in setup.train.model_dump().items()]
    rows += [(f"options.{variant}", json.dumps(values)) for variant, values in setup.options.items()]
    rows += [
        (name, json.dumps(values)) for name in ("lengths", "widths", "variations") if (values := getattr(setup, name))
    ]
    return rows


def load_named_yaml(name: str, folder: Path, what: str, schema: type[BaseModel]) -> Any:
    """A shipped YAML file of `folder` by name, or a .yaml file by path, validated by `schema`
    (UserError with one line naming the first problem)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise UserError(f"unknown {what} {name!r} (one of {known}, or a .yaml file)")
    try:
        return schema.model_validate(yaml.safe_load(path.read_bytes()))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except ValidationError as err:
        raise UserError(f"{path.name}: {first_problem(err)}") from None


def load_train_preset(name: str) -> TrainPreset:
    """A shipped training preset by name, or a YAML file by path."""
    return load_named_yaml(name, TRAIN_PRESETS, "training preset", TrainPreset)


def preset_reference(name: str) -> str:
    """How a worker finds preset `name` again: a shipped one by its name, a YAML file by its absolute path."""
    return str(Path(name).resolve()) if name.endswith((".yaml", ".yml")) else name


def with_options(preset: TrainPreset, options: dict[str, dict[str, Any]]) -> TrainPreset:
    """`preset` with per-variant options ({variant: {key: value}}) merged into every task's setup."""
    for setup in preset.tasks.values():
        for variant, values in options.items():
            setup.options[variant] = setup.options.get(variant, {}) | values
    return preset


SETTING_SECTIONS = ("model", "train", "params")


def parse_settings(pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    """['model.heads=8', 'train.steps=200'] -> {'model': {'heads': 8}, 'train': {'steps': 200}} (YAML values)."""
    settings: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        target, sep, value = pair.partition("=")
        section, dot, key = target.partition(".")
        if not (sep and dot and key) or section not in SETTING_SECTIONS:
            raise UserError(
                f"--set {pair!r}: expected SECTION.KEY=VALUE with SECTION one of "
                f"{', '.join(SETTING_SECTIONS)}, e.g. model.heads=8"
            )
        try:
            settings.setdefault(section, {})[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {pair!r}: the value is not a YAML scalar") from None
    return settings


def with_settings(preset: TrainPreset, task: str, settings: dict[str, dict[str, Any]]) -> TrainPreset:
    """`preset` with `task`'s model, train and params fields overridden ({section: {key: value}}), checked."""
    if not settings or task not in preset.tasks:
        return preset
    setup = preset.tasks[task]
    changed = {"params": setup.params | settings.get("params", {})}
    for section, schema in (("model", ModelConfig), ("train", TrainSettings)):
        try:
            changed[section] = schema.model_validate(getattr(setup, section).model_dump() | settings.get(section, {}))
        except ValidationError as err:
            raise UserError(f"--set {first_problem(err, section)}") from None
    return preset.model_copy(update={"tasks": preset.tasks | {task: setup.model_copy(update=changed)}})


def load_setup(
    name: str, options: dict[str, dict[str, Any]], task: str | None, settings: dict[str, dict[str, Any]]
) -> TrainPreset:
    """Training preset `name` with variant options merged into every task and `task`'s --set overrides
    applied; a one-line error for an unknown task, or overrides without a task to apply them to."""
    preset = with_options(load_train_preset(name), options)
    if task is not None:
        get_task(task)
    if settings and task is None:
        raise UserError("--set changes one task's setup: give --task")
    return with_settings(preset, task, settings)
