"""torch FlexAttention: softmax attention with the mask given as a function and compiled into a kernel.

Full or causal attention through the shared kernel (variants/flex_kernel.py) that the sparse
variants also run on; this variant measures FlexAttention itself against the other exact kernels.
"""

from __future__ import annotations

import torch

from ..contract import Variant, VariantInfo
from ..flex_kernel import CompileOptions, FlexKernel
from ..masks import MaskMod, causal


class FlexAttention(Variant):
    """Exact attention through torch.nn.attention.flex_attention with a block mask."""

    info = VariantInfo(
        compiles=True,
        name="flex",
        family="exact",
        exact=True,
        gqa_native=True,
        summary="torch FlexAttention (block mask, compiled where possible)",
        backward=("cuda",),  # torch has no FlexAttention backward on CPU
        paper="Dong et al. 2024, FlexAttention (PyTorch)",
        source="torch.nn.attention.flex_attention",
        lengths=True,
        packed=True,
    )
    Options = CompileOptions

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self._kernel = FlexKernel(self.mask_mod, self.options.compile)

    def mask_mod(self, num_queries: int, num_keys: int, device: torch.device | str = "cpu") -> MaskMod | None:
        """The causal mask when asked for, None for full attention."""
        return causal(num_queries, num_keys) if self.spec.causal else None

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_lengths: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._kernel(q, k, v, key_lengths, cu_seqlens)
