"""What a task's forward pass on one training batch gives the trainer: its loss, and the logits of
every scored position, which in-place distillation (layerdrop.distill) compares between two depths."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TrainOutputs:
    loss: torch.Tensor  # mean over scored positions, what the optimizer minimises
    tokens: int  # tokens in the batch (for throughput)
    logits: torch.Tensor | None  # (scored positions, classes); None where the model never forms them (adaptive softmax)
    count: int  # how many terms ``loss`` is the mean of (positions or examples): data-parallel ranks weigh by it
