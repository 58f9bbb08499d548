"""The `attnbench` command line: a module per command group, each a thin layer from flags to a config
and a call into the layers below (docs/architecture.md). Errors a user can cause end here in one line.

This module only starts the command. A SIGTERM (from `timeout`, a scheduler) or Ctrl-C that arrives while
torch and the rest are still being imported (app.py) is noted, not raised into the import (a library
may swallow it there), and the command then stops in one line; from then on both are KeyboardInterrupt
(signals.py), which every command ends in one line."""

from __future__ import annotations

import signal
import sys

_stopped_while_starting: list[int] = []


def _note(signum: int, frame: object) -> None:
    _stopped_while_starting.append(signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `attnbench` and `python -m attnbench`: the command's exit code, errors in one line."""
    signal.signal(signal.SIGTERM, _note)
    signal.signal(signal.SIGINT, _note)
    from . import signals
    from .app import run

    if _stopped_while_starting:
        print("attnbench: interrupted while starting; nothing was done", file=sys.stderr)
        signals.settle()
        sys.exit(130)
    signals.install()
    run(argv)
