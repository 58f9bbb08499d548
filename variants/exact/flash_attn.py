"""The flash-attn package: FlashAttention-3 (Hopper build) on a Hopper GPU, else FlashAttention-2.

Dao 2023 (FlashAttention-2), Shah et al. 2024 (FlashAttention-3). Its causal mask is bottom-right,
as ours; grouped K/V heads are native. Layout is (B, N, H, D), so inputs are transposed views.
A packed batch goes to ``flash_attn_varlen_func``: the tokens as (total, H, D), the boundaries as
int32 ``cu_seqlens`` for queries and keys, and the longest sequence.

The module is found and imported once per process (a lookup per call would be timed with the
kernel). FA3's kernels are built for sm90 only, so it is chosen on a Hopper GPU alone. An install
that fails to import (a build against another torch: undefined symbols) makes the variant
unavailable with the import's message, not an error at every point.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from types import ModuleType

import torch

from ..contract import Unsupported, Variant, VariantInfo, check_qkv, softmax_scale

FA3, FA2 = "flash_attn_interface", "flash_attn"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def candidates(capability: tuple[int, int] | None) -> list[str]:
    """The flash-attn modules to try, best first, for a GPU of compute `capability`."""
    return [FA3, FA2] if capability is not None and capability[0] == 9 else [FA2]


@functools.cache
def resolve() -> tuple[ModuleType | None, str | None]:
    """(the flash-attn module to call, None), or (None, why there is none)."""
    capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    reasons = []
    for name in candidates(capability):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            return importlib.import_module(name), None
        except (ImportError, OSError) as err:  # a build for another torch or CUDA: undefined symbols
            reasons.append(f"{name} is installed but does not import ({_one_line(err)})")
    if reasons:
        return None, "; ".join(reasons)
    return None, "package flash-attn not installed (neither flash_attn nor, on Hopper, flash_attn_interface)"


def flash_attn_call(
    module: ModuleType,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """flash-attn's function on (B, H, N, D) inputs, in its (B, N, H, D) (or varlen (T, H, D)) layout."""
    d = check_qkv(q, k, v)[-1]
    if d > 256 or d % 8:
        raise Unsupported(f"flash-attn needs head dim <= 256 and a multiple of 8, got {d}")
    scale = softmax_scale(d)
    if cu_seqlens is not None:  # (1, H, T, D) -> (T, H, D), one boundary list for queries and keys
        bounds = cu_seqlens.to(device=q.device, dtype=torch.int32)
        longest = int(cu_seqlens.diff().max())
        tokens = (t[0].transpose(0, 1) for t in (q, k, v))
        out = module.flash_attn_varlen_func(
            *tokens, bounds, bounds, longest, longest, softmax_scale=scale, causal=causal
        )
        return _first(out).transpose(0, 1)[None]
    out = module.flash_attn_func(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=causal
    )
    return _first(out).transpose(1, 2)


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
        summary="Tri Dao's flash-attn kernels (FA3 on Hopper where built, else FA2)",
        paper="Dao 2023 (FlashAttention-2); Shah et al. 2024 (FlashAttention-3)",
        source="Dao-AILab/flash-attention (flash_attn_func, flash_attn_varlen_func; FA3 from flash_attn_interface)",
        packed=True,
    )

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """Needs CUDA and a build of the package that imports."""
        if device not in cls.info.devices:
            return "runs on cuda only (flash-attn has no CPU kernels)"
        if dtype is not None and dtype not in cls.info.dtypes:
            return "float16 and bfloat16 only"
        return resolve()[1]

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None = None
    ) -> torch.Tensor:
        module, reason = resolve()
        if module is None:
            raise RuntimeError(reason)
        return flash_attn_call(module, q, k, v, self.spec.causal, cu_seqlens)


def _first(out: torch.Tensor | tuple) -> torch.Tensor:
    """The output alone: some FA3 builds also return the log-sum-exp."""
    return out[0] if isinstance(out, tuple) else out
