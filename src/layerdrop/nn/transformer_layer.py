"""One Transformer layer: self-attention, (for an encoder-decoder's decoder) cross-attention, then a
feed-forward network, each in a residual branch.

Pre-LayerNorm (normalise the input of each branch) is the default: it trains stably without a
long warmup. Post-LayerNorm (normalise after the residual sum, as in the original Transformer and
fairseq's default) is available with ``normalize_before=False``. Parameter names follow fairseq's
(``self_attn``, ``self_attn_layer_norm``, ``encoder_attn``, ``fc1``, ``fc2``, ``final_layer_norm``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerdrop.nn.attention import CrossAttention, KVCache, SelfAttention


class TransformerLayer(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        normalize_before: bool = True,
        bias: bool = True,
        causal: bool = True,
        cross_attention: bool = False,
    ):
        super().__init__()
        self.normalize_before = normalize_before
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.self_attn = SelfAttention(embed_dim, num_heads, attention_dropout, bias=bias, causal=causal)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, bias=bias)
        if cross_attention:
            self.encoder_attn = CrossAttention(embed_dim, num_heads, attention_dropout, bias=bias)
            self.encoder_attn_layer_norm = nn.LayerNorm(embed_dim, bias=bias)
        else:
            self.encoder_attn = None
        self.fc1 = nn.Linear(embed_dim, ffn_dim, bias=bias)
        self.fc2 = nn.Linear(ffn_dim, embed_dim, bias=bias)
        self.final_layer_norm = nn.LayerNorm(embed_dim, bias=bias)

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, branch) -> torch.Tensor:
        if self.normalize_before:
            return x + self.dropout(branch(norm(x)))
        return norm(x + self.dropout(branch(x)))

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        padding_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self._residual(x, self.self_attn_layer_norm, lambda h: self.self_attn(h, cache, padding_mask))
        if self.encoder_attn is not None:
            x = self._residual(x, self.encoder_attn_layer_norm,
                               lambda h: self.encoder_attn(h, memory, memory_padding_mask, cache))
        return self._residual(x, self.final_layer_norm, self._ffn)
