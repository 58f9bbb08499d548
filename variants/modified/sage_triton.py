"""sage-triton: the `sageattention` package's Triton kernels (SageAttention 1.0.x), timed where they install.

The package's call, as release 1.0.6 documents it: ``sageattn(q, k, v, tensor_layout="HND",
is_causal=False, sm_scale=None, smooth_k=True)`` on (B, H, N, D) tensors with K/V heads dividing the
query heads, head dim 64, 96 or 128, float16, bfloat16 or float32 (V is cast to float16), the output
in the input dtype; its causal mask needs as many queries as keys. The arithmetic is what `sage`
emulates (INT8 QK^T per block on smoothed keys, FP16 PV), so the two errors against float64 should
agree, and this one is timed.

`smooth_k=True` subtracts the keys' mean from the caller's tensor in place (``k -= km``); the mean is
subtracted here instead, into a new tensor, and the kernel is called with ``smooth_k=False``: the
same arithmetic, the inputs left as they were.
"""

from __future__ import annotations

import torch

from ..contract import Unsupported, Variant, VariantInfo, check_qkv, softmax_scale
from .sage import SageAttention

HEAD_DIMS = (64, 96, 128)


class SageTritonAttention(Variant):
    """sageattention.sageattn: INT8 QK^T with smoothed keys and FP16 PV, in Triton."""

    info = VariantInfo(
        name="sage-triton",
        family="modified",
        exact=False,
        gqa_native=True,
        devices=("cuda",),
        dtypes=(torch.float32, torch.float16, torch.bfloat16),
        backward=False,
        packages=("sageattention",),
        definition=SageAttention.info.definition,
        summary="SageAttention's 8-bit Triton kernel (the sageattention package, 1.0.x): INT8 QK^T, FP16 PV",
        paper="Zhang et al. 2025, SageAttention (ICLR 2025)",
        source="thu-ml/SageAttention 1.0.6, sageattention/core.py (sageattn)",
        departures=(
            "the keys' mean is subtracted before the call, into a new tensor (the package subtracts it from the "
            "caller's keys in place), and timed with it",
            "head dim 64, 96 or 128 only; causal needs as many queries as keys (the kernels' limits)",
            "forward only: the package has no backward",
        ),
        tolerance=SageAttention.info.tolerance,
    )

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, _, _, nq, nk, d = check_qkv(q, k, v)
        if d not in HEAD_DIMS:
            raise Unsupported(f"sageattention takes head dim 64, 96 or 128, got {d}")
        if self.spec.causal and nq != nk:
            raise Unsupported("sageattention's causal mask needs as many queries as keys")
        smoothed = k - k.mean(dim=2, keepdim=True)
        from sageattention import sageattn  # here: the package is optional

        return sageattn(q.contiguous(), smoothed, v.contiguous(), tensor_layout="HND", is_causal=self.spec.causal,
                        sm_scale=softmax_scale(d), smooth_k=False)  # fmt: skip
