"""How Ctrl-C and SIGTERM (from `timeout`, a scheduler) stop a command: as a KeyboardInterrupt, which
every command ends in one line and exit code 130, but never one raised inside an import.

A KeyboardInterrupt raised while a module is being imported can be swallowed by the library (the
command then runs on) or turned into another error (seen: torch._functorch's dataclasses, a
RuntimeError from __set_name__). So a signal that arrives inside an import is sent again a moment
later, until the import is done; a module that takes longer than IMPORT_GRACE_S to import (a plugin
stuck at import) is interrupted where it is.

Once a command's exit code is decided, a late signal is ignored: Python restores the default handlers
while it shuts down, and the process would otherwise die by the signal instead of exiting with that code.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

IMPORT_GRACE_S = 5.0
RESEND_AFTER_S = 0.05
_IMPORT_FRAMES = "<frozen importlib._bootstrap"  # _bootstrap and _bootstrap_external: the import machinery
_deferred_since: list[float] = []  # when a signal was first put off for an import, while one is


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(_IMPORT_FRAMES):
            return True
        frame = frame.f_back
    return False


def _resend(signum: int) -> None:
    os.kill(os.getpid(), signum)


def interrupt(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT and SIGTERM: KeyboardInterrupt, outside an import."""
    if _importing(frame):
        if not _deferred_since:
            _deferred_since.append(time.monotonic())
        if time.monotonic() - _deferred_since[0] < IMPORT_GRACE_S:
            timer = threading.Timer(RESEND_AFTER_S, _resend, (signum,))
            timer.daemon = True
            timer.start()
            return
    _deferred_since.clear()
    raise KeyboardInterrupt


def install() -> None:
    """Stop on SIGINT and SIGTERM by `interrupt` (in the main thread, where Python runs handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, interrupt)


def settle() -> None:
    """The exit code is decided: ignore SIGINT and SIGTERM from here to the end of the process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
