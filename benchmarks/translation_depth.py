"""Multi30k de->en: BLEU of a LayerDrop model and a baseline at full depth and pruned every other way.

Both models (6 encoder + 6 decoder layers, width 256) train for the same number of updates through
the `layerdrop` CLI; the LayerDrop one with p = 0.5 on both stacks. Each is then scored on
test_2016_flickr with beam 5 (detokenized sacreBLEU) at full depth, with only the decoder pruned
to layers 0,2,4, and with both stacks pruned to 0,2,4. Reruns reuse finished runs (training resumes
from checkpoint_last). Nothing here is tuned on the test split: all settings were fixed beforehand.

Writes benchmarks/results/translation_depth.json.
Usage: python benchmarks/translation_depth.py [--data ../shared/data/multi30k-de-en] [--max-update 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def compute_seconds(save_dir: str) -> int:
    """Training time as the sum of per-update times in the run's log (resumes and evaluations excluded)."""
    log = Path(save_dir) / "train_log.jsonl"
    return round(sum(json.loads(line)["ms"] for line in log.read_text().splitlines()) / 1000)


def wall_seconds(save_dir: str) -> int:
    """Wall clock from the start of the first update to the end of the last, validations included."""
    rows = [json.loads(line) for line in (Path(save_dir) / "train_log.jsonl").read_text().splitlines()]
    return round(rows[-1]["time"] - rows[0]["time"] + rows[0]["ms"] / 1000)

RESULTS = Path(__file__).parent / "results" / "translation_depth.json"
MODEL = ["--encoder-layers", "6", "--decoder-layers", "6", "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
         "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "--dropout", "0.1"]
RUN = ["--task", "translation", "--source-lang", "de", "--target-lang", "en", "--bpe-vocab-size", "8000",
       "--batch-size", "64", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-updates", "400", "--label-smoothing", "0.1",
       "--validate-interval-updates", "1000", "--seed", "1", "--no-progress-bar"]
MODELS = {"LayerDrop p=0.5": ("layerdrop_p0.5", "0.5"), "baseline p=0": ("baseline", "0.0"),
          "LayerDrop p=0.2": ("layerdrop_p0.2", "0.2")}
DEPTHS = {"full (6+6)": [], "decoder pruned (6+3)": ["--decoder-layers-to-keep", "0,2,4"],
          "both pruned (3+3)": ["--encoder-layers-to-keep", "0,2,4", "--decoder-layers-to-keep", "0,2,4"]}


def layerdrop(*args: str) -> str:
    command = [sys.executable, "-m", "layerdrop", *args]
    print("$ layerdrop " + " ".join(args), flush=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def load_results(max_update: int) -> dict:
    """Results on disk, unless they came from a different training budget (then start afresh)."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return results if results.get("max_update") == max_update else {}


def save_entry(label: str, entry: dict, shared: dict) -> dict:
    """Merge this model's entry into the JSON on disk (another instance may be writing other models)."""
    results = load_results(shared["max_update"])
    results.update(shared)
    results.setdefault("models", {})[label] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k-de-en"))
    parser.add_argument("--max-update", default="4000")
    parser.add_argument("--root", default="runs/translation_depth_4k")
    parser.add_argument("--only", default=None, choices=list(MODELS), help="train and score this model only")
    args = parser.parse_args()
    shared = {"data": args.data, "max_update": int(args.max_update), "model_flags": MODEL, "run_flags": RUN}
    results = load_results(shared["max_update"])
    for label, (slug, p) in MODELS.items():
        if args.only is not None and label != args.only:
            continue
        save_dir = f"{args.root}/{slug}"
        train = ["train", "--data", args.data, "--save-dir", save_dir, "--max-update", args.max_update,
                 "--encoder-layerdrop", p, "--decoder-layerdrop", p, *RUN, *MODEL]
        layerdrop(*train)
        entry = results.get("models", {}).get(label, {"save_dir": save_dir})
        entry["train_seconds"] = compute_seconds(save_dir)
        entry["train_wall_seconds"] = wall_seconds(save_dir)
        entry["torch_threads"] = int(os.environ.get("OMP_NUM_THREADS", "0")) or None
        entry["train_command"] = "layerdrop " + " ".join(train)
        entry.setdefault("bleu", {})
        for depth, flags in DEPTHS.items():
            if depth in entry["bleu"]:
                continue  # scored already (reruns only fill in what is missing)
            start = time.perf_counter()
            out = layerdrop("eval", "--path", f"{save_dir}/checkpoint_best", "--split", "test", "--beam", "5",
                            "--lenpen", "1.0", "--batch-size", "64", *flags)
            entry["bleu"][depth] = float(re.search(r"BLEU = ([\d.]+)", out).group(1))
            entry.setdefault("eval_seconds", {})[depth] = round(time.perf_counter() - start)
            print(f"  {label} {depth}: BLEU {entry['bleu'][depth]:.2f}", flush=True)
        results = save_entry(label, entry, shared)
    models = results["models"]
    lost = {label: m["bleu"]["full (6+6)"] - m["bleu"]["both pruned (3+3)"] for label, m in models.items() if "bleu" in m}
    results["bleu_lost_when_both_pruned"] = lost
    if lost.get("baseline p=0"):
        results["layerdrop_loss_over_baseline_loss"] = {
            label: lost[label] / lost["baseline p=0"] for label in lost if label.startswith("LayerDrop")}
    save_entry(next(iter(models)), models[next(iter(models))], {k: v for k, v in results.items() if k != "models"})
    print(f"\n{'model':<18}" + "".join(f"{d:>22}" for d in DEPTHS) + f"{'train time':>12}")
    for label, m in models.items():
        if len(m.get("bleu", {})) == len(DEPTHS):
            print(f"{label:<18}" + "".join(f"{m['bleu'][d]:>22.2f}" for d in DEPTHS) + f"{m['train_seconds']:>11}s")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
