"""Lists of layer (or head, or FFN half) indices as users write them: ``"0,2,4"``, a list, or one number."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from layerdrop.config import shorten
from layerdrop.errors import UserError


def as_items(value: str | int | Sequence[int]) -> list[Any]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",")] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]  # a single index given as a number (e.g. from --model-overrides)


def parse_layers_to_keep(value: str | Sequence[int], num_layers: int, flag: str = "--layers-to-keep", what: str = "layer") -> list[int]:
    """Validate a keep list such as ``"0,2,4"`` against ``num_layers`` layers (or heads, halves); return it sorted."""
    valid = f"valid: distinct integers from 0 to {num_layers - 1}, comma-separated"
    items = as_items(value)
    if not items:
        raise UserError(f"{flag}: got an empty list; {valid}")
    indices = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)) or (isinstance(item, str) and not re.fullmatch(r"-?\d{1,18}", item)):
            raise UserError(f"{flag}: got {shorten(value)}: {shorten(item, 30)} is not an integer; {valid}")
        index = int(item)
        if index < 0:
            raise UserError(f"{flag}: got {shorten(value)}: {index} is negative; {valid}")
        if index >= num_layers:
            raise UserError(f"{flag}: got {shorten(value)}: {what} {shorten(index, 30)} is out of range for a model with {num_layers} {'halves' if what == 'half' else what + 's'}; {valid}")
        indices.append(index)
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise UserError(f"{flag}: got {shorten(value)}: {what}(s) {shorten(repeated)} repeated; {valid}")
    return sorted(indices)
