"""Attention masks as small pure functions, the way FlexAttention takes them.

A mask function ``mask_mod(b, h, q_idx, kv_idx) -> bool tensor`` says whether query ``q_idx`` may
attend to key ``kv_idx``. The same function is handed to FlexAttention (which compiles it into a
block-sparse kernel) and, through :func:`dense_mask`, to the readable reference (which materialises
it): one definition, two uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def causal(num_queries: int, num_keys: int) -> MaskMod:
    """Bottom-right causal mask: the queries are the last `num_queries` of `num_keys` positions."""
    offset = num_keys - num_queries

    def causal_bottom_right(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        return q_idx + offset >= kv_idx

    return causal_bottom_right


def dense_mask(
    mask_mod: MaskMod, num_queries: int, num_keys: int, device: torch.device | str, heads: int | None = None
) -> torch.Tensor:
    """Materialise `mask_mod` as a bool tensor (num_queries, num_keys) for head 0, or, given `heads`, as
    (heads, num_queries, num_keys) for a mask that differs per head."""
    q_idx = torch.arange(num_queries, device=device)[:, None]
    kv_idx = torch.arange(num_keys, device=device)[None, :]
    zero = torch.zeros((), dtype=torch.long, device=device)
    if heads is None:
        return mask_mod(zero, zero, q_idx, kv_idx).expand(num_queries, num_keys)
    h = torch.arange(heads, device=device)[:, None, None]
    return mask_mod(zero, h, q_idx[None], kv_idx[None]).expand(heads, num_queries, num_keys)


def key_mask(key_lengths: torch.Tensor, num_keys: int) -> torch.Tensor:
    """(B, Nk) bool: key j of sequence b is real iff j < key_lengths[b]; the rest is padding."""
    return torch.arange(num_keys, device=key_lengths.device)[None, :] < key_lengths[:, None]


def document_ids(cu_seqlens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(N,) long: the sequence each position of a packed batch belongs to."""
    positions = torch.arange(num_tokens, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].contiguous(), positions, right=True)


def same_document(doc: torch.Tensor, mask_mod: MaskMod | None) -> MaskMod:
    """`mask_mod` (None: full attention) restricted to pairs within one packed sequence (`doc`: (N,) ids)."""

    def within_document(b, h, q_idx, kv_idx):
        same = doc[q_idx] == doc[kv_idx]
        return same if mask_mod is None else same & mask_mod(b, h, q_idx, kv_idx)

    return within_document


def causal_mask(num_queries: int, num_keys: int, device: torch.device | str) -> torch.Tensor:
    """Bottom-right causal mask as a bool tensor (num_queries, num_keys)."""
    return dense_mask(causal(num_queries, num_keys), num_queries, num_keys, device)
