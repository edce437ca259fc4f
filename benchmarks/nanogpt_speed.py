"""Milliseconds per update against nanoGPT's own train.py, on nanoGPT's CPU configuration, in one script.

nanoGPT's README trains Tiny Shakespeare at character level on a CPU with 4 layers, 4 heads, width 128,
context 64, batch 12, no dropout, no compile. This script runs nanoGPT's ``train.py`` from a local copy of
its source (``git clone https://github.com/karpathy/nanoGPT``; ``--nanogpt DIR``) and ``layerdrop train``
with the same model and optimizer settings, taking turns, and compares the median time per update (each
run's first 10 updates are left out). nanoGPT's ``prepare.py`` downloads the text; here the same files
(``train.bin``, ``val.bin``, ``meta.pkl``: sorted characters, uint16 ids, 90/10 split) are written from
the embedded copy instead. Contenders: nanoGPT, layerdrop (p = 0), layerdrop with ``--compile``, and layerdrop
with ``--amp bf16`` (nanoGPT's train.py runs float32 on a CPU whatever its ``--dtype`` says, so this last one is
not the same arithmetic: it is there to show what lower precision buys at this size).

Writes benchmarks/results/nanogpt_speed.json. Usage:
python benchmarks/nanogpt_speed.py --nanogpt ../nanoGPT [--iters 200] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from layerdrop.data.corpus import embedded_text

RESULTS = Path(__file__).parent / "results" / "nanogpt_speed.json"
NANOGPT_FLAGS = ["--device=cpu", "--compile=False", "--dtype=float32", "--eval_iters=1", "--eval_interval=1000000",
                 "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
                 "--lr_decay_iters=2000", "--dropout=0.0", "--always_save_checkpoint=False"]
OURS_FLAGS = ["--decoder-layers", "4", "--decoder-attention-heads", "4", "--decoder-embed-dim", "128",
              "--decoder-ffn-embed-dim", "512", "--tokens-per-sample", "64", "--dropout", "0", "--no-bias",
              "--batch-size", "12", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-updates", "100", "--weight-decay", "0.1",
              "--adam-betas", "(0.9, 0.99)", "--clip-norm", "1", "--split-fractions", "0.9,0.1,0", "--seed", "1337",
              "--no-progress-bar", "--max-valid-steps", "1"]
SKIP = 10  # first updates of every run: allocation and (with --compile) compilation
CONTENDERS = {"layerdrop": [], "layerdrop --compile": ["--compile"], "layerdrop --amp bf16": ["--amp", "bf16"]}


def write_nanogpt_data(directory: Path) -> None:
    """What nanoGPT's data/shakespeare_char/prepare.py writes, from the embedded Tiny Shakespeare."""
    text = embedded_text()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    directory.mkdir(parents=True, exist_ok=True)
    ids[:cut].tofile(directory / "train.bin")
    ids[cut:].tofile(directory / "val.bin")
    with open(directory / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)


def run_nanogpt(workdir: Path, iters: int) -> list[float]:
    command = [sys.executable, "train.py", "config/train_shakespeare_char.py", *NANOGPT_FLAGS, f"--max_iters={iters}",
               f"--out_dir={workdir / 'out'}"]
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"nanoGPT's train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    times = [float(m.group(1)) for m in re.finditer(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", proc.stdout, re.M)]
    return times[SKIP:]


def run_ours(workdir: Path, iters: int, extra_flags: list[str]) -> list[float]:
    save = workdir / "ours"
    shutil.rmtree(save, ignore_errors=True)
    command = [sys.executable, "-m", "layerdrop", "train", "--save-dir", str(save), "--max-update", str(iters),
               "--validate-interval-updates", str(iters), *OURS_FLAGS, *extra_flags]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"layerdrop train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return [json.loads(line)["ms"] for line in (save / "train_log.jsonl").read_text().splitlines()][SKIP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", default=os.environ.get("NANOGPT_DIR", "../nanoGPT"),
                        help="a copy of nanoGPT's source (git clone https://github.com/karpathy/nanoGPT)")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args()
    source = Path(args.nanogpt)
    if not (source / "train.py").is_file() or not (source / "model.py").is_file():
        raise SystemExit(f"--nanogpt: {source} holds no nanoGPT train.py and model.py; valid: a clone of "
                         "https://github.com/karpathy/nanoGPT (or set NANOGPT_DIR)")
    workdir = Path(tempfile.mkdtemp(prefix="nanogpt_speed_"))
    try:
        for name in ("train.py", "model.py", "configurator.py"):
            shutil.copy(source / name, workdir / name)
        shutil.copytree(source / "config", workdir / "config")
        write_nanogpt_data(workdir / "data" / "shakespeare_char")
        runs: dict[str, list[float]] = {"nanoGPT": [], **{name: [] for name in CONTENDERS}}
        for round_index in range(args.rounds):
            order = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
            for name in order:
                if name == "nanoGPT":
                    times = run_nanogpt(workdir, args.iters)
                else:
                    times = run_ours(workdir, args.iters, CONTENDERS[name])
                runs[name].append(statistics.median(times))
                print(f"round {round_index + 1}/{args.rounds} {name}: {runs[name][-1]:.1f} ms per update (median)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in runs.items()}
    result = {"benchmark": "nanogpt_speed", "nanogpt_source": str(source.resolve()), "iters_per_run": args.iters,
              "rounds": args.rounds, "ms_per_update_median": median, "per_round": runs,
              "ratio_to_nanogpt": {name: median[name] / median["nanoGPT"] for name in runs if name != "nanoGPT"},
              # This machine switches between a fast and a slow state for minutes at a time: each round's
              # ratios show how far one round can stray from the medians above.
              "ratio_to_nanogpt_per_round": {name: [ours / theirs for ours, theirs in zip(runs[name], runs["nanoGPT"])]
                                             for name in runs if name != "nanoGPT"},
              "target": "layerdrop at most 0.75x nanoGPT's ms per update",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}
    result["target_met"] = {name: ratio <= 0.75 for name, ratio in result["ratio_to_nanogpt"].items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, value in median.items():
        ratio = "" if name == "nanoGPT" else f"  ({result['ratio_to_nanogpt'][name]:.2f}x nanoGPT)"
        print(f"{name:<22} {value:6.1f} ms per update{ratio}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
