"""Built-in attention variants, found by scanning the family folders: a variant is its file.

Every module under ``exact/``, ``linear/``, ``sparse/``, ``lowrank/`` and ``modified/`` is imported once and each
`Variant` subclass it defines with its own ``info`` is registered under ``info.name``: adding a
built-in takes a new file and nothing else. A variant module must not import an optional package
at module level (import it where it is used), so the scan never needs one.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil

from .contract import Variant, VariantInfo

# Folder order is listing and colour order: the exact family first (it gets tab10's ten colours).
FAMILIES = ("exact", "linear", "sparse", "lowrank", "modified")


def defined_variants(module: object) -> list[type]:
    """Variant subclasses `module` defines (not imports) that declare their own `info`, by name."""
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Variant)
        and obj.__module__ == getattr(module, "__name__", None)
        and isinstance(obj.__dict__.get("info"), VariantInfo)
        and not inspect.isabstract(obj)
    ]


@functools.cache
def builtin() -> dict[str, str]:
    """Declared name -> ``module:Class`` of every built-in, family by family, module names sorted."""
    found: dict[str, str] = {}
    for family in FAMILIES:
        package = importlib.import_module(f"{__name__}.{family}")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for cls in defined_variants(module):
                target = f"{module.__name__}:{cls.__qualname__}"
                if cls.info.name in found:
                    raise RuntimeError(
                        f"built-in variant name {cls.info.name!r} declared twice: {found[cls.info.name]}, {target}"
                    )
                found[cls.info.name] = target
    return found
