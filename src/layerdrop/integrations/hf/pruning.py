"""Keep only some layers of a Hugging Face model, and leave a model that plain transformers loads.

``prune(model, layers_to_keep)`` renumbers the kept layers' weights with the pure function the rest of the
project uses (:func:`layerdrop.pruning.keep.keep_layer_entries`), writes the new layer counts and per-layer
lists (``layer_types``) into a copy of the config, builds a fresh model of the same class from that config
and loads the weights strictly. Building from the config, rather than editing the layer list in place,
gives every kept layer the ``layer_idx`` its new position needs (the KV cache and the attention masks are
indexed by it) with no knowledge of each family's internals. The config records the original indices in
``layerdrop_kept_layers`` (so pruning twice composes), an ordinary field that transformers saves and loads.
"""

from __future__ import annotations

import copy

import torch

from layerdrop.errors import UserError
from layerdrop.integrations.hf.families import family_of, layer_lists, qualified_names, resolve_keep
from layerdrop.pruning.indices import parse_layers_to_keep
from layerdrop.pruning.keep import keep_layer_entries

KEPT_FIELD = "layerdrop_kept_layers"


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers before 5.x kept it here
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def pruned_config(config, keep: dict[str, list[int]], counts: dict[str, int], family):
    """A copy of ``config`` describing only the kept layers (pure: ``config`` is not changed)."""
    new = copy.deepcopy(config)
    origin = dict(getattr(config, KEPT_FIELD, None) or {})
    for stack, kept in keep.items():
        for field in family.layer_counts[stack]:
            setattr(new, field, len(kept))
        if len(family.stacks) == 1:
            for field in family.per_layer:
                values = getattr(config, field, None)
                if isinstance(values, (list, tuple)) and len(values) == counts[stack]:
                    setattr(new, field, [values[i] for i in kept])
        before = origin.get(stack) or list(range(counts[stack]))
        origin[stack] = [before[i] for i in kept]
    setattr(new, KEPT_FIELD, origin)
    return new


def prune(model: torch.nn.Module, layers_to_keep) -> torch.nn.Module:
    """A new model of ``model``'s class holding only the kept layers (``model`` is left as it was).

    ``layers_to_keep``: a keep list ("0,2,4" or [0, 2, 4]) for single-stack families, or a dict of stack ->
    keep list ({"encoder": [0, 1], "decoder": [0, 2, 4]}) for encoder-decoders; stacks not named keep every
    layer. Raises :class:`~layerdrop.errors.UserError` for an unsupported family or a keep list that does not fit.
    """
    family = family_of(model)
    lists = layer_lists(model)
    counts = {stack: len(layers) for stack, layers in lists.items()}
    keep = {stack: parse_layers_to_keep(value, counts[stack], f"layers_to_keep ({stack})")
            for stack, value in resolve_keep(model, layers_to_keep).items()}
    if getattr(model, "_layerdrop", None) is not None:
        raise UserError("model: LayerDrop is applied to it; valid: call remove_layerdrop(model) before prune")
    state = model.state_dict()
    names = qualified_names(model)
    for stack, kept in keep.items():
        state = keep_layer_entries(state, names[stack], kept)
    config = pruned_config(model.config, keep, counts, family)
    # Built where the weights are, in their dtype, with initialisation skipped: every value is loaded next.
    with torch.device(next(model.parameters()).device), _no_init_weights():
        pruned = type(model)._from_config(config, dtype=model.dtype)
    pruned.load_state_dict(state, strict=True)
    if getattr(model, "generation_config", None) is not None:
        pruned.generation_config = copy.deepcopy(model.generation_config)
    return pruned.train(model.training)


__all__ = ["KEPT_FIELD", "prune", "pruned_config"]
