"""Drop schedules: each layer's drop rate, from the LayerDrop flag's p, the layer's depth and the update.

- ``uniform`` (the paper): every layer p.
- ``linear`` (stochastic depth, Huang et al. 2016): rate grows linearly with depth, p * (l + 1) / L, so
  the first layer is rarely dropped and the last one has rate p.
- ``exponential`` (LayerSkip, Elhoushi et al. 2024): p * (2 ** (l / (L - 1)) - 1): 0 for the first layer,
  p for the last, growing exponentially in between.
- ``progressive`` (progressive layer dropping, Zhang & He 2020): the keep probability falls over time,
  theta(t) = (1 - theta_bar) * exp(-gamma * t) + theta_bar with theta_bar = 1 - p, and is spread over
  depth as PLD does, so layer l (of L) is dropped with (l + 1) / L * (1 - theta(t)): nothing is dropped
  at the start and the deepest layer reaches p.

Layers are counted from 0 at the input.

Any schedule can also start from 0 and reach its rates linearly over the first ``warmup`` updates
(``--layerdrop-warmup-updates``), so that the network learns its first features at full depth; with
no warmup, ``uniform`` is the paper's exact rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

SCHEDULES = ("uniform", "linear", "exponential", "progressive")


def depth_profile(schedule: str, num_layers: int) -> list[float]:
    """Each layer's share of p (1 for the deepest layer of every depth-dependent schedule)."""
    if schedule == "uniform":
        return [1.0] * num_layers
    if schedule in ("linear", "progressive"):
        return [(l + 1) / num_layers for l in range(num_layers)]
    if schedule == "exponential":
        if num_layers == 1:
            return [1.0]
        return [2 ** (l / (num_layers - 1)) - 1 for l in range(num_layers)]
    raise ValueError(f"layerdrop schedule: got {schedule!r}; valid: {', '.join(SCHEDULES)}")


def time_factor(schedule: str, update: int, gamma: float) -> float:
    """How far the progressive schedule has ramped up at ``update`` (1 - exp(-gamma t)); 1 for the others."""
    return 1.0 - math.exp(-gamma * update) if schedule == "progressive" else 1.0


def layer_rates(schedule: str, p: float, num_layers: int, update: int = 0, gamma: float = 0.0,
                warmup: int = 0) -> list[float]:
    """Drop rate of each layer at ``update``."""
    factor = time_factor(schedule, update, gamma) * (min(1.0, update / warmup) if warmup > 0 else 1.0)
    return [p * share * factor for share in depth_profile(schedule, num_layers)]


def sampled_updates(max_update: int, changes_over_time: bool) -> list[int]:
    """The updates a run's average is taken over: update 0 when rates never change, else every update (10,000
    evenly spaced ones in longer runs)."""
    if not changes_over_time:
        return [0]
    count = min(max_update, 10_000)
    return [round(i * (max_update - 1) / max(count - 1, 1)) for i in range(count)]


def expected_skipped(schedule: str, p: float, num_layers: int, max_update: int, gamma: float,
                     share: Callable[[float], float] = lambda rate: rate, warmup: int = 0) -> float:
    """Expected share of the stack's computation skipped over a run. ``share(rate)`` is the share of one
    layer skipped at that rate (the rate itself for whole layers; see ``structured.skipped_share``).
    Progressive schedules and warmups are averaged over every update (10,000 evenly spaced ones in longer runs)."""
    updates = sampled_updates(max_update, schedule == "progressive" or warmup > 0)
    total = sum(share(rate) for t in updates for rate in layer_rates(schedule, p, num_layers, t, gamma, warmup))
    return total / (len(updates) * num_layers)
