"""Where a run's records go when no folder is named: results/<config>-<device>, or a scratch folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..core.devices import device_slug
from ..core.errors import UserError


def default_run_folder(name: str, device: str) -> Path:
    """A run's default folder: results/<config>-<device>."""
    return Path("results") / f"{name}-{device_slug(device)}"


def run_folder(out: Path | None, scratch: bool, name: str, device: str) -> Path:
    """The folder a command writes into: `out`, a new scratch folder (never a resumed run), or the default."""
    if scratch and out:
        raise UserError("give --out or --scratch, not both")
    if scratch:
        return Path(tempfile.mkdtemp(prefix="attnbench-scratch-"))
    return out or default_run_folder(name, device)
