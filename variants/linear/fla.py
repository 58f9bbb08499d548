"""linear-fla: the flash-linear-attention (fla) Triton kernel for linear-elu's definition.

Yang, Wang, Shen, Panda & Kim 2024 (Gated Linear Attention Transformers with Hardware-Efficient
Training): chunked linear attention in Triton. The feature map phi = elu + 1 is applied here; fla's
``chunk_linear_attn(q, k, v, scale, initial_state, output_final_state, normalize, cu_seqlens)``
takes (B, T, H, K) and evaluates the causal form with its own normalisation. Causal only, Nq = Nk
only, CUDA only; grouped K/V heads are repeated (the kernel takes equal head counts).

Releases differ where it matters, so fla 0.5.1 or later is required: before 0.4 the normaliser
summed over heads (the layout changed under a cumsum(-2)), before 0.5 the call took ``head_first``,
and 0.5.0 cut the gradient of k through the normaliser (dk off by O(1); fixed in 0.5.1). float16 is
refused: fla stores the running key sum of the normaliser in the input dtype, which passes fp16's
65504 on long sequences.
"""

from __future__ import annotations

import importlib.util

import torch

from ..contract import Unsupported, VariantInfo, check_qkv
from ..fla_release import installed_version, release_problem, version_tuple
from .elu import LinearEluAttention, elu_features

MIN_VERSION = (0, 5, 1)


def version_problem(version: str | None) -> str | None:
    """Why this fla release cannot be used (see the module docstring), or None."""
    if version is None:
        return "fla does not say its version (fla.__version__): cannot tell its layout and normaliser"
    if version_tuple(version) < MIN_VERSION:
        return (
            f"fla {version} is older than 0.5.1 (normaliser over heads before 0.4, head_first before 0.5, "
            "a wrong dk in 0.5.0)"
        )
    return None


class FlaKernel:
    """Mixin, before a recurrence (linear/recurrence.py) whose `chunked` form is one of fla's Triton kernels:
    the inputs go to it in their own dtype (it accumulates in float32 and keeps the state so), and it is
    available where the installed fla is release `fla_minimum` or later."""

    fla_minimum: tuple[int, ...]
    fla_older: str  # what releases before fla_minimum get wrong

    def working_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return dtype

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """The base checks, then the installed fla release."""
        reason = super().unavailable_reason(device, dtype)
        if reason is None and importlib.util.find_spec("fla") is not None:
            reason = release_problem(cls.fla_minimum, cls.fla_older)
        return reason


def time_first(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """fla's (B, T, H, ...) layout of (B, H, N, ...) tensors."""
    return [t.transpose(1, 2).contiguous() for t in tensors]


def fla_arguments(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], dict]:
    """chunk_linear_attn's arguments for (B, H, N, D) inputs: features in (B, T, H, K), K/V heads repeated,
    scale 1 (the feature map is the kernel), fla's normaliser on."""
    _, h, hkv, nq, nk, _ = check_qkv(q, k, v)
    if nq != nk:
        raise Unsupported("fla's chunk kernel needs as many queries as keys")
    fk, vv = elu_features(k), v
    if hkv != h:
        fk, vv = fk.repeat_interleave(h // hkv, 1), vv.repeat_interleave(h // hkv, 1)
    tensors = tuple(t.transpose(1, 2) for t in (elu_features(q), fk, vv))
    return tensors, {"scale": 1.0, "normalize": True}


class FlaLinearAttention(LinearEluAttention):
    """linear-elu through fla.ops.linear_attn.chunk_linear_attn."""

    info = VariantInfo(
        name="linear-fla",
        family="linear",
        exact=False,
        non_causal=False,
        gqa_native=False,
        scaled=False,
        devices=("cuda",),
        dtypes=(torch.bfloat16, torch.float32),
        packages=("fla",),
        definition="quadratic form phi(q) phi(k)^T v / rowsum, phi = elu + 1 (causal)",
        summary="linear-elu on the flash-linear-attention Triton kernel (fla >= 0.5.1)",
        paper="Yang et al. 2024 (fla); Katharopoulos et al. 2020",
        source="fla-org/flash-linear-attention, fla.ops.linear_attn",
    )

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """The base checks, float16 refused with its reason, then the installed release's version."""
        if dtype == torch.float16 and device in cls.info.devices:
            return "no float16: fla keeps the normaliser's running key sum in the input dtype, past fp16's range"
        reason = super().unavailable_reason(device, dtype)
        if reason is None and importlib.util.find_spec("fla") is not None:
            try:
                reason = version_problem(installed_version())
            except (ImportError, OSError) as err:  # a build for another torch or triton
                first = (str(err).strip().splitlines() or [""])[0]
                reason = f"fla is installed but does not import ({type(err).__name__}: {first})"
        return reason

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from fla.ops.linear_attn import chunk_linear_attn

        tensors, kwargs = fla_arguments(q, k, v)
        out, _ = chunk_linear_attn(*tensors, **kwargs)
        return out.transpose(1, 2).to(q.dtype)
