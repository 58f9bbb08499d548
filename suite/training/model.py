"""One small Transformer for every task, with any registered variant as its attention core.

Pre-LayerNorm blocks, learned or sinusoidal positions, and a head per task kind: a classifier on
the CLS token (or the mean of the non-padding positions), a two-tower classifier for document
pairs, a causal language-model head for MQAR and MAD's tasks, and MAD's compression decoder (the
sequence rebuilt from its last position's encoding). Two head styles: `attnbench` (one GELU layer of
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
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
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
    positions: Literal["learned", "sinusoidal", "rotary", "none"] = Field(
        "learned",
        description="added to the token embeddings (learned, sinusoidal), or none there: rotary rotates q and k "
        "in the softmax layers (every family but linear, whose gates and decays place tokens), as MAD's attention",
    )
    mlp: Literal["gelu", "swiglu"] = Field(
        "gelu",
        description="gelu: two layers, mlp_ratio wide; swiglu: MAD's (and Llama's) gated SiLU unit, "
        "8/3 x dim wide rounded up to a multiple of 16, no biases (mlp_ratio unused)",
    )
    head: Literal["attnbench", "lra"] = Field("attnbench", description="classifier head style")
    short_conv: int | None = Field(
        None,
        gt=1,
        description="a causal depthwise convolution of this many tokens, then SiLU, on q, k and v before the "
        "attention core (fla's ShortConvolution, as its GLA and DeltaNet layers use; Zoology's recall models too)",
    )
    layers: list[str] | None = Field(
        None,
        min_length=1,
        description="a hybrid: the variant of each layer, a pattern repeated to the depth ('gla,sdpa'; a pattern "
        "longer than the depth sets the depth to its length); None: the run's variant in every layer",
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _split_layers(cls, value: Any) -> Any:
        """`--set model.layers=gla,sdpa` gives one string: its comma-separated names."""
        return [name.strip() for name in value.split(",")] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _every_named_layer(self) -> ModelConfig:
        # `--set model.layers=linear-elu,sdpa` on a 1-layer preset asks for both layers, not the first alone.
        if self.layers is not None and len(self.layers) > self.depth:
            self.depth = len(self.layers)
        return self

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        if self.attention_dim % self.heads:
            raise ValueError(f"attention width {self.attention_dim} is not divisible by {self.heads} heads")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.kv_heads is not None and self.kv_latent is not None:
            raise ValueError("give kv_heads (GQA, MQA) or kv_latent (MLA), not both")
        if self.positions == "rotary" and self.head_dim % 2:
            raise ValueError(f"rotary positions rotate pairs of features: head dim {self.head_dim} is odd")
        return self

    def mixers(self, variant: str) -> list[str]:
        """The variant of each layer: the `layers` pattern repeated to the depth, else `variant` throughout."""
        pattern = self.layers or [variant]
        return [pattern[i % len(pattern)] for i in range(self.depth)]

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

    def kv_cache_values(self, layers: int | None = None) -> int:
        """Numbers an inference cache keeps per token over `layers` layers (default: all): K and V of each K/V
        head, or the MLA latent (from which K and V are rebuilt; this model has no rotary part to cache)."""
        per_layer = self.kv_latent if self.kv_latent is not None else 2 * (self.kv_heads or self.heads) * self.head_dim
        return per_layer * (self.depth if layers is None else layers)

    def state_values(self, layers: int | None = None) -> int:
        """Numbers a recurrent variant's inference state holds over `layers` layers (default: all), whatever
        the sequence's length: a (head_dim, head_dim) matrix per head (linear/recurrence.py)."""
        return self.heads * self.head_dim * self.head_dim * (self.depth if layers is None else layers)

    @property
    def mlp_dim(self) -> int:
        if self.mlp == "swiglu":  # MAD's GLU: int(2 * dim * 4 / 3), rounded up to a multiple of 16
            return -(-int(2 * self.dim * 4 / 3) // 16) * 16
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


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of (B, H, N, D) over its whole head dim, the halves
    rotated as pairs (GPT-NeoX's and flash-attn's non-interleaved layout, which MAD's attention uses)."""
    half = x.shape[-1] // 2
    frequencies = base ** -(torch.arange(half, dtype=torch.float32, device=x.device) / half)
    angles = torch.arange(x.shape[-2], dtype=torch.float32, device=x.device)[:, None] * frequencies
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class SwiGLU(nn.Module):
    """MAD's SwiGLU: w3(silu(w1 x) * w2 x), no biases."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(dim, inner, bias=False), nn.Linear(dim, inner, bias=False)
        self.w3 = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class ShortConvolution(nn.Module):
    """A depthwise convolution over the last `size` tokens (causal: left-padded), then SiLU: (B, N, C) ->
    (B, N, C), as fla's ShortConvolution with its default activation."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, size, groups=channels, padding=size - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2))


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
        if cfg.short_conv is not None:  # k and v convolved as one: a depthwise convolution keeps them apart
            self.q_conv = ShortConvolution(self.heads * self.head_dim, cfg.short_conv)
            self.kv_conv = ShortConvolution(2 * self.kv_heads * self.head_dim, cfg.short_conv)
        if core.info.evicts:  # a model's forward sees the whole sequence: there is no prompt cache to cut
            raise UserError(
                f"variant {core.info.name} is a KV-cache policy for decoding: a model trains with the whole "
                "cache (train sdpa; bench the policy with --preset kv-cache)"
            )
        self.core = core
        self.rotates = cfg.positions == "rotary" and core.info.family != "linear"
        # Gated and delta-rule variants: their gates from x, by the projections of their original layer.
        self.gate_layer = core.gate_layer(cfg.dim)
        if core.info.gates and self.gate_layer is None:
            raise UserError(f"variant {core.info.name} declares gates but no gate_layer to make them in a model")
        # A variant's own 1/sqrt(hd) is undone and the configured scale applied by scaling q.
        self.q_gain = cfg.score_scale * math.sqrt(self.head_dim) if cfg.score_scale is not None else None
        self.head_gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, kv = self.q(x), self.kv(self.kv_down(x) if hasattr(self, "kv_down") else x)
        if hasattr(self, "q_conv"):
            q, kv = self.q_conv(q), self.kv_conv(kv)
        q = q.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)
        if self.q_gain is not None:
            q = q * self.q_gain
        k, v = kv.view(b, n, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, Hkv, N, hd)
        if self.rotates:
            q, k = rotary(q), rotary(k)
        gates = self.gate_layer(x) if self.gate_layer is not None else None
        o = attend(self.core, q, k, v, lengths, gates=gates)  # (B, H, N, hd)
        if self.head_gate is not None:
            gate = self.head_gate if self.head_gate.dim() == 2 else self.head_gate[None]  # (B or 1, H)
            o = o * gate[:, :, None, None].to(o.dtype)
        return self.out(o.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


def layer_projections(model: nn.Module) -> dict[str, list[str]]:
    """Per mixer, the linear maps of its attention layer (the first of its layers): q, kv, out and those of
    the gate layer that makes a variant's extra inputs (NSA's branch gates, a forget gate, an indexer), as
    'name: in -> out'. Records name them: what a gated or selecting variant was given to work with."""
    found: dict[str, list[str]] = {}
    for layer in model.modules():
        if isinstance(layer, SelfAttention) and layer.core.info.name not in found:
            found[layer.core.info.name] = [
                f"{name}: {linear.in_features} -> {linear.out_features}"
                for name, linear in layer.named_modules()
                if isinstance(linear, nn.Linear)
            ]
    return found


class Block(nn.Module):
    """Pre-LN Transformer block."""

    def __init__(self, cfg: ModelConfig, core: Variant) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = SelfAttention(cfg, core)
        self.mlp = (
            SwiGLU(cfg.dim, cfg.mlp_dim)
            if cfg.mlp == "swiglu"
            else nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), nn.GELU(), nn.Linear(cfg.mlp_dim, cfg.dim))
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), lengths))
        return x + self.drop(self.mlp(self.ln2(x)))


class Encoder(nn.Module):
    """Token and position embeddings, blocks, final LayerNorm: (B, N) ids -> (B, N, dim)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int, make_core: Callable[[int], Variant]) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.dim)
        if cfg.positions == "sinusoidal":  # fixed, not trained
            self.register_buffer("pos", sinusoidal_positions(max_len, cfg.dim), persistent=False)
        elif cfg.positions == "learned":
            self.pos = nn.Parameter(torch.randn(max_len, cfg.dim) * 0.02)
        else:  # rotary (in the attention layers) or none: nothing added to the tokens
            self.register_buffer("pos", torch.zeros(max_len, cfg.dim), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg, make_core(layer)) for layer in range(cfg.depth))
        self.ln = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.drop(self.embed(tokens) + self.pos[: tokens.shape[1]])
        for block in self.blocks:
            x = block(x, lengths)
        return self.ln(x)


class Reconstruction(nn.Module):
    """MAD's compression decoder (mad-lab's AutoEncoder, pooling 'last'): one sequence encoding plus a fixed
    sinusoidal embedding of each position, through a non-expanding two-layer GELU MLP, to logits per position."""

    def __init__(self, dim: int, max_len: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("positions", sinusoidal_positions(max_len, dim), persistent=False)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU()
        )
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, encoding: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, max_len, classes)."""
        return self.out(self.mlp(encoding[:, None, :] + self.positions.to(encoding.dtype)))


class TaskModel(nn.Module):
    """Encoder plus the head for the task's kind: classify, pair, lm or autoencode."""

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
        layer_options: Mapping[str, dict] | None = None,
    ) -> None:
        super().__init__()
        self.kind, self.cfg, self.variant = kind, cfg, variant
        self.mixers = cfg.mixers(variant)  # a hybrid's layers differ; else `variant` throughout
        for mixer in set(self.mixers):
            check_layout(cfg, registry.get(mixer).info)
        # A language model and MAD's compression encoder read left to right; classifiers see the whole input.
        self.causal = kind in ("lm", "autoencode")
        self.prepend_cls = not self.causal and cfg.pooling == "cls"
        seq_len = max_len + int(self.prepend_cls)

        def make_core(layer: int) -> Variant:
            mixer = self.mixers[layer]
            mixer_options = options if mixer == variant else (layer_options or {}).get(mixer)
            spec = AttentionSpec(
                num_heads=cfg.heads,
                head_dim=cfg.head_dim,
                num_kv_heads=None if cfg.kv_latent is not None else cfg.kv_heads,
                causal=self.causal,
                max_seq_len=seq_len,
                options=mixer_options or {},
            )
            return registry.build(mixer, spec)

        self.encoder = Encoder(cfg, vocab_size, seq_len, make_core)
        # Padding exists in classification and pair inputs; the causal tasks have none at the end they read.
        self.masks_padding = not self.causal and all(registry.get(m).info.lengths for m in set(self.mixers))
        self.head = (
            Reconstruction(cfg.dim, max_len, num_classes) if kind == "autoencode" else _head(kind, cfg, num_classes)
        )

    @classmethod
    def for_task(
        cls,
        data: TaskData,
        cfg: ModelConfig,
        registry: Registry,
        variant: str,
        options: dict | None = None,
        layer_options: Mapping[str, dict] | None = None,
    ) -> TaskModel:
        """The model for a task's data (its kind, vocabulary, classes and length) with `variant` in every layer,
        or a hybrid's mixers (`layer_options`: the options of those other than `variant`)."""
        return cls(
            data.kind, data.vocab_size, data.num_classes, data.max_len, cfg, registry, variant, options, layer_options
        )

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
        """Logits: (B, classes), or (B, N, vocab) for the language-model and autoencoding kinds."""
        if self.kind == "lm":
            return self.head(self.encoder(tokens))
        if self.kind == "autoencode":  # the whole sequence rebuilt from its last position's encoding
            return self.head(self.encoder(tokens)[:, -1])
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
