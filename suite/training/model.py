"""One small Transformer for every task, with any registered variant as its attention core.

Pre-LayerNorm blocks, learned or sinusoidal positions, and a head per task kind: a classifier on
the CLS token (or the mean of the non-padding positions), a two-tower classifier for document
pairs, and a causal language-model head for MQAR. Two head styles: `attnbench` (one GELU layer of
width dim; pairs combined as [u, v, u*v, u-v]) and `lra`, the Long Range Arena release's
(`classifier_head`: a ReLU layer of mlp width; `classifier_head_dual` with its default interaction:
[u, v] through two ReLU layers of mlp and mlp/2). Everything but the attention core is identical
across variants, and is initialised from the same seed.

Classification and pair inputs are right-padded: each sequence's length goes to the attention core
as its key lengths, so no real position attends to padding, where the variant takes lengths
(`masks_padding`; the training record says which). A variant without them attends to the padding
(one learned embedding, the same for every variant). Pooling ignores padding either way.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ...tasks.base import CLS, PAD, TaskData
from ...variants.contract import AttentionSpec, Variant, VariantInfo, attend
from ..core.errors import UserError
from ..core.registry import Registry


class ModelConfig(BaseModel):
    """Size and shape of the task model."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    kv_heads: int | None = Field(None, gt=0, description="K/V heads: heads (MHA), a divisor (GQA), 1 (MQA)")
    kv_latent: int | None = Field(
        None, gt=0, description="MLA: K and V rebuilt per head from one shared per-token latent of this width"
    )
    score_scale: float | None = Field(None, gt=0, description="scale of q.k before the softmax (1/sqrt(head dim))")
    qkv_dim: int | None = Field(None, gt=0, description="width of q, k and v over all heads (default: dim)")
    mlp_ratio: float = Field(2.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    pooling: Literal["cls", "mean"] = "cls"
    positions: Literal["learned", "sinusoidal"] = "learned"
    head: Literal["attnbench", "lra"] = Field("attnbench", description="classifier head style")

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        if self.attention_dim % self.heads:
            raise ValueError(f"attention width {self.attention_dim} is not divisible by {self.heads} heads")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.kv_heads is not None and self.kv_latent is not None:
            raise ValueError("give kv_heads (GQA, MQA) or kv_latent (MLA), not both")
        return self

    @property
    def attention_dim(self) -> int:
        return self.qkv_dim or self.dim

    @property
    def head_dim(self) -> int:
        return self.attention_dim // self.heads

    @property
    def kv_layout(self) -> str:
        """MHA, GQA-g (g query heads per K/V head), MQA or MLA-r (latent width r)."""
        if self.kv_latent is not None:
            return f"MLA-{self.kv_latent}"
        kv = self.kv_heads or self.heads
        return "MHA" if kv == self.heads else "MQA" if kv == 1 else f"GQA-{self.heads // kv}"

    def kv_cache_values(self) -> int:
        """Numbers an inference cache keeps per token over all layers: K and V of each K/V head, or the
        MLA latent (from which K and V are rebuilt; this model has no rotary part to cache beside it)."""
        per_layer = self.kv_latent if self.kv_latent is not None else 2 * (self.kv_heads or self.heads) * self.head_dim
        return per_layer * self.depth

    def state_values(self) -> int:
        """Numbers a recurrent variant's inference state holds over all layers, whatever the sequence's
        length: a (head_dim, head_dim) matrix per head (linear/recurrence.py)."""
        return self.heads * self.head_dim * self.head_dim * self.depth

    @property
    def mlp_dim(self) -> int:
        return int(self.dim * self.mlp_ratio)


def sinusoidal_positions(max_len: int, dim: int) -> torch.Tensor:
    """(max_len, dim): sin on even features, cos on odd ones, wavelengths from 2 pi to 10000 * 2 pi."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(torch.log(torch.tensor(10000.0)) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table


def check_layout(cfg: ModelConfig, info: VariantInfo) -> None:
    """UserError when the variant cannot take the model's K/V layout or score scale."""
    if (cfg.kv_heads or cfg.heads) < cfg.heads and not info.gqa:
        raise UserError(f"variant {info.name} cannot take grouped K/V heads ({cfg.kv_layout}): it declares gqa=False")
    if cfg.score_scale is not None and not info.scaled:
        raise UserError(f"variant {info.name} has no softmax scale to change (its definition is {info.definition})")


class SelfAttention(nn.Module):
    """Projections around an attention variant: (B, N, dim) -> (B, N, dim).

    K and V come from x (one K/V head per `groups` query heads), or, under MLA (DeepSeek-V2), from a
    normalised low-rank latent of x, up-projected to every head. `head_gate`, when set, multiplies
    each head's output (Michel et al. 2019): ones with gradients for importance, zeros to prune.
    """

    def __init__(self, cfg: ModelConfig, core: Variant) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.kv_heads = cfg.heads if cfg.kv_latent is not None else cfg.kv_heads or cfg.heads
        self.q = nn.Linear(cfg.dim, self.heads * self.head_dim)
        if cfg.kv_latent is not None:  # DeepSeek-V2's W_DKV then its norm: the latent is what a cache keeps
            self.kv_down = nn.Sequential(nn.Linear(cfg.dim, cfg.kv_latent, bias=False), nn.RMSNorm(cfg.kv_latent))
        self.kv = nn.Linear(cfg.kv_latent or cfg.dim, 2 * self.kv_heads * self.head_dim)
        self.out = nn.Linear(self.heads * self.head_dim, cfg.dim)
        self.core = core
        # Gated and delta-rule variants: their gates from x, by the projections of their original layer.
        self.gate_layer = core.gate_layer(cfg.dim)
        if core.info.gates and self.gate_layer is None:
            raise UserError(f"variant {core.info.name} declares gates but no gate_layer to make them in a model")
        # A variant's own 1/sqrt(hd) is undone and the configured scale applied by scaling q.
        self.q_gain = cfg.score_scale * math.sqrt(self.head_dim) if cfg.score_scale is not None else None
        self.head_gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)
        if self.q_gain is not None:
            q = q * self.q_gain
        latent = self.kv_down(x) if hasattr(self, "kv_down") else x
        k, v = self.kv(latent).view(b, n, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, Hkv, N, hd)
        gates = self.gate_layer(x) if self.gate_layer is not None else None
        o = attend(self.core, q, k, v, lengths, gates=gates)  # (B, H, N, hd)
        if self.head_gate is not None:
            gate = self.head_gate if self.head_gate.dim() == 2 else self.head_gate[None]  # (B or 1, H)
            o = o * gate[:, :, None, None].to(o.dtype)
        return self.out(o.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-LN Transformer block."""

    def __init__(self, cfg: ModelConfig, core: Variant) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = SelfAttention(cfg, core)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), nn.GELU(), nn.Linear(cfg.mlp_dim, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), lengths))
        return x + self.drop(self.mlp(self.ln2(x)))


class Encoder(nn.Module):
    """Token and position embeddings, blocks, final LayerNorm: (B, N) ids -> (B, N, dim)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int, make_core) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.dim)
        if cfg.positions == "sinusoidal":  # fixed, not trained
            self.register_buffer("pos", sinusoidal_positions(max_len, cfg.dim), persistent=False)
        else:
            self.pos = nn.Parameter(torch.randn(max_len, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg, make_core()) for _ in range(cfg.depth))
        self.ln = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.drop(self.embed(tokens) + self.pos[: tokens.shape[1]])
        for block in self.blocks:
            x = block(x, lengths)
        return self.ln(x)


class TaskModel(nn.Module):
    """Encoder plus the head for the task's kind: classify, pair or lm."""

    def __init__(
        self,
        kind: str,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        cfg: ModelConfig,
        registry: Registry,
        variant: str,
        options: dict | None = None,
    ) -> None:
        super().__init__()
        check_layout(cfg, registry.get(variant).info)
        self.kind, self.cfg, self.variant = kind, cfg, variant
        self.prepend_cls = kind != "lm" and cfg.pooling == "cls"
        seq_len = max_len + int(self.prepend_cls)
        spec = AttentionSpec(
            num_heads=cfg.heads,
            head_dim=cfg.head_dim,
            num_kv_heads=None if cfg.kv_latent is not None else cfg.kv_heads,
            causal=kind == "lm",
            max_seq_len=seq_len,
            options=options or {},
        )
        self.encoder = Encoder(cfg, vocab_size, seq_len, lambda: registry.build(variant, spec))
        # Padding exists in classification and pair inputs; the causal LM task has none at the end it reads.
        self.masks_padding = kind != "lm" and registry.get(variant).info.lengths
        self.head = _head(kind, cfg, num_classes)

    @classmethod
    def for_task(
        cls, data: TaskData, cfg: ModelConfig, registry: Registry, variant: str, options: dict | None = None
    ) -> TaskModel:
        """The model for a task's data (its kind, vocabulary, classes and length) with `variant` in every layer."""
        return cls(data.kind, data.vocab_size, data.num_classes, data.max_len, cfg, registry, variant, options)

    @property
    def attention_layers(self) -> list[SelfAttention]:
        return [block.attn for block in self.encoder.blocks]

    @torch.no_grad()
    def attention_weights(self, tokens: torch.Tensor, tokens2: torch.Tensor | None = None) -> list[torch.Tensor] | None:
        """Per layer, the (B, H, Nq, Nk) weights each attention core applies to v on this input (padding keys
        hidden as the forward hides them); None when the variant has no such matrix (random features,
        low-rank projections)."""
        maps: list[torch.Tensor | None] = []

        def capture(core, inputs, kwargs, output):
            q, k, _ = inputs
            maps.append(core.attention_weights(q.float(), k.float(), kwargs.get("key_lengths")))

        hooks = [attn.core.register_forward_hook(capture, with_kwargs=True) for attn in self.attention_layers]
        try:
            self(tokens, tokens2)
        finally:
            for hook in hooks:
                hook.remove()
        maps = maps[: len(self.attention_layers)]  # a pair model runs the encoder twice: the first document's
        return None if any(m is None for m in maps) else maps

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """One vector per sequence: the CLS position, or the mean over non-padding positions."""
        if self.prepend_cls:
            tokens = torch.cat([torch.full_like(tokens[:, :1], CLS), tokens], dim=1)
        real = tokens != PAD
        lengths = real.sum(1).clamp_min(1) if self.masks_padding else None  # right-padded: a prefix is real
        h = self.encoder(tokens, lengths)  # (B, N, dim)
        if self.prepend_cls:
            return h[:, 0]
        keep = real.unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp_min(1)

    def forward(self, tokens: torch.Tensor, tokens2: torch.Tensor | None = None) -> torch.Tensor:
        """Logits: (B, classes), or (B, N, vocab) for the language-model kind."""
        if self.kind == "lm":
            return self.head(self.encoder(tokens))
        if self.kind == "pair":
            u, v = self.pooled(tokens), self.pooled(tokens2)
            pair = [u, v] if self.cfg.head == "lra" else [u, v, u * v, u - v]
            return self.head(torch.cat(pair, dim=-1))
        return self.head(self.pooled(tokens))


def _head(kind: str, cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The output layers for the task kind, in the configured style."""
    if kind == "lm":
        return nn.Linear(cfg.dim, num_classes)
    if cfg.head == "lra":
        if kind == "pair":  # LRA's classifier_head_dual, interaction None: concat [u, v], two ReLU layers
            mlp = cfg.mlp_dim
            return nn.Sequential(
                nn.Linear(2 * cfg.dim, mlp),
                nn.ReLU(),
                nn.Linear(mlp, mlp // 2),
                nn.ReLU(),
                nn.Linear(mlp // 2, num_classes),
            )
        return nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), nn.ReLU(), nn.Linear(cfg.mlp_dim, num_classes))
    width = 4 * cfg.dim if kind == "pair" else cfg.dim
    return nn.Sequential(nn.Linear(width, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, num_classes))
