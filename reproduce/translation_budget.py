"""Does decoder LayerDrop's full-depth cost on translation shrink when training runs to a plateau?

The study's translation setting (``fig2_translation.py``) trains 700 updates of 64 pairs: 1.5 epochs of
Multi30k, far from a plateau. docs/layerdrop_at_short_budgets.md found that LayerDrop delays the moment the
decoder learns to read the source; if that is a delay and not a lasting cost, a budget three times longer
should close most of the full-depth gap, and LayerDrop's regularisation may even help on a corpus this
small. This script trains the same models with the same flags for 2100 updates (4.6 epochs), the learning
rate schedule stretched to the new budget, and measures:

- validation loss (nats per target token, no label smoothing) every 350 updates, for the curves;
- test BLEU (beam 5, checkpoint_last, nothing chosen on the test split) with the decoder at 6, 3, 2 and 1
  layers (every other one kept; the first runs of round two were scored at 6 and 3 only).

The ``_bartlike`` variants ask the same question with BART's architecture choices (section 9 of
docs/layerdrop_at_short_budgets.md): the baseline, the recipe, the distilled model and a 3-layer decoder
from scratch. Runs go two at a time with one thread each (a fair A/B of quality on 2 cores); each resumes where it
stopped and a scored run is read back, not rerun. Results: docs/results/translation_budget.json.

Seeds 1 to 3 of the baseline, the recipe, the distilled model and the 3-layer decoder (BART-like; with the
baseline's lr warmup and with a longer one) make the headline comparison a three-seed one: ``headline`` in the
JSON holds mean and standard deviation per model and depth over the seeds each model ran (a fourth seed for
the models behind the translation targets; reproduce/report.py compares two models on the seeds both ran). Decoders of 2 and 1 layers from scratch (seed 1)
give every scored depth a model trained for it.

    python reproduce/translation_budget.py [--only NAME,NAME] [--workers 2] [--threads 1]   # 35 to 120 minutes per run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from functools import partial
from statistics import mean, stdev
from pathlib import Path

from diagnose_translation import BART_LIKE, BASE, VALID_LOSS
from study import keep_list, merge_json, train_variants, number, plot_lines, RESULTS, RUNS, write_json

MAX_UPDATE = 2100
VALIDATE_EVERY = 350
LONG = [*BASE, "--max-update", str(MAX_UPDATE), "--validate-interval-updates", str(VALIDATE_EVERY)]
# name -> (seed, decoder layers, extra flags); flags given later override BASE's (argparse keeps the last).
VARIANTS: dict[str, tuple[int, int, list[str]]] = {
    "s2_p0.0": (2, 6, ["--decoder-layerdrop", "0.0"]),
    "s2_p0.2": (2, 6, ["--decoder-layerdrop", "0.2"]),
    # (The rate warmup and the 3-layer decoder with the pre-LN default were planned here too and never run: round
    # three moved every question to BART's choices.)
    # Round three: the same question with BART's choices, under which LayerDrop costs a third as much at 700
    # updates (docs section 7.2), for the recipe and for the distilled model of section 8.
    "s2_p0.0_bartlike": (2, 6, ["--decoder-layerdrop", "0.0", *BART_LIKE]),
    "s2_p0.5_warmup350_distill_bartlike": (2, 6, ["--decoder-layerdrop", "0.5", "--layerdrop-warmup-updates", "350",
                                                  "--layerdrop-distill", *BART_LIKE]),
    "s2_p0.2_warmup350_bartlike": (2, 6, ["--decoder-layerdrop", "0.2", "--layerdrop-warmup-updates", "350", *BART_LIKE]),
    "s2_scratch3_bartlike": (2, 3, ["--decoder-layerdrop", "0.0", *BART_LIKE]),
}
# Round five: seeds 1 and 3 of the three models behind the headline comparison (baseline, recipe, 3 layers
# from scratch), so that it is reported as mean and standard deviation over three seeds.
HEADLINE = {"p0.0_bartlike": (6, ["--decoder-layerdrop", "0.0", *BART_LIKE]),
            "p0.2_warmup350_bartlike": (6, ["--decoder-layerdrop", "0.2", "--layerdrop-warmup-updates", "350",
                                            *BART_LIKE]),
            "scratch3_bartlike": (3, ["--decoder-layerdrop", "0.0", *BART_LIKE]),
            # Round six: the distilled model of section 8 was within 0.5 BLEU of the baseline at full depth on
            # seed 2; seeds 1 and 3 say whether that holds.
            "p0.5_warmup350_distill_bartlike": (6, ["--decoder-layerdrop", "0.5", "--layerdrop-warmup-updates", "350",
                                                    "--layerdrop-distill", *BART_LIKE]),
            # Round six found the 3-layer decoder from scratch stalling on seeds 2 and 3 (valid loss 3.9 at update
            # 350, where seed 1 is at 3.35) and a 350-update learning-rate warmup (post-LN's usual need) curing seed
            # 3; round seven runs it on every seed, so that the pruned models meet the best small model we know.
            "scratch3_lrwarmup350_bartlike": (3, ["--decoder-layerdrop", "0.0", "--warmup-updates", "350", *BART_LIKE])}
# Round eight: the cut decoders lose to small models trained from scratch, and the paper's per-layer draws run the
# exact sub-network served at 3 layers (0,2,4) one update in 64. The distilled model with --layerdrop-sampling
# evenly-spaced (the same number of layers per update, placed as pruning places them) asks whether training the
# served sub-networks directly closes that gap; one change from the distilled model.
HEADLINE["p0.5_warmup350_distill_evenly_bartlike"] = (6, [*HEADLINE["p0.5_warmup350_distill_bartlike"][1],
                                                         "--layerdrop-sampling", "evenly-spaced"])
HEADLINE_SEEDS = (1, 2, 3)
# Round nine: which half of round eight's change does the work. The evenly-spaced draws without distillation (seed
# 1), one flag from the evenly-spaced distilled model; not in the headline.
VARIANTS["s1_p0.5_warmup350_evenly_bartlike"] = (1, 6, ["--decoder-layerdrop", "0.5", "--layerdrop-warmup-updates",
                                                        "350", "--layerdrop-sampling", "evenly-spaced", *BART_LIKE])
# Round ten: seeds 2 and 3 of it, so that the cheap variant (no second forward pass) is reported like the headline.
for _seed in (2, 3):
    VARIANTS[f"s{_seed}_p0.5_warmup350_evenly_bartlike"] = (_seed, *VARIANTS["s1_p0.5_warmup350_evenly_bartlike"][1:])
# The other half of 13.3's open question: evenly spaced layers from a random offset (every layer equally often,
# 0,2,4 or 1,3,5 of 6), distilled, against the served placement; one flag from the evenly-spaced distilled model.
VARIANTS["s1_p0.5_warmup350_distill_shifted_bartlike"] = (
    1, 6, [*HEADLINE["p0.5_warmup350_distill_bartlike"][1], "--layerdrop-sampling", "evenly-spaced-shifted"])
# Round ten: served depths (--layerdrop-depths 3,2,1: each draw's count rounded down to a depth that will be
# served, so the sub-network pass runs 0,2,4 on 41 updates in 64 instead of 20), one flag from the evenly-spaced
# distilled model; defined for the next round, after the LM's three seeds (study section 15.2).
for _seed in HEADLINE_SEEDS:
    VARIANTS[f"s{_seed}_p0.5_warmup350_distill_served_bartlike"] = (
        _seed, 6, [*HEADLINE["p0.5_warmup350_distill_evenly_bartlike"][1], "--layerdrop-depths", "3,2,1"])
# Round twelve: the sandwich rule on top (--layerdrop-sandwich: the 1-layer decoder trained towards the full one on
# every update after the rate warmup), as it closed the LM's 2-layer gap on seed 1 (study section 17.2).
for _seed in HEADLINE_SEEDS:
    VARIANTS[f"s{_seed}_p0.5_warmup350_distill_served_sandwich_bartlike"] = (
        _seed, 6, [*VARIANTS[f"s{_seed}_p0.5_warmup350_distill_served_bartlike"][2], "--layerdrop-sandwich"])
# Round thirteen: a fourth seed of the three models the translation targets compare. On three seeds the served
# decoder's full-depth gap to the baseline (0.31 BLEU on the means) is smaller than its spread per seed (-0.94 to
# +0.28), so the target's verdict rests on one seed.
VARIANTS["s4_p0.5_warmup350_distill_served_bartlike"] = (4, *VARIANTS["s1_p0.5_warmup350_distill_served_bartlike"][1:])
# Round seven: the decoder trained from scratch at 2 and 1 layers (the longer lr warmup, seed 1), so that every
# depth the pruned decoders are scored at has a model trained for it.
for _layers in (2, 1):
    VARIANTS[f"s1_scratch{_layers}_lrwarmup350_bartlike"] = (1, _layers, HEADLINE["scratch3_lrwarmup350_bartlike"][1])
# The 2-layer decoder still sat on the source-ignoring plateau at update 1,050 (3.48 nats, where the 3-layer one is at
# 2.11); two probes of whether that too is tuning: a longer lr warmup, and half the peak lr. Not in the headline.
VARIANTS["s1_scratch2_lrwarmup700_bartlike"] = (1, 2, ["--decoder-layerdrop", "0.0", "--warmup-updates", "700", *BART_LIKE])
VARIANTS["s1_scratch2_lr5e-4_bartlike"] = (1, 2, ["--decoder-layerdrop", "0.0", "--warmup-updates", "350", "--lr", "5e-4",
                                                  *BART_LIKE])
for _seed in HEADLINE_SEEDS:
    for _model, (_layers, _flags) in HEADLINE.items():
        VARIANTS.setdefault(f"s{_seed}_{_model}", (_seed, _layers, _flags))
for _model in ("p0.0_bartlike", "scratch3_lrwarmup350_bartlike"):
    VARIANTS[f"s4_{_model}"] = (4, *HEADLINE[_model])
RUN_DIR = RUNS / "translation_budget"
RESULT = RESULTS / "translation_budget.json"


def run_one(name: str, threads: int = 1) -> dict:
    seed, layers, flags = VARIANTS[name]
    out_dir = RUN_DIR / name
    log = RUN_DIR / f"{name}.out"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    scores_file = out_dir / "bleu.json"
    command = [sys.executable, "-m", "layerdrop", "train", "--save-dir", str(out_dir), "--seed", str(seed), *LONG,
               "--decoder-layers", str(layers), *flags]
    if not scores_file.exists():
        with open(log, "a") as out:
            subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=True)
    scores = json.loads(scores_file.read_text()) if scores_file.exists() else {}
    for depth in sorted({layers, 3, 2, 1} if layers == 6 else {layers}, reverse=True):
        if str(depth) in scores:
            continue
        keep = [] if depth == layers else ["--decoder-layers-to-keep", keep_list(layers, depth)]
        proc = subprocess.run([sys.executable, "-m", "layerdrop", "eval", "--path", str(out_dir / "checkpoint_last"),
                               "--split", "test", "--beam", "5", "--batch-size", "64", *keep],
                              capture_output=True, text=True, env=env, check=True)
        scores[str(depth)] = number(r"BLEU =", proc.stdout + proc.stderr)
        write_json(scores_file, scores)
    valid = {m.group(1): float(m.group(2)) for m in re.finditer(r"valid at update (\d+): loss ([\d.]+)", log.read_text())}
    return {"seed": seed, "decoder_layers": layers, "flags": flags, "command": command[1:], "valid": valid,
            "test_bleu": scores}


def add_run(results: dict, name: str, record: dict) -> None:
    results["max_update"] = MAX_UPDATE
    results.setdefault("runs", {})[name] = record
    results["headline"] = headline(results["runs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per run (2 with --workers 1: one run alone)")
    args = parser.parse_args()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    train_variants(args.only.split(",") if args.only else list(VARIANTS), VARIANTS, RESULT,
                   partial(run_one, threads=args.threads), add_run, args.workers)
    results = merge_json(RESULT, lambda data: data.update(headline=headline(data.get("runs", {}))))
    plot(results, RESULT.with_suffix(".png"))
    for model, row in results["headline"].items():
        print(model, row, flush=True)


def headline(runs: dict) -> dict:
    """Per headline model: test BLEU at each scored depth and the final validation loss, as mean and sample
    standard deviation over the seeds that have finished (the seeds listed, so a partial table says so)."""
    table = {}
    for model in HEADLINE:
        records = sorted((record for name, record in runs.items() if name == f"s{record['seed']}_{model}"),
                         key=lambda record: record["seed"])
        if not records:
            continue
        row: dict = {"seeds": [r["seed"] for r in records]}
        for depth in sorted({d for r in records for d in r["test_bleu"]}, key=int, reverse=True):
            row[f"bleu_{depth}"] = spread([r["test_bleu"][depth] for r in records if depth in r["test_bleu"]])
        row["valid_loss"] = spread([r["valid"][str(MAX_UPDATE)] for r in records])
        table[model] = row
    return table


def spread(values: list[float]) -> dict:
    return {"mean": round(mean(values), 3), "std": round(stdev(values), 3) if len(values) > 1 else None,
            "values": values}


def plot(results: dict, path: Path) -> None:
    """Validation loss against updates: the long runs (solid) and the 700-update runs of the same seed (dotted)."""
    short_file = RESULTS / "diagnose_translation.json"
    short = json.loads(short_file.read_text()) if short_file.exists() else {}
    lines, styles = {}, {}
    for name, record in sorted(results["runs"].items()):
        if record["seed"] != 2:  # the curves compare budgets on one seed; other seeds are in the headline table
            continue
        long_label = f"{name}, {MAX_UPDATE} updates"
        lines[long_label], styles[long_label] = record["valid"], ("-", None)
        if name in short:  # dotted, in the long run's colour
            lines[f"{name}, 700 updates"], styles[f"{name}, 700 updates"] = short[name]["valid"], (":", long_label)
    plot_lines(lines, VALID_LOSS, f"Multi30k de->en, decoder LayerDrop: 700 against {MAX_UPDATE} updates (seed 2)", path,
               xlabel="update", styles=styles, figsize=(7, 4.5))


if __name__ == "__main__":
    main()
