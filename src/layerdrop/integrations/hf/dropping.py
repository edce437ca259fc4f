"""LayerDrop for Hugging Face models, through the same per-update drop plans as layerdrop's own models.

``apply_layerdrop(model, p)`` hands each layer of the model's layer lists a forward that runs the layer
or, when this update's plan skips it, returns its input unchanged: a skipped layer computes nothing, so
its parameters get no gradient. The plan of one update is the pure function
:func:`layerdrop.nn.drop_plan.draw_stack_plan` of (seed, update, stack, rates), so every data-parallel rank
skips the same layers on the same update without talking to the others. Nothing is dropped in eval mode.

The update number comes from one of two places:

- the Hugging Face ``Trainer``: pass ``LayerDropCallback(handle)`` in ``callbacks``; every forward of one
  optimizer step (all gradient-accumulation micro-batches) uses the plan of ``state.global_step``;
- otherwise each training-mode forward of the model is one update (``handle.update`` counts them), which is
  one draw per layer per batch, the paper's rule, in a plain training loop.

Why the layer's ``forward`` is replaced on the instance rather than the layer wrapped in a new module: a
wrapper would rename every parameter (``layers.0.layer.…``), and ``save_pretrained`` would then write a
checkpoint plain transformers cannot load. ``remove_layerdrop`` restores the original forwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

from layerdrop.errors import UserError
from layerdrop.integrations.hf.families import family_of, layer_lists
from layerdrop.nn.drop_plan import LayerDropConfig, StackPlan, draw_stack_plan, full_plan


@dataclass
class HFLayerDrop:
    """LayerDrop applied to one model: its configs per stack, its seed, and the update the next plan is for."""

    model: torch.nn.Module = field(repr=False)
    configs: dict[str, LayerDropConfig]
    seed: int
    update: int = 0
    follow_trainer: bool = False  # set by LayerDropCallback: the Trainer sets `update`, forwards do not advance it
    current: dict[str, StackPlan] | None = field(default=None, repr=False)  # the plans of the forward under way
    _restore: list = field(default_factory=list, repr=False)  # what remove_layerdrop puts back

    def plan(self, update: int) -> dict[str, StackPlan]:
        """Each stack's plan for ``update`` (a pure function of the seed, the update and the configs)."""
        plans = {}
        for stack, layers in layer_lists(self.model).items():
            config = self.configs.get(stack)
            rates = config.rates(len(layers), update) if config is not None else [0.0] * len(layers)
            if not any(rates):
                plans[stack] = full_plan(len(layers))
                continue
            depths, rounding = config.served_at(update)
            plans[stack] = draw_stack_plan(self.seed, update, stack, rates, sampling=config.sampling, depths=depths,
                                           depths_round=rounding)
        return plans

    def expected_skipped(self, stack: str, max_update: int) -> float:
        """Expected share of the stack's layers skipped over ``max_update`` updates."""
        config = self.configs.get(stack)
        return 0.0 if config is None else config.expected_skipped(len(layer_lists(self.model)[stack]), max_update,
                                                                  share=lambda rate: rate)

    def _before_forward(self, module, args, kwargs) -> None:
        if not module.training:
            self.current = None
            return
        if kwargs.get("past_key_values") is not None and self.current is not None:
            return  # a later step of generation in training mode: the cache was filled under this plan
        self.current = self.plan(self.update)
        if not self.follow_trainer:
            self.update += 1


def _droppable_forward(handle: HFLayerDrop, stack: str, index: int, layer: torch.nn.Module, original):
    def forward(*args, **kwargs):
        plan = handle.current
        if layer.training and plan is not None and not plan[stack][index].runs:
            return args[0] if args else kwargs["hidden_states"]  # the layer's output is its input: skipped
        return original(*args, **kwargs)
    return forward


def apply_layerdrop(model: torch.nn.Module, p: float | None = None, schedule: str = "uniform", seed: int = 0, *,
                    encoder_p: float | None = None, decoder_p: float | None = None, warmup: int = 0,
                    gamma: float = 0.0, sampling: str = "per-layer", depths: tuple[int, ...] = (),
                    depths_round: str = "down") -> HFLayerDrop:
    """Train ``model`` with LayerDrop at rate ``p`` on every stack (``encoder_p``/``decoder_p`` set one stack
    apart, e.g. for BART). ``schedule``, ``warmup``, ``gamma``, ``sampling``, ``depths`` and ``depths_round`` are
    those of ``--layerdrop-schedule``, ``--layerdrop-warmup-updates``, ``--layerdrop-gamma``,
    ``--layerdrop-sampling``, ``--layerdrop-depths`` and ``--layerdrop-depths-round``. The family's own LayerDrop fields (OPT's
    ``layerdrop``, BART's ``encoder_layerdrop``/``decoder_layerdrop``) are set to 0, so layers are dropped once.
    Returns the handle (also at ``model._layerdrop``)."""
    family = family_of(model)
    if getattr(model, "_layerdrop", None) is not None:
        raise UserError("model: LayerDrop is already applied; valid: call remove_layerdrop(model) first")
    rates = {stack: p for stack in family.stacks}
    for stack, value in (("encoder", encoder_p), ("decoder", decoder_p)):
        if value is not None:
            if stack not in family.stacks:
                raise UserError(f"{stack}_p: {model.config.model_type} has no {stack}; valid stacks: {', '.join(family.stacks)}")
            rates[stack] = value
    configs = {}
    for stack, rate in rates.items():
        if rate is None:
            raise UserError(f"p: not given for the {stack}; valid: p, or {stack}_p, a probability in [0, 1)")
        try:
            configs[stack] = LayerDropConfig(p=float(rate), schedule=schedule, warmup=int(warmup), gamma=float(gamma),
                                            sampling=sampling, depths=tuple(depths), depths_round=depths_round)
        except ValueError as error:
            raise UserError(str(error)) from None
    handle = HFLayerDrop(model, configs, int(seed))
    for stack, layers in layer_lists(model).items():
        for index, layer in enumerate(layers):
            # Another library (accelerate's device maps) may have set an instance forward already: keep it.
            had = layer.__dict__.get("forward")
            handle._restore.append(lambda layer=layer, had=had: _set_instance_forward(layer, had))
            layer.forward = _droppable_forward(handle, stack, index, layer, layer.forward)
    hook = model.register_forward_pre_hook(handle._before_forward, with_kwargs=True)
    handle._restore.append(hook.remove)
    for name in family.own_layerdrop:
        handle._restore.append(lambda name=name, value=getattr(model.config, name): setattr(model.config, name, value))
        setattr(model.config, name, 0.0)
    for module in model.modules():  # the stacks copy their rate from the config at construction
        if module is not model and isinstance(getattr(module, "layerdrop", None), float) and family.own_layerdrop:
            handle._restore.append(lambda module=module, value=module.layerdrop: setattr(module, "layerdrop", value))
            module.layerdrop = 0.0
    model._layerdrop = handle
    return handle


def _set_instance_forward(layer: torch.nn.Module, forward) -> None:
    if forward is None:
        layer.__dict__.pop("forward", None)
    else:
        layer.forward = forward


def remove_layerdrop(model: torch.nn.Module) -> None:
    """Give every layer its forward back and the family's own LayerDrop rates their values."""
    handle = getattr(model, "_layerdrop", None)
    if handle is None:
        return
    for restore in reversed(handle._restore):
        restore()
    model._layerdrop = None


class LayerDropCallback(TrainerCallback):
    """Gives each optimizer step of a ``transformers.Trainer`` the plan of ``state.global_step``, so every
    rank and every gradient-accumulation micro-batch of one step drops the same layers, and a resumed
    Trainer draws the plans of an unbroken run."""

    def __init__(self, handle: HFLayerDrop):
        self.handle = handle

    def on_train_begin(self, args, state, control, **kwargs):
        self.handle.follow_trainer = True
        self.handle.update = state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        self.handle.update = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self.handle.follow_trainer = False  # a plain loop afterwards counts its own forwards again
        self.handle.update = state.global_step


__all__ = ["HFLayerDrop", "LayerDropCallback", "apply_layerdrop", "remove_layerdrop"]
