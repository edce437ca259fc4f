"""Output paths checked before the work that fills them, so a typo costs a message, not a finished analysis."""

from __future__ import annotations

import os
from pathlib import Path

from layerdrop.errors import UserError


def check_output_path(value: str | Path, flag: str, kind: str = "file") -> None:
    """Refuse ``value`` (a file to write, or a new ``kind="directory"``) when it cannot be created: an empty
    name, a directory where a file goes, or no writable directory above it."""
    path = Path(value)
    if not str(value).strip() or not path.name or path.name in (".", ".."):
        raise UserError(f"{flag}: got {str(value)!r}; valid: a {kind} name such as results/out")
    try:
        is_dir = path.is_dir()
        # The nearest existing folder above must be a directory we may write in (the rest is created).
        above = next(p for p in path.absolute().parents if p.exists())
    except OSError as error:  # a name too long, a folder we may not look into
        raise write_failed(path, flag, error) from None
    if kind == "file" and is_dir:
        raise UserError(f"{flag}: {str(path)!r} is a directory; valid: a file path")
    if not above.is_dir():
        raise UserError(f"{flag}: cannot write {str(path)!r}: {above} is a file, not a directory")
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(f"{flag}: cannot write {str(path)!r}: {above} is not writable")


def check_new_directory(value: str | Path, source: str | Path, source_flag: str) -> None:
    """``--out`` for a pruned copy of ``source``: a new directory, neither inside the source nor holding it."""
    check_output_path(value, "--out", kind="directory")
    out, source_dir = Path(value).resolve(), Path(source).resolve()
    if out.exists():
        raise UserError(f"--out: {str(value)!r} already exists; valid: a new directory (nothing is overwritten)")
    if out == source_dir or source_dir in out.parents or out in source_dir.parents:
        raise UserError(f"--out: {str(value)!r} overlaps {source_flag} {str(source)!r}; valid: a directory outside it")


def write_failed(path: Path, flag: str, error: OSError) -> UserError:
    """What a write that fails anyway (a full disk, /proc) tells the user."""
    return UserError(f"{flag}: cannot write {str(path)!r} ({error.strerror or error})")
