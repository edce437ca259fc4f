"""A Transformer stack: token and position embeddings, a list of layers, and (pre-LN) a final LayerNorm.
The LM's decoder, the encoder, and the translation model's two halves are all one of these, so every
model's layers live under ``<name>.layers.N.`` and prune the same way.

Each stack owns its LayerDrop config and draws its own plan for an update (:meth:`TransformerStack.drop_plan`,
a pure function of the seed and the update); the plan is then passed to ``forward``, which hands each
layer its part. Without a plan every layer runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from layerdrop.nn.attention import KVCache
from layerdrop.nn.drop_plan import LayerDropConfig, StackPlan, draw_stack_plan, evenly_spaced, full_plan, served_depth
from layerdrop.nn.learned_gates import constrained_rates
from layerdrop.nn.structured import FULL, SKIPPED, skipped_share
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
    layerdrop: LayerDropConfig = field(default_factory=LayerDropConfig)
    normalize_before: bool = True
    bias: bool = True
    causal: bool = True
    cross_attention: bool = False
    layer_heads: list[int] | None = None  # per layer, after head or sublayer pruning (default: all heads)
    layer_ffn_dims: list[int] | None = None  # per layer, after FFN pruning (default: ffn_dim)
    scale_embedding: bool = False  # token embeddings times sqrt(embed_dim), as fairseq and Vaswani et al.
    layernorm_embedding: bool = False  # a LayerNorm on token + position embeddings (BART, fairseq --layernorm-embedding)
    checkpoint_activations: bool = False  # recompute each layer's activations in the backward pass (saves memory)


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
        self.name = name
        self.layerdrop = spec.layerdrop
        self.checkpoint_activations = spec.checkpoint_activations
        self.layers = nn.ModuleList(
            [
                TransformerLayer(
                    spec.embed_dim, spec.heads, spec.layer_ffn_dims[i] if spec.layer_ffn_dims else spec.ffn_dim,
                    dropout=spec.dropout, attention_dropout=spec.attention_dropout,
                    activation_dropout=spec.activation_dropout, normalize_before=spec.normalize_before,
                    bias=spec.bias, causal=spec.causal, cross_attention=spec.cross_attention,
                    kept_heads=spec.layer_heads[i] if spec.layer_heads else None,
                    learned_gate=spec.layerdrop.learned_gates,
                )
                for i in range(spec.layers)
            ]
        )
        self.layer_norm = nn.LayerNorm(spec.embed_dim, bias=spec.bias) if spec.normalize_before else None

    def layer_heads(self) -> list[int]:
        return [layer.self_attn.num_heads if layer.self_attn is not None else 0 for layer in self.layers]

    def learned_rates(self) -> torch.Tensor:
        """Learned gates: each layer's drop rate from its score (their mean is the config's p)."""
        return constrained_rates(torch.stack([layer.gate.score() for layer in self.layers]), self.layerdrop.p)

    def drop_plan(self, seed: int, update: int) -> StackPlan:
        """Which layers (and parts of layers) run on the training pass of ``update``."""
        if not self.layerdrop.active:
            return full_plan(len(self.layers))
        if self.layerdrop.learned_gates:
            with torch.no_grad():
                rates = self.learned_rates().tolist()
        else:
            rates = self.layerdrop.rates(len(self.layers), update)
        return draw_stack_plan(seed, update, self.name, rates, self.layerdrop.unit, self.layer_heads(),
                               self.layerdrop.sampling, *self.layerdrop.served_at(update))

    def smallest_served_depth(self) -> int:
        """The smallest depth this stack serves (its own layer count when none below it is)."""
        return served_depth(0, len(self.layers), self.layerdrop.depths) if self.layerdrop.depths else len(self.layers)

    def smallest_served_plan(self, update: int) -> StackPlan | None:
        """The smallest served depth, evenly spaced as pruning keeps it (``--layerdrop-sandwich`` trains this
        sub-network on every update); None during the rate warmup (cuts stay rare and shallow then, whatever the
        rounding), and without LayerDrop or a served depth below the stack's own."""
        depth = self.smallest_served_depth()
        if not self.layerdrop.active or update < self.layerdrop.warmup or depth == len(self.layers):
            return None
        kept = set(evenly_spaced(len(self.layers), depth))
        return tuple(FULL if index in kept else SKIPPED for index in range(len(self.layers)))

    def expected_skipped(self, max_update: int) -> float:
        """Expected share of this stack's layer computation that LayerDrop skips over ``max_update`` updates
        (parameter shares of attention, cross-attention and FFN; attention's length-squared term left out)."""
        if not self.layerdrop.active:
            return 0.0
        first, dim = self.layers[0], self.embed_positions.embedding_dim
        self_params = max(4 * dim * layer.self_attn.num_heads * layer.self_attn.head_dim if layer.self_attn is not None
                          else 0 for layer in self.layers)
        ffn_params = max(2 * dim * layer.fc1.out_features if layer.fc1 is not None else 0 for layer in self.layers)
        cross_params = 4 * dim * dim if first.encoder_attn is not None else 0
        total = self_params + cross_params + ffn_params
        heads = max(self.layer_heads())
        return self.layerdrop.expected_skipped(len(self.layers), max_update, lambda rate: skipped_share(
            self.layerdrop.unit, rate, self_params / total, cross_params / total, heads))

    def forward(
        self,
        tokens: torch.Tensor,
        caches: list[KVCache] | None = None,
        start_pos: int = 0,
        padding_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        plan: StackPlan | None = None,
    ) -> torch.Tensor:
        """``plan`` (from :meth:`drop_plan`): what each layer runs; None runs every layer."""
        positions = torch.arange(start_pos, start_pos + tokens.shape[1], device=tokens.device)
        x = self.embed_scale * self.embed_tokens(tokens) + self.embed_positions(positions)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout(x)
        if plan is not None and len(plan) != len(self.layers):
            raise ValueError(f"{self.name}: a plan for {len(plan)} layers given to a stack of {len(self.layers)}")
        scales = None
        if plan is not None and self.layerdrop.learned_gates and self.layerdrop.active:
            keep = 1 - self.learned_rates()
            scales = keep / keep.detach()  # 1 in value; the gradient reaches the rates through the layers that run
        recompute = self.checkpoint_activations and self.training and caches is None and torch.is_grad_enabled()
        for index, layer in enumerate(self.layers):
            layer_plan = FULL if plan is None else plan[index]
            if not layer_plan.runs:
                continue  # skipped: no computation, so no gradient for this layer's parameters
            cache = None if caches is None else caches[index]
            extra = dict(padding_mask=padding_mask, memory=memory, memory_padding_mask=memory_padding_mask,
                         plan=layer_plan, scale=None if scales is None else scales[index])
            if recompute:
                x = checkpoint(layer, x, cache, use_reentrant=False, **extra)
            else:
                x = layer(x, cache, **extra)
        return self.layer_norm(x) if self.layer_norm is not None else x


def stacks(model: nn.Module) -> list[TransformerStack]:
    return [m for m in model.modules() if isinstance(m, TransformerStack)]


def model_drop_plan(model: nn.Module, seed: int, update: int) -> dict[str, StackPlan]:
    """The plan of every stack of ``model`` for ``update`` (pass it to the model's forward as ``plan=``)."""
    return {stack.name: stack.drop_plan(seed, update) for stack in stacks(model)}


def model_smallest_plan(model: nn.Module, update: int) -> dict[str, StackPlan] | None:
    """Every stack with served depths at ``update`` at its smallest one, the others at full depth; None when no
    stack serves depths then."""
    smallest = {stack.name: stack.smallest_served_plan(update) for stack in stacks(model)}
    if all(plan is None for plan in smallest.values()):
        return None
    return {stack.name: smallest[stack.name] or full_plan(len(stack.layers)) for stack in stacks(model)}


def layers_run(plan: dict[str, StackPlan] | None, model: nn.Module) -> int:
    """How many layers run anything under ``plan`` (all of them without one)."""
    if plan is None:
        return sum(len(stack.layers) for stack in stacks(model))
    return sum(layer.runs for stack_plan in plan.values() for layer in stack_plan)


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
