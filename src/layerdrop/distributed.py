"""Data-parallel training under torchrun, with LayerDrop, that cannot hang.

``torchrun --nproc-per-node N -m layerdrop train ...`` starts N processes. Each one:

- draws the same LayerDrop plan on the same update (a pure function of the seed and the update), so every
  rank skips the same layers;
- builds the same global batch (batches are a function of (seed, update) too) and trains on its share of
  the rows, so the global batch does not depend on N;
- after backward, averages the gradients that exist with one all-reduce. Skipped layers have no gradient
  on any rank, so they are left out everywhere alike: no ``find_unused_parameters``, no collective that
  one rank waits on and another never joins, and their ``.grad`` stays None, so AdamW neither moves nor
  decays them, exactly as in one process.

Each rank's loss is weighted by its share of the global batch's scored positions (or examples), so the
averaged gradient is the gradient of the global batch's mean loss, to float rounding, whatever N is.
Only rank 0 writes checkpoints and logs; every rank reads the same checkpoint to resume.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from layerdrop.config import shorten
from layerdrop.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def world_from_env(timeout_minutes: float = 30.0) -> World:
    """The world torchrun describes in RANK / WORLD_SIZE, with the process group started (gloo on CPU)."""
    size_text, rank_text = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    try:
        size, rank = int(size_text), int(rank_text)
    except ValueError:
        raise UserError(f"torchrun: WORLD_SIZE {shorten(size_text)} and RANK {shorten(rank_text)}; valid: integers, "
                        "as torchrun sets them") from None
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"torchrun: WORLD_SIZE {size} and RANK {rank}; valid: 0 <= RANK < WORLD_SIZE")
    if size == 1:
        return World()
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise UserError(f"torchrun: WORLD_SIZE is {size} but {name} is not set; valid: start the run with "
                                "torchrun, which sets it")
        # Training runs on CPU tensors in this version, so gloo is the backend whatever the machine has.
        dist.init_process_group("gloo", rank=rank, world_size=size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return World(rank, size)


def close(world: World) -> None:
    if world.parallel and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.parallel:
        dist.barrier()


def shard(batch: Any, world: World) -> Any:
    """This rank's rows of a global batch (a tensor, or a tuple of tensors sharing the first dimension)."""
    if not world.parallel:
        return batch
    if isinstance(batch, torch.Tensor):
        return torch.tensor_split(batch, world.size)[world.rank]
    return type(batch)(shard(part, world) for part in batch)


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sums over the ranks (one small all-reduce, float64)."""
    if not world.parallel:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _average_in_place(tensors: list[torch.Tensor], world: World) -> None:
    """Replace each tensor by its mean over the ranks: one all-reduce of them all, flattened together."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset: offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(parameters: list[torch.nn.Parameter], world: World) -> int:
    """Average, over the ranks, the gradients that exist. Every rank ran the same plan, so the same parameters
    have gradients everywhere, in the same order. Returns how many parameters took part."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if world.parallel and grads:
        _average_in_place(grads, world)
    return len(grads)


def average_buffers(module: torch.nn.Module, world: World) -> None:
    """Average floating-point buffers (learned gates' running means), so the next plan is the same on every rank."""
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if world.parallel and buffers:
        _average_in_place(buffers, world)


def weigher(world: World, stop_requested: Callable[[], bool]) -> Callable[[Any], float]:
    """The factor a rank multiplies its mean loss by, so that averaged gradients are the global mean's.

    Called once per update, after the forward pass: it also sums the loss, the scored count and the tokens
    over the ranks, and whether any rank was asked to stop, into ``weigher.last`` (one all-reduce)."""
    def weight(outputs: Any) -> float:
        count, loss = float(outputs.count), outputs.loss.detach().double().item()
        summed = all_sum([count, loss * count, float(outputs.tokens), float(stop_requested())], world)
        global_count = summed[0]
        weight.last = {"loss": summed[1] / global_count if global_count else loss, "tokens": int(summed[2]),
                       "stop": summed[3] > 0}
        return count * world.size / global_count if global_count else 0.0

    weight.last = {}
    return weight
