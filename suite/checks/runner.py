"""`attnbench check` over variants and dtypes: each variant's checks in each dtype it runs here, or one
`skip` saying why it cannot run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.devices import dtype_name, parse_dtype
from ..core.registry import Registry, load_registry
from .checker import Checker, CheckResult, default_dtypes


def declared_dtypes(registry: Registry, name: str, device: str) -> list[torch.dtype]:
    """The dtypes `check` tries for `name` by default; float32 for a variant that cannot run here (reported
    once as unavailable, with the reason)."""
    if registry.unavailable_reason(name, device) is not None:
        return [torch.float32]
    return default_dtypes(registry.get(name), device)


def check_job(name: str, dtype: torch.dtype, device: str, seed: int, options: dict, plugins: tuple[str, ...]) -> dict:
    """The checks of variant `name` in `dtype` as plain data: what a worker is handed to run them."""
    return {
        "variant": name,
        "dtype": dtype_name(dtype),
        "device": device,
        "seed": seed,
        "options": options,
        "plugins": list(plugins),
    }


def run_check_job(job: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
    """Run a `check_job` in this process, sending `{"running": check}` as each check starts and its result as it
    completes, then `{"done": true}`: the body of a check worker (a variant's code may crash, hang or exit
    it; the caller names the check that was running)."""
    registry = load_registry(job["plugins"])
    checker = Checker(
        registry.get(job["variant"]), job["device"], parse_dtype(job["dtype"]), job["seed"], job["options"]
    )
    for result in checker.results(lambda name: send({"running": name})):
        send(result.__dict__)
    send({"done": True})


def check_plan(
    registry: Registry, names: list[str], device: str, dtypes: list[torch.dtype]
) -> Iterator[tuple[str, torch.dtype, str | None]]:
    """Each variant and dtype to check (`dtypes`, or each variant's own), with why it cannot run here (None
    when it can)."""
    for name in names:
        for dtype in dtypes or declared_dtypes(registry, name, device):
            yield name, dtype, registry.unavailable_reason(name, device, dtype)


# How the summary line names each status.
SUMMARY_WORDS = {"pass": "passed", "fail": "failed", "skip": "skipped", "report": "reported"}


@dataclass
class Tally:
    """A `check` run's results: a record per result (variant, dtype, check, status, detail), counts per status."""

    records: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUMMARY_WORDS, 0))

    def add(self, variant: str, dtype: torch.dtype, result: CheckResult) -> None:
        """One result; a variant that cannot run here is one `available` result, skipped with the reason."""
        self.counts[result.status] += 1
        self.records.append({"variant": variant, "dtype": dtype_name(dtype), **result.__dict__})

    def summary(self) -> str:
        """'20 passed, 0 failed, 1 skipped, 0 reported'."""
        return ", ".join(f"{n} {SUMMARY_WORDS[status]}" for status, n in self.counts.items())
