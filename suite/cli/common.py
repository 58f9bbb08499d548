"""What the commands share: the console, the option declarations, list parsing, the registry, interrupts."""

from __future__ import annotations

import contextlib
import functools
import inspect
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ...tasks import task_names
from ..core.errors import UserError
from ..core.registry import Registry, load_registry
from . import signals

# Wide enough for the tables when output is piped (rich would fall back to 80 columns).
console = Console(width=max(shutil.get_terminal_size((150, 24)).columns, 100))

PluginOpt = Annotated[
    list[Path] | None,
    typer.Option("--plugin", help="Python file defining extra variants (repeatable)."),
]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present).")]
OptionOpt = Annotated[list[str] | None, typer.Option(help="Variant option VARIANT.KEY=VALUE (repeatable).")]
TrainPresetOpt = Annotated[str, typer.Option(help="Training preset: tiny, cpu, lra, lra-attnbench, or a YAML file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override the preset: model.KEY=V, train.KEY=V or params.KEY=V (repeatable), "
        "e.g. model.heads=8, model.kv_heads=2, model.kv_latent=32, model.score_scale=1.",
    ),
]
TaskOutOpt = Annotated[Path | None, typer.Option(help="Run folder (default: results/tasks-<preset>-<device>).")]
TASK_HELP = ", ".join(task_names()) + "."
TaskOpt = Annotated[str, typer.Option(help=TASK_HELP)]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Read the task from files: the unpacked LRA release (lra_release/...), aclImdb, or cifar-10-batches-py."
    ),
]
RunArg = Annotated[Path, typer.Argument(help="Run folder (holds records.jsonl).")]
# The variant's code (maybe a plugin's) runs in a worker; a hang past this kills it.
WorkerTimeoutOpt = Annotated[
    float, typer.Option(min=1, help="Seconds before the worker running the variant's code is killed (a hang).")
]
TrainTimeoutOpt = Annotated[
    float | None,
    typer.Option(min=1, help="Seconds a training run may take before its worker is killed (default: no limit)."),
]

ParallelOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Train this many runs (task x variant x seed, x arm in a study) at once, each in its own process; "
        "local executor only (ray and slurm schedule their own). Each run keeps its preset's train.threads: "
        "the shipped studies set 1.",
    ),
]
# The options that choose where jobs run, shared by bench, suite and study (see `with_executor`).
EXECUTOR_OPTIONS = {
    "executor": (Annotated[str, typer.Option(help="Where jobs run: local, ray, slurm.")], "local"),
    "address": (Annotated[str | None, typer.Option(help="ray: a cluster's address (default: a local Ray).")], None),
    "cluster": (
        Annotated[str, typer.Option(help="slurm: 'slurm', or 'local' for submitit's local cluster (no SLURM).")],
        "slurm",
    ),
    "partition": (Annotated[str | None, typer.Option(help="slurm: partition.")], None),
    "account": (Annotated[str | None, typer.Option(help="slurm: account.")], None),
    "time_min": (
        Annotated[int | None, typer.Option(help="slurm: minutes per job (bench default: the point's timeout).")],
        None,
    ),
}
# What a command given `with_executor` receives: the executor's name and its checked options.
ExecutorChoice = tuple[str, dict[str, Any]]


def with_executor(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the executor options (--executor, --address, --cluster, --partition, --account,
    --time-min) as flags, handed to it checked, as one `executor` argument (an ExecutorChoice)."""
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "executor"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in EXECUTOR_OPTIONS.items()
    ]
    # In --help they stand where the command's own `executor` stood.
    at = list(signature.parameters).index("executor")
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept[:at] + added + kept[at:]]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        from ..executors import choose_executor

        chosen = {name: kwargs.pop(name) for name in EXECUTOR_OPTIONS}
        command(**kwargs, executor=choose_executor(**chosen, parallel=kwargs.get("parallel", 1)))

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return wrapper


def csv(text: str | None, cast: type = str) -> list | None:
    """'256,512' -> [256, 512]; None stays None."""
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def registry(plugins: list[Path] | None) -> Registry:
    """The variants: built-ins, installed plugins and the --plugin files."""
    return load_registry(plugins or [])


def plugin_paths(plugins: list[Path] | None) -> tuple[str, ...]:
    """The --plugin files as absolute paths, as jobs and records carry them."""
    return tuple(str(Path(p).resolve()) for p in plugins or [])


@contextlib.contextmanager
def interruptible(message: str) -> Iterator[None]:
    """A polite kill (SIGTERM, from `timeout` or a scheduler) stops like Ctrl-C; either ends the command
    with `message` and exit code 130, after whatever was finished is kept."""
    signals.install()
    try:
        yield
    except KeyboardInterrupt:
        console.print(message, soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(130) from None


def exit_if_failed(failed: int, total: int) -> None:
    """Exit 1 when any training run ended in error, oom or timeout (each was reported as it ended)."""
    if failed:
        console.print(f"{failed} of {total} runs ended in error, oom or timeout (see above)")
        raise typer.Exit(1)
