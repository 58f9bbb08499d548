"""The record schemas: one for bench points, one for training runs, each with a version.

Every command writes records through :func:`dump` and reads them through :func:`load`, so a
record that does not fit its schema is caught where it is written, and one from another version
is read (older: upgraded field by field) or refused with one line (newer). A record names the code
that made it: the commit (and whether the tree had changes), torch and the variant's packages,
the variant's source, the executor and host, and for bench points the clock and memory method.

Version history:
- 0: records before the schema (no ``schema_version``); ``repeats`` held the number of timed calls.
- 1: ``schema_version``, ``code``, ``source``, ``versions``, ``executor``, ``host``, ``clock``,
  ``memory_method``, ``times_ms``, ``timed_calls``, ``tolerance``, ``correct``, ``sdpa_backend``;
  later (optional, so still version 1): ``machine_ms``; ``lengths`` and ``layout`` (defaults: the
  equal-length padded batch every earlier record measured), ``seq_lengths``, ``real_tokens``,
  ``padding_waste``; ``source.departures`` (what the variant declared it does differently from
  its paper or original code; absent: none recorded); the roofline: ``io_bytes``,
  ``bandwidth_gbs_reached``, ``bandwidth_fraction``, ``intensity`` (measure/roofline.py); ``wall_s``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..core.errors import first_problem
from ..measure.point import PointFields

SCHEMA_VERSION = 1
# diverged: a training run whose loss stopped being finite (with the step, in its reason).
Status = Literal["ok", "oom", "error", "timeout", "unsupported", "unavailable", "diverged"]


class SchemaError(ValueError):
    """A record that does not fit its schema, or comes from a newer one."""


class Code(BaseModel):
    """The attnbench checkout that made a record."""

    model_config = ConfigDict(extra="forbid")

    commit: str | None = None
    dirty: bool | None = None
    version: str | None = None


class Source(BaseModel):
    """Where a variant's code came from."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["built-in", "entry-point", "plugin"]
    module: str | None = None
    qualname: str | None = None
    path: str | None = None  # plugin file
    distribution: str | None = None  # installed package of an entry point
    version: str | None = None
    packages: dict[str, str | None] = {}  # the optional packages it runs on, with their versions
    departures: list[str] = []  # what the variant declared it does differently from its sources


class _Record(BaseModel):
    """What every record holds: its run, identity, command, status and the code that made it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    key: str
    command: str
    date: str
    status: Status
    reason: str | None = None
    peak_bytes: int | None = None
    # Provenance (None in version-0 records).
    code: Code | None = None
    source: Source | None = None
    versions: dict[str, str | None] | None = None
    executor: str | None = None
    host: str | None = None


class BenchRecord(_Record, PointFields):
    """One measured point: the point's fields (measure/point.py), the numbers, and the code that made them."""

    kind: Literal["bench"] = "bench"
    repeats: int | None = None  # version-0 records kept the calls made, not the count asked for (timed_calls)
    seq_lengths: list[int] | None = None  # ragged or packed: each sequence's length
    real_tokens: int | None = None
    # Share of the padded batch's attention pairs (all, or the causal ones) that involve padding; the
    # batch's, not the variant's: a sparse pattern's own kept pairs are not used.
    padding_waste: float | None = None
    family: str | None = None
    exact: bool | None = None
    first_call_s: float | None = None
    time_ms: float | None = None
    time_p20_ms: float | None = None
    time_p80_ms: float | None = None
    timed_calls: int | None = None
    times_ms: list[float] | None = None
    machine_ms: list[float] | None = None  # CPU: the machine probe timed just before each call
    peak_bytes_samples: list[int] | None = None
    flops: float | None = None
    tflops: float | None = None
    peak_fraction: float | None = None  # of the run's measured matmul peak for the dtype
    io_bytes: int | None = None  # q, k, v, output (and gradients) moved once
    bandwidth_gbs_reached: float | None = None  # io_bytes over the median time
    bandwidth_fraction: float | None = None  # of the run's measured memory bandwidth
    intensity: float | None = None  # FLOPs per io byte
    wall_s: float | None = None  # the whole point as the sweep saw it: worker start to result
    error: float | None = None
    error_vs_softmax: float | None = None
    error_note: str | None = None
    error_queries: int | None = None  # long N: the queries whose float64 definition was checked, in blocks
    kept_fraction: float | None = None  # sparse: (query, key) pairs attended over all Nq x Nk
    tolerance: float | None = None
    correct: bool | None = None  # error against the variant's own definition within its tolerance
    sdpa_backend: str | None = None
    state_bytes: int | None = None  # a recurrence's state, one layer (what decoding carries instead of a cache)
    kv_cache_bytes: int | None = None  # beside it: the K/V cache one attention layer keeps at the same N
    kept_cache_bytes: int | None = None  # a KV-cache policy's cache after its cut, one layer (K and V)
    clock: str | None = None
    memory_method: str | None = None


class TrainRecord(_Record):
    """One training run: task, variant, seed, setup, and its accuracy, speed and memory."""

    kind: Literal["train"] = "train"
    variant: str
    device: str
    options: dict[str, Any] = {}
    plugins: list[str] = []
    threads: int | None = None
    task: str
    seed: int
    preset: str
    data: str
    task_params: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    max_len: int | None = None  # tokens per example after padding
    split_sizes: dict[str, int] | None = None  # examples per split (train, val, test)
    padding_masked: bool | None = None  # padded tasks: whether attention skipped the padding (key lengths)
    steps: int | None = None
    stopped_early: bool | None = None
    best_step: int | None = None
    final_val_acc: float | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    majority_test_acc: float | None = None
    # What the *_acc fields are (tasks/metrics.py): accuracy, or MAD's macro accuracy; absent: accuracy.
    metric: Literal["accuracy", "macro-accuracy"] | None = None
    train_s: float | None = None
    steps_per_s: float | None = None
    tokens_per_s: float | None = None
    curve: list[dict[str, float]] | None = None
    model_path: str | None = None
    wall_s: float | None = None
    settings: dict[str, dict[str, Any]] | None = None  # the --set overrides of the preset
    kv_layout: str | None = None  # MHA, GQA-g, MQA or MLA-r
    kv_cache_values_per_token: int | None = None  # numbers an inference cache keeps per token, all layers
    state_values: int | None = None  # a recurrent variant's inference state, all layers, at any length
    mixers: list[str] | None = None  # a hybrid: the variant of each layer (model.layers repeated to the depth)
    layer_options: dict[str, dict[str, Any]] | None = None  # a hybrid: its other mixers' options
    layer_sources: dict[str, Any] | None = None  # a hybrid: its other mixers' sources
    parameters: int | None = None  # trainable numbers in the model
    # Per mixer, its attention layer's linear maps (q, kv, out, and the gate layer's that make a gated or
    # selecting variant's extra inputs), 'name: in -> out'.
    projections: dict[str, list[str]] | None = None


SCHEMAS: dict[str, type[_Record]] = {"bench": BenchRecord, "train": TrainRecord}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A version-0 record in version-1 field names (nothing is invented: new fields stay unset)."""
    data = dict(data)
    data["schema_version"] = 0
    if data.get("kind", "bench") == "bench" and "repeats" in data:
        data["timed_calls"] = data.pop("repeats")  # version 0 overwrote the asked count with the made one
    return data


def load(data: Any) -> dict[str, Any]:
    """A record as read from a file, validated against its kind's schema; SchemaError if it does not fit."""
    if not isinstance(data, dict):
        raise SchemaError("not a JSON object")
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaError(f"record schema {version!r} is newer than this attnbench reads ({SCHEMA_VERSION})")
    if version == 0:
        data = _upgrade(data)
    schema = SCHEMAS.get(data.get("kind", "bench"))
    if schema is None:
        raise SchemaError(f"unknown record kind {data.get('kind')!r}")
    try:
        return schema.model_validate(data).model_dump()
    except ValidationError as err:
        raise SchemaError(first_problem(err)) from None


def dump(data: dict[str, Any]) -> dict[str, Any]:
    """A new record, validated against the current schema before it is written."""
    schema = SCHEMAS[data.get("kind", "bench")]
    try:
        return schema.model_validate(data | {"schema_version": SCHEMA_VERSION}).model_dump(exclude_none=True)
    except ValidationError as err:
        kind = data.get("kind", "bench")
        raise SchemaError(f"{kind} record does not fit its schema: {first_problem(err)}") from None
