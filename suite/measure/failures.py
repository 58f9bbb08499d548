"""Turning an exception raised while measuring or training into a recorded status and reason."""

from __future__ import annotations

import torch

from ...variants.contract import Unsupported
from ..core.errors import one_line

OOM_MARKERS = ("out of memory", "can't allocate memory")


def classify(err: BaseException) -> tuple[str, str]:
    """(status, reason): unsupported, oom or error."""
    if isinstance(err, Unsupported):
        return "unsupported", str(err)
    if isinstance(err, torch.OutOfMemoryError | MemoryError) or any(m in str(err) for m in OOM_MARKERS):
        return "oom", one_line(err)
    return "error", one_line(err)
