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
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from layerdrop.nn.schedules import SCHEDULES, expected_skipped, layer_rates
from layerdrop.nn.structured import FULL, SKIPPED, UNITS, LayerPlan, check_unit, sample_units
from layerdrop.seeding import derive_seed

StackPlan = tuple[LayerPlan, ...]


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

    def __post_init__(self) -> None:
        check_drop_rate(self.p)
        check_unit(self.unit)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"layerdrop schedule: got {self.schedule!r}; valid: {', '.join(SCHEDULES)}")

    @property
    def active(self) -> bool:
        return self.p > 0

    def rates(self, num_layers: int, update: int) -> list[float]:
        """Each layer's drop rate at ``update`` (learned gates: the rates' mean, before the gates spread it)."""
        return layer_rates(self.schedule, self.p, num_layers, update, self.gamma, self.warmup)

    def expected_skipped(self, num_layers: int, max_update: int, share: Callable[[float], float]) -> float:
        """Expected share of the stack's computation skipped over ``max_update`` updates; ``share(rate)`` is
        the share of one layer skipped at that rate (see ``structured.skipped_share``)."""
        return expected_skipped(self.schedule, self.p, num_layers, max_update, self.gamma, share, self.warmup)


def full_plan(num_layers: int) -> StackPlan:
    return (FULL,) * num_layers


def draw_stack_plan(seed: int, update: int, stack: str, rates: list[float], unit: str = "layer",
                    heads: list[int] | None = None) -> StackPlan:
    """The plan of one stack for update ``update``: a pure function of its arguments.

    ``heads`` (per layer) is needed by the head units only. With every rate 0 nothing is drawn."""
    if not any(rates):
        return full_plan(len(rates))
    generator = torch.Generator().manual_seed(derive_seed(seed, update, zlib.crc32(stack.encode()), 0))
    draws = torch.rand(len(rates), generator=generator).tolist()
    if unit == "layer":
        return tuple(FULL if u >= p else SKIPPED for u, p in zip(draws, rates))
    return sample_units(unit, rates, heads or [0] * len(rates), generator, draws)


def kept_layers(plan: StackPlan) -> list[int]:
    """Indices of the layers that run anything under ``plan``."""
    return [i for i, layer in enumerate(plan) if layer.runs]


__all__ = ["LayerDropConfig", "LayerPlan", "StackPlan", "UNITS", "check_drop_rate", "draw_stack_plan", "full_plan",
           "kept_layers"]
