"""The `attnbench` command line. Each command is a thin layer over a suite module."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .core.devices import dtype_name, parse_dtype, resolve_device
from .core.env import device_name as env_device_name
from .core.errors import UserError
from .core.registry import Registry, load_registry

app = typer.Typer(
    help="attnbench: attention variants on one harness (speed, memory, correctness, accuracy).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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
    typer.Option("--set", help="Override the preset: model.KEY=V, train.KEY=V or params.KEY=V (repeatable), "
                 "e.g. model.heads=8, model.kv_heads=2, model.kv_latent=32, model.score_scale=1."),
]  # fmt: skip
TaskOutOpt = Annotated[Path | None, typer.Option(help="Run folder (default: results/tasks-<preset>-<device>).")]


SUMMARY_WORDS = ("passed", "failed", "skipped", "reported")


def _registry(plugins: list[Path] | None) -> Registry:
    return load_registry(plugins or [])


@app.command("list")
def list_variants(
    plugin: PluginOpt = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    details: Annotated[
        bool, typer.Option("--details", help="Also print each variant's definition, paper, source and departures.")
    ] = False,
) -> None:
    """List the variants: family, exactness, support, and whether each runs here (or why not)."""
    registry = _registry(plugin)
    device = resolve_device(device)
    rows = []
    for name in registry.names():
        reason = registry.unavailable_reason(name, device)
        row = {
            "name": name,
            "origin": registry.entry(name).origin,
            "available": reason is None,
            "reason": reason,
        }
        try:
            info = registry.get(name).info
        except UserError:  # its class did not load: the reason says why
            info = None
        if info is not None:
            row |= {
                "family": info.family,
                "exact": info.exact,
                "causal": info.causal,
                "non_causal": info.non_causal,
                "gqa": "native" if info.gqa_native else ("expanded" if info.gqa else "no"),
                "backward": [d for d in info.devices if info.has_backward(d)],
                "devices": list(info.devices),
                "dtypes": [dtype_name(d) for d in info.dtypes],
                "lengths": info.lengths,
                "packed": info.packed,
                "summary": info.summary,
                "definition": info.definition,
                "paper": info.paper,
                "source": info.source,
                "departures": list(info.departures),
            }
        rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"attnbench variants (availability on {device})")
    for col in ("name", "family", "exact", "causal", "gqa", "ragged", "devices"):
        table.add_column(col, no_wrap=True)
    table.add_column(f"on {device}", overflow="fold")
    for r in rows:
        causal = "yes" if r.get("causal") and r.get("non_causal") else ("only" if r.get("causal") else "no")
        table.add_row(
            r["name"],
            r.get("family", "?"),
            "yes" if r.get("exact") else "no",
            causal if "causal" in r else "?",
            r.get("gqa", "?"),
            "+".join(form for form, key in (("padded", "lengths"), ("packed", "packed")) if r.get(key)) or "no",
            ",".join(r.get("devices", [])),
            "[green]available[/]" if r["available"] else f"[yellow]unavailable:[/] {r['reason']}",
        )
    console.print(table)
    if details:
        for r in rows:
            _print_details(r)


def _print_details(row: dict) -> None:
    """One variant's definition, paper, original source and declared departures from them."""
    console.print(f"\n[bold]{row['name']}[/]  {row.get('summary', '')}", highlight=False)
    for label in ("definition", "paper", "source"):
        console.print(f"  {label + ':':<12}{row.get(label) or '-'}", highlight=False, soft_wrap=True)
    departures = row.get("departures") or []
    console.print(f"  {'departures:':<12}{'none declared' if not departures else ''}", highlight=False)
    for line in departures:
        console.print(f"    - {line}", highlight=False, soft_wrap=True)


@app.command()
def check(
    names: Annotated[
        list[str] | None, typer.Argument(help="Variants to check (default: the --plugin ones, else all).")
    ] = None,
    plugin: PluginOpt = None,
    device: DeviceOpt = None,
    dtype: Annotated[
        list[str] | None,
        typer.Option(help="dtype(s) to check: float32, float16, bfloat16, float64 (default: each variant's own)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    option: OptionOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON results.")] = False,
) -> None:
    """Run the conformance checks; exit 1 if any check fails."""
    from .checks.conformance import Checker, default_dtypes

    registry = _registry(plugin)
    device = resolve_device(device)
    asked = [parse_dtype(d) for d in dtype or []]
    options = _options(option)
    # With --plugin and no names, the plugin's own variants are the ones to check.
    names = names or registry.plugin_file_names() or registry.names()
    for name in names:
        registry.entry(name)  # unknown names fail before any work
    _check_options(registry, options)
    counts = dict.fromkeys(("pass", "fail", "skip", "report"), 0)
    records = []
    styles = {"pass": "green", "fail": "bold red", "skip": "yellow", "report": "cyan"}
    for name in names:
        # Without --dtype, every dtype the variant declares (float64, the definition's own, aside).
        dtypes = asked or _declared_dtypes(registry, name, device, default_dtypes)
        if not as_json:
            _print_departures(registry, name)
        for dt in dtypes:
            header = f"{name} · {device} · {dtype_name(dt)}"
            reason = registry.unavailable_reason(name, device, dt)
            if reason is not None:
                counts["skip"] += 1
                records.append(
                    {
                        "variant": name,
                        "dtype": dtype_name(dt),
                        "check": "available",
                        "status": "skip",
                        "detail": reason,
                    }
                )
                if not as_json:
                    console.print(f"[bold]{header}[/]  [yellow]skip[/] unavailable: {reason}")
                continue
            if not as_json:
                console.print(f"[bold]{header}[/]")
            for result in Checker(registry.get(name), device, dt, seed, options.get(name)).results():
                counts[result.status] += 1
                records.append({"variant": name, "dtype": dtype_name(dt), **result.__dict__})
                if not as_json:
                    label = result.status.upper() if result.status == "fail" else result.status
                    console.print(
                        f"  [{styles[result.status]}]{label:<6}[/] {result.check:<18} {result.detail}",
                        highlight=False,
                    )
    if as_json:
        print(json.dumps(records, indent=2))
    else:
        console.print(", ".join(f"{n} {word}" for word, n in zip(SUMMARY_WORDS, counts.values(), strict=True)))
    if counts["fail"]:
        raise typer.Exit(1)


def _print_departures(registry: Registry, name: str) -> None:
    """The variant's declared departures from its sources, before its checks (nothing when it declares none)."""
    try:
        info = registry.get(name).info
    except UserError:  # cannot load: its checks report why
        return
    for line in info.departures:
        console.print(f"[dim]{name} departs from {info.source or info.paper or 'its source'}:[/] {line}",
                      highlight=False, soft_wrap=True)  # fmt: skip


def _declared_dtypes(registry: Registry, name: str, device: str, default_dtypes) -> list:
    """The dtypes `check` tries for `name` by default; float32 for a variant that cannot be loaded here."""
    import torch

    if registry.unavailable_reason(name, device) is not None:
        return [torch.float32]  # reported once as unavailable, with the reason
    return default_dtypes(registry.get(name), device)


def _check_options(registry: Registry, options: dict[str, dict]) -> None:
    for name, values in options.items():
        try:
            registry.get(name).parse_options(values)
        except ValueError as err:
            raise UserError(str(err)) from None


def _csv(text: str | None, cast=str) -> list | None:
    """'256,512' -> [256, 512]; None stays None."""
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def _options(pairs: list[str] | None) -> dict[str, dict]:
    """['chunked.block_size=64'] -> {'chunked': {'block_size': 64}} (values read as YAML scalars)."""
    import yaml

    options: dict[str, dict] = {}
    for pair in pairs or []:
        target, sep, value = pair.partition("=")
        variant, dot, key = target.partition(".")
        if not (sep and dot and variant and key):
            raise UserError(f"--option {pair!r}: expected VARIANT.KEY=VALUE, e.g. chunked.block_size=64")
        options.setdefault(variant, {})[key] = yaml.safe_load(value)
    return options


ExecutorOpt = Annotated[str, typer.Option(help="Where jobs run: local, ray, slurm.")]
ParallelOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Train this many runs (task x variant x seed, x arm in a study) at once, each in its own process; "
        "local executor only (ray and slurm schedule their own). Each run keeps its preset's train.threads: "
        "the shipped studies set 1.",
    ),
]
AddressOpt = Annotated[str | None, typer.Option(help="ray: a cluster's address (default: a local Ray).")]
ClusterOpt = Annotated[str, typer.Option(help="slurm: 'slurm', or 'local' for submitit's local cluster (no SLURM).")]
PartitionOpt = Annotated[str | None, typer.Option(help="slurm: partition.")]
AccountOpt = Annotated[str | None, typer.Option(help="slurm: account.")]
TimeMinOpt = Annotated[int | None, typer.Option(help="slurm: minutes per job (bench default: the point's timeout).")]


def _executor_choice(
    executor: str,
    address: str | None,
    cluster: str,
    partition: str | None,
    account: str | None,
    time_min: int | None,
    parallel: int = 1,
) -> tuple[str, dict]:
    """The executor's name and its options, checked (one line on a bad name)."""
    from .executors import NAMES

    if executor not in NAMES:
        raise UserError(f"unknown executor {executor!r}: choose one of {', '.join(NAMES)}")
    if parallel > 1 and executor != "local":
        raise UserError(f"--parallel is for the local executor: {executor} schedules its runs itself")
    if cluster not in ("slurm", "local"):
        raise UserError(f"unknown --cluster {cluster!r}: slurm or local")
    slurm = {"cluster": cluster, "partition": partition, "account": account, "time_min": time_min}
    options = {"ray": {"address": address}, "slurm": slurm}
    return executor, options.get(executor, {})


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _device_slug(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    return "-".join(torch.cuda.get_device_name(0).lower().replace("nvidia", "").split()) or "cuda"


def _results_folder(name: str, device: str) -> Path:
    """A run's default folder: results/<config>-<device>."""
    return Path("results") / f"{name}-{_device_slug(device)}"


@app.command()
def bench(
    preset: Annotated[
        str | None,
        typer.Option(
            help="Shipped config: cpu, gpu, gpt2-small, llama2-7b, ...; auto: gpu where torch sees CUDA, else cpu."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or TOML config file.")] = None,
    variants: Annotated[str | None, typer.Option(help="Comma-separated variant names.")] = None,
    seq: Annotated[str | None, typer.Option(help="Sequence lengths N, e.g. 256,512,1024.")] = None,
    q_len: Annotated[str | None, typer.Option(help="Query lengths (default: equal to N).")] = None,
    batch: Annotated[str | None, typer.Option(help="Batch sizes.")] = None,
    heads: Annotated[str | None, typer.Option(help="Query heads.")] = None,
    kv_heads: Annotated[str | None, typer.Option(help="K/V heads (GQA/MQA; default: equal to heads).")] = None,
    head_dim: Annotated[str | None, typer.Option(help="Head dims D.")] = None,
    width: Annotated[int | None, typer.Option(help="Model width: head dim = width / heads.")] = None,
    dtype: Annotated[str | None, typer.Option(help="dtypes: float32, float16, bfloat16.")] = None,
    causal: Annotated[
        bool | None, typer.Option("--causal/--no-causal", help="Causal mask (default: config's).")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="fwd, bwd, fwd_bwd (comma-separated).")] = None,
    lengths: Annotated[
        str | None,
        typer.Option(
            help="Sequence lengths in a batch: fixed, uniform:LO:HI (fractions of N), list:L1,L2,... "
            "Several separated by ';'."
        ),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(help="padded (B x N, key lengths masked), packed (end to end), or both: padded,packed."),
    ] = None,
    device: DeviceOpt = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up calls before timing.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Timed calls at most.")] = None,
    budget: Annotated[float | None, typer.Option(help="Seconds of timed calls per point at most.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds before a point is killed.")] = None,
    baseline: Annotated[str | None, typer.Option(help="Variant the speedups are against.")] = None,
    option: OptionOpt = None,
    plugin: PluginOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: results/<config>-<device>).")] = None,
    scratch: Annotated[
        bool, typer.Option("--scratch", help="Measure into a new temporary folder (printed); never resume a run.")
    ] = False,
    write_charts: Annotated[
        bool, typer.Option("--report/--no-report", help="Write the charts and README.md at the end.")
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan and measure nothing: the points, which variants run here (and why not), "
            "predicted out-of-memory points and the estimated wall time.",
        ),
    ] = False,
    budget_minutes: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Minutes for the whole sweep: the most informative points run first, the rest are skipped "
            "and listed in env.json (a rerun measures them).",
        ),
    ] = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    cluster: ClusterOpt = "slurm",
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    time_min: TimeMinOpt = None,
) -> None:
    """Measure time, memory, TFLOP/s and error over a grid; one fresh worker per point; resumable.

    Exits 1 after recording everything if any point's output is off its definition beyond the
    variant's tolerance (marked `correct: false` in its record, the summary and the charts).
    """
    from .core.config import BenchConfig, load_config, load_preset, validate
    from .core.devices import host_preset

    if preset == "auto":
        preset = host_preset()
        console.print(f"device detected: running the {preset} preset")
    if preset and config:
        raise UserError("give --preset or --config, not both")
    if scratch and out:
        raise UserError("give --out or --scratch, not both")
    base: BenchConfig | None = load_preset(preset) if preset else load_config(config) if config else None
    grid = {
        "variants": _csv(variants), "seq": _csv(seq, int), "q_len": _csv(q_len, int), "batch": _csv(batch, int),
        "heads": _csv(heads, int), "kv_heads": _csv(kv_heads, int), "head_dim": _csv(head_dim, int),
        "width": width, "dtype": [dtype_name(parse_dtype(d)) for d in _csv(dtype)] if dtype else None,
        "causal": None if causal is None else [causal], "mode": _csv(mode),
        "lengths": lengths.split(";") if lengths is not None else None, "layout": _csv(layout),
    }  # fmt: skip
    grid = {k: v for k, v in grid.items() if v is not None}
    if "width" in grid:
        grid["head_dim"] = None
    elif "head_dim" in grid:
        grid["width"] = None
    settings = {"warmup": warmup, "repeats": repeats, "budget_s": budget, "timeout_s": timeout,
                "threads": threads, "baseline": baseline}  # fmt: skip
    settings = {k: v for k, v in settings.items() if v is not None}
    if base is None:
        if "variants" not in grid or "seq" not in grid:
            raise UserError("give --preset, --config, or at least --variants and --seq")
        data: dict = {"sweeps": [grid]}
    else:
        data = base.model_dump()
        data["sweeps"] = [sweep | grid for sweep in data["sweeps"]]
        # What the command line sets holds on every device.
        data["device_overrides"] = {d: {k: v for k, v in f.items() if k not in grid}
                                    for d, f in data["device_overrides"].items()}  # fmt: skip
    data |= settings
    data["options"] = data.get("options", {}) | _options(option)
    cfg = validate(data, preset or (config.name if config else "command line"))

    registry = _registry(plugin)
    for name in {v for device_kind in ("cpu", "cuda") for sweep in cfg.sweeps_for(device_kind) for v in sweep.variants}:
        registry.entry(name)
    _check_options(registry, cfg.options)
    plugins = tuple(str(Path(p).resolve()) for p in plugin or [])
    if dry_run:
        _dry_run(cfg, registry, device or cfg.device, plugins, out, budget_minutes)
        return
    device = resolve_device(None if cfg.device == "auto" and device is None else device or cfg.device)
    if scratch:
        run_dir = Path(tempfile.mkdtemp(prefix="attnbench-scratch-"))
    else:
        run_dir = out or _results_folder(cfg.name, device)
    choice = _executor_choice(executor, address, cluster, partition, account, time_min)
    records = _measure(cfg, registry, device, plugins, run_dir, charts=write_charts and not scratch, executor=choice,
                       budget_s=budget_minutes * 60 if budget_minutes else None)  # fmt: skip
    wrong = [r for r in records if r.get("correct") is False]
    if wrong:
        names = ", ".join(sorted({r["variant"] for r in wrong}))
        console.print(f"FAILED CORRECTNESS in {len(wrong)} of {len(records)} points ({names}): "
                      f"see {run_dir}/summary.md")  # fmt: skip
        raise typer.Exit(1)


def _dry_run(cfg, registry: Registry, device: str, plugins: tuple[str, ...], out: Path | None,
             budget_minutes: float | None) -> None:  # fmt: skip
    """The plan of a bench run (runs/plan.py), printed; nothing is measured or written."""
    from .core.devices import default_device
    from .outputs.plan_report import plan_text
    from .runs.plan import plan_points, target_device
    from .runs.points import expand
    from .runs.records import read_records

    kind = default_device() if device == "auto" else device.lower()
    if kind not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r} (cpu or cuda)")
    points = expand(cfg, kind, plugins)
    target = target_device(kind, {p.dtype for p in points})
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a run folder")
    keys: set = set()
    if target.here:
        run_dir = out or _results_folder(cfg.name, kind)
        keys = {r.get("key") for r in read_records(run_dir)} if (run_dir / "records.jsonl").is_file() else set()
    planned = plan_points(points, registry, target)
    console.print(f"dry run of {cfg.name}: nothing is measured", highlight=False)
    console.print(plan_text(planned, target, keys, budget_minutes * 60 if budget_minutes else None),
                  markup=False, highlight=False)  # fmt: skip


def _measure(
    cfg,
    registry: Registry,
    device: str,
    plugins: tuple[str, ...],
    run_dir: Path,
    charts: bool,
    executor: tuple[str, dict] = ("local", {}),
    budget_s: float | None = None,
) -> list:
    """Run the sweep of `cfg` into `run_dir` under its lock, on `executor` (name, options); write
    env.json, the summary and charts."""
    from .executors import make_executor
    from .outputs.summary import bench_frame, markdown
    from .runs.points import expand
    from .runs.records import read_env, run_lock, write_atomic, write_env
    from .runs.sweep import run_sweep

    points = expand(cfg, device, plugins)
    console.print(f"{len(points)} points -> {run_dir}")
    # A polite kill stops like Ctrl-C: the running worker is killed, finished points are kept.
    signal.signal(signal.SIGTERM, _interrupt)
    with run_lock(run_dir):
        try:
            records = run_sweep(points, run_dir, make_executor(executor[0], run_dir, executor[1]), console, device,
                                cfg.threads, registry, budget_s)  # fmt: skip
        except KeyboardInterrupt:
            console.print(f"interrupted: finished points are kept in {run_dir}; rerun the same command to resume")
            raise typer.Exit(130) from None
        if not records:
            console.print(f"no point was measured (see {run_dir}/env.json); nothing to summarise")
            return records
        env = read_env(run_dir)
        write_env(run_dir, env | {"baseline": cfg.baseline, "config": cfg.name})
        text = markdown(bench_frame(records), cfg.baseline)
        write_atomic(run_dir / "summary.md", text)
        console.print(text, markup=False, highlight=False)
        if charts:
            from .outputs.report import write_report

            console.print(f"charts and report: {write_report(run_dir)}")
    return records


TASK_HELP = "listops, pathfinder, pathx, mqar, text, retrieval, image."
TaskOpt = Annotated[str, typer.Option(help=TASK_HELP)]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Read the task from files: the unpacked LRA release (lra_release/...), aclImdb, or cifar-10-batches-py."
    ),
]


def _train_setup(preset: str, option: list[str] | None):
    from .training.train import load_train_preset, with_options

    return with_options(load_train_preset(preset), _options(option))


@app.command()
def train(
    task: Annotated[str | None, typer.Option(help=TASK_HELP)] = None,
    variant: Annotated[str | None, typer.Option(help="Attention variant for every layer.")] = None,
    preset: TrainPresetOpt = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = 0,
    out: TaskOutOpt = None,
    scratch: Annotated[
        bool, typer.Option("--scratch", help="Train into a new temporary folder (printed); never resume a run.")
    ] = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    option: OptionOpt = None,
    setting: SetOpt = None,
    plugin: PluginOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the preset's settings per task, with their sources; train nothing.")
    ] = False,
) -> None:
    """Train the task model with one variant; record accuracy, speed and memory (resumable)."""
    from ..tasks import TASKS, DataFormatError
    from .training.train import check_fits, outcome, parse_settings, run_training, with_settings

    setups = _train_setup(preset, option)
    if task is not None and task not in TASKS:
        raise UserError(f"unknown task {task!r} (one of {', '.join(TASKS)})")
    settings = parse_settings(setting)
    if settings and task is None:
        raise UserError("--set changes one task's setup: give --task")
    setups = with_settings(setups, task, settings)
    if dry_run:
        _print_preset(setups, task)
        return
    if task is None or variant is None:
        raise UserError("give --task and --variant (or --dry-run to print the preset)")
    registry = _registry(plugin)
    _check_options(registry, {variant: setups.tasks[task].options.get(variant, {})} if task in setups.tasks else {})
    device = resolve_device(device)
    if task in setups.tasks:  # refused before the run folder is made
        check_fits(registry, variant, setups.tasks[task].model, device)
    if scratch and out:
        raise UserError("give --out or --scratch, not both")
    if scratch:
        out = Path(tempfile.mkdtemp(prefix="attnbench-scratch-"))
    out = out or _results_folder(f"tasks-{setups.name}", device)
    plugins = tuple(str(Path(p).resolve()) for p in plugin or [])
    from .runs.records import run_lock

    try:
        with run_lock(out):
            record = run_training(task, variant, setups, seed, registry, device, out, data_dir, plugins, console,
                                  settings=settings)  # fmt: skip
    except DataFormatError as err:
        raise UserError(str(err)) from None
    if record["status"] != "ok":
        console.print(f"{task} / {variant} / seed {seed}: {record['status']}: {record.get('reason', '')}")
        raise typer.Exit(1)
    console.print(f"{task} / {variant} / seed {seed}: {outcome(record)} -> {out}", highlight=False)


def _print_preset(preset, task: str | None) -> None:
    """A training preset as tables: every setting of each task (or of `task`), its source, and the
    preset's declared departures."""
    from .training.train import preset_rows

    if task is not None and task not in preset.tasks:
        raise UserError(f"preset {preset.name} has no setup for task {task!r} (it has {', '.join(preset.tasks)})")
    console.print(f"[bold]training preset {preset.name}[/]: {preset.description}", highlight=False)
    for name, setup in preset.tasks.items():
        if task is not None and name != task:
            continue
        console.print(f"\n[bold]{name}[/]" + (f"  source: {setup.source}" if setup.source else ""), highlight=False)
        table = Table()
        table.add_column("setting", no_wrap=True)
        table.add_column("value")
        for key, value in preset_rows(setup):
            table.add_row(key, value)
        console.print(table)
    for line in preset.departures:
        console.print(f"departure: {line}", highlight=False)


@app.command("suite")
def suite_command(
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks.")] = "mqar,listops",
    variants: Annotated[
        str, typer.Option(help="Comma-separated variants.")
    ] = "sdpa,linear-elu,performer,sliding-window",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1",
    preset: TrainPresetOpt = "cpu",
    out: TaskOutOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    option: OptionOpt = None,
    plugin: PluginOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    cluster: ClusterOpt = "slurm",
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    time_min: TimeMinOpt = None,
    parallel: ParallelOpt = 1,
) -> None:
    """Train every task x variant x seed, each run in its own process; write the accuracy table."""
    from .core.env import read_checked_env
    from .outputs.report import write_accuracy
    from .runs.records import read_records, run_lock

    registry = _registry(plugin)
    setups = _train_setup(preset, option)
    task_list, variant_list, seed_list = _csv(tasks), _csv(variants), _csv(seeds, int)
    for name in variant_list:
        registry.entry(name)
    missing = [t for t in task_list if t not in setups.tasks]
    if missing:
        raise UserError(f"preset {setups.name} has no setup for task {missing[0]!r} (it has {', '.join(setups.tasks)})")
    device = resolve_device(device)
    out = out or _results_folder(f"tasks-{setups.name}", device)
    name, settings = _executor_choice(executor, address, cluster, partition, account, time_min, parallel)
    if data_dir is not None and not data_dir.is_dir():  # up front, not once per run
        raise UserError(f"--data-dir {data_dir} is not a folder")
    read_checked_env(out, device, name)  # up front: each run would refuse the folder alike
    signal.signal(signal.SIGTERM, _interrupt)
    from ..tasks import RELEASE_TASKS
    from .executors import make_executor
    from .training.train import TrainJob

    plugins = tuple(str(Path(p).resolve()) for p in plugin or [])
    # --data-dir feeds the tasks read from release files; synthetic ones (mqar) are generated as ever.
    data = {t: str(data_dir.resolve()) if data_dir and t in RELEASE_TASKS else None for t in task_list}
    jobs = [TrainJob(t, v, s, preset, device, str(out.resolve()), _options(option), plugins, data[t])
            for t in task_list for v in variant_list for s in seed_list]  # fmt: skip
    with run_lock(out):  # the runs below write into the folder under this lock
        failed = _train_each(jobs, make_executor(name, out, settings), out, parallel)
        if (out / "records.jsonl").exists():
            console.print(write_accuracy(out, read_records(out)), markup=False, highlight=False)
    if failed:
        console.print(f"{failed} of {len(jobs)} runs ended in error, oom or timeout (see above)")
        raise typer.Exit(1)


def _train_each(jobs: list, executor, out: Path, parallel: int = 1) -> int:
    """Each (task, variant, seed) as a job on `executor`, `parallel` at a time (local executor); a failed run
    is reported and skipped. Returns how many failed (a variant that cannot run here is recorded
    `unavailable`, not failed)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from .training.train import outcome

    def start(i: int, job) -> dict:
        console.print(f"[{i}/{len(jobs)}] {job.task} / {job.variant} / seed {job.seed}", highlight=False)
        return executor.train(job)

    def report(i: int, record: dict) -> int:
        prefix = "" if parallel == 1 else f"[{i}/{len(jobs)}] "
        console.print(f"  {prefix}{outcome(record)}", markup=False, highlight=False)
        return record.get("status") not in ("ok", "unavailable")

    failed = 0
    try:
        if parallel == 1:  # in this thread: an interrupt reaches the executor's wait and ends its run
            for i, job in enumerate(jobs, start=1):
                failed += report(i, start(i, job))
            return failed
        # Threads only wait: each run trains in a worker process of its own, which appends its own record.
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = {pool.submit(start, i, job): i for i, job in enumerate(jobs, start=1)}
            pending = set(futures)
            try:
                while pending:
                    # A timeout, so this thread wakes to take a signal the kernel gave another thread.
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in done:
                        failed += report(futures[future], future.result())
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                executor.stop()  # the runs in flight end now, unrecorded
                raise
        return failed
    except KeyboardInterrupt:
        console.print(f"interrupted: finished runs are kept in {out}; rerun the same command to resume")
        raise typer.Exit(130) from None


@app.command()
def study(
    name: Annotated[str, typer.Argument(help="Study: head-count, kv-sharing, scale, head-time, or a YAML file.")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: results/<study>-<device>).")] = None,
    device: DeviceOpt = None,
    plugin: PluginOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    cluster: ClusterOpt = "slurm",
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    time_min: TimeMinOpt = None,
    parallel: ParallelOpt = 1,
) -> None:
    """Train every arm x task x variant x seed of a study (resumable); write its table, chart and README."""
    import shlex

    from .core.env import read_checked_env
    from .executors import make_executor
    from .outputs.study_report import write_study
    from .runs.records import run_lock
    from .training.study import load_study, study_jobs

    plan = load_study(name)
    registry = _registry(plugin)
    device = resolve_device(device)
    out = out or _results_folder(plan.name, device)
    plugins = tuple(str(Path(p).resolve()) for p in plugin or [])
    jobs = study_jobs(plan, registry, device, out, plugins)
    executor_name, settings = _executor_choice(executor, address, cluster, partition, account, time_min, parallel)
    read_checked_env(out, device, executor_name)
    signal.signal(signal.SIGTERM, _interrupt)
    # --parallel is kept: runs sharing the cores make their steps/s, which a remake should match.
    command = shlex.join(["attnbench", "study", name, "--out", str(out), "--device", device]
                         + (["--parallel", str(parallel)] if parallel > 1 else []))  # fmt: skip
    with run_lock(out):
        failed = _train_each(jobs, make_executor(executor_name, out, settings), out, parallel)
        console.print(write_study(plan, out, command), markup=False, highlight=False)
    console.print(f"wrote {out / 'README.md'}")
    if failed:
        console.print(f"{failed} of {len(jobs)} runs ended in error, oom or timeout (see above)")
        raise typer.Exit(1)


RunArg = Annotated[Path, typer.Argument(help="Run folder (holds records.jsonl).")]


@app.command("gpu-check")
def gpu_check(
    budget_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Minutes for the preset's sweep (most informative points first).")
    ] = None,
) -> None:
    """The gpu-marked tests, then the `gpu` preset, into results/gpu-<device>/ (the tests' report beside the
    run); exit 1 if either fails. `make gpu-check` runs it after setting up the GPU kernels."""
    import subprocess

    from .core.devices import host_preset

    if host_preset() != "gpu":
        raise UserError("no GPU visible: torch sees no CUDA device and nvidia-smi lists none; run it on a CUDA machine")
    run_dir = _results_folder("gpu", "cuda")
    run_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"gpu-marked tests -> {run_dir}/gpu-tests.xml")
    report = f"--junitxml={run_dir / 'gpu-tests.xml'}"
    tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", report])
    try:
        bench(preset="gpu", out=run_dir, budget_minutes=budget_minutes)
        bench_failed = False
    except typer.Exit as exit_:
        bench_failed = exit_.exit_code != 0
    if tests.returncode != 0 or bench_failed:
        console.print(f"gpu-check: tests exit {tests.returncode}, bench {'failed' if bench_failed else 'ok'}")
        raise typer.Exit(1)


@app.command()
def heads(
    run: RunArg,
    task: Annotated[str | None, typer.Option(help="Only the runs of this task.")] = None,
    variant: Annotated[str | None, typer.Option(help="Only the runs of this variant.")] = None,
    seed: Annotated[int | None, typer.Option(help="Only the runs of this seed.")] = None,
    mask: Annotated[
        str | None, typer.Option(help="Only print test accuracy with these heads masked, LAYER.HEAD from 1: '1.2,2.4'.")
    ] = None,
    prune_seeds: Annotated[int, typer.Option(min=1, help="Random pruning orders beside the importance order.")] = 5,
    examples: Annotated[int, typer.Option(min=1, help="Validation examples the head statistics read.")] = 256,
    plugin: PluginOpt = None,
) -> None:
    """Head importance, pruning curves and per-head statistics of a run's trained models: records in
    heads.jsonl, charts in heads/, a section in the run README."""
    import shlex

    from ..tasks import DataFormatError
    from .analysis.heads import accuracy, analyse, load_trained, parse_heads
    from .outputs.heads_report import heads_section, link_in_readme, write_heads
    from .runs.heads_records import read_heads, write_heads_record
    from .runs.records import read_records, require_run, run_lock

    chosen = [r for r in read_records(require_run(run)) if r.get("kind") == "train" and r.get("status") == "ok"
              and task in (None, r["task"]) and variant in (None, r["variant"])
              and seed in (None, r["seed"])]  # fmt: skip
    if not chosen:
        raise UserError(f"{run}: no finished training run matches (task {task or 'any'}, variant "
                        f"{variant or 'any'}, seed {'any' if seed is None else seed}); train one with "
                        f"`attnbench train --out {run}`")  # fmt: skip
    registry = _registry(plugin)
    try:
        models = [load_trained(run, r, registry) for r in chosen]
    except DataFormatError as err:
        raise UserError(str(err)) from None
    if mask is not None:
        for trained in models:
            masked = parse_heads(mask, *trained.shape)
            r = trained.record
            console.print(f"{r['task']} / {r['variant']} / seed {r['seed']} ({r['kv_layout'] or 'MHA'}): test accuracy "
                          f"{accuracy(trained, []):.4f} with every head, {accuracy(trained, masked):.4f} with "
                          f"{mask} masked", highlight=False)  # fmt: skip
        return
    from .core.env import provenance

    with run_lock(run):
        for trained in models:
            r = trained.record
            name = f"{r['task']}-{r['variant']}-seed{r['seed']}-{Path(r['model_path']).stem[:8]}"
            console.print(f"analysing {name}: importance, {prune_seeds} random pruning orders, statistics")
            command = ["attnbench", "heads", str(run), "--task", r["task"], "--variant", r["variant"],
                       "--seed", str(r["seed"]), "--prune-seeds", str(prune_seeds),
                       "--examples", str(examples)]  # fmt: skip
            record = {"kind": "heads", "name": name, "task": r["task"], "variant": r["variant"], "seed": r["seed"],
                      "kv_layout": r.get("kv_layout") or "MHA", "model_path": r["model_path"], "train_key": r["key"],
                      "command": shlex.join(command), **provenance(),
                      **analyse(trained, prune_seeds, examples)}  # fmt: skip
            write_heads_record(run, record)
            write_heads(run, record)
            half = record["half"]
            console.print(f"  {half['heads_masked']} least important heads masked: test accuracy {half['full']:.4f} -> "
                          f"{half['importance']:.4f}; a random {half['heads_masked']}: {half['random_mean']:.4f} "
                          f"(mean of {prune_seeds}, {half['random_min']:.4f}-{half['random_max']:.4f})",
                          highlight=False)  # fmt: skip
        readme = link_in_readme(run, heads_section(run, read_heads(run)))
    console.print(f"wrote {run / 'heads.jsonl'}, charts in {run / 'heads'}, linked from {readme}")


@app.command()
def plot(
    run: RunArg,
    baseline: Annotated[str | None, typer.Option(help="Variant the speedup chart is against.")] = None,
) -> None:
    """Draw every chart of a run from its records alone (PNG and SVG, into the run folder)."""
    from .outputs.plots import plot_run
    from .runs.records import require_run

    paths = plot_run(require_run(run), baseline)
    console.print(f"{len(paths)} files written to {run}")


@app.command()
def report(runs: Annotated[list[Path], typer.Argument(help="Run folders.")]) -> None:
    """Write README.md (environment, tables, charts) into each run folder."""
    from .outputs.report import write_report

    for run in runs:
        console.print(f"wrote {write_report(run)}")


@app.command()
def site(
    runs: Annotated[
        list[Path] | None, typer.Argument(help="Run folders (default: every run under results/).", show_default=False)
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder of the site: new, empty, or a site attnbench wrote (replaced whole, files added "
            "to it included)."
        ),
    ] = Path("site"),
) -> None:
    """Write a static site of runs: index, a page per run, a page across runs; interactive charts, no server."""
    from .site.build import build_site
    from .site.runs import find_runs, load_runs

    index = build_site(load_runs(runs or find_runs(Path("results"))), out)
    console.print(f"wrote {index} (open it in a browser; it needs no server)")


@app.command()
def rerun(
    run: RunArg,
    where: Annotated[
        str | None, typer.Option(help="Only points matching FIELD=VALUE pairs, e.g. variant=chunked,seq=4096.")
    ] = None,
) -> None:
    """Re-measure a run's points into a fresh folder; print recorded vs new; exit 1 beyond the run's spread."""
    from .executors.local import LocalExecutor
    from .outputs.compare import compare_records
    from .runs.records import read_env, read_records, require_run, run_lock
    from .runs.rerun import parse_where, scratch_folder, select
    from .runs.sweep import run_sweep

    conditions = parse_where(where)
    recorded = read_records(require_run(run))
    points = select(recorded, conditions)
    if not points:
        raise UserError(f"{run}: no measured (ok) bench point matches {where or 'anything'}")
    devices = {p.device for p in points}
    for device in devices:
        resolve_device(device)  # a CUDA run cannot be remeasured where torch sees no GPU
    here, there = env_device_name(devices.pop()), read_env(run).get("device_name")
    if there and here != there:
        console.print(f"note: {run} was measured on {there}, this is {here}: the ratios compare machines")
    registry = _registry(sorted({path for p in points for path in p.plugins}))
    scratch = scratch_folder()
    console.print(f"re-measuring {len(points)} points of {run} into {scratch}")
    signal.signal(signal.SIGTERM, _interrupt)
    with run_lock(scratch):
        try:
            run_sweep(points, scratch, LocalExecutor(), console, points[0].device, points[0].threads, registry)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    keys = {p.key() for p in points}
    result = compare_records([r for r in recorded if r.get("key") in keys], read_records(scratch))
    text, _ = result.report("recorded", "new")
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if result.moved:
        names = ", ".join(sorted({p.label for p in result.moved}))
        console.print(f"NOT REPRODUCED: {len(result.moved)} of {len(result.points)} points moved beyond the run's "
                      f"spread ({names})")  # fmt: skip
        raise typer.Exit(1)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="Reference run folder.")],
    run_b: Annotated[Path, typer.Argument(help="Run folder to judge against it.")],
    threshold: Annotated[
        float | None,
        typer.Option(help="Least relative change of the median time that counts (by default 10% on CPU, 5% on CUDA)."),
    ] = None,
    memory_threshold: Annotated[
        float, typer.Option(help="Least relative change of peak memory that counts (beyond its spread).")
    ] = 0.10,
    alpha: Annotated[float, typer.Option(help="Significance level of the U test over the repeats.")] = 0.05,
) -> None:
    """A verdict per point of B against A (U test over the repeats, as benchstat); exit 1 if anything regressed."""
    from .outputs.compare import compare_runs, render

    result = compare_runs(run_a, run_b, threshold, memory_threshold, alpha)
    if not result.points:
        raise UserError(f"no points in common between {run_a} and {run_b}")
    text, code = render(result, str(run_a), str(run_b))
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if code:
        raise typer.Exit(code)


@app.command()
def heatmap(
    task: TaskOpt,
    variant: Annotated[str, typer.Option(help="Attention variant.")],
    preset: TrainPresetOpt = "tiny",
    seed: Annotated[int, typer.Option(help="Seed (of the trained run, or of a fresh model).")] = 0,
    run: Annotated[Path | None, typer.Option(help="Run folder of a trained model (`attnbench train`).")] = None,
    example: Annotated[int, typer.Option(help="Index of the test example shown.")] = 0,
    data_dir: DataDirOpt = None,
    option: OptionOpt = None,
    plugin: PluginOpt = None,
    out: Annotated[Path, typer.Option(help="PNG file to write (an SVG is written beside it).")] = Path("heatmap.png"),
) -> None:
    """Draw the attention weights of every head, per layer, for one input."""
    import hashlib

    import torch

    from ..tasks import DataFormatError, load_task
    from .outputs.heatmap import save_heatmap
    from .training.model import TaskModel
    from .training.train import run_key

    registry = _registry(plugin)
    setups = _train_setup(preset, option)
    if task not in setups.tasks:
        raise UserError(f"preset {setups.name} has no setup for task {task!r}")
    setup = setups.tasks[task]
    registry.entry(variant)
    try:
        data = load_task(task, setup.params, data_dir)
    except DataFormatError as err:
        raise UserError(str(err)) from None
    if not 0 <= example < len(data.test):
        raise UserError(f"--example must be in 0..{len(data.test) - 1}")
    torch.manual_seed(seed)
    model = TaskModel(data.kind, data.vocab_size, data.num_classes, data.max_len, setup.model, registry, variant,
                      setup.options.get(variant))  # fmt: skip
    state = "untrained"
    if run is not None:
        digest = hashlib.sha1(run_key(task, variant, seed, setups.name, setup, data_dir).encode()).hexdigest()[:16]
        weights = run / "models" / f"{digest}.pt"
        if not weights.exists():
            raise UserError(f"no trained weights for {task} / {variant} / seed {seed} / {setups.name} in {run}/models")
        model.load_state_dict(torch.load(weights, weights_only=True))
        state = f"trained ({run.name})"
    split = data.test
    tokens = split.tokens[example : example + 1]
    tokens2 = split.tokens2[example : example + 1] if split.tokens2 is not None else None
    label = split.labels[example]
    answer = f"label {int(label)}" if label.dim() == 0 else f"{int((label != -100).sum())} positions asked"
    title = f"{variant} on {task}, test example {example} ({answer}), {state} model"
    try:
        path = save_heatmap(model, tokens, tokens2, title, out)
    except ValueError as err:
        raise UserError(str(err)) from None
    console.print(f"wrote {path}")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"attnbench: warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors, and OS errors on a path, end in one line on stderr and exit code 2."""
    warnings.formatwarning = _one_line_warning
    try:
        app(args=argv, prog_name="attnbench")
    except UserError as err:
        print(f"attnbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.filename is None:
            raise
        print(f"attnbench: error: {err.filename}: {err.strerror or err}", file=sys.stderr)
        sys.exit(2)
