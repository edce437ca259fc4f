"""Learned layer selection (the paper's data-driven pruning): each layer learns its own drop rate.

Each layer has a gate that scores it from its activations: s_l = w_l . gelu(a_l) + b_l, where a_l is a
running mean of the layer's input. A softmax over the stack turns scores into drop rates whose average is
the target p (the LayerDrop flag), so learning moves drop probability between layers, not its total.
Drop decisions are still one draw per layer per forward pass. The rates get a gradient through the layers
that run: their branches are multiplied by q / stopgrad(q), q = 1 - p_l, which is 1 in value. The loss
then pushes up the keep probability of the layers it needs most.

At inference the K layers with the highest scores are kept (``layerdrop select --strategy learned``),
the same for every input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_RATE = 0.95  # no layer is dropped more often than this, or it would hardly ever be trained


class LayerGate(nn.Module):
    def __init__(self, embed_dim: int, momentum: float = 0.01):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(embed_dim))  # zero: the run starts as uniform LayerDrop
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("activation_mean", torch.zeros(embed_dim))
        self.momentum = momentum

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Fold this batch's mean input into the running mean the score is computed from."""
        self.activation_mean.lerp_(x.detach().float().mean(dim=tuple(range(x.dim() - 1))), self.momentum)

    def score(self) -> torch.Tensor:
        return self.weight @ F.gelu(self.activation_mean) + self.bias


def constrained_rates(scores: torch.Tensor, target: float, cap: float = MAX_RATE) -> torch.Tensor:
    """Drop rates L * target * softmax(scores), with none above ``cap`` and the mean still ``target``:
    the excess of capped layers is spread over the others in proportion to their share."""
    count = scores.numel()
    share = torch.softmax(-scores, dim=0)  # a high score means the layer matters: a low drop rate
    budget = target * count
    capped = torch.zeros_like(scores, dtype=torch.bool)
    rates = budget * share
    for _ in range(count):
        over = (rates > cap) & ~capped
        if not over.any():
            break
        capped |= over
        remaining = budget - cap * capped.sum()
        free_share = share * ~capped
        # A capped rate keeps a gradient (value cap, slope through its share), so a layer can leave the cap.
        rates = torch.where(capped, cap * share / share.detach(), remaining * free_share / free_share.sum().clamp_min(1e-12))
    return rates
