"""`attnbench check` over variants and dtypes: each variant's checks in each dtype it runs here, or one
`skip` saying why it cannot run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.devices import dtype_name
from ..core.registry import Registry
from .checker import Checker, CheckResult, default_dtypes


def declared_dtypes(registry: Registry, name: str, device: str) -> list[torch.dtype]:
    """The dtypes `check` tries for `name` by default; float32 for a variant that cannot run here (reported
    once as unavailable, with the reason)."""
    if registry.unavailable_reason(name, device) is not None:
        return [torch.float32]
    return default_dtypes(registry.get(name), device)


def check_variants(
    registry: Registry,
    names: list[str],
    device: str,
    dtypes: list[torch.dtype],
    seed: int,
    options: dict[str, dict[str, Any]],
) -> Iterator[tuple[str, torch.dtype, str | None, Iterator[CheckResult]]]:
    """Per variant and dtype (`dtypes`, or each variant's own): why it cannot run here (None when it can) and
    its checks' results, run as they are read (none when it cannot run)."""
    for name in names:
        for dtype in dtypes or declared_dtypes(registry, name, device):
            reason = registry.unavailable_reason(name, device, dtype)
            if reason is not None:
                yield name, dtype, reason, iter(())
            else:
                yield name, dtype, None, Checker(registry.get(name), device, dtype, seed, options.get(name)).results()


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
