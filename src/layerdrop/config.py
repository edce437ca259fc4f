"""Helpers shared by the config dataclasses: CLI help on fields, flag names, JSON round trips."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, cli: bool = True) -> Any:
    """A dataclass field that documents its command-line flag (``cli=False``: stored, not a flag)."""
    return field(default=default, metadata={"help": help, "cli": cli})


def flag_name(field_name: str) -> str:
    """fairseq's convention: snake_case in the file, kebab-case on the command line."""
    return "--" + field_name.replace("_", "-")


def check_positive_ints(config: Any, names: tuple[str, ...]) -> None:
    from layerdrop.errors import UserError

    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{flag_name(name)}: got {value!r}; valid: a positive integer")


def check_probabilities(config: Any, names: tuple[str, ...]) -> None:
    """Dropout and LayerDrop rates: in [0, 1) (at 1 nothing would ever run)."""
    from layerdrop.errors import UserError

    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise UserError(f"{flag_name(name)}: got {value!r}; valid: a probability in [0, 1)")


def check_heads_divide(dim: int, heads: int, prefix: str) -> None:
    from layerdrop.errors import UserError

    if dim % heads:
        raise UserError(f"--{prefix}-attention-heads: got {heads}; valid: a divisor of --{prefix}-embed-dim ({dim})")
