"""A point: one variant at one shape, dtype, mask and mode, as plain serialisable data.

Points are what the sweep hands to an executor. They hold only JSON-able values, so the same
point can run in a local worker process or on a cluster engine (Ray, SLURM via submitit), and
every record can carry the command that reproduces its point alone. Its fields are declared once,
in :class:`PointFields`: a bench record (runs/schema.py) is those fields plus what was measured.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..core.config import Mode

# The fields that say which measurement a point is; the rest say how it is measured.
IDENTITY = (
    "variant",
    "batch",
    "heads",
    "kv_heads",
    "q_len",
    "seq",
    "head_dim",
    "dtype",
    "causal",
    "mode",
    "device",
    "options",
)
# Identity fields added later: in a point's key only when not the default, so older runs resume.
RAGGED_DEFAULTS = {"lengths": "fixed", "layout": "padded"}


# The fields a point (or a record) can be selected by.
WHERE_FIELDS = (*IDENTITY, *RAGGED_DEFAULTS)


def identity_of(fields: dict[str, Any]) -> dict[str, Any]:
    """What a point or record measures: the IDENTITY fields, and the ragged ones where not the default."""
    identity = {f: fields.get(f) for f in IDENTITY}
    for f, default in RAGGED_DEFAULTS.items():
        if fields.get(f, default) != default:
            identity[f] = fields[f]
    return identity


class PointFields(BaseModel):
    """What a point measures and how it is measured: the fields a point and its record share."""

    model_config = ConfigDict(extra="forbid")

    variant: str
    batch: int
    heads: int
    kv_heads: int
    q_len: int
    seq: int
    head_dim: int
    dtype: str
    causal: bool
    mode: Mode
    device: str
    options: dict[str, Any] = {}
    lengths: str = "fixed"  # the batch's sequence lengths (suite/core/lengths.py)
    layout: Literal["padded", "packed"] = "padded"  # padded (B, N) with key lengths, or packed end to end
    plugins: tuple[str, ...] = ()
    threads: int | None = None
    warmup: int = 2
    repeats: int = 20  # timed calls at most
    budget_s: float = 2.0
    timeout_s: float = 300.0
    reference_max_bytes: int = 4 * 2**30


class Point(PointFields):
    """One measurement to make."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """The point as JSON-able data (what a worker is handed)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Point:
        """The point `to_dict` gave."""
        return cls.model_validate(data)

    def key(self) -> str:
        """Identity of the measurement, for resuming: equal keys are the same point."""
        return json.dumps(identity_of(self.to_dict()), sort_keys=True)

    @property
    def ragged(self) -> bool:
        """Whether the batch is anything but B equal sequences of length N, padded."""
        return (self.lengths, self.layout) != tuple(RAGGED_DEFAULTS.values())

    def label(self) -> str:
        """Short human-readable description."""
        heads = f"H={self.heads}" if self.kv_heads == self.heads else f"H={self.heads}/{self.kv_heads}"
        n = f"N={self.seq}" if self.q_len == self.seq else f"Nq={self.q_len},N={self.seq}"
        return (
            f"{self.variant} {n} B={self.batch} {heads} D={self.head_dim} {self.dtype}"
            f"{' causal' if self.causal else ''} {self.mode}"
            + (f" lengths={self.lengths} {self.layout}" if self.ragged else "")
        )

    def command(self) -> str:
        """The `attnbench bench` command that measures this point alone, into a fresh scratch folder:
        never into the run it came from, which it leaves untouched."""
        args = [
            "attnbench", "bench",
            "--variants", self.variant,
            "--seq", str(self.seq),
            "--batch", str(self.batch),
            "--heads", str(self.heads),
            "--kv-heads", str(self.kv_heads),
            "--head-dim", str(self.head_dim),
            "--dtype", self.dtype,
            "--causal" if self.causal else "--no-causal",
            "--mode", self.mode,
            "--lengths", self.lengths,
            "--layout", self.layout,
            "--device", self.device,
            "--warmup", str(self.warmup),
            "--repeats", str(self.repeats),
            "--budget", str(self.budget_s),
            "--timeout", str(self.timeout_s),
        ]  # fmt: skip
        if not self.ragged:  # a ragged batch is self-attention: Nq = N
            args[6:6] = ["--q-len", str(self.q_len)]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        for key, value in sorted(self.options.items()):
            args += ["--option", f"{self.variant}.{key}={json.dumps(value)}"]
        for plugin in self.plugins:
            args += ["--plugin", plugin]
        args += ["--scratch"]
        return shlex.join(args)
