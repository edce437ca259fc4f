"""Quality against depth for one or more checkpoints (LayerDrop against a baseline on one plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerdrop.analysis.scoring import Scorer
from layerdrop.analysis.strategies import select_layers
from layerdrop.config import MAX_LAYERS, shorten
from layerdrop.errors import UserError


def parse_depths(text: str, flag: str = "--depths") -> list[int]:
    try:
        depths = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:  # not a number, or one too long for int()
        depths = []
    if not depths or any(not 1 <= d <= MAX_LAYERS for d in depths):
        raise UserError(f"{flag}: got {shorten(text)}; valid: positive integers, comma-separated, e.g. 12,9,6,3")
    return sorted(set(depths), reverse=True)


def run_label(path: str) -> str:
    """A short name for a checkpoint: its run directory and checkpoint name."""
    parts = Path(path).resolve().parts
    return "/".join(parts[-2:])


def sweep(scorers: list[Scorer], depths: list[int], strategy: str, budget: int = 256, beam: int = 1, log=print) -> dict[str, Any]:
    first = scorers[0]
    metrics = {(s.metric, s.stack) for s in scorers}
    if len(metrics) > 1:
        raise UserError("--path: the checkpoints are scored on different metrics or stacks; valid: checkpoints of one task")
    for scorer in scorers:  # every checkpoint before any scoring: no work is thrown away on the last one
        too_deep = [d for d in depths if d > scorer.num_layers]
        if too_deep:
            raise UserError(f"--depths: {too_deep} exceed the {scorer.num_layers} {scorer.stack} layers of {scorer.path}")
    runs = []
    for scorer in scorers:
        points = []
        for depth in depths:
            selection = select_layers(scorer, depth, strategy, budget, beam)
            keep = scorer.numbered(selection.keep)
            points.append({"depth": depth, "keep": keep, "score": selection.score})
            log(f"| {run_label(scorer.path)}: {depth} layers {keep}: {scorer.metric.name} {selection.score:.4f}")
        runs.append({"path": str(scorer.path), "label": run_label(scorer.path), "layers": scorer.num_layers, "points": points})
    return {"metric": first.metric.name, "higher_is_better": first.metric.higher_is_better, "stack": first.stack,
            "strategy": strategy, "depths": depths, "runs": runs}
