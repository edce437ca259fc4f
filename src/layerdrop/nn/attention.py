"""Multi-head attention on top of ``F.scaled_dot_product_attention``.

``SelfAttention`` (causal or bidirectional, with a padding mask and an optional KV cache) and
``CrossAttention`` (decoder queries over encoder states, whose keys and values are computed once
per sequence and cached during generation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; under bf16 autocast on a CPU it runs in float32, because torch's CPU
    attention backward in bf16 is several times slower than in float32 and took the matrix products' saving
    (benchmarks/step_profile.py --amp bf16 on nanoGPT's configuration: attention 44 % of the operators' CPU
    time before this, 18 % after; 11 % in float32)."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


@dataclass
class KVCache:
    """Keys and values of the positions seen so far, for one layer: (batch, heads, length, head_dim)."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    # Cross-attention keys/values over the encoder output: fixed for a whole generated sequence.
    cross_keys: torch.Tensor | None = None
    cross_values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat([self.keys, keys], dim=2)
            self.values = torch.cat([self.values, values], dim=2)
        return self.keys, self.values

    def reorder(self, order: torch.Tensor) -> None:
        """Follow beam search: keep the rows of the hypotheses that survived."""
        for name in ("keys", "values", "cross_keys", "cross_values"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.index_select(0, order))


def padding_to_attn_mask(key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, keys) True-at-padding -> (batch, 1, 1, keys) True-where-attending, as SDPA wants."""
    return None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]


class SelfAttention(nn.Module):
    """``num_heads`` heads of ``head_dim`` (default ``embed_dim // num_heads``); a head-pruned layer has
    fewer heads of the original width, so its projections are narrower than the model."""

    def __init__(self, embed_dim: int, num_heads: int, attention_dropout: float = 0.0, bias: bool = True,
                 causal: bool = True, head_dim: int | None = None):
        super().__init__()
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(f"embed dim {embed_dim} is not divisible by {num_heads} attention heads")
            head_dim = embed_dim // num_heads
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.attention_dropout = attention_dropout
        self.causal = causal
        inner = num_heads * head_dim
        self.qkv_proj = nn.Linear(embed_dim, 3 * inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    def _projections(self, heads: list[int] | None):
        """(qkv weight, qkv bias, out weight) for the given heads only: dropped heads run no matmul."""
        w_qkv, b_qkv, w_out = self.qkv_proj.weight, self.qkv_proj.bias, self.out_proj.weight
        if heads is None:
            return w_qkv, b_qkv, w_out
        index = torch.tensor(heads, device=w_qkv.device)
        dim = w_qkv.shape[1]
        w_qkv = w_qkv.view(3, self.num_heads, self.head_dim, dim).index_select(1, index).reshape(-1, dim)
        if b_qkv is not None:
            b_qkv = b_qkv.view(3, self.num_heads, self.head_dim).index_select(1, index).reshape(-1)
        w_out = w_out.view(w_out.shape[0], self.num_heads, self.head_dim).index_select(1, index).reshape(w_out.shape[0], -1)
        return w_qkv, b_qkv, w_out

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, key_padding_mask: torch.Tensor | None = None,
                heads: list[int] | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        w_qkv, b_qkv, w_out = self._projections(heads)
        num_heads = self.num_heads if heads is None else len(heads)
        q, k, v = (
            t.view(batch, length, num_heads, self.head_dim).transpose(1, 2)
            for t in F.linear(x, w_qkv, b_qkv).chunk(3, dim=2)
        )
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
        mask, is_causal = padding_to_attn_mask(key_padding_mask), False
        if self.causal:
            # Causal stacks take right-padded input, whose padding only ever follows the real tokens:
            # the causal mask already keeps real positions from seeing it, so no padding mask is used.
            mask = None
        if self.causal and length > 1:
            if past == 0:
                is_causal = True
            else:  # new queries see all cached positions and the causal part of their own block
                mask = torch.ones(length, past + length, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = attend(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        return F.linear(y.transpose(1, 2).reshape(batch, length, num_heads * self.head_dim), w_out, self.out_proj.bias)


class CrossAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, attention_dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.attention_dropout = attention_dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.kv_proj = nn.Linear(embed_dim, 2 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        batch, length, dim = x.shape
        q = self._heads(self.q_proj(x))
        if cache is not None and cache.cross_keys is not None:
            k, v = cache.cross_keys, cache.cross_values
        else:
            k, v = (self._heads(t) for t in self.kv_proj(memory).split(dim, dim=2))
            if cache is not None:
                cache.cross_keys, cache.cross_values = k, v
        y = attend(
            q, k, v, attn_mask=padding_to_attn_mask(memory_padding_mask),
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, dim))
