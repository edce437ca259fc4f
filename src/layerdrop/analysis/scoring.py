"""Score a checkpoint on its validation split with only some layers kept.

Every analysis (``select``, ``sweep``, ``importance``) asks one question many times: how good is this
model with only these layers? A :class:`Scorer` loads the checkpoint and its task's validation data
once, then answers for any keep list by pruning the weights with the one pruning function and
evaluating the smaller model. The metric is the task's own: validation loss (lower is better) for
language models, masked LMs and translation; accuracy (higher is better) for classifiers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from layerdrop.config import flag_name, shorten
from layerdrop.checkpoint import Checkpoint, build_model, load_checkpoint
from layerdrop.errors import UserError
from layerdrop.pruning.indices import parse_layers_to_keep
from layerdrop.pruning.keep import apply_layers_to_keep, prune_state_dict


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def best(self, scores: Sequence[float]) -> float:
        return max(scores) if self.higher_is_better else min(scores)


def _task_for(ckpt: Checkpoint, config: Any, data: str | None, batch_size: int | None, max_valid_steps: int | None):
    """The checkpoint's training task, rebuilt from its run record, with its validation data prepared."""
    from layerdrop.tasks import TASKS
    from layerdrop.train import TrainConfig

    stored = ckpt.run or {}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    run = TrainConfig(**{k: v for k, v in stored.items() if k in known})
    run.data = data if data is not None else run.data
    if run.data is None and run.task != "lm":
        raise UserError(f"--path {ckpt.path}: the checkpoint does not record its data; valid: give --data")
    if batch_size is not None:
        run.batch_size = batch_size
    run.max_valid_steps = max_valid_steps
    task = TASKS[run.task](run)
    task.prepare(ckpt.tokenizer, config)
    return task


class Scorer:
    """Validation quality of one checkpoint for any keep list of one stack."""

    def __init__(self, path: str, data: str | None = None, batch_size: int | None = None,
                 max_valid_steps: int | None = None, stack: str | None = None, keep_flags: dict[str, Any] | None = None):
        """``keep_flags`` (e.g. from --decoder-heads-to-keep) prune the checkpoint once, before any scoring."""
        self.path = path
        self.ckpt = load_checkpoint(path, "--path", flag_overrides=keep_flags)
        self.ckpt.config.validate()
        self.config, self.state_dict = apply_layers_to_keep(self.ckpt.config, self.ckpt.state_dict)
        config = self.config
        stacks = [s for s in ("decoder", "encoder") if hasattr(config, f"{s}_layers")]
        if stack is None:
            stack = stacks[0]  # the LM's and the translation model's decoder; the encoder model's encoder
        if stack not in stacks:
            raise UserError(f"--stack: got {stack!r}; valid for this {self.ckpt.model_type} checkpoint: {', '.join(stacks)}")
        self.stack = stack
        self.num_layers: int = getattr(config, f"{stack}_layers")
        # The checkpoint's number for each scored layer: a load-time keep list (--decoder-layers-to-keep 1,3)
        # scores layers 1 and 3 as 0 and 1, and what the analyses print must be used on --path as it is.
        requested, stored = (keep_flags or {}).get(f"{stack}_layers_to_keep"), getattr(self.ckpt.config, f"{stack}_layers")
        applied_now = requested is not None and stored != self.num_layers  # not a list the checkpoint already had
        self.layer_numbers: list[int] = (parse_layers_to_keep(requested, stored, flag_name(f"{stack}_layers_to_keep"))
                                         if applied_now else list(range(self.num_layers)))
        self.task = _task_for(self.ckpt, config, data, batch_size, max_valid_steps)
        if getattr(config, "num_classes", 0):
            from layerdrop.tasks.classification import metric_names

            names = metric_names(config)  # a GLUE task's official metric(s); their mean when there are two
            self.metric = Metric(names[0] if len(names) == 1 else f"GLUE score (mean of {' and '.join(names)})", True)
        else:
            self.metric = Metric("valid loss", False)
        self.evaluations = 0
        self._cache: dict[tuple[int, ...], float] = {}

    def model(self, keep: Sequence[int] | None = None) -> torch.nn.Module:
        """The model with only ``keep`` layers of the scored stack (all of them when None), in eval mode."""
        config, state_dict = self.config, self.state_dict
        if keep is not None and list(keep) != list(range(self.num_layers)):
            config, state_dict = prune_state_dict(config, state_dict, {self.stack: list(keep)})
        model = build_model(config, dict(state_dict), self.ckpt.model_type, f"--path {self.path}", log=lambda _: None)
        return model.eval()

    def numbered(self, keep: Sequence[int]) -> list[int]:
        """A keep list of the scored model in the checkpoint's layer numbers."""
        return [self.layer_numbers[i] for i in keep]

    def layers(self, model: torch.nn.Module) -> torch.nn.ModuleList:
        """The scored stack's layer list inside ``model``."""
        return getattr(model, self.stack).layers

    def evaluate(self, model: torch.nn.Module) -> float:
        metrics = self.task.validate(model)
        if metrics is None:
            raise UserError(f"--path {self.path}: the task's data has no validation split to score on; valid: --data with one")
        return float(metrics["score" if self.metric.higher_is_better else "loss"])

    def score(self, keep: Sequence[int] | None = None) -> float:
        """Validation metric with only ``keep`` layers; each distinct subset is evaluated once."""
        key = tuple(sorted(keep)) if keep is not None else tuple(range(self.num_layers))
        if key not in self._cache:
            self._cache[key] = self.evaluate(self.model(key))
            self.evaluations += 1
        return self._cache[key]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "model_type": self.ckpt.model_type, "stack": self.stack,
                "layers": self.num_layers, "layer_numbers": self.layer_numbers, "metric": self.metric.name, "higher_is_better": self.metric.higher_is_better}


def check_depth(depth: int, num_layers: int, flag: str = "--depth") -> int:
    if not 1 <= depth <= num_layers:
        raise UserError(f"{flag}: got {shorten(depth)}; valid: 1 to {num_layers} (the stack's layer count)")
    return depth


__all__ = ["Metric", "Scorer", "check_depth"]
