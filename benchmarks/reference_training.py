"""What the Hugging Face reference trainers (``hf_reference_mt.py``, ``hf_reference_mlm.py``) share: one
optimizer step as ``layerdrop train`` takes it, and the record written atomically at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip_norm: float) -> float:
    """Backward, clip the gradient norm as ``layerdrop train`` does, step, clear; returns the loss."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return round(loss.item(), 5)


def write_record(path: str, record: dict) -> None:
    """The JSON record, atomically: a reader never sees half of it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, out)
