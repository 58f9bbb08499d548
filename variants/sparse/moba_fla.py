"""moba-fla: flash-linear-attention's MoBA kernel (`fla.ops.moba.parallel_moba`) for moba's definition.

fla's call, as its release documents it: ``parallel_moba(q, k, v, cu_seqlens, max_seqlen, chunk_size,
topk)`` on a packed batch (1, T, H, D) with int32 boundaries, equal head counts for queries and keys;
each query keeps its own chunk (chunk-local causal flash-attn) and the `topk - 1` best wholly past
chunks by q . mean(chunk keys), merged in one softmax. Its `topk` counts the own chunk, as MoBA's.

So this is moba at a fixed `top_k` (moba's `keep` share varies per query, which the kernel cannot
take), self-attention only (Nq = Nk), grouped K/V heads repeated. `top_k = 1` is refused: fla then
falls back to full causal attention, where MoBA's definition attends the own chunk alone. CUDA only,
float16 and bfloat16 (flash-attn's varlen kernels underneath).
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..contract import Unsupported, VariantInfo, check_qkv
from ..fla_release import release_problem
from .moba import MobaAttention, MobaOptions

FLA_MINIMUM = (0, 5, 1)  # the first release with fla.ops.moba (April 2026)


class MobaFlaOptions(MobaOptions):
    top_k: int | None = Field(3, ge=2, description="chunks each query keeps, its own counted (MoBA's 3)")


def packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(B, H, N, D) inputs as fla's packed (1, B * N, H, D), K/V heads repeated to the query heads, and the
    sequences' int32 boundaries (B + 1,)."""
    b, h, hkv, nq, nk, _ = check_qkv(q, k, v)
    if nq != nk:
        raise Unsupported("fla's parallel_moba takes self-attention only (as many queries as keys)")
    if hkv != h:
        k, v = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
    tokens = [t.transpose(1, 2).reshape(1, b * nq, h, t.shape[-1]) for t in (q, k, v)]
    bounds = torch.arange(0, (b + 1) * nq, nq, dtype=torch.int32, device=q.device)
    return tokens, bounds


class MobaFlaAttention(MobaAttention):
    """moba at a fixed top_k, computed by fla.ops.moba.parallel_moba."""

    info = VariantInfo(
        name="moba-fla",
        family="sparse",
        exact=False,
        non_causal=False,
        selects=True,
        devices=("cuda",),
        dtypes=(torch.float16, torch.bfloat16),
        packages=("fla", "flash_attn"),
        definition=MobaAttention.info.definition,
        summary="MoBA on flash-linear-attention's kernel (parallel_moba over flash-attn varlen), fixed top_k",
        paper=MobaAttention.info.paper,
        source="fla-org/flash-linear-attention, fla/ops/moba/parallel.py",
        departures=(
            "a fixed top_k (default 3, MoBA's; at least 2): fla's topk = 1 is full causal attention, not the own "
            "chunk alone",
            "the chunks' mean keys are taken in the input dtype before fla scores the gate in float32 (moba: "
            "float32 throughout), so near ties may choose differently",
            "grouped K/V heads are repeated (the kernel takes equal head counts); a batch is packed as one "
            "sequence with boundaries",
        ),
    )
    Options = MobaFlaOptions

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """The base checks (fla installed among them), then its release."""
        return super().unavailable_reason(device, dtype) or release_problem(FLA_MINIMUM, "no fla.ops.moba")

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n = q.shape[:3]
        tokens, bounds = packed(q, k, v)
        from fla.ops.moba import parallel_moba  # here: the package is optional

        out = parallel_moba(*tokens, bounds, n, self.options.block_size, self.options.top_k)
        return out.reshape(b, n, h, -1).transpose(1, 2)
