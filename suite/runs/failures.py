"""Turning an exception raised while measuring or training into a recorded status and reason."""

from __future__ import annotations

import torch

from ...variants.contract import Unsupported

OOM_MARKERS = ("out of memory", "can't allocate memory")


def one_line(err: BaseException) -> str:
    """`Type: first line of the message`, at most 400 characters."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}"[:400] if text else type(err).__name__


def classify(err: BaseException) -> tuple[str, str]:
    """(status, reason): unsupported, oom or error."""
    if isinstance(err, Unsupported):
        return "unsupported", str(err)
    if isinstance(err, torch.OutOfMemoryError | MemoryError) or any(m in str(err) for m in OOM_MARKERS):
        return "oom", one_line(err)
    return "error", one_line(err)
