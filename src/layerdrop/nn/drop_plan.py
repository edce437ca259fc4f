"""LayerDrop decisions as values (Fan, Grave & Joulin, 2019): which layers run on one training forward pass.

A stack's LayerDrop is configured by one :class:`LayerDropConfig` (rate, unit, schedule, warmup, learned
gates). The plan for one update is a pure function of (seed, update, stack name, rates, unit): one draw per
layer from a generator seeded by those numbers, never from the global RNG, and nothing is rescaled. So:

- every data-parallel rank draws the same plan on the same update (they share the seed), and none has to
  tell the others which layers it skipped;
- a resumed run draws the plans of an unbroken one;
- the plan is an argument of the stack's forward, so a layer compiled with ``torch.compile`` never sees a
  dice roll, and iterating a module never changes anything.

A skipped layer runs no computation, so its parameters get no gradient (``.grad`` stays None and AdamW
neither decays nor moves them that update).

Which layers a draw keeps (``sampling``):

- ``per-layer`` (the paper): each layer is kept or skipped by its own draw, so any subset can run;
- ``evenly-spaced`` (beyond the paper): the same draws decide how many layers run, and the layers that run
  are the evenly spaced ones that pruning by "every other" keeps at that depth. The number of layers per
  update has the paper's distribution; only the choice of which ones changes, so the sub-networks trained
  are the ones a user will serve (at p = 0.5 on 6 layers, the paper's rule runs exactly 0,2,4 one update in 64;
  this rule runs it whenever three layers are kept, 5 in 16);
- ``evenly-spaced-shifted`` (beyond the paper, an ablation of the one above): the same number of layers, evenly
  spaced, from a random offset drawn each update, so every layer runs equally often (3 of 6: 0,2,4 or 1,3,5).
  It asks whether what matters is training the exact sub-networks that will be served, or training evenly
  spaced ones at all.

With either evenly-spaced sampling, ``depths`` (``--layerdrop-depths``, beyond the paper) names the depths that
will be served, e.g. 4 and 2 of 8: each update's number of kept layers is rounded one way to one of them (or to
the full depth), so every sub-network pass trains a served one. ``depths_round`` says which way:

- ``down`` (to the nearest served depth at or below; to the smallest where none is): at p = 0.5 on 8 layers
  the paper's number of layers is 4 on 27 % of updates and 2 on 11 %; rounded down to 8, 4 or 2 it is 4 on
  63 % and 2 on 36 % (59 % of layer compute skipped, not 50 %). Any cut now goes to 4 layers or fewer, so a
  rate warmup still ramps how often passes are cut but no longer how deep: on one language-model seed of three
  such a run never left the unigram plateau (docs/layerdrop_at_short_budgets.md, section 15.2);
- ``up`` (to the nearest at or above; 5 to 7 kept of 8 run all 8): 8 on 36 %, 4 on 49 %, 2 on 14 % at
  p = 0.5 (35 % of layer compute skipped). A pass is cut only when half the layers or more are dropped, so
  early in a rate warmup almost nothing is cut (0.5 % of passes at rate 0.1, 11 % at 0.25);
- ``down-after-warmup``: no rounding while the rate warms up (the plans of evenly-spaced sampling without served
  depths), rounded down once the rate has reached p, so the early updates that decide whether a run leaves the
  unigram plateau are those of the runs that did.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from layerdrop.nn.schedules import SCHEDULES, expected_skipped, layer_rates, sampled_updates
from layerdrop.nn.structured import FULL, SKIPPED, UNITS, LayerPlan, check_unit, sample_units
from layerdrop.seeding import derive_seed

StackPlan = tuple[LayerPlan, ...]
SAMPLINGS = ("per-layer", "evenly-spaced", "evenly-spaced-shifted")
ROUNDINGS = ("down", "up")  # which way one count goes
DEPTHS_ROUND = (*ROUNDINGS, "down-after-warmup")  # a config's choice, which may change with the update


def check_drop_rate(p: float, what: str = "layerdrop") -> float:
    """Refuse rates outside [0, 1): at p = 1 no layer would ever run."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{what}: got {p}; valid: a probability in [0, 1)")
    return p


@dataclass(frozen=True)
class LayerDropConfig:
    """Everything that decides one stack's drops. ``p`` is the paper's rate; the rest shape it."""

    p: float = 0.0
    unit: str = "layer"  # what one draw removes (layerdrop.nn.structured)
    schedule: str = "uniform"  # how p is spread over depth and time (layerdrop.nn.schedules)
    gamma: float = 0.0  # the progressive schedule's ramp speed
    warmup: int = 0  # rates rise linearly from 0 over this many updates
    learned_gates: bool = False  # each layer learns its rate (layerdrop.nn.learned_gates); their mean is p
    sampling: str = "per-layer"  # which layers a draw keeps (see the module docstring)
    depths: tuple[int, ...] = ()  # evenly-spaced samplings: the depths to be served (see the module docstring)
    depths_round: str = "down"  # which way a kept count goes to a served depth: DEPTHS_ROUND

    def __post_init__(self) -> None:
        check_drop_rate(self.p)
        check_unit(self.unit)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"layerdrop schedule: got {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"layerdrop sampling: got {self.sampling!r}; valid: {', '.join(SAMPLINGS)}")
        if self.sampling != "per-layer" and (self.unit != "layer" or self.schedule != "uniform" or self.learned_gates):
            raise ValueError(f"layerdrop sampling {self.sampling}: needs whole layers (unit layer), the uniform schedule "
                             "and no learned gates, so that every layer has the same rate")
        if self.depths and (self.sampling == "per-layer" or not all(isinstance(d, int) and d >= 1 for d in self.depths)):
            raise ValueError(f"layerdrop depths: got {self.depths}; valid: whole numbers >= 1, with an evenly-spaced "
                             "sampling")
        if self.depths_round not in DEPTHS_ROUND:
            raise ValueError(f"layerdrop depths round: got {self.depths_round!r}; valid: {', '.join(DEPTHS_ROUND)}")

    @property
    def active(self) -> bool:
        return self.p > 0

    def rates(self, num_layers: int, update: int) -> list[float]:
        """Each layer's drop rate at ``update`` (learned gates: the rates' mean, before the gates spread it)."""
        return layer_rates(self.schedule, self.p, num_layers, update, self.gamma, self.warmup)

    def served_at(self, update: int) -> tuple[tuple[int, ...], str]:
        """The served depths and the rounding in force at ``update`` (none during the rate warmup with
        ``down-after-warmup``)."""
        if self.depths_round == "down-after-warmup":
            return ((), "down") if update < self.warmup else (self.depths, "down")
        return self.depths, self.depths_round

    def expected_skipped(self, num_layers: int, max_update: int, share: Callable[[float], float]) -> float:
        """Expected share of the stack's computation skipped over ``max_update`` updates; ``share(rate)`` is
        the share of one layer skipped at that rate (see ``structured.skipped_share``)."""
        if self.depths:
            # The kept count is Binomial(layers, 1 - rate), then rounded to a served depth.
            counts = np.arange(num_layers + 1)
            updates = sampled_updates(max_update, self.warmup > 0)
            skipped = np.array([[num_layers - served_depth(k, num_layers, *self.served_at(t)) for k in counts]
                                for t in updates])
            keep = 1 - np.array([self.rates(num_layers, t)[0] for t in updates])
            ways = np.array([math.comb(num_layers, k) for k in counts], dtype=float)
            pmf = ways * keep[:, None] ** counts * (1 - keep[:, None]) ** (num_layers - counts)  # Binomial(layers, keep)
            return float((pmf * skipped).sum(axis=1).mean() / num_layers)
        return expected_skipped(self.schedule, self.p, num_layers, max_update, self.gamma, share, self.warmup)


def full_plan(num_layers: int) -> StackPlan:
    return (FULL,) * num_layers


def evenly_spaced(num_layers: int, depth: int, shift: float = 0.0) -> list[int]:
    """``depth`` evenly spaced layers of ``num_layers``, from the first (3 of 6: 0, 2, 4; 2 of 6: 0, 3), or from
    ``shift`` (a fraction in [0, 1) of the spacing) along: 3 of 6 with shift 0.5 is 1, 3, 5."""
    step = num_layers / depth if depth else 0
    return [min(int((shift + i) * step), num_layers - 1) for i in range(depth)]


def served_depth(kept: int, num_layers: int, depths: tuple[int, ...], rounding: str = "down") -> int:
    """``kept`` rounded to a served depth (the full depth is always one). ``down``: to the nearest at or below, or
    the smallest where none is (8 layers, depths 4, 2: counts 7 to 4 run 4 layers, 3 to 0 run 2). ``up``: to the
    nearest at or above (counts 8 to 5 run 8, 4 and 3 run 4, 2 to 0 run 2). Depths above ``num_layers`` are left
    out (a pruned model keeps its parent's depths). With no served depths, ``kept`` itself."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"layerdrop depths round: got {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    if not depths:
        return kept
    served = sorted({*(d for d in depths if d <= num_layers), num_layers})
    if rounding == "up":
        return min(d for d in served if d >= kept)
    return max((d for d in served if d <= kept), default=served[0])


def draw_stack_plan(seed: int, update: int, stack: str, rates: list[float], unit: str = "layer",
                    heads: list[int] | None = None, sampling: str = "per-layer",
                    depths: tuple[int, ...] = (), depths_round: str = "down") -> StackPlan:
    """The plan of one stack for update ``update``: a pure function of its arguments.

    ``heads`` (per layer) is needed by the head units only. With every rate 0 nothing is drawn."""
    if not any(rates):
        return full_plan(len(rates))
    generator = torch.Generator().manual_seed(derive_seed(seed, update, zlib.crc32(stack.encode()), 0))
    draws = torch.rand(len(rates), generator=generator).tolist()
    if unit == "layer":
        runs = [u >= p for u, p in zip(draws, rates)]
        if sampling != "per-layer":
            # The shift is one more draw after the per-layer ones, so the other samplings' plans stay as they were.
            shift = torch.rand(1, generator=generator).item() if sampling == "evenly-spaced-shifted" else 0.0
            count = served_depth(sum(runs), len(rates), depths, depths_round)
            kept = set(evenly_spaced(len(rates), count, shift))
            runs = [index in kept for index in range(len(rates))]
        return tuple(FULL if run else SKIPPED for run in runs)
    return sample_units(unit, rates, heads or [0] * len(rates), generator, draws)


def kept_layers(plan: StackPlan) -> list[int]:
    """Indices of the layers that run anything under ``plan``."""
    return [i for i, layer in enumerate(plan) if layer.runs]


__all__ = ["DEPTHS_ROUND", "LayerDropConfig", "LayerPlan", "SAMPLINGS", "StackPlan", "UNITS", "check_drop_rate", "draw_stack_plan", "evenly_spaced",
           "full_plan", "kept_layers", "served_depth"]
