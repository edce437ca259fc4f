"""Helpers shared by the config dataclasses: CLI help on fields, flag names, JSON round trips."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any

# Sizes beyond these are typing mistakes, not models: refused before anything is allocated.
MAX_LAYERS = 4096
MAX_SIZE = 2**20
MAX_UPDATES = 10**9


def option(default: Any, help: str, cli: bool = True) -> Any:
    """A dataclass field that documents its command-line flag (``cli=False``: stored, not a flag)."""
    return field(default=default, metadata={"help": help, "cli": cli})


def flag_name(field_name: str) -> str:
    """fairseq's convention: snake_case in the file, kebab-case on the command line."""
    return "--" + field_name.replace("_", "-")


def shorten(value: Any, limit: int = 80) -> str:
    """repr() for messages: a 100 KB bad value is named by its start and its length, not echoed whole."""
    text = value if isinstance(value, str) and not isinstance(value, bool) else repr(value)
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_positive_ints(config: Any, names: tuple[str, ...], maximum: int = MAX_SIZE) -> None:
    from layerdrop.errors import UserError

    for name in names:
        value = getattr(config, name)
        cap = MAX_LAYERS if name.endswith("_layers") else maximum
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= cap:
            raise UserError(f"{flag_name(name)}: got {shorten(value)}; valid: an integer from 1 to {cap:,}")


def _accepts(kind: str, value: Any) -> bool:
    """Whether ``value`` (from JSON) fits one member of a field's type annotation, e.g. ``list[int]``."""
    kind = kind.strip()
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    if kind.startswith("list["):
        return isinstance(value, list) and all(_accepts(kind[5:-1], item) for item in value)
    if kind.startswith("dict"):
        return isinstance(value, dict)
    return True  # a type this check does not know: left to the config's own validate()


def check_field_types(config_class: type, values: dict[str, Any], source: str | None = None) -> None:
    """Refuse values of the wrong type (``"bias": "no"``, ``"vocab_size": "x"``, ``NaN``), naming the field in
    ``source`` (a file), or the flag when ``source`` is None."""
    from layerdrop.errors import UserError

    for f in dataclasses.fields(config_class):
        if f.name in values and not any(_accepts(kind, values[f.name]) for kind in str(f.type).split("|")):
            where = f"{flag_name(f.name)}: got" if source is None else f"{source}: {f.name} is"
            raise UserError(f"{where} {shorten(values[f.name])}; valid: a value of type {f.type}"
                            + (" (finite)" if "float" in str(f.type) else ""))


def check_finite(values: dict[str, float | None], minimum: float = 0.0) -> None:
    """Numeric flags that must be finite and at least ``minimum`` (None: not given)."""
    from layerdrop.errors import UserError

    for name, value in values.items():
        if value is not None and not (math.isfinite(value) and value >= minimum):
            raise UserError(f"{flag_name(name)}: got {value!r}; valid: a finite number >= {minimum:g}")


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
