"""FlexAttention as a shared kernel: softmax attention under a mask function, compiled where possible.

The exact `flex` variant and every sparse variant run through :class:`FlexKernel`; each brings only
its mask function (variants/masks.py). The mask becomes a BlockMask, so fully masked blocks are
skipped and the rest run in one fused kernel when compiled. Compiled by default wherever
torch.compile works (CUDA; CPU with a C++ compiler): eager FlexAttention materialises the scores
and exists for debugging. Compile time is paid once per shape and kept out of timings by the
harness's warm-up.
"""

from __future__ import annotations

import functools
import shutil
import warnings
from collections.abc import Callable

import torch
from pydantic import Field

from .contract import Options, check_qkv
from .masks import MaskMod, document_ids, same_document

MAX_BLOCK_MASKS = 64  # block masks kept per kernel (one per shape, device, and key lengths or packing)
# (num_queries, num_keys, device) -> the mask for that shape, or None for full attention.
MaskFor = Callable[[int, int, torch.device], MaskMod | None]


@functools.cache
def _flex(compiled: bool):
    """flex_attention, compiled once per process when asked."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if compiled else flex_attention


def can_compile(device: str) -> bool:
    """Whether torch.compile can build FlexAttention on `device` here (CPU needs a C++ compiler)."""
    return device == "cuda" or any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))


def with_key_lengths(mask_mod: MaskMod | None, key_lengths: torch.Tensor) -> MaskMod:
    """`mask_mod` (None: full attention) that also hides the keys past each sequence's length."""

    def within_length(b, h, q_idx, kv_idx):
        real = kv_idx < key_lengths[b]
        return real if mask_mod is None else real & mask_mod(b, h, q_idx, kv_idx)

    return within_length


class CompileOptions(Options):
    """The option every FlexAttention-backed variant has."""

    compile: bool | None = Field(None, description="compile the kernel (default: wherever possible)")


class FlexKernel:
    """flex_attention under one mask function, its block mask built once per shape and device."""

    def __init__(self, mask_for: MaskFor, compile: bool | None, heads: int | None = None) -> None:
        self._mask_for = mask_for
        self._compile = compile
        self._heads = heads  # query heads, for a mask that differs per head; None: one mask for all heads
        self._block_masks: dict[tuple, object] = {}

    def _block_mask(
        self, nq: int, nk: int, device: torch.device, key_lengths: torch.Tensor | None, cu_seqlens: torch.Tensor | None
    ):
        from torch.nn.attention.flex_attention import create_block_mask

        lengths = None if key_lengths is None else tuple(key_lengths.tolist())
        bounds = None if cu_seqlens is None else tuple(cu_seqlens.tolist())
        key = (nq, nk, str(device), lengths, bounds)
        if key not in self._block_masks:
            if len(self._block_masks) >= MAX_BLOCK_MASKS:  # lengths vary batch to batch in training
                self._block_masks.clear()
            mod = self._mask_for(nq, nk, device)
            if lengths is not None:  # one mask per sequence: the blocks past its length are skipped like masked ones
                mod = with_key_lengths(mod, key_lengths.to(device))
                mask = create_block_mask(mod, len(lengths), self._heads, nq, nk, device=device)
            elif bounds is not None:  # the blocks across two sequences are skipped like masked ones
                mod = same_document(document_ids(cu_seqlens.to(device), nk), mod)
                mask = create_block_mask(mod, None, self._heads, nq, nk, device=device)
            else:
                mask = None if mod is None else create_block_mask(mod, None, self._heads, nq, nk, device=device)
            self._block_masks[key] = mask
        return self._block_masks[key]

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_lengths: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        score_mod: Callable | None = None,
    ) -> torch.Tensor:
        """Attention under the mask; `score_mod(score, b, h, q_idx, kv_idx)` changes each kept score first
        (FlexAttention's, as FoX adds its forget-gate bias)."""
        _, h, hkv, nq, nk, _ = check_qkv(q, k, v)
        compiled = can_compile(q.device.type) if self._compile is None else self._compile
        block_mask = self._block_mask(nq, nk, q.device, key_lengths, cu_seqlens)
        with warnings.catch_warnings():
            # Eager flex warns that it is unfused; that is the documented point of compile=False.
            warnings.filterwarnings("ignore", message=".*flex_attention.*")
            return _flex(compiled)(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=hkv != h)
