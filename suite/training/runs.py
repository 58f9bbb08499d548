"""A recorded training run: `attnbench train`, and the body of each run `attnbench suite` and `study`
hand to an executor. A run is resumable (its record is its key: an existing one is returned as is)
and its record, in the same records.jsonl as bench points, names the command that remakes it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ...tasks import DataFormatError, TaskData, get_task, load_task
from ..core import env as environment
from ..core.errors import UserError
from ..core.registry import Registry, load_registry
from ..measure.failures import classify
from ..runs.records import FINAL, append_record, read_checked_env, read_records, repair_tail, write_env
from .jobs import TrainJob, job_preset, train_command
from .loop import Diverged, train
from .model import ModelConfig, check_layout
from .presets import TaskSetup, TrainPreset

# Model fields added after task runs were committed (K/V sharing, score scale, hybrid layers, short
# convolution, MLP kind), with their defaults.
_LATER_MODEL_FIELDS = {"kv_latent": None, "score_scale": None, "layers": None, "short_conv": None, "mlp": "gelu"}


def run_key(task: str, variant: str, seed: int, preset: str, setup: TaskSetup, data_dir: Path | None) -> str:
    """Identity of a training run, for resuming: another variant's options are not part of it."""
    # The lengths, widths and variations a suite sweeps are not a run's: each run has its own params and model.
    fields = setup.model_dump(exclude={"options", "source", "lengths", "widths", "variations"}) | {
        "options": setup.options.get(variant, {})
    }
    if setup.model.layers:  # a hybrid: every mixer's options make the run
        fields["layer_options"] = _layer_options(setup, variant)
    for name, default in _LATER_MODEL_FIELDS.items():  # at their default they stay out: earlier runs resume
        if fields["model"][name] == default:
            del fields["model"][name]
    return json.dumps(
        {
            "task": task,
            "variant": variant,
            "seed": seed,
            "preset": preset,
            "setup": fields,
            "data": str(data_dir) if data_dir else None,
        },
        sort_keys=True,
    )


def outcome(record: dict[str, Any]) -> str:
    """One line for a training record: its accuracy and speed, or its status and reason."""
    if record.get("status") != "ok":
        return f"{record.get('status')}: {record.get('reason', '')}"
    r = record
    metric = "macro accuracy" if r.get("metric") == "macro-accuracy" else "accuracy"  # MAD's tasks score the first
    return (
        f"test {metric} {r['test_acc']:.4f} (best val {r['best_val_acc']:.4f} at step {r['best_step']}, "
        f"final val {r['final_val_acc']:.4f}; majority baseline {r['majority_test_acc']:.4f}); "
        f"{r['steps_per_s']:.1f} steps/s, {r['train_s']:.0f} s"
        + {True: "; padding masked", False: "; padding attended (the variant takes no key lengths)"}.get(
            r.get("padding_masked"), ""
        )
    )


def recorded(out: Path, key: str) -> dict[str, Any] | None:
    """The finished record of the run `key` in run folder `out`, if it has one (a cut last line repaired)."""
    repair_tail(out)
    return next((r for r in read_records(out) if r.get("key") == key and r.get("status") in FINAL), None)


def check_fits(registry: Registry, variant: str, model: ModelConfig, device: str) -> str | None:
    """UserError when `variant` (or a hybrid's mixer) is unknown or cannot take the model's K/V layout or
    score scale; returns why one cannot run here (None: all can), for a variant that cannot load is recorded
    unavailable, not refused."""
    registry.entry(variant)
    for mixer in dict.fromkeys(model.mixers(variant)):
        registry.entry(mixer)
        reason = registry.unavailable_reason(mixer, device)
        if reason is not None:
            return reason if mixer == variant else f"layer variant {mixer}: {reason}"
        check_layout(model, registry.get(mixer).info)
    return None


def check_run(registry: Registry, task: str, variant: str, preset: TrainPreset, device: str) -> None:
    """What refuses a run before its folder is made: its variants' options, and whether they take the model's
    K/V layout and score scale (UserError with one line)."""
    if task in preset.tasks:
        setup = preset.tasks[task]
        registry.check_options({variant: setup.options.get(variant, {})} | _layer_options(setup, variant))
        check_fits(registry, variant, setup.model, device)


def _layer_options(setup: TaskSetup, variant: str) -> dict[str, dict[str, Any]]:
    """A hybrid's options of its mixers other than `variant` (the preset's), by mixer; {} for one variant."""
    return {m: setup.options.get(m, {}) for m in dict.fromkeys(setup.model.mixers(variant)) if m != variant}


def _source(registry: Registry, variant: str) -> dict[str, Any] | None:
    """The variant's source for the record (None when it cannot be loaded: the run is recorded unavailable)."""
    try:
        return registry.entry(variant).source()
    except UserError:
        return None


def _recurrent(registry: Registry, variant: str) -> bool:
    """Whether the variant is a recurrence over a carried state (False when it cannot be loaded)."""
    try:
        return registry.get(variant).info.recurrent
    except UserError:
        return False


def _record(
    task: str,
    variant: str,
    preset: TrainPreset,
    seed: int,
    registry: Registry,
    device: str,
    out: Path,
    data_dir: Path | None,
    plugins: tuple[str, ...],
    executor: str,
    settings: dict[str, dict[str, Any]] | None,
    data: TaskData,
) -> dict[str, Any]:
    """What a training run's record says before it is trained: the run, its setup, the command that remakes
    it, and the code that made it."""
    setup = preset.tasks[task]
    key = run_key(task, variant, seed, preset.name, setup, data_dir)
    return {
        "kind": "train",
        "run_id": out.name,
        "task": task,
        "variant": variant,
        "seed": seed,
        "preset": preset.name,
        "device": device,
        "data": data.description,
        "task_params": data.params,
        "model": setup.model.model_dump(),
        "max_len": data.max_len,
        "split_sizes": {s: len(getattr(data, s)) for s in ("train", "val", "test")},
        "train": setup.train.model_dump(),
        "options": setup.options.get(variant, {}),
        "key": key,
        "command": train_command(
            task, variant, preset.name, seed, data_dir, device, plugins, setup.options.get(variant, {}), settings
        ),
        "settings": settings or {},
        "kv_layout": setup.model.kv_layout,
        **_memory_per_layer(registry, variant, setup.model),
        **environment.provenance(),
        "executor": executor,
        "source": _source(registry, variant),
        **(_hybrid(registry, variant, setup) if setup.model.layers else {}),
    }


def _memory_per_layer(registry: Registry, variant: str, model: ModelConfig) -> dict[str, int | None]:
    """What inference keeps: a KV cache per token and, for a recurrence, its fixed state (what it carries
    instead of a cache). A hybrid counts each of its layers once: caches for attention, states for recurrences."""
    if not model.layers:
        return {
            "kv_cache_values_per_token": model.kv_cache_values(),
            "state_values": model.state_values() if _recurrent(registry, variant) else None,
        }
    recurrent = sum(_recurrent(registry, mixer) for mixer in model.mixers(variant))
    return {
        "kv_cache_values_per_token": model.kv_cache_values(model.depth - recurrent),
        "state_values": model.state_values(recurrent) if recurrent else None,
    }


def _hybrid(registry: Registry, variant: str, setup: TaskSetup) -> dict[str, Any]:
    """A hybrid's record fields: the variant of each layer, and the options and source of the mixers other
    than the run's variant."""
    others = _layer_options(setup, variant)
    return {
        "mixers": setup.model.mixers(variant),
        "layer_options": others,
        "layer_sources": {mixer: _source(registry, mixer) for mixer in others},
    }


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
    get_task(task)  # DataFormatError naming the known tasks
    if task not in preset.tasks:
        raise UserError(f"preset {preset.name} has no setup for task {task!r} (it has {', '.join(preset.tasks)})")
    setup = preset.tasks[task]
    reason = check_fits(registry, variant, setup.model, device)
    key = run_key(task, variant, seed, preset.name, setup, data_dir)
    # Checked before anything recorded is reused: a folder holds one machine's numbers.
    fresh = not read_checked_env(out, device, executor)
    if (record := recorded(out, key)) is not None:
        console.print(f"already recorded in {out}: {task} / {variant} / seed {seed}")
        return record
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    checkpoint, model_path = out / "checkpoints" / f"{digest}.pt", out / "models" / f"{digest}.pt"
    data = load_task(task, setup.params, data_dir)  # a refusal here leaves no env.json behind
    if fresh:
        write_env(out, environment.capture(device, setup.train.threads))
    record = _record(task, variant, preset, seed, registry, device, out, data_dir, plugins, executor, settings, data)
    started = time.perf_counter()
    if reason is not None:
        record |= {"status": "unavailable", "reason": reason}
    else:
        try:
            record |= train(data, variant, setup, seed, registry, device, checkpoint, console, model_path)
            record["model_path"] = str(model_path.relative_to(out))
        except UserError:
            raise
        except Diverged as err:
            record |= {"status": "diverged", "reason": str(err)}
        except Exception as err:  # recorded: a variant that fails must not stop a suite
            status, why = classify(err)
            record |= {"status": status, "reason": why}
    record["wall_s"] = time.perf_counter() - started
    record["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    append_record(out, record)
    checkpoint.unlink(missing_ok=True)
    return record


def train_here(data: dict[str, Any], executor: str, console: Console | None = None) -> dict[str, Any]:
    """Make one training run (`TrainJob.to_dict()`) in this process and return its record: the body of a
    local worker's or a cluster job's training job (quiet unless given a console).

    The record is appended to the job's run folder by the job, as `attnbench train` does, under the
    lock the driver holds. A refusal (bad input) comes back as an `error` status with its one line.
    """
    job = TrainJob.from_dict(data)
    try:
        preset = job_preset(job)
        registry = load_registry(job.plugins)
        return run_training(
            job.task,
            job.variant,
            preset,
            job.seed,
            registry,
            job.device,
            Path(job.out),
            Path(job.data_dir) if job.data_dir else None,
            job.plugins,
            console or Console(quiet=True),
            executor=executor,
            settings=job.settings,
        )
    except (UserError, DataFormatError) as err:
        return {"status": "error", "reason": str(err), "refused": True}


def record_lost_run(job: TrainJob, status: str, reason: str, executor: str) -> dict[str, Any]:
    """Record a run whose worker ended without recording it (a crash, the out-of-memory killer, a cluster
    job that failed), with `status` and `reason`, so reports and the site show it; returns the record."""
    preset = job_preset(job)
    data_dir = Path(job.data_dir) if job.data_dir else None
    data = load_task(job.task, preset.tasks[job.task].params, data_dir)
    out = Path(job.out)
    record = _record(
        job.task,
        job.variant,
        preset,
        job.seed,
        load_registry(job.plugins),
        job.device,
        out,
        data_dir,
        job.plugins,
        executor,
        job.settings,
        data,
    )
    record |= {
        "status": status,
        "reason": reason,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return append_record(out, record)
