"""A text corpus: a directory of train/valid/test files, or one file split by fraction.

With no path the embedded Tiny Shakespeare (public domain, shipped in the package) is used, split
90/5/5 by default (``--split-fractions 0.9,0.1,0`` gives nanoGPT's 90/10 train/val split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from layerdrop.config import shorten
from layerdrop.errors import UserError

SPLITS = ("train", "valid", "test")
SPLIT_FILES = {
    "train": ("train.txt", "wiki.train.tokens", "train"),
    "valid": ("valid.txt", "wiki.valid.tokens", "val.txt", "valid", "val"),
    "test": ("test.txt", "wiki.test.tokens", "test"),
}
EMBEDDED_NAME = "embedded:tinyshakespeare"


@dataclass
class TextCorpus:
    source: str
    texts: dict[str, str]

    def split(self, name: str) -> str:
        name = "valid" if name == "dev" else name  # the name GLUE users type
        if name not in SPLITS:
            raise UserError(f"--split: got {name!r}; valid: {', '.join(SPLITS)}")
        if not self.texts.get(name):
            present = [s for s in SPLITS if self.texts.get(s)]
            raise UserError(f"--data {self.source}: has no {name!r} split; present: {', '.join(present) or 'none'}")
        return self.texts[name]


def embedded_text() -> str:
    return resources.files("layerdrop.data").joinpath("tinyshakespeare.txt").read_text(encoding="utf-8")


def parse_fractions(value: str | tuple[float, ...]) -> tuple[float, float, float]:
    valid = "valid: three non-negative numbers train,valid,test that sum to 1, e.g. 0.9,0.05,0.05"
    try:
        parts = tuple(float(x) for x in (value.split(",") if isinstance(value, str) else value))
    except (ValueError, TypeError):
        raise UserError(f"--split-fractions: got {shorten(value)}; {valid}") from None
    if len(parts) != 3 or not all(math.isfinite(x) and x >= 0 for x in parts) or abs(sum(parts) - 1.0) > 1e-6 or parts[0] == 0:
        raise UserError(f"--split-fractions: got {shorten(value)}; {valid}")
    return parts  # type: ignore[return-value]


def split_by_fraction(text: str, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Cut at the first line break after each boundary, so no line is torn across splits."""
    def cut(position: int) -> int:
        if position >= len(text):
            return len(text)
        newline = text.find("\n", position)
        return len(text) if newline < 0 else newline + 1

    first = cut(int(len(text) * fractions[0]))
    second = cut(int(len(text) * (fractions[0] + fractions[1]))) if fractions[2] > 0 else len(text)
    return {"train": text[:first], "valid": text[first:second], "test": text[second:]}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"--data: {path} is not UTF-8 text ({error})") from None


def load_corpus(path: str | Path | None, split_fractions: str | tuple[float, ...] = (0.9, 0.05, 0.05)) -> TextCorpus:
    if path is None or str(path) == "" or str(path) == EMBEDDED_NAME:
        return TextCorpus(EMBEDDED_NAME, split_by_fraction(embedded_text(), parse_fractions(split_fractions)))
    path = Path(path)
    if path.is_file():
        return TextCorpus(str(path), split_by_fraction(_read(path), parse_fractions(split_fractions)))
    if not path.is_dir():
        raise UserError(
            f"--data: {str(path)!r} does not exist; valid: a directory with train/valid/test files "
            f"({', '.join(SPLIT_FILES['train'][:2])}, ...) or one text file"
        )
    texts = {}
    for split, names in SPLIT_FILES.items():
        found = next((path / n for n in names if (path / n).is_file()), None)
        if found is not None:
            texts[split] = _read(found)
    if not texts.get("train"):
        raise UserError(
            f"--data: {str(path)!r} has no training split; valid: a file named one of {', '.join(SPLIT_FILES['train'])}"
        )
    return TextCorpus(str(path), texts)
