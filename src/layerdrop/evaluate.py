"""Language-model evaluation: mean loss (nats per token), perplexity, tokens per second."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from layerdrop.data.batching import eval_batches


@dataclass
class EvalResult:
    loss: float
    tokens: int
    seconds: float

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


@torch.no_grad()
def evaluate_lm(
    model: torch.nn.Module, tokens: torch.Tensor, context: int, batch_size: int,
    max_batches: int | None = None, what: str = "split",
) -> EvalResult:
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    start = time.perf_counter()
    for inputs, targets in eval_batches(tokens, context, batch_size, max_batches, what):
        _, loss = model(inputs, targets)
        total_loss += loss.item() * targets.numel()
        total_tokens += targets.numel()
    seconds = time.perf_counter() - start
    model.train(was_training)
    return EvalResult(total_loss / max(total_tokens, 1), total_tokens, seconds)
