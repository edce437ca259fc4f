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
