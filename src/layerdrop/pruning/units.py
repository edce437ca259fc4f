"""Pruning below the layer: attention heads, whole sublayers and FFN halves, with the weights really removed.

A model trained with a structured dropout unit (``--layerdrop-unit``) is pruned along the same unit:

- ``--decoder-heads-to-keep 0,2``: these self-attention heads in every layer (the others' rows of the
  q/k/v projection and columns of the output projection go);
- ``--decoder-attention-layers-to-keep 0,2,4`` / ``--decoder-ffn-layers-to-keep 1,3,5``: the layers whose
  self-attention / FFN sublayer stays (the other sublayers and their LayerNorms go);
- ``--decoder-ffn-halves-to-keep 0``: this half of every FFN's hidden units.

(and the same with ``encoder``). Indices refer to the checkpoint as stored; unit pruning is applied before
``--*-layers-to-keep``. The result is recorded in the config (heads and FFN width of every layer), the
request is cleared and remembered, so a checkpoint pruned once is never pruned again by the same flags.

``prune_units(config, state_dict, stack, ...)`` is pure, like ``prune_state_dict``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from layerdrop.config import flag_name, option
from layerdrop.errors import UserError
from layerdrop.pruning.indices import as_items, parse_layers_to_keep

REQUESTS = ("heads_to_keep", "attention_layers_to_keep", "ffn_layers_to_keep", "ffn_halves_to_keep")


@dataclass
class EncoderUnits:
    encoder_heads_to_keep: str | None = option(None, "keep only these self-attention heads in every encoder layer, e.g. 0,2")
    encoder_attention_layers_to_keep: str | None = option(None, "keep the self-attention sublayer only in these encoder layers")
    encoder_ffn_layers_to_keep: str | None = option(None, "keep the FFN sublayer only in these encoder layers")
    encoder_ffn_halves_to_keep: str | None = option(None, "keep only this half (0 or 1) of every encoder FFN")
    encoder_layer_heads: list[int] | None = option(None, "self-attention heads of each encoder layer (pruned model)", cli=False)
    encoder_layer_ffn_dims: list[int] | None = option(None, "FFN width of each encoder layer (pruned model)", cli=False)
    encoder_pruned_units: dict | None = option(None, "unit pruning already applied to the encoder", cli=False)


@dataclass
class DecoderUnits:
    decoder_heads_to_keep: str | None = option(None, "keep only these self-attention heads in every decoder layer, e.g. 0,2")
    decoder_attention_layers_to_keep: str | None = option(None, "keep the self-attention sublayer only in these decoder layers")
    decoder_ffn_layers_to_keep: str | None = option(None, "keep the FFN sublayer only in these decoder layers")
    decoder_ffn_halves_to_keep: str | None = option(None, "keep only this half (0 or 1) of every decoder FFN")
    decoder_layer_heads: list[int] | None = option(None, "self-attention heads of each decoder layer (pruned model)", cli=False)
    decoder_layer_ffn_dims: list[int] | None = option(None, "FFN width of each decoder layer (pruned model)", cli=False)
    decoder_pruned_units: dict | None = option(None, "unit pruning already applied to the decoder", cli=False)


def pending_pruning(config: Any) -> bool:
    """Whether the config still asks for pruning (models are built from configs with it applied)."""
    return any(getattr(config, f"{stack}_{name}", None) for stack in ("encoder", "decoder")
               for name in ("layers_to_keep", *REQUESTS))


def layer_shapes(config: Any, stack: str) -> tuple[list[int], list[int]]:
    """(heads, FFN width) of every layer of a stack."""
    layers = getattr(config, f"{stack}_layers")
    heads = getattr(config, f"{stack}_layer_heads", None) or [getattr(config, f"{stack}_attention_heads")] * layers
    ffn = getattr(config, f"{stack}_layer_ffn_dims", None) or [getattr(config, f"{stack}_ffn_embed_dim")] * layers
    return list(heads), list(ffn)


def requested_units(config: Any, stack: str) -> dict[str, Any]:
    return {name: getattr(config, f"{stack}_{name}") for name in REQUESTS if getattr(config, f"{stack}_{name}", None) is not None}


def _drop_keys(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> None:
    for key in [k for k in state if k.startswith(prefixes)]:
        del state[key]


def prune_units(config: Any, state_dict: Mapping[str, torch.Tensor] | None, stack: str,
                request: Mapping[str, Any]) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """Remove the heads, sublayers and FFN halves that ``request`` (field name -> value) does not keep.
    With ``state_dict=None`` only the config changes (a model about to be built fresh)."""
    num_layers = getattr(config, f"{stack}_layers")
    heads, ffn = layer_shapes(config, stack)
    head_dim = getattr(config, f"{stack}_embed_dim") // getattr(config, f"{stack}_attention_heads")
    state = dict(state_dict) if state_dict is not None else {}
    has_weights = state_dict is not None
    parsed: dict[str, list[int]] = {}
    flag = lambda name: flag_name(f"{stack}_{name}")
    layer = lambda l: f"{stack}.layers.{l}."

    if "attention_layers_to_keep" in request:
        keep = parse_layers_to_keep(request["attention_layers_to_keep"], num_layers, flag("attention_layers_to_keep"))
        for l in set(range(num_layers)) - set(keep):
            _drop_keys(state, (layer(l) + "self_attn.", layer(l) + "self_attn_layer_norm."))
            heads[l] = 0
        parsed["attention_layers_to_keep"] = keep
    if "ffn_layers_to_keep" in request:
        keep = parse_layers_to_keep(request["ffn_layers_to_keep"], num_layers, flag("ffn_layers_to_keep"))
        for l in set(range(num_layers)) - set(keep):
            _drop_keys(state, tuple(layer(l) + name for name in ("fc1.", "fc2.", "final_layer_norm.")))
            ffn[l] = 0
        parsed["ffn_layers_to_keep"] = keep
    if "heads_to_keep" in request:
        present = sorted({h for h in heads if h > 0})
        if len(present) != 1:
            raise UserError(f"{flag('heads_to_keep')}: the {stack} layers have {present or 'no'} heads; valid: layers with one head count")
        keep = parse_layers_to_keep(request["heads_to_keep"], present[0], flag("heads_to_keep"), what="head")
        index = torch.tensor(keep)
        for l in range(num_layers):
            if heads[l] == 0:
                continue
            if not has_weights:
                heads[l] = len(keep)
                continue
            prefix = layer(l) + "self_attn."
            w = state[prefix + "qkv_proj.weight"]
            state[prefix + "qkv_proj.weight"] = w.view(3, heads[l], head_dim, -1).index_select(1, index).reshape(-1, w.shape[1]).clone()
            if prefix + "qkv_proj.bias" in state:
                b = state[prefix + "qkv_proj.bias"]
                state[prefix + "qkv_proj.bias"] = b.view(3, heads[l], head_dim).index_select(1, index).reshape(-1).clone()
            w = state[prefix + "out_proj.weight"]
            state[prefix + "out_proj.weight"] = w.view(w.shape[0], heads[l], head_dim).index_select(1, index).reshape(w.shape[0], -1).clone()
            heads[l] = len(keep)
        parsed["heads_to_keep"] = keep
    if "ffn_halves_to_keep" in request:
        if "ffn_halves_to_keep" in config_record(config, stack):
            # Half of a half is a quarter, which a list of halves cannot record.
            raise UserError(f"{flag('ffn_halves_to_keep')}: this checkpoint's FFNs were already halved "
                            f"(half {config_record(config, stack)['ffn_halves_to_keep']} kept); valid: prune the "
                            "checkpoint it came from, once")
        keep = parse_layers_to_keep(request["ffn_halves_to_keep"], 2, flag("ffn_halves_to_keep"), what="half")
        for l in range(num_layers):
            if ffn[l] == 0:
                continue
            if ffn[l] % 2:
                raise UserError(f"{flag('ffn_halves_to_keep')}: layer {l} has an odd FFN width {ffn[l]}; valid: an even width")
            half = ffn[l] // 2
            if not has_weights:
                ffn[l] = half * len(keep)
                continue
            rows = torch.cat([torch.arange(h * half, (h + 1) * half) for h in keep])
            prefix = layer(l)
            state[prefix + "fc1.weight"] = state[prefix + "fc1.weight"].index_select(0, rows).clone()
            if prefix + "fc1.bias" in state:
                state[prefix + "fc1.bias"] = state[prefix + "fc1.bias"].index_select(0, rows).clone()
            state[prefix + "fc2.weight"] = state[prefix + "fc2.weight"].index_select(1, rows).clone()
            ffn[l] = half * len(keep)
        parsed["ffn_halves_to_keep"] = keep

    record = {**config_record(config, stack), **parsed}
    new_config = dataclasses.replace(config, **{
        f"{stack}_layer_heads": heads, f"{stack}_layer_ffn_dims": ffn, f"{stack}_pruned_units": record,
        **{f"{stack}_{name}": None for name in REQUESTS if hasattr(config, f"{stack}_{name}")},
    })
    return new_config, (state if has_weights else None)


def config_record(config: Any, stack: str) -> dict[str, list[int]]:
    """The unit pruning already applied to ``stack`` (field name -> units kept, in the original numbers)."""
    return getattr(config, f"{stack}_pruned_units", None) or {}


def _already_applied(config: Any, stack: str, name: str, value: Any) -> bool:
    """Training a pruned model again with the same flags must not prune it a second time."""
    record = config_record(config, stack)
    try:
        return name in record and sorted(int(i) for i in as_items(value)) == record[name]
    except (TypeError, ValueError):
        return False


def without_requests(config: Any) -> Any:
    """The config with every pruning request (layers and units) cleared."""
    names = [f"{stack}_{what}" for stack in ("encoder", "decoder") for what in ("layers_to_keep", *REQUESTS)]
    return dataclasses.replace(config, **{name: None for name in names if hasattr(config, name)})


def apply_unit_requests(config: Any, state_dict: Mapping[str, torch.Tensor] | None, log: Callable[[str], None]) -> tuple[Any, dict | None, bool]:
    """Apply the config's unit pruning requests, if any: (config, state_dict, whether anything was pruned)."""
    pruned = False
    state = dict(state_dict) if state_dict is not None else None
    for stack in ("encoder", "decoder"):
        request = requested_units(config, stack)
        if not request:
            continue
        # Each request is judged on its own: a rerun may repeat old flags and add a new one.
        done = {name for name, value in request.items() if _already_applied(config, stack, name, value)}
        if done:
            log(f"| {stack} already pruned with {', '.join(flag_name(f'{stack}_{n}') for n in sorted(done))}; not pruning again")
            config = dataclasses.replace(config, **{f"{stack}_{name}": None for name in done})
        todo = {name: value for name, value in request.items() if name not in done}
        if not todo:
            continue
        config, state = prune_units(config, state, stack, todo)
        pruned = True
    return config, state, pruned
