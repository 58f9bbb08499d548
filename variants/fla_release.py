"""Which flash-linear-attention (fla) release is installed, and whether a kernel can use it: fla's call
signatures and semantics changed between releases, so each adapter names the first release it trusts
(and of the packages fla calls into, as flash-attn)."""

from __future__ import annotations

import functools
from importlib import metadata


def version_tuple(text: str) -> tuple[int, ...]:
    """(0, 5, 1) from '0.5.1', '0.5.1.dev3' or '0.6.0+cu124': the leading numeric fields."""
    parts = []
    for field in text.split("+")[0].split("."):
        digits = "".join(c for c in field if c.isdigit()) if field[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@functools.cache
def installed_version() -> str | None:
    """fla.__version__, or None where it does not say (imported once per process)."""
    import fla

    return getattr(fla, "__version__", None)


def release_problem(minimum: tuple[int, ...], why: str) -> str | None:
    """Why the installed fla cannot serve a kernel that needs release `minimum` (it does not import, does not
    say its version, or is older: `why` says what the older ones get wrong), or None."""
    try:
        version = installed_version()
    except (ImportError, OSError) as err:  # a build for another torch or triton
        first = (str(err).strip().splitlines() or [""])[0]
        return f"fla is installed but does not import ({type(err).__name__}: {first})"
    if version is None:
        return "fla does not say its version (fla.__version__): cannot tell its layout and arguments"
    if version_tuple(version) < minimum:
        return f"fla {version} is older than {'.'.join(map(str, minimum))} ({why})"
    return None


def distribution_problem(name: str, minimum: tuple[int, ...], why: str) -> str | None:
    """Why the installed distribution `name` (as pip names it) is too old for a kernel, or None (also where
    its metadata cannot be read: the import then says what is wrong)."""
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
    if version_tuple(version) < minimum:
        return f"{name} {version} is older than {'.'.join(map(str, minimum))} ({why})"
    return None
