"""In-place self-distillation for LayerDrop (``--layerdrop-distill``), beyond the paper.

Each update runs the batch twice: once at full depth, trained on the labels, and once with this
update's LayerDrop draw (a sampled sub-network), trained towards the full-depth model's predictions
(KL divergence to its detached distribution, temperature 1). The full model is the teacher of its own
sub-networks, as in slimmable networks' in-place distillation (Yu & Huang 2019) and once-for-all
training: the full depth sees every label with every layer, and the shallow paths that pruning keeps
learn to imitate it instead of learning the task from scratch with fewer layers.

It costs a second forward and backward pass per update (of the sub-network: at rate p, about
1 - p of the full pass). The passes are backpropagated one after the other, so only one graph is
held at a time.

With ``--layerdrop-sandwich`` a third pass trains the smallest served depth towards the full depth too, on
every update whose draw did not already run it: slimmable networks' sandwich rule (the largest and the
smallest sub-network every update, plus sampled ones between), so the depth that has the most to learn is
trained on every batch instead of on the share of draws rounded to it. ``--layerdrop-sandwich-share`` runs that
pass on a share of updates only, between the two ends of its trade (it lifts the smallest depth and costs the
others).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from layerdrop.tasks.outputs import TrainOutputs


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student); the teacher is not trained by this term."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    return F.kl_div(F.log_softmax(student_logits.float(), dim=-1), F.log_softmax(teacher_logits.detach().float(), dim=-1),
                    log_target=True, reduction="batchmean")


def sandwich_turn(update: int, share: float) -> bool:
    """Whether the sandwich pass runs at ``update`` (0-based) when it runs on ``share`` of updates: spread evenly and
    decided by the update alone, so every rank and every resumed run agree (0.5: updates 1, 3, 5, ...)."""
    return math.floor((update + 1) * share + 1e-9) > math.floor(update * share + 1e-9)


def distill_backward(forward: Callable[[dict | None], TrainOutputs], plan: dict,
                     weigh: Callable[[TrainOutputs], float] = lambda outputs: 1.0,
                     smallest: dict | None = None) -> tuple[TrainOutputs, list[float]]:
    """Backpropagate the passes of one update: ``forward(None)``, the full depth, on the labels, then
    ``forward(plan)``, this update's sub-network, towards the full depth, then (the sandwich rule) ``smallest``
    towards the full depth unless it is None or ``plan`` itself. Returns the full-depth outputs and the
    distillation loss of each sub-network pass. ``weigh`` gives the factor every loss is multiplied by before
    backward (a data-parallel rank's share of the global batch, from the full-depth outputs)."""
    full = forward(None)
    weight = weigh(full)
    (full.loss * weight).backward()
    teacher = full.logits.detach()
    losses = []
    for sub in (plan, smallest) if smallest is not None and smallest != plan else (plan,):
        kd = distillation_loss(forward(sub).logits, teacher)
        (kd * weight).backward()
        losses.append(kd.item())
    return full, losses
