"""Keep lists and the one pruning function every command uses.

``prune_state_dict(config, state_dict, keep) -> (config', state_dict')`` is pure: it sorts each keep
list, renumbers ``<stack>.layers.N.`` keys, passes every key without a layer index through, and
returns a config whose layer count is the new one and whose keep list is cleared, so a pruned
checkpoint is never pruned a second time. ``<stack>_kept_layers`` records which original layers
remain.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from layerdrop.config import flag_name
from layerdrop.errors import UserError
from layerdrop.nn.drop_plan import evenly_spaced
from layerdrop.pruning.indices import as_items, parse_layers_to_keep
from layerdrop.pruning.units import apply_unit_requests

STACKS = ("encoder", "decoder")
PRUNING_MESSAGE = "| Pruning model to specified layer configuration"


def _stacks_of(config: Any) -> list[str]:
    return [s for s in STACKS if hasattr(config, f"{s}_layers")]


def every_other(num_layers: int, depth: int) -> list[int]:
    """``depth`` evenly spaced layers out of ``num_layers`` (depth = n/2 gives the paper's 0,2,4,...)."""
    if not 1 <= depth <= num_layers:
        raise UserError(f"depth: got {depth}; valid: 1 to {num_layers}")
    return evenly_spaced(num_layers, depth)


def keep_layer_entries(state_dict: Mapping[str, Any], prefix: str, kept: Sequence[int]) -> dict[str, Any]:
    """The entries of the layers ``kept`` (sorted, distinct) under ``<prefix>.N.``, renumbered from 0 in order;
    every key outside that list passes through. Shared by our checkpoints and Hugging Face models."""
    renumber = {old: new for new, old in enumerate(kept)}
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    pruned: dict[str, Any] = {}
    for key, value in state_dict.items():
        match = pattern.match(key)
        if match is None:
            pruned[key] = value
        elif int(match.group(1)) in renumber:
            pruned[f"{prefix}.{renumber[int(match.group(1))]}.{match.group(2)}"] = value
    return pruned


def prune_state_dict(
    config: Any, state_dict: Mapping[str, torch.Tensor], keep: Mapping[str, Sequence[int]]
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Keep only the listed layers of each named stack ("encoder", "decoder"), renumbered from 0."""
    new_config = config
    new_state = dict(state_dict)
    for stack, indices in keep.items():
        num_layers = getattr(config, f"{stack}_layers")
        kept = parse_layers_to_keep(indices, num_layers, flag_name(f"{stack}_layers_to_keep"))
        new_state = keep_layer_entries(new_state, f"{stack}.layers", kept)
        origin = getattr(config, f"{stack}_kept_layers", None) or list(range(num_layers))
        # Per-layer facts (heads and FFN width after unit pruning) follow their layers.
        per_layer = {name: [values[i] for i in kept] for name in (f"{stack}_layer_heads", f"{stack}_layer_ffn_dims")
                     if (values := getattr(config, name, None))}
        new_config = dataclasses.replace(
            new_config,
            **{
                f"{stack}_layers": len(kept),
                f"{stack}_layers_to_keep": None,
                f"{stack}_kept_layers": [origin[i] for i in kept],
                **per_layer,
            },
        )
    return new_config, new_state


def _already_applied(config: Any, stack: str, request: str | Sequence[int]) -> bool:
    """A checkpoint saved after pruning to exactly this list is not pruned again."""
    origin = getattr(config, f"{stack}_kept_layers", None)
    if not origin:
        return False
    try:
        return sorted(int(i) for i in as_items(request)) == origin
    except (TypeError, ValueError):
        return False


def apply_layers_to_keep(
    config: Any, state_dict: Mapping[str, torch.Tensor] | None = None, log: Callable[[str], None] = print
) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """Apply the config's unit pruning requests (heads, sublayers, FFN halves) and then its
    ``<stack>_layers_to_keep`` (if any) to the config and, when given, the weights."""
    config, state_dict, units_pruned = apply_unit_requests(config, state_dict, log)
    keep: dict[str, str | Sequence[int]] = {}
    for stack in _stacks_of(config):
        request = getattr(config, f"{stack}_layers_to_keep", None)
        if request is None:
            continue
        if _already_applied(config, stack, request):
            log(f"| {stack} already pruned to layers {getattr(config, f'{stack}_kept_layers')}; not pruning again")
            config = dataclasses.replace(config, **{f"{stack}_layers_to_keep": None})
            continue
        # Validate before announcing anything: a bad list must not look like a pruned model.
        keep[stack] = parse_layers_to_keep(request, getattr(config, f"{stack}_layers"), flag_name(f"{stack}_layers_to_keep"))
    if units_pruned or keep:
        log(PRUNING_MESSAGE)
    if not keep:
        return config, (dict(state_dict) if state_dict is not None else None)
    new_config, new_state = prune_state_dict(config, state_dict or {}, keep)
    return new_config, (new_state if state_dict is not None else None)
