"""Shared plumbing for the reproduction study: run ``layerdrop`` commands, time them, keep the record.

Every experiment is a script in this directory that calls the ``layerdrop`` CLI (train, eval, sweep,
select, importance) and writes ``docs/results/<name>.json`` with the numbers, every command it ran, its
seeds and its wall time. ``reproduce/report.py`` turns those files into ``docs/results/RESULTS.md``.
Training resumes from ``checkpoint_last``, so an interrupted experiment picks up where it stopped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from textwrap import shorten
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# REPRODUCE_QUICK=1 shrinks every budget to a few updates and batches, and REPRODUCE_DIR moves the
# results and runs elsewhere: the test suite runs the whole study that way to check its plumbing.
QUICK = os.environ.get("REPRODUCE_QUICK") == "1"
_BASE = Path(os.environ["REPRODUCE_DIR"]) if os.environ.get("REPRODUCE_DIR") else None
RESULTS = _BASE / "results" if _BASE else ROOT / "docs" / "results"
RUNS = _BASE / "runs" if _BASE else ROOT / "runs" / "reproduce"
_QUICK_VALUES = {"--max-update": "6", "--validate-interval-updates": "3", "--max-valid-steps": "2",
                 "--decoder-embed-dim": "32", "--decoder-ffn-embed-dim": "64", "--encoder-embed-dim": "32",
                 "--encoder-ffn-embed-dim": "64", "--tokens-per-sample": "32", "--bpe-vocab-size": "400"}


def _quick(args: list[str]) -> list[str]:
    """The same command with tiny budgets (REPRODUCE_QUICK=1)."""
    out = list(args)
    for flag, value in _QUICK_VALUES.items():
        if flag in out:
            out[out.index(flag) + 1] = value
    if out[0] in ("eval", "select", "sweep", "importance") and "--max-valid-steps" not in out:
        out += ["--max-valid-steps", "2"]
    return out


class Study:
    """One experiment: where its runs and results go, and the log of what it ran."""

    def __init__(self, name: str, description: str, seeds: list[int]):
        self.name, self.description, self.seeds = name, description, seeds
        self.runs = RUNS / name
        self.commands: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)

    def layerdrop(self, *args: str) -> str:
        """Run one ``layerdrop`` command; its stdout is returned and the command and its time are logged."""
        from layerdrop.cli import main as layerdrop_main

        args = _quick(list(map(str, args))) if QUICK else list(map(str, args))
        shown = "layerdrop " + " ".join(args)
        print(f"$ {shown}", flush=True)
        start = time.perf_counter()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = layerdrop_main(args)  # the command's own entry point, in this process
        seconds = time.perf_counter() - start
        if code != 0:
            sys.exit(f"{self.name}: command failed ({code}): {shown}\n{out.getvalue()[-3000:]}\n{err.getvalue()[-3000:]}")
        self.commands.append({"command": shown, "seconds": round(seconds, 1)})
        return out.getvalue()

    def train(self, slug: str, flags: list[str]) -> Path:
        """Train (or finish, or reuse) one model; returns its checkpoint_last."""
        save_dir = self.runs / slug
        self.layerdrop("train", "--save-dir", save_dir, "--no-progress-bar", *flags)
        return save_dir / "checkpoint_last"

    def sweep(self, paths: list[Path], depths: list[int], out: str, *flags: str) -> dict[str, Any]:
        prefix = RESULTS / out
        args = [a for p in paths for a in ("--path", p)]
        self.layerdrop("sweep", *args, "--depths", ",".join(map(str, depths)), "--out", prefix, *flags)
        return json.loads(prefix.with_name(prefix.name + ".json").read_text())

    def write(self, results: dict[str, Any]) -> Path:
        record = {
            "experiment": self.name, "description": self.description, "seeds": self.seeds,
            "wall_seconds": round(time.perf_counter() - self.started), "commands": self.commands,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch_threads": torch_threads()},
            **results,
        }
        path = RESULTS / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
        print(f"wrote {path} ({record['wall_seconds']} s)")
        return path


def keep_list(layers: int, depth: int) -> str:
    """The paper's every-other rule as a --*-layers-to-keep value."""
    from layerdrop.pruning import every_other

    return ",".join(map(str, every_other(layers, depth)))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def number(pattern: str, text: str) -> float:
    """The first number after ``pattern`` in a command's output."""
    match = re.search(pattern + r"\s*([-\d.]+)", text)
    if match is None:
        raise ValueError(f"no {pattern!r} in output:\n{text[-2000:]}")
    return float(match.group(1))


def table_value(text: str, column: str) -> float:
    """A value from the one-row table that ``layerdrop eval`` prints."""
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        header = line.split()
        if column in header and i + 2 < len(lines) and set(lines[i + 1].replace(" ", "")) == {"-"}:
            return float(lines[i + 2].split()[header.index(column)].replace(",", ""))
    raise ValueError(f"no column {column!r} in:\n{text[-2000:]}")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def merge_json(path: Path, update: Callable[[dict], None]) -> dict:
    """Read ``path``, apply ``update`` to it and write it back, holding a lock, so that two processes
    writing results to the same file each keep the other's entries."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {}
        update(data)
        write_json(path, data)
    return data


def pyplot():
    """matplotlib's pyplot on the file-only backend (the study runs without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lines(lines: dict[str, dict[str, float]], ylabel: str, title: str, path: Path, xlabel: str = "layers kept",
               styles: dict[str, tuple[str, str | None]] | None = None, figsize: tuple[float, float] = (6, 4)) -> str:
    """One line per label over its {x: y} points. ``styles`` maps a label to (linestyle, label whose
    colour it reuses, or None): the same run at another budget, say. Returns the image's file name."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    colours: dict[str, str] = {}
    for label, values in lines.items():
        style, colour_of = (styles or {}).get(label, ("-", None))
        xs = sorted(values, key=float)
        line, = ax.plot([float(x) for x in xs], [values[x] for x in xs], marker="o", label=label, linestyle=style,
                        color=colours.get(colour_of) if colour_of else None)
        colours[label] = line.get_color()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8 if len(lines) < 8 else 7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def train_variants(names: list[str], variants: dict, result: Path, run_one: Callable[[str], dict],
                   add_run: Callable[[dict, str, dict], None], workers: int) -> None:
    """Train and score the named variants ``workers`` at a time, merging each record into ``result`` as soon
    as it is scored. A variant already in ``result`` is read back, not trained again (runs/ may be gone)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"--only: unknown variant(s) {unknown}; valid: {', '.join(variants)}")
    published = json.loads(result.read_text()).get("runs", {}) if result.exists() else {}
    if done := [n for n in names if n in published]:
        print(f"already in {result.name}: {', '.join(done)}", flush=True)
    failed = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_one, name): name for name in names if name not in published}
        for future in as_completed(futures):
            name = futures[future]
            try:
                record = future.result()
            except (subprocess.CalledProcessError, OSError, ValueError) as error:
                # One failed run must not cost the others their records: they are merged as they finish.
                failed.append(name)
                reason = shorten(f"{type(error).__name__}: {error}", 200)
                if isinstance(error, subprocess.CalledProcessError):  # a captured stderr (an eval) ends with the cause
                    last = (error.stderr or "").strip().splitlines()[-1:] if isinstance(error.stderr, str) else []
                    reason = f"exit status {error.returncode}" + (f": {shorten(last[0], 200)}" if last else "")
                print(f"{name}: failed ({reason}); its log is under runs/", flush=True)
                continue
            merge_json(result, lambda data: add_run(data, name, record))
            print(f"{name}: " + "; ".join(f"{k} {v}" for k, v in record.items() if k not in ("command", "flags")), flush=True)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(futures)} runs failed: {', '.join(failed)} (rerun the same command: "
                         "runs already recorded are read back, not trained again)")
