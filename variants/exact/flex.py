"""torch FlexAttention: softmax attention with the mask given as a function and compiled into a kernel.

The mask function (variants/masks.py) becomes a BlockMask, so fully masked blocks are skipped and
the rest run in one fused kernel when compiled. Compiled by default wherever torch.compile works
(CUDA; CPU with a C++ compiler): eager FlexAttention materialises the scores and exists for
debugging. Compile time is paid once per shape and kept out of timings by the harness's warm-up.
"""

from __future__ import annotations

import functools
import shutil
import warnings

import torch
from pydantic import Field

from attnbench.variants.contract import Options, Variant, VariantInfo, check_qkv
from attnbench.variants.masks import MaskMod, causal


@functools.cache
def _flex(compiled: bool):
    """flex_attention, compiled once per process when asked."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if compiled else flex_attention


def can_compile(device: str) -> bool:
    """Whether torch.compile can build FlexAttention on `device` here (CPU needs a C++ compiler)."""
    return device == "cuda" or any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))


class FlexOptions(Options):
    compile: bool | None = Field(None, description="compile the kernel (default: wherever possible)")


class FlexAttention(Variant):
    """Exact attention through torch.nn.attention.flex_attention with a block mask."""

    info = VariantInfo(
        name="flex",
        family="exact",
        exact=True,
        gqa_native=True,
        summary="torch FlexAttention (block mask, compiled where possible)",
        backward=("cuda",),  # torch has no FlexAttention backward on CPU
        paper="Dong et al. 2024, FlexAttention (PyTorch)",
    )
    Options = FlexOptions

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self._block_masks: dict[tuple, object] = {}

    def mask_mod(self, num_queries: int, num_keys: int, device: torch.device | str = "cpu") -> MaskMod | None:
        """The mask as a function (its tensors on `device`), or None for full attention."""
        return causal(num_queries, num_keys) if self.spec.causal else None

    def _block_mask(self, nq: int, nk: int, device: torch.device):
        from torch.nn.attention.flex_attention import create_block_mask

        mod = self.mask_mod(nq, nk, device)
        if mod is None:
            return None
        key = (nq, nk, str(device))
        if key not in self._block_masks:
            self._block_masks[key] = create_block_mask(mod, None, None, nq, nk, device=device)
        return self._block_masks[key]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, h, hkv, nq, nk, _ = check_qkv(q, k, v)
        compiled = self.options.compile
        if compiled is None:
            compiled = can_compile(q.device.type)
        block_mask = self._block_mask(nq, nk, q.device)
        with warnings.catch_warnings():
            # Eager flex warns that it is unfused; that is the documented point of compile=False.
            warnings.filterwarnings("ignore", message=".*flex_attention.*")
            return _flex(compiled)(q, k, v, block_mask=block_mask, enable_gqa=hkv != h)
