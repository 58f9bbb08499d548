"""The flash-attn package: FlashAttention-3 (Hopper build) where installed, else FlashAttention-2.

Dao 2023 (FlashAttention-2), Shah et al. 2024 (FlashAttention-3). Its causal mask is bottom-right,
as ours; grouped K/V heads are native. Layout is (B, N, H, D), so inputs are transposed views.
A packed batch goes to ``flash_attn_varlen_func``: the tokens as (total, H, D), the boundaries as
int32 ``cu_seqlens`` for queries and keys, and the longest sequence.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

from ..contract import Unsupported, Variant, VariantInfo, check_qkv, softmax_scale

# FA3 ships as the module flash_attn_interface; FA2 as flash_attn.
_MODULES = ("flash_attn_interface", "flash_attn")


def _installed() -> str | None:
    return next((m for m in _MODULES if importlib.util.find_spec(m) is not None), None)


class FlashAttnAttention(Variant):
    """flash_attn_func from the installed flash-attn build."""

    info = VariantInfo(
        name="flash-attn",
        family="exact",
        exact=True,
        gqa_native=True,
        devices=("cuda",),
        dtypes=(torch.float16, torch.bfloat16),
        packages=("flash_attn",),
        summary="Tri Dao's flash-attn kernels (FA3 where built, else FA2)",
        paper="Dao 2023 (FlashAttention-2); Shah et al. 2024 (FlashAttention-3)",
        source="Dao-AILab/flash-attention (flash_attn_func, flash_attn_varlen_func; FA3 from flash_attn_interface)",
        packed=True,
    )

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """Needs CUDA and either build of the package."""
        if device not in cls.info.devices:
            return "runs on cuda only (flash-attn has no CPU kernels)"
        if dtype is not None and dtype not in cls.info.dtypes:
            return "float16 and bfloat16 only"
        if _installed() is None:
            return "package flash-attn not installed (neither flash_attn nor flash_attn_interface)"
        return None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        d = check_qkv(q, k, v)[-1]
        if d > 256 or d % 8:
            raise Unsupported(f"flash-attn needs head dim <= 256 and a multiple of 8, got {d}")
        module = importlib.import_module(_installed())
        scale, causal = softmax_scale(d), self.spec.causal
        if cu_seqlens is not None:  # (1, H, T, D) -> (T, H, D), one boundary list for queries and keys
            bounds = cu_seqlens.to(device=q.device, dtype=torch.int32)
            longest = int(cu_seqlens.diff().max())
            tokens = (t[0].transpose(0, 1) for t in (q, k, v))
            out = module.flash_attn_varlen_func(*tokens, bounds, bounds, longest, longest, softmax_scale=scale,
                                                causal=causal)  # fmt: skip
            return _first(out).transpose(0, 1)[None]
        out = module.flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=causal
        )
        return _first(out).transpose(1, 2)


def _first(out: torch.Tensor | tuple) -> torch.Tensor:
    """The output alone: some FA3 builds also return the log-sum-exp."""
    return out[0] if isinstance(out, tuple) else out
