"""The registry of attention variants: built-ins, installed plugins and plugin files, by name.

Three sources, in order: the built-ins found in ``variants/`` (``attnbench.variants.builtin``); classes named by
the entry-point group ``attnbench.variants`` of installed packages; and ``--plugin path.py`` files.
Nothing is imported until a variant is asked for, and a source that fails to import makes only
its own variants unavailable (with the error as the reason); the rest of the registry works.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version
from pathlib import Path
from typing import Any, Literal

import torch

from ...variants import builtin, defined_variants
from ...variants.contract import AttentionSpec, Variant
from .config import BenchConfig
from .devices import dtype_name
from .errors import UserError, one_line

ENTRY_POINT_GROUP = "attnbench.variants"


@functools.cache
def _distribution_version(name: str) -> str | None:
    """Version of an installed distribution, or of the distribution that provides import package `name`."""
    for dist in [name, *packages_distributions().get(name, [])]:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def _variant_classes(module: object) -> list[type[Variant]]:
    """Variant subclasses defined in `module` (not merely imported into it) with their own info."""
    return defined_variants(module)


def load_plugin_file(path: str | Path) -> list[type[Variant]]:
    """Import a plugin file and return the variant classes it defines."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"plugin file not found: {path}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = f"attnbench_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise UserError(f"plugin {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise UserError(f"plugin {path} failed to import: {one_line(err)}") from None
    classes = _variant_classes(module)
    if not classes:
        raise UserError(
            f"plugin {path} defines no variant (a subclass of attnbench.variants.contract.Variant with info)"
        )
    return classes


@dataclass
class Entry:
    """Where a variant comes from; its class is imported on first use."""

    name: str
    origin: str
    target: str | type[Variant]
    error: str | None = None
    kind: Literal["built-in", "entry-point", "plugin"] = "built-in"
    path: str | None = None  # the plugin file
    distribution: str | None = None  # the installed package of an entry point
    _cls: type[Variant] | None = field(default=None, repr=False)

    def source(self) -> dict[str, Any]:
        """Where the variant's code is, for records: kind, module and class, file or package and version."""
        cls = self.load()
        packages = {name: _distribution_version(name) for name in cls.info.packages}
        return {
            "kind": self.kind,
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "path": self.path,
            "distribution": self.distribution,
            "version": _distribution_version(self.distribution) if self.distribution else None,
            "packages": packages,
            "departures": list(cls.info.departures),
        }

    def load(self) -> type[Variant]:
        if self._cls is not None:
            return self._cls
        if self.error is not None:
            raise UserError(f"variant {self.name} ({self.origin}) cannot be loaded: {self.error}")
        target = self.target
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            try:
                target = getattr(importlib.import_module(module_name), attr)
            except Exception as err:
                self.error = one_line(err)
                raise UserError(f"variant {self.name} ({self.origin}) cannot be loaded: {self.error}") from None
        if not (inspect.isclass(target) and issubclass(target, Variant)):
            self.error = f"{target!r} is not a subclass of attnbench.variants.contract.Variant"
            raise UserError(f"variant {self.name} ({self.origin}): {self.error}")
        self._cls = target
        return target


class Registry:
    """Variants by name, from every source."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            other = self._entries[entry.name]
            raise UserError(f"variant name {entry.name!r} from {entry.origin} is already taken by {other.origin}")
        self._entries[entry.name] = entry

    def names(self) -> list[str]:
        return list(self._entries)

    def plugin_file_names(self) -> list[str]:
        """Names of the variants that came from --plugin files."""
        return [n for n, e in self._entries.items() if e.kind == "plugin"]

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown variant {name!r} (see `attnbench list`){hint}")
        return self._entries[name]

    def get(self, name: str) -> type[Variant]:
        """The variant class registered as `name`."""
        return self.entry(name).load()

    def build(self, name: str, spec: AttentionSpec) -> Variant:
        """An instance of variant `name` for `spec`."""
        return self.get(name)(spec)

    def check_options(self, options: dict[str, dict[str, Any]]) -> None:
        """UserError naming the first option ({variant: {key: value}}) its variant refuses."""
        for name, values in options.items():
            try:
                self.get(name).parse_options(values)
            except ValueError as err:
                raise UserError(str(err)) from None

    def check_config(self, cfg: BenchConfig) -> None:
        """UserError for the first variant a bench config names (on any device) that is unknown, for a
        baseline that is no variant, or for an option its variant refuses: before any work."""
        for name in cfg.variant_names():
            self.entry(name)
        if cfg.baseline is not None and cfg.baseline not in self._entries:
            raise UserError(f"unknown --baseline {cfg.baseline!r}: not a variant (see `attnbench list`)")
        self.check_options(cfg.options)

    def describe(self, name: str, device: str) -> dict[str, Any]:
        """What `attnbench list` shows of a variant: origin, whether it runs on `device` (or why not), and
        its declaration (absent when its class cannot be loaded: the reason says why)."""
        reason = self.unavailable_reason(name, device)
        row: dict[str, Any] = {
            "name": name,
            "origin": self.entry(name).origin,
            "available": reason is None,
            "reason": reason,
        }
        try:
            info = self.get(name).info
        except UserError:
            return row
        return row | {
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

    def unavailable_reason(self, name: str, device: str, dtype: torch.dtype | None = None) -> str | None:
        """Why `name` cannot run on device/dtype here, or None."""
        try:
            cls = self.get(name)
        except UserError as err:
            return str(err)
        try:
            return cls.unavailable_reason(device, dtype)
        except Exception as err:
            return f"availability check raised {one_line(err)}"


def _entry_point_entries() -> Iterable[Entry]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else None
        origin = f"entry point {ep.value}" + (f" of {dist}" if dist else "")
        where = {"kind": "entry-point", "distribution": dist}
        try:
            obj = ep.load()
        except Exception as err:
            yield Entry(ep.name, origin, ep.value, error=one_line(err), **where)
            continue
        classes = [obj] if inspect.isclass(obj) else _variant_classes(obj)
        if not classes:
            yield Entry(ep.name, origin, ep.value, error="names no Variant class", **where)
        for cls in classes:
            name = getattr(getattr(cls, "info", None), "name", ep.name)
            if inspect.isclass(obj) and name != ep.name:  # a variant is known by one name: the one it declares
                yield Entry(ep.name, origin, ep.value, error=f"the class declares the name {name!r}", **where)
                continue
            yield Entry(name, origin, cls, **where)


def builtin_names() -> list[str]:
    """Names of the built-in variants, family by family, in the order variants/ finds them."""
    return list(builtin())


def load_registry(plugin_files: Iterable[str | Path] = ()) -> Registry:
    """Built-ins, then installed entry-point plugins, then plugin files."""
    registry = Registry()
    for name, target in builtin().items():
        registry.add(Entry(name, "built-in", target))
    for entry in _entry_point_entries():
        try:
            registry.add(entry)
        except UserError as err:
            # An installed package must not break the registry for everyone else.
            warnings.warn(f"ignored: {err}", stacklevel=2)
    for path in plugin_files:
        for cls in load_plugin_file(path):
            registry.add(Entry(cls.info.name, f"plugin {path}", cls, kind="plugin", path=str(Path(path).resolve())))
    return registry
