"""What in-place distillation (``--layerdrop-distill``) costs per update, against plain LayerDrop at the same p
and against the baseline (p = 0).

Runs the same short training three ways in turn (baseline, plain, distilled, baseline, ...) and reads each
update's time from the trainer's own log (``ms``, the update alone: no start-up, no validation). The
figures quoted are the medians over rounds of (median distilled update) / (median plain update), and
of the same over the baseline's update, so slow
drift of the machine cancels out. Writes benchmarks/results/distill_cost_<task>.json.

    python benchmarks/distill_cost.py                       # the demo LM on the embedded corpus (about 2 minutes)
    python benchmarks/distill_cost.py --task translation --data ../shared/data/multi30k-de-en   # the study's model
    python benchmarks/distill_cost.py --depths 6,4,2   # served depths: adds the sandwich rule (a fourth run)

With ``--depths`` every LayerDrop run draws evenly spaced sub-networks rounded down to those depths (the LM
study's served-depth models), and a fourth run adds ``--layerdrop-sandwich``, whose cost is quoted against the
distilled run; results go to distill_cost_<task>_depths<DEPTHS>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = {
    "lm": ["--task", "lm", "--decoder-layers", "8", "--decoder-embed-dim", "128", "--decoder-ffn-embed-dim", "512",
           "--decoder-attention-heads", "4", "--tokens-per-sample", "64", "--batch-size", "16"],
    "translation": ["--task", "translation", "--source-lang", "de", "--target-lang", "en", "--bpe-vocab-size", "8000",
                    "--encoder-layers", "3", "--decoder-layers", "6", "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
                    "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
                    "--decoder-attention-heads", "4", "--batch-size", "64"],
}


def update_ms(flags: list[str], updates: int) -> float:
    """Median time of one update (ms) over a fresh run of ``updates`` updates, the first five left out."""
    with tempfile.TemporaryDirectory() as save_dir:
        subprocess.run([sys.executable, "-m", "layerdrop", "train", "--save-dir", save_dir, "--max-update", str(updates),
                        "--validate-interval-updates", str(updates), "--max-valid-steps", "1", "--no-progress-bar", *flags],
                       check=True, capture_output=True)
        log = [json.loads(line) for line in (Path(save_dir) / "train_log.jsonl").read_text().splitlines()]
    return statistics.median(r["ms"] for r in log[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(SHAPES), default="lm")
    parser.add_argument("--data", default=None, help="corpus (default: the embedded Tiny Shakespeare; translation needs one)")
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the runs")
    parser.add_argument("--depths", default=None, help="served depths (e.g. 6,4,2): evenly-spaced draws rounded to them, "
                        "and a fourth run with --layerdrop-sandwich")
    args = parser.parse_args()
    side = "decoder"
    flags = [*SHAPES[args.task], f"--{side}-layerdrop", str(args.p), *(["--data", args.data] if args.data else []),
             *(["--layerdrop-sampling", "evenly-spaced", "--layerdrop-depths", args.depths] if args.depths else [])]
    pairs = []
    for index in range(args.pairs):
        baseline = update_ms([*flags, f"--{side}-layerdrop", "0"], args.updates)
        plain = update_ms(flags, args.updates)
        distilled = update_ms([*flags, "--layerdrop-distill"], args.updates)
        pairs.append({"baseline_ms": round(baseline, 1), "plain_ms": round(plain, 1), "distill_ms": round(distilled, 1),
                      "ratio": round(distilled / plain, 3), "ratio_to_baseline": round(distilled / baseline, 3)})
        print(f"round {index + 1}: baseline {baseline:.1f} ms, LayerDrop {plain:.1f} ms, distilled {distilled:.1f} ms per update "
              f"({distilled / plain:.2f}x LayerDrop, {distilled / baseline:.2f}x baseline)", flush=True)
        if args.depths:
            sandwich = update_ms([*flags, "--layerdrop-distill", "--layerdrop-sandwich"], args.updates)
            pairs[-1].update(sandwich_ms=round(sandwich, 1), sandwich_ratio_to_distill=round(sandwich / distilled, 3),
                             sandwich_ratio_to_baseline=round(sandwich / baseline, 3))
            print(f"  sandwich {sandwich:.1f} ms ({sandwich / distilled:.2f}x distilled, {sandwich / baseline:.2f}x "
                  "baseline)", flush=True)
    result = {"task": args.task, "p": args.p, "updates_per_run": args.updates, "flags": flags, "pairs": pairs,
              "median_ratio": statistics.median(p["ratio"] for p in pairs),
              "median_ratio_to_baseline": statistics.median(p["ratio_to_baseline"] for p in pairs), "cpus": os.cpu_count(),
              "torch_threads": os.environ.get("OMP_NUM_THREADS", "default")}
    if args.depths:
        for key in ("sandwich_ratio_to_distill", "sandwich_ratio_to_baseline"):
            result[f"median_{key}"] = statistics.median(p[key] for p in pairs)
    suffix = f"_depths{args.depths.replace(',', '')}" if args.depths else ""
    out = HERE / "results" / f"distill_cost_{args.task}{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"median: a distilled update = {result['median_ratio']:.2f}x a plain LayerDrop update and "
          f"{result['median_ratio_to_baseline']:.2f}x a baseline update"
          + (f"; a sandwich update = {result['median_sandwich_ratio_to_distill']:.2f}x a distilled one" if args.depths else "")
          + f"; wrote {out}")


if __name__ == "__main__":
    main()
