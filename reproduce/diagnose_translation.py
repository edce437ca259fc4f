"""Why decoder LayerDrop slows translation training here, and what fixes it (docs/layerdrop_at_short_budgets.md).

Controlled runs on the flagship setting of ``fig2_translation.py`` (Multi30k de->en, 3-layer encoder,
6-layer decoder, 700 updates of 64 pairs, lr 1e-3), each changing one thing, plus Hugging Face
transformers' BART with ``decoder_layerdrop`` trained on the same batches (``benchmarks/hf_reference_mt.py``).
Validation loss (nats per target token, no label smoothing) every 175 updates; nothing is measured on
the test split.

Runs go two at a time, one thread each (a fair A/B of quality on 2 cores; a run's wall time is not a
speed measurement here). Each run resumes where it stopped; a finished run is read back, not rerun.

    python reproduce/diagnose_translation.py [--only NAME,NAME]    # about 12 minutes per pair
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from study import merge_json, plot_lines, RESULTS, ROOT, RUNS, SHARED_DATA

DATA = SHARED_DATA / "multi30k-de-en"
BASE = ["--task", "translation", "--data", str(DATA), "--source-lang", "de", "--target-lang", "en",
        "--bpe-vocab-size", "8000", "--encoder-layers", "3", "--decoder-layers", "6", "--encoder-embed-dim", "256",
        "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--dropout", "0.1", "--batch-size", "64",
        "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-updates", "150", "--label-smoothing", "0.1",
        "--max-update", "700", "--validate-interval-updates", "175", "--keep-interval-updates", "4", "--no-progress-bar"]

# The architecture choices in which our model differs from transformers' BART.
BART_LIKE = ["--no-encoder-normalize-before", "--no-decoder-normalize-before", "--layernorm-embedding", "--no-scale-residual-init"]
# name -> (implementation, seed, extra flags). "ours" is `layerdrop train`; "hf" is the BART reference.
VARIANTS: dict[str, tuple[str, int, list[str]]] = {
    "s2_p0.0": ("ours", 2, ["--decoder-layerdrop", "0.0"]),
    "s2_p0.2": ("ours", 2, ["--decoder-layerdrop", "0.2"]),
    "s2_p0.0_scaled": ("ours", 2, ["--decoder-layerdrop", "0.0", "--scale-embedding"]),
    "s2_p0.2_scaled": ("ours", 2, ["--decoder-layerdrop", "0.2", "--scale-embedding"]),
    "s2_p0.0_postln": ("ours", 2, ["--decoder-layerdrop", "0.0", "--no-encoder-normalize-before",
                                   "--no-decoder-normalize-before"]),
    "s2_p0.2_postln": ("ours", 2, ["--decoder-layerdrop", "0.2", "--no-encoder-normalize-before",
                                   "--no-decoder-normalize-before"]),
    "s2_p0.0_noresscale": ("ours", 2, ["--decoder-layerdrop", "0.0", "--no-scale-residual-init"]),
    "s2_p0.2_noresscale": ("ours", 2, ["--decoder-layerdrop", "0.2", "--no-scale-residual-init"]),
    "s2_p0.0_bartlike": ("ours", 2, ["--decoder-layerdrop", "0.0", *BART_LIKE]),
    "s2_p0.2_bartlike": ("ours", 2, ["--decoder-layerdrop", "0.2", *BART_LIKE]),
    "s2_p0.2_bartlike_warmup350": ("ours", 2, ["--decoder-layerdrop", "0.2", "--layerdrop-warmup-updates", "350", *BART_LIKE]),
    "s2_scratch3_bartlike": ("ours", 2, ["--decoder-layerdrop", "0.0", "--decoder-layers", "3", *BART_LIKE]),
    "s2_hf_p0.0": ("hf", 2, ["--p", "0.0"]),
    "s2_hf_p0.2": ("hf", 2, ["--p", "0.2"]),
    "s2_p0.2_warmup350": ("ours", 2, ["--decoder-layerdrop", "0.2", "--layerdrop-warmup-updates", "350"]),
    "s2_p0.2_distill": ("ours", 2, ["--decoder-layerdrop", "0.2", "--layerdrop-distill"]),
    "s2_p0.5_distill": ("ours", 2, ["--decoder-layerdrop", "0.5", "--layerdrop-distill"]),
    "s2_p0.5_distill_warmup350": ("ours", 2, ["--decoder-layerdrop", "0.5", "--layerdrop-distill",
                                              "--layerdrop-warmup-updates", "350"]),
}
VALID_LOSS = "validation loss (nats/token)"
PAIRS_DIR = RUNS / "diagnose_translation"
# Runs stopped early on purpose (their question was answered): read back, never resumed.
STOPPED_AT = {"s2_p0.0_scaled": 350, "s2_p0.2_scaled": 350, "s2_p0.5_distill": 175, "s2_p0.0_postln": 175,
              "s2_p0.2_postln": 175,
              "s2_p0.0_noresscale": 175, "s2_p0.2_noresscale": 175}


def run_one(name: str) -> dict:
    kind, seed, flags = VARIANTS[name]
    out_dir = PAIRS_DIR / name
    log = PAIRS_DIR / f"{name}.out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kind == "hf":
        result = PAIRS_DIR / f"{name}.json"
        if not result.exists():
            command = [sys.executable, str(ROOT / "benchmarks" / "hf_reference_mt.py"), "--data", str(DATA),
                       "--seed", str(seed), "--out", str(result), *flags]
            with open(log, "a") as out:
                subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=True)
        record = json.loads(result.read_text())
        return {"implementation": "transformers BART", "seed": seed, "flags": flags, "valid": record["valid"],
                "train_loss": record["train_loss"]}
    command = [sys.executable, "-m", "layerdrop", "train", "--save-dir", str(out_dir), "--seed", str(seed), *BASE, *flags]
    if name not in STOPPED_AT:
        with open(log, "a") as out:
            subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=True)
    valid = {m.group(1): float(m.group(2)) for m in re.finditer(r"valid at update (\d+): loss ([\d.]+)", log.read_text())}
    train = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    train = train[: STOPPED_AT.get(name, len(train))]
    return {"implementation": "layerdrop", "seed": seed, "flags": flags, "valid": valid,
            "train_loss": [round(r["loss"], 5) for r in train], "ms_per_update": [r["ms"] for r in train],
            "checkpoint": str(out_dir / "checkpoint_last"), "stopped_at": STOPPED_AT.get(name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    PAIRS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "diagnose_translation.json"
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, record in zip(names, pool.map(run_one, names)):
            results = merge_json(path, lambda data: data.update({name: record}))
            print(f"{name}: valid {record['valid']}", flush=True)
    replayable = all((PAIRS_DIR / name / "train_log.jsonl").exists() for name in ("s2_p0.0", "s2_p0.2"))
    if {"s2_p0.0", "s2_p0.2"} <= set(results) and replayable:  # the replay needs both runs' training logs
        gap = per_update_gap(PAIRS_DIR / "s2_p0.2", PAIRS_DIR / "s2_p0.0", p=0.2, seed=2)
        print("LayerDrop minus baseline training loss on the same batch:", gap, flush=True)
        results = merge_json(path, lambda data: data.update({"per_update_gap": gap}))
    runs = {name: record for name, record in sorted(results.items()) if name != "per_update_gap"}
    plot_lines({name: record["valid"] for name, record in runs.items()}, VALID_LOSS,
               "decoder LayerDrop on Multi30k de->en, 700 updates", RESULTS / "diagnose_translation.png", xlabel="update",
               styles={name: ("-" if record["implementation"] == "layerdrop" else "--", None)  # dashed: the BART reference
                       for name, record in runs.items()}, figsize=(7, 4.5))


def per_update_gap(layerdrop_dir: Path, baseline_dir: Path, p: float, seed: int) -> dict:
    """The LayerDrop run's training loss minus the baseline's on the same batch, by what the update dropped.

    Each update's draw is replayed from (seed, update, "decoder") exactly as the LayerDrop list makes it,
    and checked against the number of layers the training log says ran."""
    import zlib
    from collections import defaultdict

    import torch

    from layerdrop.seeding import derive_seed

    read = lambda d: [json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()]
    gaps: dict[str, list[float]] = defaultdict(list)
    stream = zlib.crc32(b"decoder")
    for ours, base in zip(read(layerdrop_dir), read(baseline_dir)):
        update = ours["update"] - 1
        draws = torch.rand(6, generator=torch.Generator().manual_seed(derive_seed(seed, update, stream, 0))).tolist()
        dropped = [i for i, u in enumerate(draws) if u < p]
        if 3 + 6 - len(dropped) != ours["layers"]:
            raise RuntimeError(f"update {update + 1}: the replayed draw does not match the training log")
        what = "nothing dropped" if not dropped else "layer 0 dropped" if 0 in dropped else "another layer dropped"
        gaps[f"updates {'1-175' if update < 175 else '176-700'}, {what}"].append(ours["loss"] - base["loss"])
    return {key: {"updates": len(v), "mean_gap": round(sum(v) / len(v), 3)} for key, v in sorted(gaps.items())}


if __name__ == "__main__":
    main()
