"""Relative importance of each layer (the paper's Figure 5): score random K-layer subsets on the validation
set; a layer's importance is how much better the subsets that contain it score than those that do not."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from layerdrop.analysis.scoring import Scorer, check_depth
from layerdrop.errors import UserError


def random_subsets(num_layers: int, depth: int, samples: int, seed: int) -> list[tuple[int, ...]]:
    """``samples`` distinct K-subsets drawn at random (all of them when there are no more than that)."""
    if samples < 1:
        raise UserError(f"--samples: got {samples}; valid: a positive integer")
    total = math.comb(num_layers, depth)
    if total <= samples:
        return list(itertools.combinations(range(num_layers), depth))
    rng = random.Random(seed)
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < samples:
        chosen.add(tuple(sorted(rng.sample(range(num_layers), depth))))
    return sorted(chosen)


def layer_importance(scorer: Scorer, depth: int, samples: int = 20, seed: int = 1, progress=None) -> dict[str, Any]:
    num_layers = scorer.num_layers
    check_depth(depth, num_layers)
    if depth == num_layers:
        raise UserError(f"--depth: got {depth}, the full depth; valid: 1 to {num_layers - 1} (some layers must be left out)")
    subsets = random_subsets(num_layers, depth, samples, seed)
    scores = []
    for subset in (progress(subsets) if progress else subsets):
        scores.append(scorer.score(subset))
    sign = 1.0 if scorer.metric.higher_is_better else -1.0
    importance: list[float | None] = []
    for layer in range(num_layers):
        inside = [s for keep, s in zip(subsets, scores) if layer in keep]
        outside = [s for keep, s in zip(subsets, scores) if layer not in keep]
        if not inside or not outside:
            importance.append(None)  # in every sampled subset or in none: nothing to compare
            continue
        importance.append(sign * (sum(inside) / len(inside) - sum(outside) / len(outside)))
    scale = max((abs(v) for v in importance if v is not None), default=0.0) or 1.0
    return {
        **scorer.describe(), "depth": depth, "samples": len(subsets), "seed": seed,
        "full_depth_score": scorer.score(None),
        "subsets": [{"keep": scorer.numbered(k), "score": s} for k, s in zip(subsets, scores)],
        "importance": importance,
        "relative_importance": [None if v is None else v / scale for v in importance],
    }
