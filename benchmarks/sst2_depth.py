"""SST-2: dev accuracy of a LayerDrop-pretrained encoder and a baseline, fine-tuned at full depth and
pruned to every other layer before fine-tuning (the paper's recipe).

Two masked-LM encoders (6 layers, width 256) pretrain on WikiText-2 train for the same number of
updates, one with encoder LayerDrop 0.5. Each is then fine-tuned on SST-2 train (without LayerDrop)
twice: at full depth and pruned to layers 0,2,4 with --encoder-layers-to-keep; dev accuracy is the
metric, scored on checkpoint_last. The dev set never picks a checkpoint; the fine-tuning budget was doubled
to 2,400 updates once, after a 1,200-update run left every model below 80 % (README).

Writes benchmarks/results/sst2_depth.json.
Usage: python benchmarks/sst2_depth.py [--shared ../shared/data] [--pretrain-updates 1000] [--finetune-updates 2400]
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

RESULTS = Path(__file__).parent / "results" / "sst2_depth.json"
ENCODER = ["--encoder-layers", "6", "--encoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024",
           "--encoder-attention-heads", "4", "--tokens-per-sample", "128"]
PRETRAIN = ["--task", "masked_lm", "--bpe-vocab-size", "8000", "--batch-size", "16", "--lr", "1e-3", "--min-lr", "1e-4",
            "--warmup-updates", "200", "--dropout", "0.1", "--validate-interval-updates", "400", "--max-valid-steps", "20",
            "--seed", "1", "--no-progress-bar"]
FINETUNE = ["--task", "classification", "--batch-size", "32", "--lr", "1e-4", "--min-lr", "1e-5", "--warmup-updates", "100",
            "--weight-decay", "0.01", "--dropout", "0.1", "--encoder-layerdrop", "0.0", "--validate-interval-updates", "500",
            "--seed", "1", "--no-progress-bar"]
MODELS = {"LayerDrop p=0.5": ("layerdrop_p0.5", "0.5"), "baseline p=0": ("baseline", "0.0")}
DEPTHS = {"full (6)": ("full", []), "pruned 0,2,4 (3)": ("pruned", ["--encoder-layers-to-keep", "0,2,4"])}


def layerdrop(*args: str) -> tuple[str, int]:
    print("$ layerdrop " + " ".join(args), flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "layerdrop", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout, round(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--pretrain-updates", default="1000")
    parser.add_argument("--finetune-updates", default="2400")
    parser.add_argument("--root", default="runs/sst2_depth")
    args = parser.parse_args()
    text, sst2 = f"{args.shared}/wikitext-2", f"{args.shared}/glue/SST-2"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({"pretrain_data": text, "finetune_data": sst2, "pretrain_updates": int(args.pretrain_updates),
                    "finetune_updates": int(args.finetune_updates), "encoder_flags": ENCODER,
                    "pretrain_flags": PRETRAIN, "finetune_flags": FINETUNE})
    results.setdefault("models", {})
    for label, (slug, p) in MODELS.items():
        entry = results["models"].setdefault(label, {})
        mlm = f"{args.root}/{slug}/mlm"
        pretrain = ["train", "--data", text, "--save-dir", mlm, "--max-update", args.pretrain_updates,
                    "--encoder-layerdrop", p, *PRETRAIN, *ENCODER]
        out, _ = layerdrop(*pretrain)
        entry["pretrain_seconds"] = compute_seconds(mlm)
        entry["torch_threads"] = int(os.environ.get("OMP_NUM_THREADS", "0")) or None
        entry["pretrain_command"] = "layerdrop " + " ".join(pretrain)
        entry["pretrain_valid_mlm_loss"] = float(re.findall(r"valid at update \d+: loss ([\d.]+)", out)[-1]) if "valid at" in out else entry.get("pretrain_valid_mlm_loss")
        entry.setdefault("accuracy", {})
        for depth, (name, flags) in DEPTHS.items():
            save_dir = f"{args.root}/{slug}/sst2_{name}"
            finetune = ["train", "--data", sst2, "--save-dir", save_dir, "--restore-file", f"{mlm}/checkpoint_last",
                        "--max-update", args.finetune_updates, *flags, *FINETUNE]
            layerdrop(*finetune)
            entry.setdefault("finetune_seconds", {})[depth] = compute_seconds(save_dir)
            entry.setdefault("finetune_commands", {})[depth] = "layerdrop " + " ".join(finetune)
            # checkpoint_last: the dev set scores the model but never picks the checkpoint
            out, _ = layerdrop("eval", "--path", f"{save_dir}/checkpoint_last", "--split", "valid")
            row = re.search(r"valid\s+(\d+)\s+([\d.]+)\s+([\d.]+)", out)
            entry["accuracy"][depth] = float(row.group(2))
            entry.setdefault("f1", {})[depth] = float(row.group(3))
            print(f"  {label} {depth}: dev accuracy {entry['accuracy'][depth]:.2f}", flush=True)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    lost = {label: m["accuracy"]["full (6)"] - m["accuracy"]["pruned 0,2,4 (3)"] for label, m in results["models"].items()}
    results["accuracy_lost_when_pruned"] = lost
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'model':<18}" + "".join(f"{d:>20}" for d in DEPTHS))
    for label, m in results["models"].items():
        print(f"{label:<18}" + "".join(f"{m['accuracy'][d]:>20.2f}" for d in DEPTHS))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
