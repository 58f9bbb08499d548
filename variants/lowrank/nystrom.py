"""nystrom: Nystromformer, softmax attention through m landmarks (Xiong et al. 2021).

Landmarks are segment means of the queries and keys (m segments of the sequence). With
s = 1/sqrt(D),

    F = softmax(q K~^T s)   (Nq x m)     A = softmax(Q~ K~^T s)   (m x m)     B = softmax(Q~ k^T s)   (m x Nk)
    out = F A^+ (B v)

A^+ is the Moore-Penrose pseudoinverse, computed as in the paper by Newton-Schulz iterations (6 by
default; 0 uses torch.linalg.pinv). The iteration is part of the published method and of the
definition `reference` evaluates in float64: on untrained inputs A is close to uniform and nearly
singular, where an exact pseudoinverse is itself unstable and would not be a fair yardstick.
Landmarks mix all positions: not causal. With N <= m the landmarks are the tokens themselves
(m is capped at N, or at the longest sequence's length) and the method degenerates to a
pseudoinverse detour around full attention.

With key lengths, each sequence's landmarks are the segment means of its real keys (and, when
Nq = Nk, of its real queries: the two are one padded sequence), and B's softmax runs over the real
keys only, so padding reaches no output.

As in the original code, a depthwise convolution along the sequence on V (one learned kernel of
`conv_kernel` taps per K/V head, zero-padded, padding values zeroed first) is added to the output:
out += conv(v), each query taking the convolved value at its own position (bottom-right aligned
when Nq < Nk). It is part of the definition; `conv_kernel: 0` leaves it out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from ..contract import Options, Unsupported, Variant, VariantInfo, accumulate_dtype, check_qkv, softmax_scale
from ..masks import key_mask


def landmarks(x: torch.Tensor, m: int) -> torch.Tensor:
    """Means of m (near-)equal segments along the sequence: (..., N, D) -> (..., m, D)."""
    lead, n, d = x.shape[:-2], x.shape[-2], x.shape[-1]
    pooled = F.adaptive_avg_pool1d(x.reshape(-1, n, d).transpose(1, 2), m)  # (prod(lead), D, m)
    return pooled.transpose(1, 2).reshape(*lead, m, d)


def masked_landmarks(x: torch.Tensor, m: int, lengths: torch.Tensor) -> torch.Tensor:
    """`landmarks` over the first lengths[b] rows of each sequence b: (B, ..., N, D) -> (B, ..., m, D)."""
    n = x.shape[-2]
    i = torch.arange(m, device=x.device)[None, :]
    start = (i * lengths[:, None]) // m  # segment i of a length-L sequence: rows floor(iL/m) .. ceil((i+1)L/m) - 1
    end = -((-(i + 1) * lengths[:, None]) // m)
    rows = torch.arange(n, device=x.device)[None, None, :]
    pool = ((rows >= start[..., None]) & (rows < end[..., None])).to(x.dtype)  # (B, m, N)
    pool = pool / pool.sum(-1, keepdim=True)
    return pool.view(pool.shape[0], *[1] * (x.dim() - 3), m, n) @ x


def iterative_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """Newton-Schulz approximation of the pseudoinverse of row-stochastic a (Xiong et al., eq. 14)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    # Initialisation from the paper: a^T / (max column sum * max row sum).
    z = a.transpose(-2, -1) / (a.abs().sum(-2).amax(-1) * a.abs().sum(-1).amax(-1))[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromOptions(Options):
    landmarks: int = Field(64, gt=0, description="landmarks m")
    pinv_iterations: int = Field(6, ge=0, description="Newton-Schulz steps for A^+ (0: exact pinv)")
    conv_kernel: int = Field(35, ge=0, description="taps of the depthwise convolution on V, odd (0: none)")

    @model_validator(mode="after")
    def _odd_kernel(self) -> NystromOptions:
        if self.conv_kernel and self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (centred) or 0, got {self.conv_kernel}")
        return self


class NystromAttention(Variant):
    """Nystromformer attention with segment-mean landmarks, O(N m)."""

    info = VariantInfo(
        name="nystrom",
        family="low-rank",
        exact=False,
        causal=False,
        gqa_native=True,
        definition="softmax(q K~^T s) pinv(softmax(Q~ K~^T s)) softmax(Q~ k^T s) v, landmarks = segment means",
        summary="Nystromformer: m segment-mean landmarks, conv on V (non-causal)",
        paper="Xiong et al. 2021, Nystromformer",
        source="mlpen/Nystromformer, code/attention_nystrom.py (LRA config: 32 landmarks, conv_kernel_size 35)",
        departures=(
            "N need not be a multiple of the landmarks (the original reshapes, so requires it): segments are "
            "rows floor(iN/m) .. ceil((i+1)N/m) - 1, which overlap by a row where N/m is not whole",
            "m is capped at the sequence length; the original computes exact softmax attention when m = N",
            "the Newton-Schulz start scales each matrix by its own norms (the original's default init_option "
            "'original' takes one max over the whole batch and all heads)",
            "with key lengths the landmarks average real tokens only (the original averages padded sequences "
            "with the padding zeroed)",
            "with GQA the convolution runs on the K/V heads and is shared by each group (the original has one "
            "V per query head)",
        ),
        lengths=True,
    )
    Options = NystromOptions

    def __init__(self, spec) -> None:
        super().__init__(spec)
        taps = self.options.conv_kernel
        heads = spec.num_kv_heads
        # The original's layer: Conv2d over (sequence, 1), one filter per head, no bias.
        conv = nn.Conv2d(heads, heads, (taps, 1), padding=(taps // 2, 0), groups=heads, bias=False) if taps else None
        self.conv = conv

    def _check_conv_shape(self, nq: int, nk: int) -> None:
        """The convolved value at a query's own position exists only for Nq <= Nk (bottom-right aligned)."""
        if self.conv is not None and nq > nk:
            raise Unsupported(f"nystrom's convolution on V needs Nq <= Nk (got {nq} > {nk}); set conv_kernel=0")

    def _conv_term(self, v: torch.Tensor, nq: int, key_lengths: torch.Tensor | None) -> torch.Tensor | None:
        """conv(v) at each query's position: (B, Hkv, 1, Nq, D), or None without the convolution."""
        if self.conv is None:
            return None
        nk = v.shape[-2]
        self._check_conv_shape(nq, nk)
        if key_lengths is not None:
            v = v * key_mask(key_lengths, nk)[:, None, :, None]
        conv = F.conv2d(v, self.conv.weight.to(v.dtype), padding=self.conv.padding, groups=self.conv.groups)
        return conv[:, :, None, nk - nq :]

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        g, acc = h // hkv, accumulate_dtype(q.dtype)
        s = softmax_scale(d)
        m = _landmark_count(self.options.landmarks, nq, nk, key_lengths)
        qg, kk, vv = q.to(acc).reshape(b, hkv, g * nq, d), k.to(acc), v.to(acc)  # G folded into rows
        if key_lengths is None:
            q_land = landmarks(qg.view(b, hkv, g, nq, d), m).view(b, hkv, g * m, d)  # (B, Hkv, G*m, D)
            k_land = landmarks(kk, m)  # (B, Hkv, m, D)
        else:  # real tokens only; queries are padded like the keys when they are the same sequence
            q_lengths = key_lengths if nq == nk else torch.full_like(key_lengths, nq)
            q_land = masked_landmarks(qg.view(b, hkv, g, nq, d), m, q_lengths).view(b, hkv, g * m, d)
            k_land = masked_landmarks(kk, m, key_lengths)
        kernel_f = torch.softmax(qg @ k_land.transpose(-2, -1) * s, dim=-1)  # (B, Hkv, G*Nq, m)
        kernel_a = torch.softmax(q_land @ k_land.transpose(-2, -1) * s, dim=-1)  # (B, Hkv, G*m, m)
        scores_b = q_land @ kk.transpose(-2, -1) * s  # (B, Hkv, G*m, Nk)
        if key_lengths is not None:
            scores_b = scores_b.masked_fill(~key_mask(key_lengths, nk)[:, None, None, :], float("-inf"))
        kernel_b = torch.softmax(scores_b, dim=-1)
        a = kernel_a.view(b, hkv, g, m, m)
        iterations = self.options.pinv_iterations
        a_pinv = iterative_pinv(a, iterations) if iterations else torch.linalg.pinv(a)  # (B, Hkv, G, m, m)
        bv = (kernel_b @ vv).view(b, hkv, g, m, d)  # (B, Hkv, G, m, D)
        out = kernel_f.view(b, hkv, g, nq, m) @ (a_pinv @ bv)  # (B, Hkv, G, Nq, D)
        conv = self._conv_term(vv, nq, key_lengths)
        if conv is not None:
            out = out + conv
        return out.reshape(q.shape).to(q.dtype)

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The paper's formula one (batch, head) at a time, written apart from `forward`: segment means
        from explicit segment bounds, the three softmax kernels, and the pseudoinverse by its own loop.
        With key lengths, each sequence is cut to its real keys (and queries, when Nq = Nk) first. The
        convolution is a 1-D convolution of each value channel with the head's taps, zeros beyond the ends."""
        b, h, hkv, nq, nk, d = check_qkv(q, k, v)
        s = softmax_scale(d)
        m = _landmark_count(self.options.landmarks, nq, nk, key_lengths)
        self._check_conv_shape(nq, nk)
        out = torch.empty_like(q)
        for bi in range(b):
            real = nk if key_lengths is None else int(key_lengths[bi])
            for hi in range(h):
                qh, kh, vh = q[bi, hi], k[bi, hi * hkv // h, :real], v[bi, hi * hkv // h, :real]
                q_land, k_land = _segment_means(qh[:real] if nq == nk else qh, m), _segment_means(kh, m)
                f = torch.softmax(qh @ k_land.T * s, dim=-1)
                a = torch.softmax(q_land @ k_land.T * s, dim=-1)
                bk = torch.softmax(q_land @ kh.T * s, dim=-1)
                out[bi, hi] = f @ _pinv(a, self.options.pinv_iterations) @ (bk @ vh)
                if self.conv is not None:  # over the real values, zeros past them and beyond both ends
                    taps = self.conv.weight[hi * hkv // h].flatten().to(vh.dtype)
                    padded = F.pad(vh.T[:, None, :], (0, nk - real))  # (D, 1, Nk)
                    conv = F.conv1d(padded, taps.view(1, 1, -1), padding=taps.numel() // 2)[:, 0].T  # (Nk, D)
                    out[bi, hi] += conv[nk - nq :]
        return out


def _landmark_count(landmarks: int, nq: int, nk: int, key_lengths: torch.Tensor | None) -> int:
    """m: more landmarks than tokens would only repeat tokens, so m is capped at the longest real sequence
    (then the amount of padding never changes m)."""
    longest = nk if key_lengths is None else int(key_lengths.max())
    return min(landmarks, nq if key_lengths is None or nq != nk else longest, longest)


def _segment_means(x: torch.Tensor, m: int) -> torch.Tensor:
    """(N, D) -> (m, D): the mean of rows floor(i N / m) .. ceil((i + 1) N / m) - 1 for each segment i."""
    n = x.shape[0]
    return torch.stack([x[(i * n) // m : -(-((i + 1) * n) // m)].mean(0) for i in range(m)])


def _pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """Pseudoinverse of one (m, m) matrix: Newton-Schulz as in the paper's eq. 14, or exact for 0 steps."""
    if not iterations:
        return torch.linalg.pinv(a)
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    z = a.T / (a.sum(0).max() * a.sum(1).max())  # a is row-stochastic: its entries are non-negative
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z
