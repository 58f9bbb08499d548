"""The training loop: same seed, same everything but the attention core.

The model is initialised from the seed, the batch order is a function of the seed alone, and the
data (generated from the task's own `data_seed`) is the same for every variant and seed: on one
device with one thread count the same command gives the same numbers. The loop evaluates on
validation every `eval_every` steps, keeps the best weights, stops early after `patience`
evaluations without improvement, and saves a checkpoint at every evaluation so a stopped run
continues where it stopped.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ...tasks.base import TaskData
from ...tasks.metrics import majority_score
from ..core.errors import one_line
from ..core.progress import progress_bar
from ..core.registry import Registry
from ..measure.memory import PeakTracker
from .checkpoints import load_checkpoint, save_checkpoint
from .evaluation import evaluate, loss_and_hits
from .model import TaskModel, layer_projections
from .presets import TaskSetup, TrainSettings


def batches(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the batch at `step`: epochs are seeded permutations, so any step can be recomputed."""
    per_epoch = max(1, n // batch_size)
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[offset * batch_size : (offset + 1) * batch_size]


def schedule(settings: TrainSettings):
    """The learning-rate factor of each step: linear warm-up, then cosine decay to zero at the last step, or
    constant (MAD's rate as it trains: mad-lab hands Lightning its scheduler under a key Lightning does not read);
    or LRA's "constant * linear_warmup * rsqrt_decay" (lr the constant: its peak is lr / sqrt(warmup))."""
    warmup = settings.warmup_steps

    def rsqrt(step: int) -> float:
        t = step + 1
        return min(1.0, t / max(warmup, 1)) / math.sqrt(max(t, warmup))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if settings.schedule == "constant":
            return 1.0
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return rsqrt if settings.schedule == "rsqrt" else factor


class Diverged(Exception):
    """Training stopped at a loss that is not finite: a result of the run (recorded `diverged`), not a crash."""


def _at_step_zero(
    data: TaskData, variant: str, setup: TaskSetup, seed: int, registry: Registry, device: str
) -> tuple[TaskModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The model, optimizer and schedule before the first step: the same for the same seed."""
    settings = setup.train
    torch.manual_seed(seed)
    model = TaskModel.for_task(data, setup.model, registry, variant, setup.options.get(variant), setup.options).to(
        device
    )
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=settings.betas,
        eps=settings.eps,
    )
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(settings))


def seconds_per_step(
    data: TaskData, variant: str, setup: TaskSetup, registry: Registry, device: str, steps: int = 3
) -> float:
    """The median time of a training step (forward, backward, optimizer) of `variant` on `setup`, over `steps`
    steps after one untimed: what a run's length is estimated from."""
    model, optimizer, scheduler = _at_step_zero(data, variant, setup, 0, registry, device)
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        idx = batches(len(data.train), setup.train.batch_size, 0, step)
        loss, _, _ = loss_and_hits(model, data.train, idx, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


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
    model, optimizer, scheduler = _at_step_zero(data, variant, setup, seed, registry, device)
    state = {
        "step": 0,
        "best_val": -1.0,
        "best_step": 0,
        "since_best": 0,
        "curve": [],
        "train_s": 0.0,
        "best_model": None,
        "losses": [],
    }
    if checkpoint is not None and checkpoint.exists():
        try:
            state = load_checkpoint(checkpoint, model, optimizer, scheduler)
        except Exception as err:  # cut short or foreign: the run starts over; it is not the run's failure
            warnings.warn(f"{checkpoint}: unreadable checkpoint ({one_line(err)}); training starts again", stacklevel=2)
            checkpoint.unlink()
            model, optimizer, scheduler = _at_step_zero(data, variant, setup, seed, registry, device)

    tracker = PeakTracker(device)
    tokens_per_step = settings.batch_size * data.train.tokens.shape[1] * (2 if data.kind == "pair" else 1)
    with progress_bar(console) as progress:
        bar = progress.add_task(f"{data.name} / {variant}", total=settings.steps, completed=state["step"])
        while state["step"] < settings.steps:
            started = time.perf_counter()
            idx = batches(len(data.train), settings.batch_size, seed, state["step"])
            loss, _, _ = loss_and_hits(model, data.train, idx, device)
            if not torch.isfinite(loss):
                raise Diverged(f"loss {loss.item()} at step {state['step'] + 1}")
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
                val = evaluate(model, data.val, settings.batch_size, device, settings.eval_size, data.metric)
                recent = state["losses"][-settings.eval_every :]
                norms = state["grad_norms"][-settings.eval_every :]
                state["curve"].append(
                    {
                        "step": state["step"],
                        "loss": sum(recent) / len(recent),
                        "val_acc": val,
                        "grad_norm": sum(norms) / len(norms),
                    }
                )
                progress.update(
                    bar, description=f"{data.name} / {variant}: loss {state['curve'][-1]['loss']:.3f}, val {val:.3f}"
                )
                if val > state["best_val"]:
                    state.update(best_val=val, best_step=state["step"], since_best=0)
                    state["best_model"] = copy.deepcopy(model.state_dict())
                else:
                    state["since_best"] += 1
                if checkpoint is not None:
                    save_checkpoint(checkpoint, model, optimizer, scheduler, state)
                if settings.patience and state["since_best"] >= settings.patience:
                    break
    peak = tracker.peak()
    final_val = evaluate(model, data.val, settings.batch_size, device, metric=data.metric)
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
        "best_val_acc": evaluate(model, data.val, settings.batch_size, device, metric=data.metric),
        "test_acc": evaluate(model, data.test, settings.batch_size, device, metric=data.metric),
        "majority_test_acc": majority_score(data, "test"),
        "metric": data.metric,
        "train_s": state["train_s"],
        "steps_per_s": steps / state["train_s"],
        "tokens_per_s": steps * tokens_per_step / state["train_s"],
        "peak_bytes": peak,
        "parameters": sum(p.numel() for p in model.parameters()),
        "projections": layer_projections(model),
        "curve": state["curve"],
        "threads": torch.get_num_threads(),
        "padding_masked": model.masks_padding if data.kind in ("classify", "pair") else None,
    }
