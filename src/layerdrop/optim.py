"""AdamW with decoupled weight decay on matrices only, and a warmup + cosine learning-rate schedule."""

from __future__ import annotations

import ast
import math

import torch

from layerdrop.errors import UserError


def parse_betas(text: str) -> tuple[float, float]:
    try:
        betas = ast.literal_eval(text)
        if len(betas) == 2 and all(0 <= float(b) < 1 for b in betas):
            return float(betas[0]), float(betas[1])
    except (ValueError, SyntaxError, TypeError):
        pass
    raise UserError(f"--adam-betas: got {text!r}; valid: two numbers in [0, 1), e.g. '(0.9, 0.99)'")


def learning_rate(update: int, lr: float, min_lr: float, warmup_updates: int, max_update: int) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``max_update``."""
    if update < warmup_updates:
        return lr * (update + 1) / (warmup_updates + 1)
    span = max(1, max_update - warmup_updates)
    progress = min(1.0, (update - warmup_updates) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """Biases, norms and other vectors are not decayed (as in GPT-2 / nanoGPT)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)
