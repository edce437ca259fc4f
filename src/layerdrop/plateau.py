"""The frequency plateau: a model that predicts every token (or label) by how often it occurs in the training
data, whatever its input, has a validation loss any model passes on its way down. Post-LN Transformers with a
short learning-rate warmup can stay there for thousands of updates (a BART-like LM on WikiText-2 characters sat
at 3.18 nats for 3,100 updates with a 100-update warmup and left within 200 with 800:
docs/layerdrop_at_short_budgets.md, section 20.1), and a classifier on a small GLUE set can end there (the
study's RTE models score the majority class). Nothing else in the log says so: the loss is finite and flat, as
a converged run's is."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MARGIN = 0.02  # nats either side: a validation loss this close to the plateau counts as on it


def frequency_loss(train_ids: torch.Tensor, valid_ids: torch.Tensor, size: int) -> float | None:
    """Cross-entropy (nats) on ``valid_ids`` of predicting each id by its frequency in ``train_ids``, add-one
    smoothed over ``size`` ids, so an id unseen in training costs a finite amount; None where either is empty."""
    if not train_ids.numel() or not valid_ids.numel():
        return None
    size = max(size, int(train_ids.max()) + 1, int(valid_ids.max()) + 1)
    counts = torch.bincount(train_ids.flatten(), minlength=size).double() + 1
    return float(-(counts / counts.sum()).log()[valid_ids.flatten()].mean())


def flat_ids(sequences: list[list[int]], extra: int | None = None) -> torch.Tensor:
    """All ids of ``sequences`` in one tensor (plus ``extra`` once per sequence: an end-of-sentence token), built
    without a Python list of every id, which a large corpus would not fit."""
    lengths = sum(len(s) for s in sequences)
    ids = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=lengths)
    if extra is not None:
        ids = np.concatenate([ids, np.full(len(sequences), extra, dtype=np.int64)])
    return torch.from_numpy(ids)


@dataclass
class PlateauWatch:
    """Says, once, when a run sits on the plateau: two validations in a row after the learning-rate warmup
    within ``MARGIN`` of it, or the last one (a short fine-tuning run may validate only at its end)."""
    plateau: float | None  # None: nothing to compare with (no valid split, a regression task)
    warmup_updates: int
    max_update: int
    predicts: str = "token"
    since: int | None = None  # the first validation of the current stay on the plateau
    warned: bool = False

    def check(self, valid_loss: float, update: int) -> str | None:
        on = self.plateau is not None and update > self.warmup_updates and abs(valid_loss - self.plateau) <= MARGIN
        first, self.since = self.since, (self.since or update) if on else None
        if self.warned or not on or (first is None and update < self.max_update):
            return None
        self.warned = True
        stay = f"has sat on that plateau since update {first:,}" if first is not None else "ends training on it"
        return (f"| warning: validation loss {valid_loss:.4f} at update {update:,} is what predicting each {self.predicts} "
                f"by its frequency in the training data scores ({self.plateau:.4f}); the model {stay}. A longer "
                f"--warmup-updates (now {self.warmup_updates:,}) or a lower --lr often gets it out.")
