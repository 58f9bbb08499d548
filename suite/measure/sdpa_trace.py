"""Which SDPA backend a call ran: the aten kernels it dispatched, read by a dispatch mode."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# SDPA's kernels as the dispatcher names them, and the backend each one is.
SDPA_KERNELS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


class _KernelNames(TorchDispatchMode):
    """Collects the names of the aten ops a call dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def sdpa_backend(call: Any) -> str | None:
    """The SDPA backend(s) one call of `call()` ran (comma-separated), or None if it ran no SDPA kernel or
    torch cannot tell (compiled code runs below the dispatcher)."""
    trace = _KernelNames()
    try:
        with torch.no_grad(), trace:
            call()
    except Exception:
        return None
    found = {backend for name, backend in SDPA_KERNELS.items() if any(n.startswith(name) for n in trace.names)}
    return ",".join(sorted(found)) or None
