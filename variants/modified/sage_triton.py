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

1.0.6's limits, refused here with the reason: its non-causal kernels load the keys past a multiple of
64 as zeros but leave them in the softmax (each adds exp(0 - max) to the denominator: fixed in the 2.x
tree only), so non-causal needs Nk a multiple of 64; its causal kernel reads one key scale past the
end when N % 128 is 1 to 64. Release 2.x is another arithmetic (INT8 per thread, FP8 PV on Hopper),
so 1.x alone is taken.
"""

from __future__ import annotations

from importlib import metadata

import torch

from ..contract import Unsupported, Variant, VariantInfo, check_qkv, softmax_scale
from .sage import SageAttention

HEAD_DIMS = (64, 96, 128)
KEY_BLOCK, QUERY_BLOCK = 64, 128  # the kernels' BLOCK_N and BLOCK_M


def release_problem() -> str | None:
    """Why the installed sageattention is not the 1.x this adapter calls, or None."""
    try:
        version = metadata.version("sageattention")
    except metadata.PackageNotFoundError:
        return None  # the package check says it is missing
    if not version.startswith("1."):
        return f"sageattention {version} is not 1.x (2.x quantizes per thread with FP8 PV: not sage's arithmetic)"
    return None


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
            "non-causal needs Nk a multiple of 64, causal N % 128 = 0 or above 64: 1.0.6 counts the padding keys in "
            "the softmax's denominator, or reads a key scale past the end, at other lengths",
            "forward only: the package has no backward",
        ),
        tolerance=SageAttention.info.tolerance,
    )

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """The base checks, then the installed release."""
        return super().unavailable_reason(device, dtype) or release_problem()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, _, _, nq, nk, d = check_qkv(q, k, v)
        if d not in HEAD_DIMS:
            raise Unsupported(f"sageattention takes head dim 64, 96 or 128, got {d}")
        if self.spec.causal and nq != nk:
            raise Unsupported("sageattention's causal mask needs as many queries as keys")
        if not self.spec.causal and nk % KEY_BLOCK:
            raise Unsupported(f"sageattention 1.0.6 counts padded keys in the softmax unless Nk % 64 == 0; got {nk}")
        if self.spec.causal and 0 < nq % QUERY_BLOCK <= KEY_BLOCK:
            raise Unsupported(
                f"sageattention 1.0.6's causal kernel reads past its key scales when N % 128 is 1..64; got {nq}"
            )
        smoothed = (k - k.mean(dim=2, keepdim=True)).contiguous()
        from sageattention import sageattn  # here: the package is optional

        return sageattn(q.contiguous(), smoothed, v.contiguous(), tensor_layout="HND", is_causal=self.spec.causal,
                        sm_scale=softmax_scale(d), smooth_k=False)  # fmt: skip
