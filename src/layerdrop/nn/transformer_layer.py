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
from layerdrop.nn.learned_gates import LayerGate
from layerdrop.nn.structured import FULL, LayerPlan


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
        kept_heads: int | None = None,
        learned_gate: bool = False,
    ):
        """``kept_heads`` (default ``num_heads``) and ``ffn_dim`` describe a pruned layer: fewer heads of the
        original width ``embed_dim // num_heads``; 0 heads or an FFN width of 0 removes that sublayer."""
        super().__init__()
        self.normalize_before = normalize_before
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.gate = LayerGate(embed_dim) if learned_gate else None
        kept_heads = num_heads if kept_heads is None else kept_heads
        if kept_heads > 0:
            self.self_attn = SelfAttention(embed_dim, kept_heads, attention_dropout, bias=bias, causal=causal,
                                           head_dim=embed_dim // num_heads)
            self.self_attn_layer_norm = nn.LayerNorm(embed_dim, bias=bias)
        else:
            self.self_attn = self.self_attn_layer_norm = None
        if cross_attention:
            self.encoder_attn = CrossAttention(embed_dim, num_heads, attention_dropout, bias=bias)
            self.encoder_attn_layer_norm = nn.LayerNorm(embed_dim, bias=bias)
        else:
            self.encoder_attn = None
        if ffn_dim > 0:
            self.fc1 = nn.Linear(embed_dim, ffn_dim, bias=bias)
            self.fc2 = nn.Linear(ffn_dim, embed_dim, bias=bias)
            self.final_layer_norm = nn.LayerNorm(embed_dim, bias=bias)
        else:
            self.fc1 = self.fc2 = self.final_layer_norm = None

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, branch, scale: torch.Tensor | None = None) -> torch.Tensor:
        if self.normalize_before:
            out = self.dropout(branch(norm(x)))
            return x + (out if scale is None else out * scale)
        out = self.dropout(branch(x))
        return norm(x + (out if scale is None else out * scale))

    def _ffn(self, x: torch.Tensor, halves: tuple[int, ...] | None = None) -> torch.Tensor:
        if halves is None:
            return self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))
        # Only the kept halves of the hidden units: slices of fc1's rows and fc2's columns.
        half = self.fc1.out_features // 2
        rows = torch.cat([torch.arange(h * half, (h + 1) * half) for h in halves]).to(x.device)
        hidden = F.linear(x, self.fc1.weight.index_select(0, rows),
                          None if self.fc1.bias is None else self.fc1.bias.index_select(0, rows))
        return F.linear(self.activation_dropout(F.gelu(hidden)), self.fc2.weight.index_select(1, rows), self.fc2.bias)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        padding_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        plan: LayerPlan = FULL,
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``plan``: the parts to run on this pass (LayerDrop units); ``scale``: learned gates' factor, 1 in
        value, which carries the gradient to the drop rate."""
        if self.gate is not None and self.training:
            self.gate.observe(x)
        if self.self_attn is not None and plan.attention:
            x = self._residual(x, self.self_attn_layer_norm,
                               lambda h: self.self_attn(h, cache, padding_mask, plan.heads), scale)
        if self.encoder_attn is not None:
            x = self._residual(x, self.encoder_attn_layer_norm,
                               lambda h: self.encoder_attn(h, memory, memory_padding_mask, cache), scale)
        if self.fc1 is not None and plan.ffn:
            x = self._residual(x, self.final_layer_norm, lambda h: self._ffn(h, plan.ffn_halves), scale)
        return x
