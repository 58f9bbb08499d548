"""A bench config expanded into its points, in order, without duplicates."""

from __future__ import annotations

import itertools

from ..core.config import BenchConfig
from ..measure.point import Point


def expand(config: BenchConfig, device: str, plugins: tuple[str, ...] = ()) -> list[Point]:
    """Every point of every sweep in `config`, in order, without duplicates."""
    points: dict[str, Point] = {}
    for sweep in config.sweeps_for(device):
        head_dims = sweep.head_dim or [None]
        grid = itertools.product(
            sweep.variants,
            sweep.mode,
            sweep.dtype,
            sweep.causal,
            sweep.batch,
            sweep.heads,
            sweep.kv_heads or [None],
            head_dims,
            sweep.q_len or [None],
            sweep.seq,
            sweep.lengths,
            sweep.layout,
        )
        for variant, mode, dtype, causal, batch, heads, kv_heads, head_dim, q_len, seq, lengths, layout in grid:
            point = Point(
                variant=variant,
                batch=batch,
                heads=heads,
                kv_heads=kv_heads or heads,
                q_len=q_len or seq,
                seq=seq,
                head_dim=head_dim or sweep.width // heads,
                dtype=("bfloat16" if device == "cuda" else "float32") if dtype == "auto" else dtype,
                causal=causal,
                mode=mode,
                device=device,
                options=dict(config.options.get(variant, {})),
                lengths=lengths,
                layout=layout,
                plugins=plugins,
                threads=config.threads,
                warmup=config.warmup,
                repeats=config.repeats,
                budget_s=config.budget_s,
                timeout_s=config.timeout_s,
                reference_max_bytes=config.reference_max_bytes,
            )
            points.setdefault(point.key(), point)
    return list(points.values())
