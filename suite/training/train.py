"""Training a task model with one attention variant: `attnbench train` and the runs of `attnbench suite`.

Same seed, same everything but the attention core: the model is initialised from the seed, the
data (generated from the task's own `data_seed`) is the same for every variant and seed, and the
batch order is a function of the seed alone. On one device with one thread count the same command
gives the same numbers. A run evaluates on validation every `eval_every` steps, keeps the best
weights, stops early after `patience` evaluations without improvement, and reports validation
accuracy (final and best) and test accuracy of the best weights, with the loss curve, throughput
and peak memory, as one record in the same records.jsonl format as bench runs. A checkpoint at
every evaluation lets a stopped run continue where it stopped.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ...tasks import TASKS, load_task
from ...tasks.base import IGNORE, Split, TaskData
from ..core import env as environment
from ..core.errors import UserError
from ..core.registry import Registry
from ..measure.memory import PeakTracker
from ..runs.failures import classify
from ..runs.records import FINAL, append_record, read_records, repair_tail, write_env
from .model import ModelConfig, TaskModel, check_layout

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
    schedule: Literal["cosine", "rsqrt"] = Field(
        "cosine", description="cosine: linear warm-up to lr, cosine to 0; rsqrt: LRA's lr * warmup(t) / sqrt(max(t, w))"
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


class TrainPreset(BaseModel):
    """A named set of task setups: tiny (tests), cpu (minutes on 2 cores), lra (LRA sizes, GPU)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    tasks: dict[str, TaskSetup]
    departures: list[str] = Field(default_factory=list, description="where the preset differs from its source")


def preset_rows(setup: TaskSetup) -> list[tuple[str, str]]:
    """(setting, value) for every parameter, model and training field of one task's setup, defaults included."""
    rows = [(f"params.{k}", json.dumps(v)) for k, v in setup.params.items()]
    rows += [(f"model.{k}", json.dumps(v)) for k, v in setup.model.model_dump().items()]
    rows += [(f"train.{k}", json.dumps(v)) for k, v in setup.train.model_dump().items()]
    rows += [(f"options.{variant}", json.dumps(values)) for variant, values in setup.options.items()]
    return rows


def load_named_yaml(name: str, folder: Path, what: str, schema: type[BaseModel]) -> Any:
    """A shipped YAML file of `folder` by name, or a .yaml file by path, validated by `schema`
    (UserError with one line naming the first problem)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise UserError(f"unknown {what} {name!r} (one of {known}, or a .yaml file)")
    try:
        return schema.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserError(f"{path.name}: {where}: {first['msg'].removeprefix('Value error, ')}") from None


def load_train_preset(name: str) -> TrainPreset:
    """A shipped training preset by name, or a YAML file by path."""
    return load_named_yaml(name, TRAIN_PRESETS, "training preset", TrainPreset)


# Model fields added after task runs were committed (issue 16's K/V sharing and score scale).
_LATER_MODEL_FIELDS = ("kv_latent", "score_scale")


def run_key(task: str, variant: str, seed: int, preset: str, setup: TaskSetup, data_dir: Path | None) -> str:
    """Identity of a training run, for resuming: another variant's options are not part of it."""
    fields = setup.model_dump(exclude={"options", "source"}) | {"options": setup.options.get(variant, {})}
    for name in _LATER_MODEL_FIELDS:  # at their default they stay out, so runs recorded before them still resume
        if fields["model"][name] is None:
            del fields["model"][name]
    return json.dumps(
        {"task": task, "variant": variant, "seed": seed, "preset": preset, "setup": fields,
         "data": str(data_dir) if data_dir else None},
        sort_keys=True,
    )  # fmt: skip


def _batches(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the batch at `step`: epochs are seeded permutations, so any step can be recomputed."""
    per_epoch = max(1, n // batch_size)
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[offset * batch_size : (offset + 1) * batch_size]


def _loss_and_hits(model: TaskModel, split: Split, idx: torch.Tensor, device: str) -> tuple[torch.Tensor, int, int]:
    """Loss, correct predictions and scored positions for the examples `idx`."""
    tokens = split.tokens[idx].to(device)
    tokens2 = split.tokens2[idx].to(device) if split.tokens2 is not None else None
    labels = split.labels[idx].to(device)
    logits = model(tokens, tokens2)
    if model.kind == "lm":
        logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)
    scored = labels != IGNORE
    hits = int((logits.argmax(-1) == labels)[scored].sum())
    return loss, hits, int(scored.sum())


@torch.no_grad()
def evaluate(model: TaskModel, split: Split, batch_size: int, device: str, limit: int | None = None) -> float:
    """Accuracy on (the first `limit` examples of) a split."""
    model.eval()
    n = len(split) if limit is None else min(limit, len(split))
    hits = total = 0
    for start in range(0, n, batch_size):
        _, h, t = _loss_and_hits(model, split, torch.arange(start, min(start + batch_size, n)), device)
        hits, total = hits + h, total + t
    model.train()
    return hits / max(total, 1)


def _schedule(settings: TrainSettings):
    """The learning-rate factor of each step: linear warm-up, then cosine decay to zero at the last step;
    or LRA's "constant * linear_warmup * rsqrt_decay" (lr the constant: its peak is lr / sqrt(warmup))."""
    warmup = settings.warmup_steps

    def rsqrt(step: int) -> float:
        t = step + 1
        return min(1.0, t / max(warmup, 1)) / math.sqrt(max(t, warmup))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return rsqrt if settings.schedule == "rsqrt" else factor


def train(
    data: TaskData,
    variant: str,
    setup: TaskSetup,
    seed: int,
    registry: Registry,
    device: str,
    checkpoint: Path | None = None,
    console: Console | None = None,
    model_path: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one model; returns the measurements (the record's body).

    The best weights are saved to `model_path` when given (for heatmaps of the trained model).
    """
    settings = setup.train
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    model = TaskModel(
        data.kind, data.vocab_size, data.num_classes, data.max_len, setup.model, registry, variant,
        setup.options.get(variant),
    ).to(device)  # fmt: skip
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=settings.betas,
        eps=settings.eps,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    state = {"step": 0, "best_val": -1.0, "best_step": 0, "since_best": 0, "curve": [], "train_s": 0.0,
             "best_model": None, "losses": []}  # fmt: skip
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]

    tracker = PeakTracker(device)
    tokens_per_step = settings.batch_size * data.train.tokens.shape[1] * (2 if data.kind == "pair" else 1)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True, disable=console is None) as progress:
        bar = progress.add_task(f"{data.name} / {variant}", total=settings.steps, completed=state["step"])
        while state["step"] < settings.steps:
            started = time.perf_counter()
            idx = _batches(len(data.train), settings.batch_size, seed, state["step"])
            loss, _, _ = _loss_and_hits(model, data.train, idx, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # The norm before clipping (an infinite max clips nothing): the scale ablation charts it.
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip or math.inf)
            state.setdefault("grad_norms", []).append(norm.item())
            optimizer.step()
            scheduler.step()
            state["train_s"] += time.perf_counter() - started
            state["step"] += 1
            state["losses"].append(loss.item())
            progress.advance(bar)
            if state["step"] % settings.eval_every == 0 or state["step"] == settings.steps:
                val = evaluate(model, data.val, settings.batch_size, device, settings.eval_size)
                recent = state["losses"][-settings.eval_every :]
                norms = state["grad_norms"][-settings.eval_every :]
                state["curve"].append({"step": state["step"], "loss": sum(recent) / len(recent), "val_acc": val,
                                       "grad_norm": sum(norms) / len(norms)})  # fmt: skip
                progress.update(bar, description=f"{data.name} / {variant}: loss {state['curve'][-1]['loss']:.3f}, "
                                f"val {val:.3f}")  # fmt: skip
                if val > state["best_val"]:
                    state.update(best_val=val, best_step=state["step"], since_best=0)
                    state["best_model"] = copy.deepcopy(model.state_dict())
                else:
                    state["since_best"] += 1
                if checkpoint is not None:
                    checkpoint.parent.mkdir(parents=True, exist_ok=True)
                    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "state": state},
                               checkpoint)  # fmt: skip
                if settings.patience and state["since_best"] >= settings.patience:
                    break
    peak = tracker.peak()
    final_val = evaluate(model, data.val, settings.batch_size, device)
    model.load_state_dict(state["best_model"])
    if model_path is not None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state["best_model"], model_path)
    steps = state["step"]
    return {
        "status": "ok",
        "steps": steps,
        "stopped_early": steps < settings.steps,
        "best_step": state["best_step"],
        "final_val_acc": final_val,
        "best_val_acc": evaluate(model, data.val, settings.batch_size, device),
        "test_acc": evaluate(model, data.test, settings.batch_size, device),
        "majority_test_acc": data.majority_accuracy("test"),
        "train_s": state["train_s"],
        "steps_per_s": steps / state["train_s"],
        "tokens_per_s": steps * tokens_per_step / state["train_s"],
        "peak_bytes": peak,
        "parameters": sum(p.numel() for p in model.parameters()),
        "curve": state["curve"],
        "threads": torch.get_num_threads(),
        "padding_masked": model.masks_padding if data.kind != "lm" else None,
    }


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
            raise UserError(f"--set {pair!r}: expected SECTION.KEY=VALUE with SECTION one of "
                            f"{', '.join(SETTING_SECTIONS)}, e.g. model.heads=8")  # fmt: skip
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
            first = err.errors()[0]
            where = ".".join(str(p) for p in (section, *first["loc"]))
            raise UserError(f"--set {where}: {first['msg'].removeprefix('Value error, ')}") from None
    return preset.model_copy(update={"tasks": preset.tasks | {task: setup.model_copy(update=changed)}})


@dataclass(frozen=True)
class TrainJob:
    """One training run to make: plain JSON-able data, so any executor can carry it to a worker."""

    task: str
    variant: str
    seed: int
    preset: str
    device: str
    out: str | None  # the run folder the record and model go into (shared with the driver); None: a scratch one
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # {variant: {key: value}}
    plugins: tuple[str, ...] = ()
    data_dir: str | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # {model|train|params: {key: value}}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainJob:
        return cls(**{**data, "plugins": tuple(data.get("plugins", ()))})

    def argv(self) -> list[str]:
        """`attnbench train` arguments that make this run into `out` (or `--scratch`): the one place they are built."""
        args = ["train", "--task", self.task, "--variant", self.variant, "--preset", self.preset,
                "--seed", str(self.seed), "--device", self.device]  # fmt: skip
        for variant, values in sorted(self.options.items()):
            for key, value in sorted(values.items()):
                args += ["--option", f"{variant}.{key}={json.dumps(value)}"]
        for section, values in sorted(self.settings.items()):
            args += [
                a for key, value in sorted(values.items()) for a in ("--set", f"{section}.{key}={json.dumps(value)}")
            ]
        args += [a for plugin in self.plugins for a in ("--plugin", plugin)]
        args += ["--data-dir", self.data_dir] if self.data_dir else []
        return args + (["--out", self.out] if self.out else ["--scratch"])


def outcome(record: dict[str, Any]) -> str:
    """One line for a training record: its accuracy and speed, or its status and reason."""
    if record.get("status") != "ok":
        return f"{record.get('status')}: {record.get('reason', '')}"
    r = record
    return (f"test accuracy {r['test_acc']:.4f} (best val {r['best_val_acc']:.4f} at step {r['best_step']}, "
            f"final val {r['final_val_acc']:.4f}; majority baseline {r['majority_test_acc']:.4f}); "
            f"{r['steps_per_s']:.1f} steps/s, {r['train_s']:.0f} s"
            + {True: "; padding masked", False: "; padding attended (the variant takes no key lengths)"}.get(
                r.get("padding_masked"), ""))  # fmt: skip


def train_here(data: dict[str, Any], executor: str, console: Console | None = None) -> dict[str, Any]:
    """Make one training run (`TrainJob.to_dict()`) in this process and return its record: the body of a
    local worker's or a cluster job's training job (quiet unless given a console).

    The record is appended to the job's run folder by the job, as `attnbench train` does, under the
    lock the driver holds. A refusal (bad input) comes back as an `error` status with its one line.
    """
    from ...tasks import DataFormatError
    from ..core.registry import load_registry

    job = TrainJob.from_dict(data)
    try:
        preset = with_settings(with_options(load_train_preset(job.preset), job.options), job.task, job.settings)
        registry = load_registry(job.plugins)
        return run_training(job.task, job.variant, preset, job.seed, registry, job.device, Path(job.out),
                            Path(job.data_dir) if job.data_dir else None, job.plugins, console or Console(quiet=True),
                            executor=executor, settings=job.settings)  # fmt: skip
    except (UserError, DataFormatError) as err:
        return {"status": "error", "reason": str(err)}


def train_command(task: str, variant: str, preset: str, seed: int, data_dir: Path | None, device: str,
                  plugins: tuple[str, ...], options: dict[str, Any],
                  settings: dict[str, dict[str, Any]] | None = None) -> str:  # fmt: skip
    """The `attnbench train` command that reruns one training run alone, into a fresh scratch folder."""
    import shlex

    job = TrainJob(task, variant, seed, preset, device, None, {variant: options} if options else {}, plugins,
                   str(data_dir) if data_dir is not None else None, settings or {})  # fmt: skip
    return shlex.join(["attnbench", *job.argv()])


def check_fits(registry: Registry, variant: str, model: ModelConfig, device: str) -> str | None:
    """UserError when `variant` cannot take the model's K/V layout or score scale; returns why it cannot
    run here (None: it can), for a variant that cannot load is recorded unavailable, not refused."""
    registry.entry(variant)
    reason = registry.unavailable_reason(variant, device)
    if reason is None:
        check_layout(model, registry.get(variant).info)
    return reason


def _source(registry: Registry, variant: str) -> dict[str, Any] | None:
    """The variant's source for the record (None when it cannot be loaded: the run is recorded unavailable)."""
    try:
        return registry.entry(variant).source()
    except UserError:
        return None


def run_training(
    task: str,
    variant: str,
    preset: TrainPreset,
    seed: int,
    registry: Registry,
    device: str,
    out: Path,
    data_dir: Path | None,
    plugins: tuple[str, ...],
    console: Console,
    executor: str = "local",
    settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One recorded, resumable training run; an existing record for the same run is returned as is.
    `preset` already holds `settings` (the --set overrides): they are named here for the stored command."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r} (one of {', '.join(TASKS)})")
    if task not in preset.tasks:
        raise UserError(f"preset {preset.name} has no setup for task {task!r} (it has {', '.join(preset.tasks)})")
    setup = preset.tasks[task]
    reason = check_fits(registry, variant, setup.model, device)
    key = run_key(task, variant, seed, preset.name, setup, data_dir)
    # Checked before anything recorded is reused: a folder holds one machine's numbers.
    fresh = not environment.read_checked_env(out, device, executor)
    repair_tail(out)
    for record in read_records(out):
        if record.get("key") == key and record.get("status") in FINAL:
            console.print(f"already recorded in {out}: {task} / {variant} / seed {seed}")
            return record
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    checkpoint, model_path = out / "checkpoints" / f"{digest}.pt", out / "models" / f"{digest}.pt"
    data = load_task(task, setup.params, data_dir)  # a refusal here leaves no env.json behind
    if fresh:
        write_env(out, environment.capture(device, setup.train.threads))
    record: dict[str, Any] = {
        "kind": "train", "run_id": out.name, "task": task, "variant": variant, "seed": seed, "preset": preset.name,
        "device": device, "data": data.description, "task_params": data.params, "model": setup.model.model_dump(),
        "max_len": data.max_len, "split_sizes": {s: len(getattr(data, s)) for s in ("train", "val", "test")},
        "train": setup.train.model_dump(), "options": setup.options.get(variant, {}), "key": key,
        "command": train_command(task, variant, preset.name, seed, data_dir, device, plugins,
                                 setup.options.get(variant, {}), settings),
        "settings": settings or {}, "kv_layout": setup.model.kv_layout,
        "kv_cache_values_per_token": setup.model.kv_cache_values(), **environment.provenance(),
        "executor": executor, "source": _source(registry, variant),
    }  # fmt: skip
    started = time.perf_counter()
    if reason is not None:
        record |= {"status": "unavailable", "reason": reason}
    else:
        try:
            record |= train(data, variant, setup, seed, registry, device, checkpoint, console, model_path)
            record["model_path"] = str(model_path.relative_to(out))
        except UserError:
            raise
        except Exception as err:  # recorded: a variant that fails must not stop a suite
            status, why = classify(err)
            record |= {"status": status, "reason": why}
    record["wall_s"] = time.perf_counter() - started
    record["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    append_record(out, record)
    checkpoint.unlink(missing_ok=True)
    return record
