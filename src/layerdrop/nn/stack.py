"""A Transformer stack: token and position embeddings, a LayerDrop list of layers, and (pre-LN) a
final LayerNorm. The LM's decoder, the encoder, and the translation model's two halves are all one
of these, so every model's layers live under ``<name>.layers.N.`` and prune the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from layerdrop.nn.attention import KVCache
from layerdrop.nn.layerdrop import LayerDropModuleList
from layerdrop.nn.transformer_layer import TransformerLayer


@dataclass
class StackSpec:
    """The shape and regularisation of one stack, read off a model config."""

    vocab_size: int
    layers: int
    embed_dim: int
    ffn_dim: int
    heads: int
    max_positions: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layerdrop: float = 0.0
    normalize_before: bool = True
    bias: bool = True
    causal: bool = True
    cross_attention: bool = False
    layer_heads: list[int] | None = None  # per layer, after head or sublayer pruning (default: all heads)
    layer_ffn_dims: list[int] | None = None  # per layer, after FFN pruning (default: ffn_dim)
    learned_gates: bool = False  # each layer learns its drop rate (layerdrop.nn.learned_gates)
    scale_embedding: bool = False  # token embeddings times sqrt(embed_dim), as fairseq and Vaswani et al.
    layernorm_embedding: bool = False  # a LayerNorm on token + position embeddings (BART, fairseq --layernorm-embedding)


class TransformerStack(nn.Module):
    def __init__(self, spec: StackSpec, name: str, embed_tokens: nn.Embedding | None = None):
        super().__init__()
        self.embed_tokens = embed_tokens if embed_tokens is not None else nn.Embedding(spec.vocab_size, spec.embed_dim)
        self.embed_positions = nn.Embedding(spec.max_positions, spec.embed_dim)
        self.dropout = nn.Dropout(spec.dropout)
        # With N(0, 1/width) embeddings scaled by sqrt(width), the residual stream starts at unit RMS, so each
        # layer adds to the embedding instead of replacing it (docs/layerdrop_at_short_budgets.md).
        self.embed_scale = math.sqrt(spec.embed_dim) if spec.scale_embedding else 1.0
        self.layernorm_embedding = nn.LayerNorm(spec.embed_dim, bias=spec.bias) if spec.layernorm_embedding else None
        self.layers = LayerDropModuleList(
            [
                TransformerLayer(
                    spec.embed_dim, spec.heads, spec.layer_ffn_dims[i] if spec.layer_ffn_dims else spec.ffn_dim,
                    dropout=spec.dropout, attention_dropout=spec.attention_dropout,
                    activation_dropout=spec.activation_dropout, normalize_before=spec.normalize_before,
                    bias=spec.bias, causal=spec.causal, cross_attention=spec.cross_attention,
                    kept_heads=spec.layer_heads[i] if spec.layer_heads else None, learned_gate=spec.learned_gates,
                )
                for i in range(spec.layers)
            ],
            p=spec.layerdrop,
            name=name,
        )
        self.layer_norm = nn.LayerNorm(spec.embed_dim, bias=spec.bias) if spec.normalize_before else None

    def forward(
        self,
        tokens: torch.Tensor,
        caches: list[KVCache] | None = None,
        start_pos: int = 0,
        padding_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        positions = torch.arange(start_pos, start_pos + tokens.shape[1], device=tokens.device)
        x = self.embed_scale * self.embed_tokens(tokens) + self.embed_positions(positions)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout(x)
        extra = dict(padding_mask=padding_mask, memory=memory, memory_padding_mask=memory_padding_mask)
        if caches is None:
            for layer in self.layers:
                x = layer(x, **extra)
        else:  # incremental decoding runs in eval mode, where every layer runs
            for layer, cache in zip(self.layers, caches, strict=True):
                x = layer(x, cache, **extra)
        return self.layer_norm(x) if self.layer_norm is not None else x


def init_weights(model: nn.Module, num_layers: int, scale_embedding: bool = False, scale_residual: bool = True) -> None:
    """GPT-2 initialisation: N(0, 0.02), zero biases, and (``scale_residual``) residual projections shrunk with depth.
    With ``scale_embedding``, embeddings are N(0, 1/width) instead (fairseq's), for a unit-RMS stream."""
    def init_module(module: nn.Module) -> None:
        if isinstance(module, nn.Embedding) and scale_embedding:
            nn.init.normal_(module.weight, mean=0.0, std=module.embedding_dim ** -0.5)
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    model.apply(init_module)
    for name, param in model.named_parameters():
        if scale_residual and name.endswith(("out_proj.weight", "fc2.weight")):
            nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * max(num_layers, 1)))
