"""Where each supported Hugging Face model family keeps its layers, and which config fields describe them.

A family is named by ``config.model_type``. Its layer lists are found below the model's ``base_model`` (so
``GPT2Model`` and ``GPT2LMHeadModel`` share one entry), and its layer counts live in config fields that
differ by family (``n_layer``, ``num_hidden_layers``, ``encoder_layers``...). Per-layer config lists such as
``layer_types`` (Qwen2's full or sliding-window attention per layer) follow the layers they describe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layerdrop.errors import UserError


@dataclass(frozen=True)
class Family:
    stacks: dict[str, str]  # stack name -> path of its layer list inside the base model
    layer_counts: dict[str, tuple[str, ...]]  # stack name -> config fields holding its layer count
    own_layerdrop: tuple[str, ...] = ()  # the family's own LayerDrop rates, set to 0 under ours
    per_layer: tuple[str, ...] = ("layer_types",)  # config lists with one entry per layer (single-stack families)


_DECODER_ONLY = Family({"decoder": "layers"}, {"decoder": ("num_hidden_layers",)})
FAMILIES: dict[str, Family] = {
    "gpt2": Family({"decoder": "h"}, {"decoder": ("n_layer",)}),
    "bert": Family({"encoder": "encoder.layer"}, {"encoder": ("num_hidden_layers",)}),
    "roberta": Family({"encoder": "encoder.layer"}, {"encoder": ("num_hidden_layers",)}),
    "llama": _DECODER_ONLY,
    "mistral": _DECODER_ONLY,
    "qwen2": _DECODER_ONLY,
    "opt": Family({"decoder": "decoder.layers"}, {"decoder": ("num_hidden_layers",)}, own_layerdrop=("layerdrop",)),
    # BartConfig copies encoder_layers into num_hidden_layers.
    "bart": Family({"encoder": "encoder.layers", "decoder": "decoder.layers"},
                   {"encoder": ("encoder_layers", "num_hidden_layers"), "decoder": ("decoder_layers",)},
                   own_layerdrop=("encoder_layerdrop", "decoder_layerdrop"), per_layer=()),
}


def family_of(model: torch.nn.Module) -> Family:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise UserError(f"model: {type(model).__name__} (model_type {model_type!r}) is not supported; "
                        f"valid families: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def layer_lists(model: torch.nn.Module) -> dict[str, torch.nn.ModuleList]:
    """Each stack's layer list, by stack name ("encoder", "decoder")."""
    family = family_of(model)
    base = getattr(model, "base_model", model)
    return {stack: base.get_submodule(path) for stack, path in family.stacks.items()}


def qualified_names(model: torch.nn.Module) -> dict[str, str]:
    """Each stack's layer list's name inside ``model`` (the prefix of its keys in ``model.state_dict()``)."""
    lists = layer_lists(model)
    names = {id(module): name for name, module in model.named_modules()}
    return {stack: names[id(layers)] for stack, layers in lists.items()}


def resolve_keep(model: torch.nn.Module, layers_to_keep, what: str = "layers_to_keep") -> dict:
    """``layers_to_keep`` as a dict of stack -> keep list: a plain list or string names the only stack."""
    stacks = list(family_of(model).stacks)
    if isinstance(layers_to_keep, dict):
        unknown = [s for s in layers_to_keep if s not in stacks]
        if unknown:
            raise UserError(f"{what}: got stacks {unknown}; valid for {model.config.model_type}: {', '.join(stacks)}")
        return dict(layers_to_keep)
    if len(stacks) > 1:
        raise UserError(f"{what}: {model.config.model_type} has {' and '.join(stacks)} layers; valid: a dict such as "
                        f"{{'decoder': [0, 2, 4]}}")
    return {stacks[0]: layers_to_keep}
