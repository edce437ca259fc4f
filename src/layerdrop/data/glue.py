"""GLUE-style TSV classification data: ``train.tsv`` and ``dev.tsv`` with a header row.

The text columns are found from the header: one sentence (``sentence``, SST-2) or a pair
(``sentence1``/``sentence2`` as in RTE, ``question``/``sentence``, ``question1``/``question2``,
``premise``/``hypothesis``). Labels may be numbers or strings; they are mapped to ids in sorted
order of the training labels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from layerdrop.errors import UserError

TEXT_COLUMNS = (("sentence1", "sentence2"), ("question", "sentence"), ("question1", "question2"),
                ("premise", "hypothesis"), ("sentence",))
SPLIT_FILES = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}


@dataclass
class Examples:
    texts: list[tuple[str, ...]]
    labels: list[str]


def read_tsv(path: Path) -> Examples:
    csv.field_size_limit(1 << 24)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--data: cannot read {path} ({error})") from None
    if not rows:
        raise UserError(f"--data: {path} is empty; valid: a TSV file with a header row")
    header = rows[0]
    columns = next((cols for cols in TEXT_COLUMNS if all(c in header for c in cols)), None)
    if columns is None or "label" not in header:
        raise UserError(
            f"--data: {path} has columns {header}; valid: a 'label' column and text columns "
            f"{' or '.join('/'.join(c) for c in TEXT_COLUMNS)}"
        )
    index = [header.index(c) for c in columns]
    label_index = header.index("label")
    texts, labels = [], []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"--data: {path} line {number} has {len(row)} fields, the header has {len(header)}")
        texts.append(tuple(row[i] for i in index))
        labels.append(row[label_index])
    return Examples(texts, labels)


def load_glue(path: str | Path | None, split: str) -> Examples:
    if path is None:
        raise UserError("--data: required for --task classification; valid: a directory with train.tsv and dev.tsv")
    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"--data: {str(directory)!r} does not exist; valid: a directory with train.tsv and dev.tsv")
    if split not in SPLIT_FILES:
        raise UserError(f"--split: got {split!r}; valid: {', '.join(SPLIT_FILES)}")
    file = directory / SPLIT_FILES[split]
    if not file.is_file():
        raise UserError(f"--data: {str(directory)!r} has no {SPLIT_FILES[split]} (the {split} split)")
    return read_tsv(file)
