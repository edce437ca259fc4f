"""GLUE task files read exactly as the official download script writes them.

Each task's layout (header or none, text and label columns, dev and test files) is a ``GlueTask``
value. The task is detected from the train file's header (or its absence: CoLA), or named with
``--glue-task``. A byte-order mark (MRPC's files start with one) never reaches a column name. Rows
with the wrong number of fields or a label outside the task's set (QQP has some) are skipped and counted;
a test file must be complete (its predictions are submitted as a whole).

Split names are the ones GLUE users type: ``dev`` (= ``valid``), and for MNLI ``dev_matched`` and
``dev_mismatched``; ``test`` files have no labels, so they are for predictions only.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from layerdrop.config import shorten
from layerdrop.errors import UserError


@dataclass(frozen=True)
class GlueTask:
    name: str
    text: tuple[str, ...] | tuple[int, ...]  # column names, or positions in a file without a header
    label: str | int
    metrics: tuple[str, ...] = ("accuracy",)
    regression: bool = False
    dev: tuple[str, ...] = ("dev.tsv",)
    test: tuple[str, ...] = ("test.tsv",)
    submission: tuple[str, ...] = ()  # the file name the GLUE server expects, per test file
    test_text: tuple[str, ...] | None = None  # test columns, when they differ from train's
    test_index: str = "index"
    labels: frozenset[str] | None = field(default=None, compare=False)  # the valid labels (None: regression)

    @property
    def has_header(self) -> bool:
        return isinstance(self.label, str)


BINARY, ENTAILMENT = frozenset({"0", "1"}), frozenset({"entailment", "not_entailment"})
TASKS = {task.name: task for task in (
    GlueTask("CoLA", (3,), 1, ("mcc",), submission=("CoLA.tsv",), test_text=("sentence",), labels=BINARY),
    GlueTask("SST-2", ("sentence",), "label", submission=("SST-2.tsv",), labels=BINARY),
    GlueTask("MRPC", ("#1 String", "#2 String"), "Quality", ("accuracy", "f1"), submission=("MRPC.tsv",), labels=BINARY),
    GlueTask("STS-B", ("sentence1", "sentence2"), "score", ("pearson", "spearman"), regression=True, submission=("STS-B.tsv",)),
    GlueTask("QQP", ("question1", "question2"), "is_duplicate", ("accuracy", "f1"), submission=("QQP.tsv",), test_index="id",
             labels=BINARY),
    GlueTask("MNLI", ("sentence1", "sentence2"), "gold_label", dev=("dev_matched.tsv", "dev_mismatched.tsv"),
             test=("test_matched.tsv", "test_mismatched.tsv"), submission=("MNLI-m.tsv", "MNLI-mm.tsv"),
             labels=frozenset({"entailment", "neutral", "contradiction"})),
    GlueTask("QNLI", ("question", "sentence"), "label", submission=("QNLI.tsv",), labels=ENTAILMENT),
    GlueTask("RTE", ("sentence1", "sentence2"), "label", submission=("RTE.tsv",), labels=ENTAILMENT),
    GlueTask("WNLI", ("sentence1", "sentence2"), "label", submission=("WNLI.tsv",), labels=BINARY),
)}
# What users type for a split, and the canonical name.
SPLIT_ALIASES = {"train": "train", "valid": "dev", "dev": "dev", "dev_matched": "dev_matched",
                 "dev_mismatched": "dev_mismatched", "test": "test", "test_matched": "test_matched",
                 "test_mismatched": "test_mismatched"}


@dataclass
class Examples:
    texts: list[tuple[str, ...]]
    labels: list[str] | list[float] | None  # None: a test file (no labels)
    ids: list[str] = field(default_factory=list)  # the index column of a test file, for predictions
    skipped: list[int] = field(default_factory=list)  # line numbers of malformed rows
    file: Path | None = None

    def __len__(self) -> int:
        return len(self.texts)


def _rows(path: Path) -> list[list[str]]:
    csv.field_size_limit(1 << 24)
    try:
        # utf-8-sig: a byte-order mark at the start is dropped instead of glued to the first column name.
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"--data: cannot read {path} ({shorten(str(error), 120)})") from None
    if not rows:
        raise UserError(f"--data: {path} is empty; valid: a GLUE TSV file")
    return rows


def _layouts() -> str:
    return "; ".join(f"{t.name}: " + ("no header, label in column 2, sentence in column 4" if not t.has_header
                                       else ", ".join([*t.text, t.label])) for t in TASKS.values())


def detect_task(header: list[str], path: Path, labels: set[str] | None = None) -> GlueTask:
    """The GLUE task a train or dev file belongs to, from its header (CoLA has none)."""
    names = set(header)
    candidates = [t for t in TASKS.values() if t.has_header and {*t.text, t.label} <= names]
    if len(candidates) > 1:  # e.g. STS-B's columns include RTE's sentence1/sentence2; the most specific wins
        most = max(len(set(c.text)) + (c.label != "label") for c in candidates)
        candidates = [c for c in candidates if len(set(c.text)) + (c.label != "label") == most]
    if len(candidates) > 1 and labels is not None:
        by_labels = [c for c in candidates if c.labels is not None and labels <= c.labels]
        candidates = by_labels or [c for c in candidates if c.labels is None] or candidates[:1]
    if len(candidates) > 1:
        return candidates[0]  # RTE and WNLI share a layout and a metric; --glue-task names one
    if candidates:
        return candidates[0]
    cola = TASKS["CoLA"]
    if len(header) == 4 and header[cola.label] in ("0", "1"):
        return cola
    raise UserError(f"--data: {path} has columns {shorten(header, 200)}, which match no GLUE task; layouts known: {_layouts()}"
                    "; or name the task with --glue-task")


def read_examples(path: Path, task: GlueTask, labelled: bool = True) -> Examples:
    """Examples of one file in ``task``'s layout; rows that do not fit are skipped and their lines recorded."""
    rows = _rows(path)
    header = rows[0] if task.has_header or not labelled else None
    text_names = task.text if labelled else (task.test_text or task.text)
    if header is not None:
        wanted = [*text_names, *([task.label] if labelled else [])]
        missing = [name for name in wanted if name not in header]
        if missing:
            raise UserError(f"--data: {path} has columns {shorten(header, 200)}; the {task.name} layout needs "
                            f"{', '.join(wanted)} (missing: {', '.join(missing)}); valid: the file as GLUE distributes it, "
                            "or another --glue-task")
        text_at = [header.index(name) for name in text_names]
        label_at = header.index(task.label) if labelled else None
        index_at = header.index(task.test_index) if not labelled and task.test_index in header else None
        body, first_line, width = rows[1:], 2, len(header)
    else:
        text_at, label_at, index_at = list(task.text), task.label, None
        body, first_line, width = rows, 1, 4
    texts, labels, ids, skipped = [], [], [], []
    for number, row in enumerate(body, start=first_line):
        if len(row) != width:
            if not labelled:  # a prediction file must cover every test row, or the GLUE server refuses it
                raise UserError(f"--data: {path} line {number} has {len(row)} fields, the header has {width}; every test "
                                "row needs a prediction, so the file must be complete")
            skipped.append(number)
            continue
        if labelled:
            label = row[label_at].strip()
            if task.regression:
                try:
                    value = float(label)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    skipped.append(number)
                    continue
                labels.append(value)
            elif label not in task.labels:  # empty, or a stray value that would become an extra class
                skipped.append(number)
                continue
            else:
                labels.append(label)
        else:
            ids.append(row[index_at] if index_at is not None else str(len(ids)))
        texts.append(tuple(row[i] for i in text_at))
    if not texts:
        labels_valid = f" (labels {', '.join(sorted(task.labels))})" if labelled and task.labels else ""
        raise UserError(f"--data: {path} has no readable {task.name} rows ({len(skipped)} malformed); valid: the file as "
                        f"GLUE distributes it{labels_valid}")
    return Examples(texts, labels if labelled else None, ids, skipped, path)


def resolve_task(directory: Path, name: str | None) -> GlueTask:
    """``--glue-task`` if given, else detected from train.tsv (or the first dev file present)."""
    if name is not None:
        if name not in TASKS:
            valid = ", ".join(TASKS)
            raise UserError(f"--glue-task: got {shorten(name)}; valid: {valid}")
        return TASKS[name]
    for candidate in ("train.tsv", "dev.tsv", "dev_matched.tsv"):
        path = directory / candidate
        if path.is_file():
            rows = _rows(path)
            label_values = None
            if len(rows) > 1 and "label" in rows[0]:
                at = rows[0].index("label")
                label_values = {r[at].strip() for r in rows[1:] if len(r) == len(rows[0])}
            return detect_task(rows[0], path, label_values)
    raise UserError(f"--data: {str(directory)!r} has no train.tsv or dev.tsv; valid: a GLUE task directory")


def split_files(task: GlueTask, split: str) -> list[str]:
    """The files of a split, as the user named it (``valid`` and ``dev`` are the same)."""
    canonical = SPLIT_ALIASES.get(split)
    if canonical is None:
        raise UserError(f"--split: got {shorten(split)}; valid: {', '.join(SPLIT_ALIASES)}")
    if canonical == "train":
        return ["train.tsv"]
    kind, _, which = canonical.partition("_")
    files = task.dev if kind == "dev" else task.test
    if not which:
        return list(files)
    if len(files) == 1:
        raise UserError(f"--split: got {split!r}, but {task.name} has one {kind} file; valid: {kind}"
                        + (" (or valid)" if kind == "dev" else ""))
    return [files[0] if which == "matched" else files[1]]


def check_directory(path: str | Path | None) -> Path:
    if path is None:
        raise UserError("--data: required for --task classification; valid: a GLUE task directory (train.tsv, dev.tsv)")
    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"--data: {str(directory)!r} does not exist; valid: a GLUE task directory (train.tsv, dev.tsv)")
    return directory


def load_glue(path: str | Path | None, split: str, task_name: str | None = None) -> list[Examples]:
    """The examples of a split (MNLI's dev and test have two files: matched, mismatched)."""
    directory = check_directory(path)
    task = resolve_task(directory, task_name)
    out = []
    for name in split_files(task, split):
        file = directory / name
        if not file.is_file():
            raise UserError(f"--data: {str(directory)!r} has no {name} (the {split} split of {task.name})")
        out.append(read_examples(file, task, labelled=not name.startswith("test")))
    return out


__all__ = ["Examples", "GlueTask", "SPLIT_ALIASES", "TASKS", "detect_task", "load_glue", "read_examples", "resolve_task",
           "split_files"]
