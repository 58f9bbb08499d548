"""moba-fla: flash-linear-attention's MoBA kernel (`fla.ops.moba.parallel_moba`) for moba's definition.

fla's call, as its release documents it: ``parallel_moba(q, k, v, cu_seqlens, max_seqlen, chunk_size,
topk)`` on a packed batch (1, T, H, D) with int32 boundaries, equal head counts for queries and keys;
each query keeps its own chunk (chunk-local causal flash-attn) and the `topk - 1` best wholly past
chunks by q . mean(chunk keys), merged in one softmax. Its `topk` counts the own chunk, as MoBA's.

So this is moba at a fixed `top_k` (moba's `keep` share varies per query, which the kernel cannot
take), self-attention only (Nq = Nk), grouped K/V heads repeated. `top_k = 1` is refused: fla then
falls back to full causal attention, where MoBA's definition attends the own chunk alone. The batch
goes one sequence per call: fla scores every query of a packed batch against every chunk of it, so a
packed batch of B would cost B times the gate work. CUDA only, float16 and bfloat16, head dim a
multiple of 8 up to 256 (fla calls flash-attn's internal varlen kernels, which do not pad), flash-attn
2.7 or later (fla passes its 2.7 arguments and unpacks its 2.7 returns).
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..contract import Unsupported, VariantInfo, check_qkv
from ..fla_release import distribution_problem, release_problem
from .moba import MobaAttention, MobaOptions

# fla.ops.moba landed in April 2026, inside 0.5.0's tag; builds from March also called themselves 0.5.0.
FLA_MINIMUM = (0, 5, 1)
FLASH_ATTN_MINIMUM = (2, 7)


class MobaFlaOptions(MobaOptions):
    top_k: int | None = Field(3, ge=2, description="chunks each query keeps, its own counted (MoBA's 3)")


def sequences(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
    """(B, H, N, D) inputs in fla's (B, T, H, D) layout, K/V heads repeated to the query heads; refused with
    the reason where the kernels cannot take them."""
    _, h, hkv, nq, nk, d = check_qkv(q, k, v)
    if nq != nk:
        raise Unsupported("fla's parallel_moba takes self-attention only (as many queries as keys)")
    if d % 8 or d > 256:
        raise Unsupported(f"fla's parallel_moba needs head dim a multiple of 8 up to 256, got {d}")
    if hkv != h:
        k, v = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
    return [t.transpose(1, 2).contiguous() for t in (q, k, v)]


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
            "float32 throughout), so near ties may choose another chunk: the tolerance (fp16 3e-2, bf16 8e-2, "
            "moba's 5e-3 and 3e-2) allows the few rows that do on random inputs",
            "grouped K/V heads are repeated (the kernel takes equal head counts); one call per sequence of the "
            "batch (a packed batch would score every query against every sequence's chunks)",
        ),
        tolerance={torch.float16: 3e-2, torch.bfloat16: 8e-2},
    )
    Options = MobaFlaOptions

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """The base checks (fla and flash-attn installed among them), then their releases."""
        return (
            super().unavailable_reason(device, dtype)
            or release_problem(FLA_MINIMUM, "no fla.ops.moba")
            or distribution_problem("flash-attn", FLASH_ATTN_MINIMUM, "fla's MoBA calls its 2.7 internals")
        )

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qs, ks, vs = sequences(q, k, v)
        from fla.ops.moba import parallel_moba  # here: the package is optional

        n = qs.shape[1]
        bounds = torch.tensor([0, n], dtype=torch.int32, device=q.device)  # flash-attn's varlen boundaries: int32
        size, top_k = self.options.block_size, self.options.top_k
        outs = [
            parallel_moba(qs[i : i + 1], ks[i : i + 1], vs[i : i + 1], bounds, n, size, top_k) for i in range(len(qs))
        ]
        return torch.cat(outs).transpose(1, 2)
