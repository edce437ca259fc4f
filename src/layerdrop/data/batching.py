"""Language-model batches: random windows for training, contiguous blocks for evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from layerdrop.errors import UserError


def _check_length(tokens: torch.Tensor, context: int, what: str) -> None:
    if tokens.numel() < context + 1:
        raise UserError(
            f"{what}: has {tokens.numel()} tokens, fewer than --tokens-per-sample + 1 ({context + 1}); "
            "valid: a longer split or a smaller --tokens-per-sample"
        )


def random_batch(
    tokens: torch.Tensor, batch_size: int, context: int, generator: torch.Generator, what: str = "train split"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` windows at random offsets; targets are the inputs shifted by one token."""
    _check_length(tokens, context, what)
    starts = torch.randint(0, tokens.numel() - context, (batch_size,), generator=generator)
    window = torch.arange(context + 1)
    rows = tokens[starts[:, None] + window]
    return rows[:, :-1], rows[:, 1:]


def eval_batches(
    tokens: torch.Tensor, context: int, batch_size: int, max_batches: int | None = None, what: str = "split"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping blocks covering the split once (every token but the first is predicted once)."""
    _check_length(tokens, context, what)
    starts = list(range(0, tokens.numel() - 1, context))
    for batch_index, first in enumerate(range(0, len(starts), batch_size)):
        if max_batches is not None and batch_index >= max_batches:
            return
        group = starts[first : first + batch_size]
        # The last block may be short: batch it on its own so every row has one length.
        full = [s for s in group if s + context + 1 <= tokens.numel()]
        for rows in (full, [s for s in group if s not in full]):
            if not rows:
                continue
            length = min(context, tokens.numel() - 1 - rows[0])
            block = torch.stack([tokens[s : s + length + 1] for s in rows])
            yield block[:, :-1], block[:, 1:]
