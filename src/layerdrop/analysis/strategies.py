"""Which K layers to keep: the pruning strategies behind ``layerdrop select`` and ``layerdrop sweep``.

- ``every-other``: the paper's rule, K evenly spaced layers (0,2,4,... when K is half the depth).
- ``search``: scored on the validation set; every K-subset while their number is within the budget,
  otherwise a beam search that removes one layer at a time (beam 1 is greedy elimination).
- ``learned``: the top-K layers by the gate scores of a model trained with ``--decoder-learned-gates``
  (the paper's data-driven pruning); fixed per model, independent of the input.
- ``block-influence`` and ``angular``: for models trained without LayerDrop, from how much each layer
  changes its input (see :mod:`layerdrop.analysis.similarity`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from layerdrop.analysis.scoring import Metric, Scorer, check_depth
from layerdrop.analysis.similarity import measure_similarity
from layerdrop.errors import UserError
from layerdrop.pruning.keep import every_other

STRATEGIES = ("every-other", "search", "learned", "block-influence", "angular")


@dataclass
class Selection:
    strategy: str
    depth: int
    keep: list[int]
    score: float
    evaluated: int = 0  # subsets scored to choose (search only)
    details: dict = field(default_factory=dict)


def search_subsets(
    score: Callable[[Sequence[int]], float], metric: Metric, num_layers: int, depth: int, budget: int = 256, beam: int = 1
) -> tuple[list[int], float, int, str]:
    """Best ``depth``-subset of ``num_layers`` layers by ``score``: (keep, score, subsets scored, method)."""
    total = math.comb(num_layers, depth)
    if total <= budget:
        best_keep, best_score = None, None
        for keep in itertools.combinations(range(num_layers), depth):
            value = score(keep)
            if best_score is None or metric.better(value, best_score):
                best_keep, best_score = list(keep), value
        return best_keep, best_score, total, "exhaustive"
    # Beam elimination: from the full stack, drop one layer at a time, keeping the `beam` best subsets.
    frontier = [tuple(range(num_layers))]
    evaluated = 0
    for size in range(num_layers - 1, depth - 1, -1):
        children = sorted({tuple(l for l in keep if l != drop) for keep in frontier for drop in keep})
        scored = [(score(child), child) for child in children]
        evaluated += len(scored)
        scored.sort(key=lambda item: -item[0] if metric.higher_is_better else item[0])
        frontier = [child for _, child in scored[:beam]]
        if size == depth:
            return list(scored[0][1]), scored[0][0], evaluated, f"beam {beam}" if beam > 1 else "greedy"
    raise AssertionError("unreachable: depth < num_layers")


def learned_keep(gate_scores: Sequence[float], depth: int) -> list[int]:
    """The ``depth`` layers with the highest learned scores, in model order."""
    ranked = sorted(range(len(gate_scores)), key=lambda l: (-gate_scores[l], l))
    return sorted(ranked[:depth])


def block_influence_keep(influence: Sequence[float], depth: int) -> list[int]:
    """Keep the ``depth`` layers that change their input the most."""
    ranked = sorted(range(len(influence)), key=lambda l: (-influence[l], l))
    return sorted(ranked[:depth])


def angular_keep(distances: Sequence[float], num_layers: int, depth: int) -> tuple[list[int], int]:
    """Remove the block of ``num_layers - depth`` consecutive layers whose ends are closest; (keep, block start)."""
    n = num_layers - depth
    if n == 0:
        return list(range(num_layers)), 0
    start = min(range(len(distances)), key=lambda l: (distances[l], l))
    return [l for l in range(num_layers) if not start <= l < start + n], start


def select_layers(scorer: Scorer, depth: int, strategy: str, budget: int = 256, beam: int = 1) -> Selection:
    """Choose ``depth`` layers of the scorer's stack with ``strategy`` and score them on the validation set.

    ``scorer`` is a :class:`Scorer` or anything with its interface (the Hugging Face one:
    :class:`layerdrop.integrations.hf.scoring.TextScorer`)."""
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy: got {strategy!r}; valid: {', '.join(STRATEGIES)}")
    num_layers = scorer.num_layers
    check_depth(depth, num_layers)
    details: dict = {}
    evaluated = 0
    if strategy == "every-other":
        keep = every_other(num_layers, depth)
    elif strategy == "search":
        if budget < 1 or beam < 1:
            raise UserError(f"--budget/--search-beam: got {budget}/{beam}; valid: positive integers")
        before = scorer.evaluations
        keep, _, _, method = search_subsets(scorer.score, scorer.metric, num_layers, depth, budget, beam)
        evaluated = scorer.evaluations - before
        details["method"] = method
    elif strategy == "learned":
        if not getattr(getattr(scorer, "config", None), f"{scorer.stack}_learned_gates", False):
            raise UserError(f"--strategy learned: {scorer.path} has no learned gates in its {scorer.stack}; "
                            f"valid: a checkpoint trained with --{scorer.stack}-learned-gates")
        layers = scorer.layers(scorer.model())
        with torch.no_grad():
            scores = [float(layer.gate.score()) for layer in layers]
        keep = learned_keep(scores, depth)
        details["gate_scores"] = scores
    else:
        full = scorer.model()
        layers = scorer.layers(full)
        similarity = measure_similarity(full, layers, scorer.task.validate)
        if strategy == "block-influence":
            influence = similarity.block_influence()
            keep = block_influence_keep(influence, depth)
            details["block_influence"] = influence
        else:
            distances = similarity.block_distances(num_layers - depth) if depth < num_layers else []
            keep, start = angular_keep(distances, num_layers, depth)
            details.update(angular_distance=distances, removed_block_start=start)
    return Selection(strategy, depth, keep, scorer.score(keep), evaluated, details)
