"""Structured dropout units other than whole layers (the paper's Figure 4), drawn by the same LayerDrop list.

The unit says what one draw removes in training, each with the layer's drop rate p:

- ``layer``: the whole layer (the paper's LayerDrop, the default);
- ``sublayer``: the self-attention branch and the FFN branch, each with its own draw;
- ``head``: each self-attention head;
- ``ffn-half``: each half of the FFN's hidden units;
- ``head+layer`` and ``head+sublayer``: heads inside the layers or sublayers that were kept.

Nothing is rescaled, as in the paper. A layer's :class:`LayerPlan` tells it which parts to run on this
forward pass; dropped heads and FFN halves are sliced out of the weight matrices, so they cost nothing.
A decoder's cross-attention runs whenever its layer runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

UNITS = ("layer", "sublayer", "head", "ffn-half", "head+layer", "head+sublayer")


@dataclass(frozen=True)
class LayerPlan:
    """What one layer runs on one training forward pass."""

    attention: bool = True
    ffn: bool = True
    heads: tuple[int, ...] | None = None  # self-attention heads kept (None: all)
    ffn_halves: tuple[int, ...] | None = None  # FFN halves kept (0: first half of the hidden units, 1: second)

    @property
    def runs(self) -> bool:
        return self.attention or self.ffn


FULL = LayerPlan()
SKIPPED = LayerPlan(attention=False, ffn=False)


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"layerdrop unit: got {unit!r}; valid: {', '.join(UNITS)}")
    return unit


def sample_units(unit: str, rates: list[float], heads: list[int], generator: torch.Generator,
                 layer_draws: list[float]) -> tuple[LayerPlan, ...]:
    """One plan per layer. ``layer_draws`` are the stack's one-per-layer uniforms, drawn first, so the
    ``layer`` unit consumes exactly what plain LayerDrop does; the other units draw more from ``generator``."""
    plans: list[LayerPlan] = []
    for index, (u, p) in enumerate(zip(layer_draws, rates)):
        if "layer" in unit.split("+") and u < p:
            plans.append(SKIPPED)
            continue
        attention, ffn, kept_heads, halves = True, True, None, None
        if "sublayer" in unit:
            attention_u, ffn_u = torch.rand(2, generator=generator).tolist()
            attention, ffn = attention_u >= p, ffn_u >= p
        if "head" in unit and attention and heads[index] > 0:
            kept_heads = tuple(h for h, v in enumerate(torch.rand(heads[index], generator=generator).tolist()) if v >= p)
            attention = bool(kept_heads)
        if unit == "ffn-half":
            halves = tuple(h for h, v in enumerate(torch.rand(2, generator=generator).tolist()) if v >= p)
            ffn = bool(halves)
        plan = LayerPlan(attention, ffn, kept_heads if attention else None, halves if ffn else None)
        plans.append(plan if plan.runs else SKIPPED)
    return tuple(plans)


def skipped_share(unit: str, p: float, self_share: float, cross_share: float = 0.0, heads: int = 1) -> float:
    """Expected share of one layer's computation skipped at rate p. The self-attention branch weighs
    ``self_share`` of the layer, cross-attention (a translation decoder's) ``cross_share``, the FFN the
    rest: parameter shares, leaving out attention's length-squared term. Cross-attention is skipped only
    with its whole layer, that is when the self-attention and the FFN are both off."""
    check_unit(unit)
    ffn_share = 1.0 - self_share - cross_share
    if "layer" in unit.split("+"):  # layer, head+layer
        return p + (1 - p) * self_share * (p if "head" in unit else 0.0)
    sublayer = p if "sublayer" in unit else 0.0  # the self-attention sublayer's own draw
    self_skipped = sublayer + (1 - sublayer) * p if "head" in unit else sublayer  # heads: a share p of them
    ffn_skipped = p if ("sublayer" in unit or unit == "ffn-half") else 0.0
    attention_off = sublayer + (1 - sublayer) * p**heads if "head" in unit else sublayer
    ffn_off = p if "sublayer" in unit else 0.0  # ffn-half: both halves off (p^2), but attention still runs
    return self_share * self_skipped + ffn_share * ffn_skipped + cross_share * attention_off * ffn_off
