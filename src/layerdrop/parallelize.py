"""How a model is run for training at scale: compiled layers, bf16 autocast, FSDP2 sharding.

Each is applied per layer, never to the stack, because the stack's loop is where LayerDrop decides which
layers run: a compiled layer never sees a dice roll (a new plan runs the same graphs and compiles nothing
new), and an FSDP2-sharded layer that is skipped is skipped on every rank, so it neither gathers its
parameters nor reduces gradients, and no rank waits for a collective the others never start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from layerdrop.nn.stack import stacks

AMP_DTYPES = {"bf16": torch.bfloat16}


def compile_layers(model: nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` every layer in place (parameter names and checkpoints are unchanged)."""
    for stack in stacks(model):
        for layer in stack.layers:
            layer.compile(backend=backend)


@contextlib.contextmanager
def autocast(amp: str | None) -> Iterator[None]:
    """bf16 autocast of the forward pass (None: full precision). Weights and optimizer state stay float32."""
    if amp is None:
        yield
        return
    with torch.autocast("cpu", dtype=AMP_DTYPES[amp]):
        yield


def shard_model(model: nn.Module) -> None:
    """FSDP2: each layer its own unit (gathered only if it runs), then the rest (embeddings, norms, heads)."""
    from torch.distributed.fsdp import fully_shard

    for stack in stacks(model):
        for layer in stack.layers:
            fully_shard(layer)
    fully_shard(model)


def is_sharded(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def full_model_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The whole model's weights as plain tensors (with FSDP2: gathered, on rank 0 only; other ranks get {})."""
    if not sharded:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _optimizer_order(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order (the order of its index-keyed state dict)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> dict[str, Any]:
    """The optimizer state as one process would save it (keyed by index), so a checkpoint does not depend on
    how it was trained. With FSDP2 it is gathered on rank 0 (other ranks get {})."""
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not by_name:
        return {}
    index = {name: i for i, name in enumerate(_optimizer_order(model, optimizer))}
    return {"state": {index[name]: value for name, value in by_name["state"].items()},
            "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                             for group in by_name["param_groups"]]}


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                              sharded: bool) -> None:
    """Load an index-keyed optimizer state (as saved by :func:`full_optimizer_state`) into this optimizer."""
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    order = _optimizer_order(model, optimizer)
    by_name = {"state": {order[int(i)]: value for i, value in state["state"].items()},
               "param_groups": [{**group, "params": [order[int(i)] for i in group["params"]]}
                                for group in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, optim_state_dict=by_name, options=StateDictOptions(full_state_dict=True))


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded tensor (the tensor itself otherwise)."""
    return tensor.to_local() if is_sharded(tensor) else tensor
