"""Helpers shared by the config dataclasses: CLI help on fields, flag names, JSON round trips."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def option(default: Any, help: str, cli: bool = True) -> Any:
    """A dataclass field that documents its command-line flag (``cli=False``: stored, not a flag)."""
    return field(default=default, metadata={"help": help, "cli": cli})


def flag_name(field_name: str) -> str:
    """fairseq's convention: snake_case in the file, kebab-case on the command line."""
    return "--" + field_name.replace("_", "-")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any], source: str) -> Any:
    """Build ``cls`` from a dict, refusing keys it does not know (``source`` names the file)."""
    from layerdrop.errors import UserError

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{source}: unknown config keys {unknown}; valid: {sorted(known)}")
    return cls(**values)
