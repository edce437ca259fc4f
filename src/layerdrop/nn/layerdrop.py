"""LayerDrop (Fan, Grave & Joulin, 2019): a ModuleList that skips whole layers in training.

In training, iterating the list yields only the layers kept for this forward pass: each layer is
skipped with its own probability, one draw per layer per forward pass, and nothing is rescaled.
A skipped layer runs no computation, so its parameters get no gradient (``.grad`` stays None and
AdamW neither decays nor moves them that step). In eval mode every layer runs.

The draws come from a generator seeded by (seed, update number, list name, forward index), never
from the global RNG. Every data-parallel rank therefore skips the same layers on the same step, a
resumed run repeats the decisions of an unbroken one, and ``torch.compile`` of a single block can
never bake one dice roll into a graph.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from layerdrop.nn.learned_gates import constrained_rates
from layerdrop.nn.structured import DropPlan, sample_plans

_MASK64 = (1 << 64) - 1


def derive_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (SplitMix64 steps): stateless and identical on every process."""
    state = 0
    for part in parts:
        state = (state + 0x9E3779B97F4A7C15 + (part & _MASK64)) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


def check_drop_rate(p: float, what: str = "layerdrop") -> float:
    """Refuse rates outside [0, 1): at p = 1 no layer would ever run."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{what}: got {p}; valid: a probability in [0, 1)")
    return p


class LayerDropModuleList(nn.ModuleList):
    """A ModuleList whose iteration, in training, yields each layer with probability 1 - p.

    Args:
        layers: the layers, run in order.
        p: one drop probability for all layers, or one per layer.
        name: tells this list's decisions apart from another list's (e.g. "encoder", "decoder").
        seed: the run's seed; set it (and the update number) with :func:`set_layerdrop_step`.
    """

    def __init__(self, layers: Iterable[nn.Module], p: float | Sequence[float] = 0.0, name: str = "layers", seed: int = 0):
        super().__init__(layers)
        self.name = name
        self.seed = seed
        self.step = 0
        self._forward_index = 0
        self.unit = "layer"  # what one draw removes: see layerdrop.nn.structured
        self.run_all = False  # inside full_depth(): training passes run every layer and draw nothing
        self.set_drop_rates(p)
        self.last_kept: list[int] = list(range(len(self)))

    def set_drop_rates(self, p: float | Sequence[float]) -> None:
        rates = [p] * len(self) if isinstance(p, (int, float)) else list(p)
        if len(rates) != len(self):
            raise ValueError(f"{self.name} layerdrop: got {len(rates)} rates for {len(self)} layers")
        self.drop_rates = [check_drop_rate(r, f"{self.name} layerdrop") for r in rates]

    def set_step(self, step: int, seed: int | None = None) -> None:
        """Start a new update: decisions are a function of (seed, step, name, forward index)."""
        self.step = step
        if seed is not None:
            self.seed = seed
        self._forward_index = 0

    def _generator(self) -> torch.Generator:
        list_id = zlib.crc32(self.name.encode())
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.step, list_id, self._forward_index))
        self._forward_index += 1
        return generator

    def sample_kept(self) -> list[int]:
        """Indices of the layers to run in this training forward pass (consumes one draw per layer)."""
        draws = torch.rand(len(self), generator=self._generator()).tolist()
        return [i for i, (u, p) in enumerate(zip(draws, self.drop_rates)) if u >= p]

    def sample_plans(self) -> list[DropPlan | None]:
        """For a unit other than whole layers: what each layer runs on this forward pass (None: nothing)."""
        generator = self._generator()
        draws = torch.rand(len(self), generator=generator).tolist()
        heads = [layer.self_attn.num_heads if getattr(layer, "self_attn", None) is not None else 0
                 for layer in super().__iter__()]
        return sample_plans(self.unit, self.drop_rates, heads, generator, draws)

    def sample_learned(self, layers: list[nn.Module]) -> list[DropPlan | None]:
        """Learned gates: rates from the layers' scores (mean = the list's rate), one draw per layer."""
        target = sum(self.drop_rates) / len(self.drop_rates)
        rates = constrained_rates(torch.stack([layer.gate.score() for layer in layers]), target)
        draws = torch.rand(len(self), generator=self._generator())
        self.last_rates = rates.detach()
        keep = 1 - rates
        return [DropPlan(scale=keep[i] / keep[i].detach()) if draws[i] >= rates[i].detach() else None
                for i in range(len(layers))]

    def __iter__(self) -> Iterator[nn.Module]:
        layers = list(super().__iter__())
        plans: list[DropPlan | None] = [None] * len(layers)
        learned = all(getattr(layer, "gate", None) is not None for layer in layers)
        if self.run_all:
            self.last_kept = list(range(len(self)))
        elif self.training and any(self.drop_rates) and learned:
            plans = self.sample_learned(layers)
            self.last_kept = [i for i, plan in enumerate(plans) if plan is not None]
        elif self.training and any(self.drop_rates) and self.unit != "layer":
            plans = self.sample_plans()
            self.last_kept = [i for i, plan in enumerate(plans) if plan is not None]
        elif self.training and any(self.drop_rates):
            self.last_kept = self.sample_kept()
        else:
            self.last_kept = list(range(len(self)))
        for layer, plan in zip(layers, plans):
            layer.drop_plan = plan  # read by the layer's forward; None runs all of it
        return iter([layers[i] for i in self.last_kept])

    def extra_repr(self) -> str:
        rates = set(self.drop_rates)
        shown = self.drop_rates[0] if len(rates) == 1 else self.drop_rates
        return f"name={self.name!r}, p={shown}"


def layerdrop_lists(model: nn.Module) -> list[LayerDropModuleList]:
    return [m for m in model.modules() if isinstance(m, LayerDropModuleList)]


@contextlib.contextmanager
def full_depth(model: nn.Module) -> Iterator[None]:
    """Training forward passes inside this block run every layer and consume no LayerDrop draw, so the
    sampled pass that follows draws exactly what it would have drawn alone (in-place distillation)."""
    lists = layerdrop_lists(model)
    for layers in lists:
        layers.run_all = True
    try:
        yield
    finally:
        for layers in lists:
            layers.run_all = False


def set_layerdrop_step(model: nn.Module, step: int, seed: int | None = None) -> None:
    """Tell every LayerDrop list in ``model`` which update comes next (call once per update)."""
    for layers in layerdrop_lists(model):
        layers.set_step(step, seed)
