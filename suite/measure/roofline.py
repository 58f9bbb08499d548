"""A point on the roofline: the bytes it must move, its arithmetic intensity, and how close it came to
each of the run's measured ceilings.

The bytes are the least any implementation moves between memory and the chip: the forward reads q,
k and v and writes the output once; the backward reads q, k, v, the output and its gradient and
writes dq, dk and dv. Intensity is FLOPs (flops.py's count) over those bytes. A call can reach at
most min(matmul peak, intensity x bandwidth), the roofline; each record keeps the fraction of the
measured matmul peak (``peak_fraction``) and of the measured memory bandwidth (``bandwidth_fraction``:
bytes over time, over the bandwidth) it reached. For decoding shapes (one query against a long K/V
cache) the bandwidth fraction is the number that matters: the work is reading the cache.
Both ceilings are measured once per run on the run's device (measure/ceilings.py), never taken from
a datasheet.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.devices import parse_dtype


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype named as records name it."""
    return torch.empty((), dtype=parse_dtype(dtype)).element_size()


def io_bytes(batch: int, heads: int, kv_heads: int, q_len: int, seq: int, head_dim: int, dtype: str, mode: str) -> int:
    """Bytes of q, k, v and the output (and, with a backward, of the gradients) moved once."""
    q = batch * heads * q_len * head_dim
    kv = 2 * batch * kv_heads * seq * head_dim
    forward = q + kv + q  # q, k, v read; the output written
    backward = (q + kv + 2 * q) + (q + kv)  # q, k, v, out, d_out read; dq, dk, dv written
    elements = {"fwd": forward, "bwd": backward, "fwd_bwd": forward + backward}[mode]
    return elements * dtype_bytes(dtype)


def point_bytes(fields: dict[str, Any]) -> int:
    """io_bytes of a point or record (a packed batch is one row of all its tokens)."""
    batch, q_len, seq = fields["batch"], fields["q_len"], fields["seq"]
    if fields.get("layout") == "packed" and fields.get("real_tokens"):
        batch, q_len, seq = 1, fields["real_tokens"], fields["real_tokens"]
    return io_bytes(
        batch, fields["heads"], fields["kv_heads"], q_len, seq, fields["head_dim"], fields["dtype"], fields["mode"]
    )


def roofline_record(record: dict[str, Any], peak_tflops: float | None, bandwidth_gbs: float | None) -> dict[str, Any]:
    """The roofline fields of an `ok` record: bytes, intensity, and the fractions of the two ceilings."""
    if record.get("status") != "ok" or not record.get("time_ms"):
        return {}
    moved = point_bytes(record)
    seconds = record["time_ms"] * 1e-3
    out: dict[str, Any] = {"io_bytes": moved, "bandwidth_gbs_reached": moved / seconds / 1e9}
    if bandwidth_gbs:
        out["bandwidth_fraction"] = out["bandwidth_gbs_reached"] / bandwidth_gbs
    if record.get("flops"):
        out["intensity"] = record["flops"] / moved
        if peak_tflops:
            out["peak_fraction"] = record["flops"] / seconds / 1e12 / peak_tflops
    return out


def ridge_intensity(peak_tflops: float, bandwidth_gbs: float) -> float:
    """FLOPs per byte at which the roofline turns from bandwidth-bound to compute-bound."""
    return peak_tflops * 1e12 / (bandwidth_gbs * 1e9)
