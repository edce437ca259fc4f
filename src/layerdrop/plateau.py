"""The frequency plateau: a model that predicts every token (or label) by how often it occurs in the training
data scores the entropy of those counts, whatever its input. Post-LN Transformers with a short learning-rate
warmup can sit there for thousands of updates (a BART-like LM on WikiText-2 characters stayed at 3.18 nats for
3,100 updates with a 100-update warmup and left within 200 with 800: docs/layerdrop_at_short_budgets.md,
section 20.1), and nothing else in the log says so: the loss is finite and flat, as a converged run's is."""

from __future__ import annotations

import torch

MARGIN = 0.02  # nats: a validation loss closer than this to the plateau counts as on it
EARLIEST_UPDATE = 500  # every model passes the plateau on its way down; only a long stay there is news


def frequency_entropy(ids: torch.Tensor) -> float:
    """Entropy (nats) of the frequencies of the non-negative integer ``ids``: the loss of predicting each one by
    its frequency alone."""
    counts = torch.bincount(ids.flatten()).double()
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * shares.log()).sum())


def plateau_warning(valid_loss: float, plateau: float | None, update: int, warmup_updates: int,
                    what: str = "token") -> str | None:
    """A warning when the validation loss after the learning-rate warmup is no better than the frequency plateau."""
    if plateau is None or update <= warmup_updates or update < EARLIEST_UPDATE or valid_loss < plateau - MARGIN:
        return None
    return (f"| warning: validation loss {valid_loss:.4f} at update {update:,} is no better than predicting each {what} "
            f"by its frequency in the training data ({plateau:.4f}): the model has not left that plateau. A longer "
            f"--warmup-updates (now {warmup_updates:,}) or a lower --lr usually gets it out.")
