"""Temporary folders named for the command that made them (its pid), so that the next command can
remove those a killed command left: a fork server's socket folder, a half-built site."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

FORK_DIR_PREFIX = "attnbench-fork-"


def tagged(prefix: str) -> str:
    """`prefix` followed by this command's pid: the start of the name of a temporary folder it makes."""
    return f"{prefix}{os.getpid()}-"


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove the folders in `folder` named `prefix<pid>-...` whose command is no longer running."""
    for stale in Path(folder).glob(f"{prefix}*"):
        pid = stale.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)


def remove_stale_fork_dirs() -> None:
    """The socket folders of fork servers whose command was killed (multiprocessing removes its own at exit)."""
    remove_stale(Path(tempfile.gettempdir()), FORK_DIR_PREFIX)
