"""Bench configurations: YAML or TOML files (and the shipped presets), validated at load.

A config holds run-wide settings and one or more sweeps; each sweep is a grid whose cartesian
product is the list of points. A field that is wrong is named in one line:
``config cpu.yaml: sweeps.0.seq.1: Input should be greater than 0``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError, first_problem
from .lengths import parse_lengths

Mode = Literal["fwd", "bwd", "fwd_bwd"]


class Sweep(BaseModel):
    """A grid of points: every combination of the listed values."""

    model_config = ConfigDict(extra="forbid")

    variants: list[str] = Field(min_length=1)
    seq: list[int] = Field(min_length=1, description="key/value lengths N")
    q_len: list[int] | None = Field(None, description="query lengths (default: equal to seq)")
    batch: list[int] = [1]
    heads: list[int] = [8]
    kv_heads: list[int] | None = Field(None, description="K/V heads (default: equal to heads)")
    head_dim: list[int] | None = Field(None, description="head dim D (or give width)")
    width: int | None = Field(None, gt=0, description="model width: head_dim = width / heads")
    # "auto": bfloat16 on a GPU, float32 on a CPU (the dtype each would train in).
    dtype: list[Literal["auto", "float32", "float16", "bfloat16", "float64"]] = ["float32"]
    causal: list[bool] = [False]
    mode: list[Mode] = ["fwd"]
    lengths: list[str] = Field(
        ["fixed"], min_length=1, description="sequence lengths: fixed, uniform:LO:HI, list:L1,L2,..."
    )
    # padded: (B, H, N, D) with each sequence's key length; packed: (1, H, sum of lengths, D) end to end.
    layout: list[Literal["padded", "packed"]] = Field(["padded"], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Sweep:
        specs = {text: parse_lengths(text) for text in self.lengths}
        for text, spec in specs.items():
            if spec.kind == "list" and max(spec.values) > min(self.seq):
                raise ValueError(f"lengths {text!r}: {max(spec.values)} is longer than seq {min(self.seq)}")
            if spec.kind == "list" and len(spec.values) > min(self.batch):
                raise ValueError(f"lengths {text!r}: {len(spec.values)} lengths for a batch of {min(self.batch)}")
        # One spelling per distribution: uniform:0.250:1.0 is the point uniform:0.25:1 is.
        self.lengths = list(dict.fromkeys(str(spec) for spec in specs.values()))
        if self.q_len is not None and self.lengths + self.layout != ["fixed", "padded"]:
            raise ValueError("ragged or packed batches are self-attention: give lengths/layout or q_len, not both")
        for name in ("seq", "q_len", "batch", "heads", "kv_heads", "head_dim"):
            values = getattr(self, name) or []
            bad = [v for v in values if v <= 0]
            if bad:
                raise ValueError(f"{name} must be positive, got {bad[0]}")
        if self.head_dim is None and self.width is None:
            self.head_dim = [64]
        if self.head_dim is not None and self.width is not None:
            raise ValueError("give head_dim or width, not both")
        if self.width is not None:
            odd = [h for h in self.heads if self.width % h]
            if odd:
                raise ValueError(f"width {self.width} is not divisible by {odd[0]} heads")
        for h in self.heads:
            for kv in self.kv_heads or []:
                if h % kv:
                    raise ValueError(f"heads {h} is not a multiple of kv_heads {kv}")
        return self


class BenchConfig(BaseModel):
    """A whole bench run: its sweeps and how each point is measured."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    description: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0, description="CPU threads (default: all cores)")
    warmup: int = Field(2, ge=1, description="calls before timing; the first is recorded apart")
    repeats: int = Field(20, gt=0, description="timed calls at most")
    budget_s: float = Field(2.0, gt=0, description="time budget for the timed calls of one point")
    timeout_s: float = Field(300.0, gt=0, description="a point running longer is killed")
    baseline: str | None = Field("sdpa", description="variant the summary's speedups are against")
    reference_max_bytes: int = Field(4 * 2**30, ge=0, description="skip the float64 error above this")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-variant options")
    sweeps: list[Sweep] = Field(min_length=1)
    # Sweep fields replaced on one device, in every sweep: the same preset at sizes that device can
    # run (the decode preset's 128K-key caches become 16K on a CPU).
    device_overrides: dict[Literal["cpu", "cuda"], dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_overrides(self) -> BenchConfig:
        for device, fields in self.device_overrides.items():
            unknown = sorted(set(fields) - set(Sweep.model_fields))
            if unknown:
                raise ValueError(f"device_overrides.{device}: unknown sweep field {unknown[0]!r}")
            try:
                self.sweeps_for(device)
            except ValidationError as err:
                raise ValueError(f"device_overrides.{device}: {first_problem(err)}") from None
        return self

    def variant_names(self) -> list[str]:
        """Every variant the config names, on any device, each once."""
        names = (v for device in ("cpu", "cuda") for sweep in self.sweeps_for(device) for v in sweep.variants)
        return list(dict.fromkeys(names))

    def sweeps_for(self, device: str) -> list[Sweep]:
        """The sweeps as run on `device`: each with that device's overrides applied."""
        fields = self.device_overrides.get(device, {})
        return [Sweep.model_validate(s.model_dump() | fields) if fields else s for s in self.sweeps]


PRESETS = resources.files("attnbench.suite") / "presets"


def preset_names() -> list[str]:
    """The shipped presets."""
    return sorted(p.name.removesuffix(".yaml") for p in PRESETS.iterdir() if p.name.endswith(".yaml"))


def _parse(data: bytes, source: str) -> Any:
    """A config file's bytes as YAML or TOML (by its suffix); one line naming the file when they are not."""
    try:
        if source.endswith(".toml"):
            return tomllib.loads(data.decode("utf-8"))
        return yaml.safe_load(data)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        first = " ".join(str(err).split())
        kind = "TOML" if source.endswith(".toml") else "YAML"
        raise UserError(f"config {source}: not valid {kind}: {first}") from None


def validate(data: Any, source: str) -> BenchConfig:
    """A BenchConfig from parsed data, or a one-line error naming the first bad field."""
    if not isinstance(data, dict):
        raise UserError(f"config {source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(f"config {source}: {first_problem(err)}") from None


def load_config(path: str | Path) -> BenchConfig:
    """Load and validate a YAML or TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    return validate(_parse(path.read_bytes(), str(path)), path.name)


def load_preset(name: str) -> BenchConfig:
    """Load a shipped preset by name (cpu, gpu, gpt2-small, ...)."""
    resource = PRESETS / f"{name}.yaml"
    if not resource.is_file():
        raise UserError(f"unknown preset {name!r} (one of {', '.join(preset_names())})")
    return validate(_parse(resource.read_bytes(), resource.name), resource.name)


def parse_variant_options(pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    """['chunked.block_size=64'] -> {'chunked': {'block_size': 64}} (values read as YAML scalars)."""
    options: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        target, sep, value = pair.partition("=")
        variant, dot, key = target.partition(".")
        if not (sep and dot and variant and key):
            raise UserError(f"--option {pair!r}: expected VARIANT.KEY=VALUE, e.g. chunked.block_size=64")
        options.setdefault(variant, {})[key] = yaml.safe_load(value)
    return options


def with_command_line(
    base: BenchConfig | None, grid: dict[str, Any], settings: dict[str, Any], options: dict[str, dict], source: str
) -> BenchConfig:
    """A preset or config file (`base`), or none, with what the command line sets: sweep fields (`grid`, in
    every sweep and on every device), run settings and variant options; validated as one config."""
    grid = {k: v for k, v in grid.items() if v is not None}
    if "width" in grid:  # the command line's width or head dim replaces the config's other one
        grid["head_dim"] = None
    elif "head_dim" in grid:
        grid["width"] = None
    if base is None:
        if "variants" not in grid or "seq" not in grid:
            raise UserError("give --preset, --config, or at least --variants and --seq")
        data: dict[str, Any] = {"sweeps": [grid]}
    else:
        data = base.model_dump()
        data["sweeps"] = [sweep | grid for sweep in data["sweeps"]]
        overrides = data["device_overrides"].items()
        data["device_overrides"] = {d: {k: v for k, v in f.items() if k not in grid} for d, f in overrides}
    data |= {k: v for k, v in settings.items() if v is not None}
    data["options"] = data.get("options", {}) | options
    return validate(data, source)
