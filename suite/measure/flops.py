"""The one FLOP count every throughput figure uses.

Attention forward does two matmuls per unmasked (query, key) pair and head: q.k (2*D FLOPs) and
p*v (2*D FLOPs), so ``4 * B * H * pairs * D``, with H the number of *query* heads (GQA shares K/V
but not the work). ``pairs`` counts the pairs the mask keeps, exactly: Nq * Nk without a mask;
under bottom-right causality query i sees min(Nk, max(0, i + Nk - Nq + 1)) keys, which is
N (N + 1) / 2 when Nq = Nk and not half of Nq * Nk otherwise; a sparse variant passes its own
kept-pair count. The backward is counted as 2.5x the forward (FlashAttention's convention: five
matmuls to the forward's two), so fwd_bwd is 3.5x. Softmax and masking FLOPs are not counted.
"""

from __future__ import annotations

MODES = ("fwd", "bwd", "fwd_bwd")
_MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}


def causal_pairs(num_queries: int, num_keys: int) -> int:
    """Unmasked (query, key) pairs under bottom-right causality."""
    offset = num_keys - num_queries
    # Query i sees i + offset + 1 keys (never more than Nk: the last query sees exactly Nk);
    # queries before -offset see none.
    first = max(0, -offset)
    return sum_range(first + offset + 1, num_keys)


def sum_range(lo: int, hi: int) -> int:
    """lo + (lo + 1) + ... + hi (0 when hi < lo)."""
    return 0 if hi < lo else (lo + hi) * (hi - lo + 1) // 2


def attention_flops(
    batch: int,
    heads: int,
    num_queries: int,
    num_keys: int,
    head_dim: int,
    *,
    causal: bool = False,
    mode: str = "fwd",
    pairs: int | None = None,
) -> float:
    """FLOPs of one attention call; `pairs` overrides the kept-pair count (sparse variants)."""
    if mode not in _MODE_FACTOR:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if pairs is None:
        pairs = causal_pairs(num_queries, num_keys) if causal else num_queries * num_keys
    return 4.0 * batch * heads * pairs * head_dim * _MODE_FACTOR[mode]
