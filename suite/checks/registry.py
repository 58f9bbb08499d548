"""The registry of conformance checks: a check is a function registered where it is written.

Each module of this package holds one group of checks (values, causality, shapes, padding,
gradients, hygiene) and registers them with ``@check(name, order=...)``; every module here is
imported once, the first time the checks are asked for, the way variants/ is scanned. A family's
own checks (a gated linear family's gates, say) are a new module here, registered the same way,
with ``applies`` saying which variants they concern: no central list is edited.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...variants.contract import VariantInfo

# A check takes the Checker and returns the line it passed with (or raises Skipped, CheckFailed), or a
# (status, detail) pair for a check that reports instead of judging.
CheckFn = Callable[[Any], "str | tuple[str, str]"]
# Which variants a check concerns, from what they declare.
Applies = Callable[[VariantInfo], bool]

_REGISTERED: dict[str, Check] = {}


@dataclass(frozen=True)
class Check:
    """One registered check: its name, where it runs among the others, and which variants it concerns."""

    name: str
    run: CheckFn
    order: float
    applies: Applies


def check(
    name: str, order: float, applies: Callable[[VariantInfo], bool] | None = None
) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as check `name`; checks run by `order` (the shipped ones are 10 apart,
    so one can go between), for the variants `applies` accepts (default: all)."""

    def register(fn: CheckFn) -> CheckFn:
        if name in _REGISTERED and _REGISTERED[name].run is not fn:
            raise RuntimeError(f"check {name!r} registered twice: {_REGISTERED[name].run.__module__}, {fn.__module__}")
        _REGISTERED[name] = Check(name, fn, order, applies or (lambda info: True))
        return fn

    return register


@functools.cache
def _discover() -> None:
    """Import every module of this package once, so each registers its checks."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")


def all_checks() -> list[Check]:
    """Every registered check, in running order."""
    _discover()
    return sorted(_REGISTERED.values(), key=lambda c: (c.order, c.name))


def checks_for(info: VariantInfo) -> list[Check]:
    """The checks that concern a variant declaring `info`, in running order."""
    return [c for c in all_checks() if c.applies(info)]
