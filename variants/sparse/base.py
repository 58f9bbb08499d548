"""What every sparse variant shares: its pattern becomes a FlexAttention block mask (fully masked
blocks are skipped, so sparsity is real speed), its definition is softmax attention under the dense
form of the same mask, and its FLOPs count only the (query, key) pairs the mask keeps.

A pattern is written in key positions: a query's position is ``q_idx + (Nk - Nq)`` (bottom-right,
the same alignment as causality), so a pattern means the same thing for decoding (Nq < Nk) as for
a full sequence. Under ``causal`` the pattern is intersected with the causal mask. A pattern may
differ per query head (BigBird's random blocks, the fixed pattern's summary columns): such a
variant sets ``per_head`` and its dense mask is (H, Nq, Nk).

Where torch.compile cannot build the kernel, FlexAttention runs eagerly: the same mask applied to
dense scores (correct, but with the memory of dense attention). torch has no FlexAttention
backward on CPU, so gradients there go through the masked softmax itself (dense memory too): CPU
training works, and CPU fwd_bwd numbers measure that fallback, not the kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..contract import Variant, accumulate_dtype
from ..flex_kernel import CompileOptions, FlexKernel
from ..masks import MaskMod, dense_mask
from ..softmax import softmax_attention, softmax_weights

# keep(h, q_pos, kv_idx) -> bool tensor: whether query head h at key position q_pos may attend to key
# kv_idx. Each sparse file writes its pattern as a named module-level function that returns one of these.
Pattern = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# Rows of the dense mask materialised at once when counting kept pairs.
_COUNT_ROWS = 1024


class SparseOptions(CompileOptions):
    """Options every sparse variant has: whether its FlexAttention kernel is compiled."""


class SparseAttention(Variant):
    """A pattern on the shared FlexAttention kernel. Subclasses set `pattern` from their options."""

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self._kernel = FlexKernel(self.mask_mod, self.options.compile, spec.num_heads if self.per_head else None)

    @property
    def per_head(self) -> bool:
        """Whether the pattern differs between query heads (then the dense mask is (H, Nq, Nk))."""
        return False

    def pattern(self, num_keys: int, device: torch.device | str) -> Pattern:
        """This variant's pattern for `num_keys` keys, its tensors on `device`."""
        raise NotImplementedError(f"{type(self).__name__} defines no pattern")

    def mask_mod(self, num_queries: int, num_keys: int, device: torch.device | str = "cpu") -> MaskMod:
        """The pattern, aligned bottom-right and intersected with causality when asked for."""
        offset = num_keys - num_queries
        causal = self.spec.causal
        pattern = self.pattern(num_keys, device)

        def sparse_mask(b, h, q_idx, kv_idx):
            q_pos = q_idx + offset
            keep = pattern(h, q_pos, kv_idx)
            return keep & (kv_idx <= q_pos) if causal else keep

        return sparse_mask

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if needs_grad and q.device.type == "cpu":
            acc = accumulate_dtype(q.dtype)
            return self.reference(q.to(acc), k.to(acc), v.to(acc), key_lengths).to(q.dtype)
        return self._kernel(q, k, v, key_lengths)

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Softmax attention under the dense form of the mask (and of the key lengths, when given)."""
        return softmax_attention(
            q, k, v, mask=self.dense_mask(q.shape[-2], k.shape[-2], q.device), key_lengths=key_lengths
        )

    def attention_weights(
        self, q: torch.Tensor, k: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Softmax weights under the dense mask (and the key lengths, when given)."""
        return softmax_weights(q, k, mask=self.dense_mask(q.shape[-2], k.shape[-2], q.device), key_lengths=key_lengths)

    def dense_mask(self, num_queries: int, num_keys: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The pattern as a bool tensor: (Nq, Nk), or (H, Nq, Nk) when it differs per head."""
        heads = self.spec.num_heads if self.per_head else None
        return dense_mask(self.mask_mod(num_queries, num_keys, device), num_queries, num_keys, device, heads)

    def kept_pairs(self, num_queries: int, num_keys: int) -> int:
        """(query, key) pairs the mask keeps per head (the mean over heads, rounded, for a per-head
        pattern): the work a sparse kernel needs to do."""
        mod = self.mask_mod(num_queries, num_keys)
        kv_idx = torch.arange(num_keys)[None, :]
        zero = torch.zeros((), dtype=torch.long)
        heads = self.spec.num_heads if self.per_head else 1
        total = 0
        for h in range(heads):  # one head and _COUNT_ROWS rows at a time: the memory of one (rows, Nk) mask
            for start in range(0, num_queries, _COUNT_ROWS):
                q_idx = torch.arange(start, min(start + _COUNT_ROWS, num_queries))[:, None]
                total += int(mod(zero, torch.tensor(h), q_idx, kv_idx).sum())
        return round(total / heads)
