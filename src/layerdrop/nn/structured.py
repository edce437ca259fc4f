"""Structured dropout units other than whole layers (the paper's Figure 4), drawn by the same LayerDrop list.

The unit says what one draw removes in training, each with the layer's drop rate p:

- ``layer``: the whole layer (the paper's LayerDrop, the default);
- ``sublayer``: the self-attention branch and the FFN branch, each with its own draw;
- ``head``: each self-attention head;
- ``ffn-half``: each half of the FFN's hidden units;
- ``head+layer`` and ``head+sublayer``: heads inside the layers or sublayers that were kept.

Nothing is rescaled, as in the paper. A layer's :class:`DropPlan` tells it which parts to run on this
forward pass; dropped heads and FFN halves are sliced out of the weight matrices, so they cost nothing.
A decoder's cross-attention runs whenever its layer runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

UNITS = ("layer", "sublayer", "head", "ffn-half", "head+layer", "head+sublayer")


@dataclass
class DropPlan:
    """What one layer runs on one training forward pass (None: all of it)."""

    attention: bool = True
    ffn: bool = True
    heads: list[int] | None = None  # self-attention heads kept
    ffn_halves: list[int] | None = None  # FFN halves kept (0: first half of the hidden units, 1: second)
    scale: torch.Tensor | None = None  # learned gates: 1 in value, carries the gradient to the drop rate

    @property
    def runs_anything(self) -> bool:
        return self.attention or self.ffn


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"layerdrop unit: got {unit!r}; valid: {', '.join(UNITS)}")
    return unit


def sample_plans(unit: str, rates: list[float], heads: list[int], generator: torch.Generator,
                 layer_draws: list[float]) -> list[DropPlan | None]:
    """One plan per layer (None: the layer is skipped whole). ``layer_draws`` are the list's one-per-layer
    uniforms, drawn first so the ``layer`` unit consumes exactly what the plain LayerDrop list does."""
    plans: list[DropPlan | None] = []
    for index, (u, p) in enumerate(zip(layer_draws, rates)):
        if "layer" in unit.split("+") and u < p:
            plans.append(None)
            continue
        plan = DropPlan()
        if "sublayer" in unit:
            attention_u, ffn_u = torch.rand(2, generator=generator).tolist()
            plan.attention, plan.ffn = attention_u >= p, ffn_u >= p
        if "head" in unit and plan.attention and heads[index] > 0:
            kept = [h for h, v in enumerate(torch.rand(heads[index], generator=generator).tolist()) if v >= p]
            plan.heads, plan.attention = kept, bool(kept)
        if unit == "ffn-half":
            kept = [h for h, v in enumerate(torch.rand(2, generator=generator).tolist()) if v >= p]
            plan.ffn_halves, plan.ffn = kept, bool(kept)
        plans.append(plan if plan.runs_anything else None)
    return plans


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
