"""Parallel corpora for translation: ``<split>.<lang>`` files, one sentence per line.

Split names accepted: train; valid, val or dev; test, or any ``test*.<lang>`` (Multi30k's
``test_2016_flickr``). ``--test-subset NAME`` picks one test file when there are several.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerdrop.errors import UserError

SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}


@dataclass
class ParallelCorpus:
    source: str
    src_lang: str
    tgt_lang: str
    files: dict[str, tuple[Path, Path]]

    def split(self, name: str) -> tuple[list[str], list[str]]:
        name = "valid" if name == "dev" else name  # the name GLUE users type
        if name not in SPLIT_NAMES:
            raise UserError(f"--split: got {name!r}; valid: {', '.join(SPLIT_NAMES)}")
        if name not in self.files:
            raise UserError(f"--data {self.source}: has no {name!r} split for {self.src_lang}-{self.tgt_lang}; "
                            f"present: {', '.join(self.files) or 'none'}")
        src_path, tgt_path = self.files[name]
        src, tgt = _lines(src_path), _lines(tgt_path)
        if len(src) != len(tgt):
            raise UserError(f"--data: {src_path.name} has {len(src)} lines but {tgt_path.name} has {len(tgt)}; "
                            "valid: one target line per source line")
        return src, tgt


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--data: cannot read {path} as UTF-8 text ({error})") from None


def _find_pair(directory: Path, names: tuple[str, ...], src: str, tgt: str, subset: str | None) -> tuple[Path, Path] | None:
    """The first file stem that exists in both languages (so test_2016.de never pairs with test_2017.en)."""
    if subset is not None and names == SPLIT_NAMES["test"]:
        stems = [subset]
    else:
        stems = list(names)
        if names == SPLIT_NAMES["test"]:
            stems += sorted({p.stem for p in directory.glob(f"test*.{src}")} - set(stems))
    for stem in stems:
        pair = directory / f"{stem}.{src}", directory / f"{stem}.{tgt}"
        if pair[0].is_file() and pair[1].is_file():
            return pair
    return None


def load_parallel(
    path: str | Path | None, src_lang: str, tgt_lang: str, test_subset: str | None = None, need_train: bool = True,
) -> ParallelCorpus:
    if path is None:
        raise UserError("--data: required for --task translation; valid: a directory with train.<src> and train.<tgt> files")
    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"--data: {str(directory)!r} does not exist; valid: a directory with train.{src_lang} and train.{tgt_lang}")
    files = {}
    for split, names in SPLIT_NAMES.items():
        pair = _find_pair(directory, names, src_lang, tgt_lang, test_subset)
        if pair is not None:
            files[split] = pair
    if need_train and "train" not in files:
        langs = sorted({p.suffix.lstrip(".") for p in directory.glob("train.*")})
        raise UserError(
            f"--data: {str(directory)!r} has no train.{src_lang} and train.{tgt_lang}; languages present: "
            f"{', '.join(langs) or 'none'} (set --source-lang and --target-lang)"
        )
    return ParallelCorpus(str(directory), src_lang, tgt_lang, files)
