"""Language-model batches: random windows for training, contiguous blocks for evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from layerdrop.errors import UserError
from layerdrop.seeding import derive_seed


def _check_length(tokens: torch.Tensor, needed: int, what: str) -> None:
    if tokens.numel() < needed:
        raise UserError(
            f"{what}: has {tokens.numel()} tokens, fewer than {needed}; valid: a longer split"
            + (" or a smaller --tokens-per-sample" if needed > 2 else "")
        )


def random_batch(
    tokens: torch.Tensor, batch_size: int, context: int, generator: torch.Generator, what: str = "train split"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` windows at random offsets; targets are the inputs shifted by one token."""
    _check_length(tokens, context + 1, what)
    starts = torch.randint(0, tokens.numel() - context, (batch_size,), generator=generator)
    window = torch.arange(context + 1)
    rows = tokens[starts[:, None] + window]
    return rows[:, :-1], rows[:, 1:]


def eval_batches(
    tokens: torch.Tensor, context: int, batch_size: int, max_batches: int | None = None, what: str = "split"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping blocks covering the split once (every token but the first is predicted once)."""
    _check_length(tokens, 2, what)  # a split shorter than the context is evaluated as one short block
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


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, bucket: int = 50) -> list[list[int]]:
    """Batches of example indices for one epoch, a pure function of (seed, epoch).

    Examples are shuffled, grouped in buckets of ``bucket`` batches, sorted by length inside a bucket
    (so a batch wastes little padding), cut into batches, and the batches shuffled.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 3))
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    span = batch_size * bucket
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def pad_batch(sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad token lists to one length."""
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return out


class EpochSampler:
    """Maps an update number to its batch: epoch = update // batches per epoch; batches are cached per epoch."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.per_epoch = len(epoch_batches(lengths, batch_size, seed, 0))
        self._epoch, self._batches = -1, []

    def batch(self, update: int) -> list[int]:
        epoch, index = divmod(update, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(self.lengths, self.batch_size, self.seed, epoch)
        return self._batches[index]
