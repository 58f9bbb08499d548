"""sage: SageAttention's arithmetic emulated, to measure what 8-bit attention costs in accuracy.

Zhang et al. 2025, "SageAttention: Accurate 8-bit Attention for Plug-and-Play Inference Acceleration"
(ICLR 2025), and SageAttention2 (ICML 2025) for FP8 PV. The keys are smoothed (their mean over the
sequence subtracted: each query's scores shift by one constant, which the softmax ignores); Q and K
are quantized to INT8 per block of tokens (one scale per block, max |x| / 127, round to nearest);
QK^T is the integer product times the two scales; the softmax is float32; PV takes P and V rounded to
FP16 (`pv: fp16`, SageAttention) or to FP8 E4M3 with a scale per channel of V (`pv: fp8`,
SageAttention2), accumulating in float32.

Its definition is softmax attention: the error against it is the quantization's, bounded by the
declared tolerance and reported as the papers report it (cosine similarity, relative L1) by the tests.
The emulation is plain torch on the integer values held in float32 (exact: |products summed| stay
below 2^24 for D <= 1024), queries in blocks; it measures accuracy, not speed.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..contract import Options, Variant, VariantInfo, check_qkv, softmax_scale
from ..masks import causal_mask

INT8_MAX = 127.0
FP8_MAX = 448.0  # float8 e4m3's largest finite value


class SageOptions(Options):
    pv: Literal["fp16", "fp8"] = Field("fp16", description="P and V rounded to FP16 (SageAttention) or FP8 (v2)")
    block_q: int = Field(128, gt=0, description="query tokens per INT8 scale (SageAttention's BLKQ)")
    block_k: int = Field(64, gt=0, description="key tokens per INT8 scale (SageAttention's BLKK)")
    smooth_k: bool = Field(True, description="subtract the keys' mean over the sequence first")


def int8_blocks(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, H, N, D) as INT8 values (held in float32) and each token's scale (B, H, N, 1): one scale per
    block of `block` tokens, max |x| / 127."""
    b, h, n, d = x.shape
    pad = -n % block
    padded = torch.cat([x, x.new_zeros(b, h, pad, d)], dim=2) if pad else x
    blocks = padded.view(b, h, -1, block, d)
    scale = blocks.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(1e-12) / INT8_MAX  # (B, H, n_blocks, 1, 1)
    values = torch.round(blocks / scale).clamp(-INT8_MAX, INT8_MAX)
    per_token = scale.expand(b, h, blocks.shape[2], block, 1).reshape(b, h, -1, 1)
    return values.reshape(b, h, -1, d)[:, :, :n], per_token[:, :, :n]


def fp8(x: torch.Tensor) -> torch.Tensor:
    """x rounded to float8 e4m3 and back."""
    return x.to(torch.float8_e4m3fn).to(x.dtype)


class SageAttention(Variant):
    """INT8 QK^T with smoothed keys, float32 softmax, FP16 or FP8 PV: SageAttention's arithmetic in torch."""

    info = VariantInfo(
        name="sage",
        family="modified",
        exact=False,
        definition="softmax attention (approximated: INT8 QK^T per block with the keys' mean subtracted, FP16 or "
        "FP8 PV)",
        summary="SageAttention's 8-bit arithmetic emulated: INT8 QK^T (smoothed K), FP16 or FP8 PV",
        paper="Zhang et al. 2025, SageAttention (ICLR 2025); SageAttention2 (ICML 2025)",
        source="thu-ml/SageAttention, sageattention/quant.py (per_block_int8), sageattention/core.py",
        departures=(
            "an emulation: the quantized values are rounded as the kernels round them and multiplied in float32, "
            "which holds INT8 products exactly; the kernels' speed is not what it measures",
            "SageAttention2's INT4 QK^T per thread and its smoothing of Q are not emulated (INT8 QK^T only)",
            "FP8 PV accumulates in float32 throughout (SageAttention2's two-level accumulation is for a GPU's "
            "FP22 accumulator)",
        ),
        dtypes=(torch.float32, torch.float16, torch.bfloat16),
        backward=False,
        tolerance={torch.float32: 5e-2, torch.float16: 5e-2, torch.bfloat16: 6e-2},
    )
    Options = SageOptions

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, h, hkv, nq, nk, d = check_qkv(q, k, v)
        o = self.options
        q32, k32, v32 = q.float(), k.float(), v.float()
        if o.smooth_k:
            k32 = k32 - k32.mean(dim=2, keepdim=True)
        kq, ks = int8_blocks(k32, o.block_k)
        qq, qs = int8_blocks(q32 * softmax_scale(d), o.block_q)
        kq, ks = kq.repeat_interleave(h // hkv, 1), ks.repeat_interleave(h // hkv, 1)
        v32 = v32.repeat_interleave(h // hkv, 1)
        if o.pv == "fp8":
            v_scale = v32.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / FP8_MAX  # per channel
            v_low = fp8(v32 / v_scale)
        else:
            v_low = v32.half().float()
        parts = []
        for start in range(0, nq, o.block_q):
            stop = min(start + o.block_q, nq)
            scores = (qq[:, :, start:stop] @ kq.transpose(-1, -2)) * qs[:, :, start:stop] * ks.transpose(-1, -2)
            if self.spec.causal:
                scores = scores.masked_fill(~causal_mask(nq, nk, q.device)[start:stop], float("-inf"))
            probs = scores.softmax(-1).nan_to_num(0.0)
            if o.pv == "fp8":
                parts.append((fp8(probs * FP8_MAX) @ v_low) * v_scale / FP8_MAX)
            else:
                parts.append(probs.half().float() @ v_low)
        return torch.cat(parts, dim=2).to(q.dtype)
