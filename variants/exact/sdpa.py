"""torch's scaled_dot_product_attention, with torch choosing the backend.

The adapter aligns causality bottom-right: when Nq == Nk torch's top-left ``is_causal`` is the same
mask; when Nq < Nk (decoding, chunked prefill) it passes torch's ``causal_lower_right`` bias, which
the flash kernel takes (a bool tensor would rule it out). When Nq > Nk the first queries see no key,
where torch warns the bias gives NaN: there the bottom-right mask goes as a bool tensor (Nq * Nk
bytes), whose empty rows SDPA fills with zeros. Grouped K/V heads go through ``enable_gqa`` where
the backend has it, so K and V are never repeated there.

The forced-backend variants (sdpa_math.py, sdpa_flash.py, ...) subclass this one and pin the backend
with ``torch.nn.attention.sdpa_kernel``; where torch refuses that backend for a device, dtype or
input, the variant is unavailable or the input unsupported, with torch's reason.

A packed batch (cu_seqlens) runs one SDPA call per sequence. torch 2.13's nested-tensor SDPA, the
one packed form SDPA has, refuses causal and grouped K/V, and on CPU falls back to a math path that
took 16 s where per-sequence calls took 0.49 s (four sequences, 8,370 tokens, 8 heads x 64).
"""

from __future__ import annotations

import contextlib
import functools
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from ..contract import Unsupported, Variant, VariantInfo, check_qkv, per_sequence
from ..masks import causal_mask, key_mask

# Fragments of torch's messages when no kernel accepts an input under the pinned backend.
_REFUSALS = ("No available kernel", "No viable backend")


class SdpaAttention(Variant):
    """F.scaled_dot_product_attention under torch's own dispatch."""

    info = VariantInfo(
        name="sdpa",
        source="torch.nn.functional.scaled_dot_product_attention",
        family="exact",
        exact=True,
        gqa_native=True,
        summary="torch.nn.functional.scaled_dot_product_attention, torch picks the kernel",
        lengths=True,
        packed=True,
    )
    backend: ClassVar[SDPBackend | None] = None
    # Whether the pinned backend accepts enable_gqa (fewer K/V heads than query heads); where it
    # does not, the adapter repeats K/V itself and the variant declares gqa_native=False.
    accepts_enable_gqa: ClassVar[bool] = True

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_lengths: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if cu_seqlens is not None:
            return per_sequence(self.forward, q, k, v, cu_seqlens)
        _, h, hkv, nq, nk, _ = check_qkv(q, k, v)
        kwargs: dict = {}
        if key_lengths is not None:  # a bool mask (B, 1, Nq, Nk): padding keys, and causality, in one
            mask = key_mask(key_lengths, nk)[:, None, None, :]
            kwargs["attn_mask"] = mask & causal_mask(nq, nk, q.device) if self.spec.causal else mask
        elif self.spec.causal:
            if nq == nk:
                kwargs["is_causal"] = True
            elif nq < nk:
                kwargs["attn_mask"] = _lower_right(nq, nk)
            else:
                kwargs["attn_mask"] = causal_mask(nq, nk, q.device)
        if hkv != h:
            if self.accepts_enable_gqa:
                kwargs["enable_gqa"] = True
            else:
                k = k.repeat_interleave(h // hkv, dim=1)
                v = v.repeat_interleave(h // hkv, dim=1)
        pinned = sdpa_kernel(self.backend) if self.backend is not None else contextlib.nullcontext()
        try:
            with pinned:
                return F.scaled_dot_product_attention(q, k, v, **kwargs)
        except RuntimeError as err:
            if self.backend is not None and any(r in str(err) for r in _REFUSALS):
                raise Unsupported(f"torch's {self.backend.name} kernel refuses this input") from err
            raise

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """Static checks, then (for a pinned backend) whether torch runs it on a tiny input."""
        reason = super().unavailable_reason(device, dtype)
        if reason is None and cls.backend is not None:
            reason = _probe(cls.backend, device, dtype or _default_dtype(device))
        return reason


@functools.lru_cache(maxsize=64)
def _lower_right(nq: int, nk: int):
    """torch's bottom-right causal bias, one per shape: it cannot be created under a TorchDispatchMode (the
    worker's backend probe), so the one made by the first, untraced call is reused there."""
    return causal_lower_right(nq, nk)


def _default_dtype(device: str) -> torch.dtype:
    return torch.float16 if device == "cuda" else torch.float32


@functools.cache
def _probe(backend: SDPBackend, device: str, dtype: torch.dtype) -> str | None:
    """None if torch runs `backend` on `device`/`dtype` for a plain input, else torch's refusal."""
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device"
    q = torch.randn(1, 1, 16, 64, device=device, dtype=dtype)
    try:
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, q, q)
    except RuntimeError as err:
        if not any(r in str(err) for r in _REFUSALS):
            raise
        return f"torch has no {backend.name} kernel for {device} {str(dtype).removeprefix('torch.')}"
    return None
