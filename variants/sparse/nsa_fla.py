"""nsa-fla: flash-linear-attention's NSA kernels (`fla.ops.nsa.parallel_nsa`) for nsa's definition.

fla's call, as its release documents it: ``parallel_nsa(q, k, v, g_cmp, g_slc, g_swa, block_counts=...,
block_size=..., window_size=..., scale=...)`` on (B, T, H, D) tensors, the three gates (B, TQ, HQ); it
mean-pools the keys and values over blocks of `block_size`, attends the complete pooled blocks, ranks
the blocks by that attention's probabilities summed over the query heads of a K/V group (the first
block and the last two forced, counted in the selection), attends the chosen blocks causally, and adds a
causal window of `window_size` keys through flash-attn: nsa's definition, branch for branch.

`block_counts` may be a (B, TQ, H_kv) tensor, so nsa's share `keep` (a count growing with the query's
position) goes to the kernel as the same counts the definition uses. The kernel's limits: 16 or more
query heads per K/V head, a power of two (a tile dimension); at most block_size / 2 selected blocks
(its bitonic top-k); CUDA, float16 and bfloat16.
"""

from __future__ import annotations

import torch

from ..contract import Unsupported, VariantInfo, check_qkv, softmax_scale
from ..fla_release import release_problem
from ..gates import check_gates
from .nsa import FORCED, NsaAttention
from .selection import kept_count, positions

# The first and last two blocks are forced since August 2025 (the current block alone before), and the
# forward kernels' token offsets are 64-bit since 0.5.2 (int32 before: wrong past 2^31 elements).
FLA_MINIMUM = (0, 5, 2)
MIN_GROUP = 16
MIN_BLOCK = 16  # the kernels' tl.dot tiles


def power_of_two_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def fla_nsa_arguments(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, branch_gates: torch.Tensor,
                      counts: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], dict]:  # fmt: skip
    """parallel_nsa's tensors for (B, H, N, D) inputs and nsa's (B, H, Nq, 3) gates: q, k, v in (B, T, H, D),
    g_cmp, g_slc, g_swa in (B, TQ, HQ), and `counts` (Nq,) as block_counts (B, TQ, H_kv)."""
    b, h, hkv, nq, nk, d = check_qkv(q, k, v)
    if d > 256 or (d > 128 and q.is_cuda and torch.cuda.get_device_capability(q.device)[0] != 9):
        raise Unsupported(f"fla's NSA kernels take head dim up to 256 on Hopper, 128 elsewhere; got {d}")
    if nq != nk:
        raise Unsupported("nsa-fla takes self-attention only (as many queries as keys): fla takes fewer queries "
                          "than keys only since mid-2026")  # fmt: skip
    group = h // hkv
    if group < MIN_GROUP or group & (group - 1):
        raise Unsupported(f"fla's NSA kernels need 16 or more query heads per K/V head, a power of two; got {group}")
    tensors = tuple(t.transpose(1, 2).contiguous() for t in (q, k, v))
    gates = tuple(branch_gates[..., i].transpose(1, 2).contiguous() for i in range(3))
    block_counts = counts.to(device=q.device, dtype=torch.long).view(1, nq, 1).expand(b, nq, hkv).contiguous()
    return (*tensors, *gates), {"block_counts": block_counts}


class NsaFlaAttention(NsaAttention):
    """nsa computed by fla.ops.nsa.parallel_nsa (compression, top-k, selection and the window)."""

    info = VariantInfo(
        name="nsa-fla",
        family="sparse",
        exact=False,
        non_causal=False,
        selects=True,
        gqa_native=True,
        devices=("cuda",),
        dtypes=(torch.float16, torch.bfloat16),
        packages=("fla", "flash_attn"),
        definition=NsaAttention.info.definition,
        summary="NSA on flash-linear-attention's Triton kernels (parallel_nsa); 16+ query heads per K/V head",
        paper=NsaAttention.info.paper,
        source="fla-org/flash-linear-attention, fla/ops/nsa/parallel.py (parallel_nsa)",
        departures=(
            "16 or more query heads per K/V head, a power of two, and at most block_size / 2 selected blocks per "
            "query (the kernels' tiles); other shapes are refused with the reason",
            "block importance is ranked from scores in the input dtype (nsa: float32), so near ties may choose "
            "another block: the tolerance (fp16 3e-2, bf16 8e-2) allows the few rows that do on random inputs",
            "the branch outputs are mixed by the gates in the input dtype (nsa: in the accumulate dtype)",
            "the sliding branch is flash-attn's windowed kernel, which fla's call needs installed",
            "self-attention only (Nq = Nk): fla takes fewer queries than keys only since its mid-2026 cached inference",
        ),
        gates=NsaAttention.info.gates,
        tolerance={torch.float16: 3e-2, torch.bfloat16: 8e-2},
    )

    @classmethod
    def unavailable_reason(cls, device: str, dtype: torch.dtype | None = None) -> str | None:
        """The base checks (fla installed among them), then its release."""
        return super().unavailable_reason(device, dtype) or release_problem(
            FLA_MINIMUM, "int32 token offsets in its forward kernels; before 0.3.2 the current block alone forced"
        )

    def block_counts(self, num_queries: int, num_keys: int) -> torch.Tensor:
        """(Nq,) blocks each query selects, the forced ones counted: the definition's counts, within the kernels'
        limits (a block of a power of two, 16 or more keys; its bitonic top-k sorts block_size / 2 slots)."""
        size = self.options.block_size
        if size < MIN_BLOCK or size & (size - 1):
            raise Unsupported(f"fla's NSA kernels take a block_size of a power of two, 16 or more; got {size}")
        own = positions(num_queries, num_keys, "cpu") // size
        counts = kept_count(own + 1, self.options.keep, self.options.top_k, FORCED)
        if 2 * power_of_two_at_least(int(counts.max())) > size:
            raise Unsupported(
                f"fla's NSA top-k keeps at most block_size / 2 = {size // 2} blocks, this selection needs "
                f"{int(counts.max())}"
            )
        return counts

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, branch_gates: torch.Tensor) -> torch.Tensor:
        check_gates(self.info.name, self.info.gates, {"branch_gates": branch_gates}, q, k)
        counts = self.block_counts(q.shape[2], k.shape[2])
        tensors, kwargs = fla_nsa_arguments(q, k, v, branch_gates.to(q.dtype), counts)
        from fla.ops.nsa import parallel_nsa  # here: the package is optional

        # The window branch is flash-attn's with its default scale, 1/sqrt(D): the scale passed here.
        out = parallel_nsa(*tensors, **kwargs, block_size=self.options.block_size, window_size=self.options.window,
                           scale=softmax_scale(q.shape[-1]))  # fmt: skip
        return out.transpose(1, 2)
