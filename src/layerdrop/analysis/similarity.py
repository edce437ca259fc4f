"""How much each layer changes its input, measured on validation data, for models trained without LayerDrop.

Two published rules read the hidden states between layers:

- block influence (ShortGPT, Men et al. 2024): BI_l = 1 - cos(x_l, x_l+1), the input and output of layer l;
  the layers that change the stream least matter least.
- angular distance (Gromov et al. 2024): d(x_l, x_l+n) = arccos(cos(x_l, x_l+n)) / pi between the inputs of
  layers l and l + n; the block of n layers whose ends are closest can go as a whole.

Both are token averages over the validation batches (padding positions excluded where the stack is told
about padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LayerSimilarity:
    """Token-averaged cosine and angular distance between the hidden states before layer l and before layer m
    (index L is the output of the last layer), for every pair l < m."""

    cosine: torch.Tensor  # (L + 1, L + 1), upper triangle filled
    angular: torch.Tensor
    tokens: int

    @property
    def num_layers(self) -> int:
        return self.cosine.shape[0] - 1

    def block_influence(self) -> list[float]:
        return [float(1 - self.cosine[l, l + 1]) for l in range(self.num_layers)]

    def block_distances(self, n: int) -> list[float]:
        """Angular distance across each block of ``n`` consecutive layers, by first layer of the block."""
        return [float(self.angular[l, l + n]) for l in range(self.num_layers - n + 1)]


@torch.no_grad()
def measure_similarity(model: torch.nn.Module, layers: torch.nn.ModuleList, run_validation) -> LayerSimilarity:
    """Hook ``layers`` (the stack under study, inside ``model``), call ``run_validation(model)`` and average."""
    count = len(layers)
    cos_sum = torch.zeros(count + 1, count + 1, dtype=torch.float64)
    ang_sum = torch.zeros_like(cos_sum)
    totals = {"tokens": 0}
    states: list[torch.Tensor] = []
    keep_rows: list[torch.Tensor | None] = [None]

    def before(index: int):
        def hook(module, args, kwargs):
            if index == 0:
                states.clear()
                padding = kwargs.get("padding_mask")
                keep_rows[0] = None if padding is None else ~padding.reshape(-1)
            states.append(args[0].detach())
        return hook

    def after_last(module, args, kwargs, output):
        states.append(output.detach())
        flat = [s.reshape(-1, s.shape[-1]).double() for s in states]
        if keep_rows[0] is not None:
            flat = [f[keep_rows[0]] for f in flat]
        for l in range(count + 1):
            for m in range(l + 1, count + 1):
                cos = F.cosine_similarity(flat[l], flat[m], dim=-1).clamp(-1.0, 1.0)
                cos_sum[l, m] += cos.sum()
                ang_sum[l, m] += (torch.arccos(cos) / math.pi).sum()
        totals["tokens"] += flat[0].shape[0]

    handles = [layer.register_forward_pre_hook(before(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles.append(layers[count - 1].register_forward_hook(after_last, with_kwargs=True))
    try:
        run_validation(model)
    finally:
        for handle in handles:
            handle.remove()
    tokens = max(totals["tokens"], 1)
    return LayerSimilarity(cos_sum / tokens, ang_sum / tokens, totals["tokens"])
