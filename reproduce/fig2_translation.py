"""Figure 2, translation: Multi30k de->en BLEU with the decoder pruned to each depth, for LayerDrop
models, the baseline pruned the same way, and decoders of that depth trained from scratch, over seeds.

A 3-layer encoder and a 6-layer decoder (width 256, FFN 512, joint BPE 8000), 700 updates of 64 pairs
(about 12 minutes per 6-layer model on one thread), with BART's architecture choices (post-LN, a
LayerNorm on the embeddings, no scaled residual initialisation): docs/layerdrop_at_short_budgets.md
section 7 shows they decide what LayerDrop costs at this budget (0.29 nats against 0.85 with the
pre-LN default).
LayerDrop is on the decoder only (the stack that is pruned). BLEU: detokenized sacreBLEU on
test_2016_flickr, beam 5, on checkpoint_last (nothing is chosen on the test split). The headline
models (baseline, the recipe, the distilled model, a 3-layer decoder from scratch) run with three seeds;
the ablations with one.

Every run and every BLEU score is kept under runs/reproduce/fig2_translation, so the script resumes
where it stopped. Without ``--seeds`` it trains the missing runs (of ``--models``, or all) ``--workers`` at
a time, each in a child process (``--models LABEL --seeds N``) on one thread: a fair comparison of quality,
and twice as fast as one process on 2 cores. Then, without ``--models``, it gathers the scores and writes
the JSON. ``--reuse-published`` takes a run's scores from the published JSON when the run itself is no
longer on disk (a new checkout), so a session can add seeds without retraining the others.

    python reproduce/fig2_translation.py                 # two runs at a time, one thread each; needs ../shared/data
    OMP_NUM_THREADS=1 python reproduce/fig2_translation.py --models "baseline p=0" --seeds 1   # one run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from study import keep_list, number, RESULTS, SHARED_DATA, Study

DEPTHS = [6, 3, 2, 1]
SEEDS = [1, 2, 3]
FLAGS = ["--task", "translation", "--source-lang", "de", "--target-lang", "en", "--bpe-vocab-size", "8000",
         "--encoder-layers", "3", "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
         "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "--dropout", "0.1", "--batch-size", "64", "--lr", "1e-3", "--min-lr", "1e-4",
         "--warmup-updates", "150", "--label-smoothing", "0.1", "--max-update", "700", "--validate-interval-updates", "175",
         "--no-encoder-normalize-before", "--no-decoder-normalize-before", "--layernorm-embedding", "--no-scale-residual-init"]
# The recipe of docs/layerdrop_at_short_budgets.md; the other LayerDrop lines are its ablations (one seed).
RECIPE = ["--decoder-layerdrop", "0.2", "--layerdrop-warmup-updates", "350"]
# label -> (extra flags, decoder layers, seeds, depths it is scored at)
MODELS: dict[str, tuple[list[str], int, list[int], list[int]]] = {
    "baseline p=0": (["--decoder-layerdrop", "0"], 6, SEEDS, DEPTHS),
    "LayerDrop recipe": (RECIPE, 6, SEEDS, DEPTHS),
    "LayerDrop p=0.2, the paper's rule": (["--decoder-layerdrop", "0.2"], 6, [2], DEPTHS),
    "LayerDrop p=0.5, rate warmup and distillation": (["--decoder-layerdrop", "0.5", "--layerdrop-warmup-updates", "350",
                                                       "--layerdrop-distill"], 6, SEEDS, DEPTHS),
    # The control for the line above: the same rate and warmup without distillation.
    "LayerDrop p=0.5, rate warmup": (["--decoder-layerdrop", "0.5", "--layerdrop-warmup-updates", "350"], 6, [2], DEPTHS),
    "scratch 3": ([], 3, SEEDS, [3]),
}


def line_name(label: str) -> str:
    return "trained from scratch at that depth" if label.startswith("scratch") else label


def with_budget(flags: list[str], max_update: int) -> list[str]:
    """``flags`` with the budget set in place (REPRODUCE_QUICK shrinks it there; a flag appended would undo that)."""
    out = list(flags)
    out[out.index("--max-update") + 1] = str(max_update)
    out[out.index("--validate-interval-updates") + 1] = str(max(1, max_update // 4))
    return out


def slug(label: str, seed: int) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", label).strip("_") + f"_s{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "multi30k-de-en"))
    parser.add_argument("--seeds", default=None, help="train and score only these seeds (comma-separated), write no JSON")
    parser.add_argument("--finished-only", action="store_true",
                        help="write the JSON from the runs already scored, training nothing (the report lists seeds per model)")
    parser.add_argument("--reuse-published", action="store_true",
                        help="a run missing from runs/ takes its scores from docs/results/fig2_translation.json if it is there")
    parser.add_argument("--max-update", type=int, default=700,
                        help="training budget; other than 700, runs and results go under fig2_translation_<N> "
                             "(the cosine schedule ends there, validation every quarter)")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once, one thread each (default: 2)")
    parser.add_argument("--models", default=None, help="train and score only these models (labels, ';'-separated), write no JSON")
    args = parser.parse_args()
    only = None if args.seeds is None else {int(s) for s in args.seeds.split(",")}
    labels = list(MODELS) if args.models is None else args.models.split(";")
    name = "fig2_translation" if args.max_update == 700 else f"fig2_translation_{args.max_update}"
    study = Study(name, f"Figure 2, translation (Multi30k de->en, BART's architecture choices, {args.max_update} updates)",
                  seeds=SEEDS)
    published_file = RESULTS / f"{name}.json"
    published = json.loads(published_file.read_text()).get("per_seed", {}) if published_file.is_file() else {}

    def known_scores(label: str, seed: int) -> dict[str, float]:
        """The scores cached beside the run, or with --reuse-published the published ones when the run is gone."""
        cache = study.runs / slug(label, seed) / "bleu.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        return dict(published.get(line_name(label), {}).get(str(seed), {})) if args.reuse_published else {}

    def run(label: str, seed: int) -> dict[str, float]:
        """Train one model (or reuse it) and score it at its depths; scores are cached beside the checkpoint."""
        flags, layers, _, depths = MODELS[label]
        cache = study.runs / slug(label, seed) / "bleu.json"
        scores = known_scores(label, seed)
        if all(str(d) in scores for d in depths) or args.finished_only:
            return scores
        started = time.perf_counter()
        checkpoint = study.train(slug(label, seed), ["--data", args.data, "--decoder-layers", str(layers), "--seed", str(seed),
                                                     *flags, *with_budget(FLAGS, args.max_update)])
        for depth in depths:
            keep = [] if depth == layers else ["--decoder-layers-to-keep", keep_list(layers, depth)]
            out = study.layerdrop("eval", "--path", checkpoint, "--split", "test", "--beam", "5", "--batch-size", "64", *keep)
            scores[str(depth)] = number(r"BLEU =", out)
        scores["seconds"] = round(time.perf_counter() - started + scores.get("seconds", 0.0), 1)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(scores) + "\n")
        tmp.replace(cache)
        return scores

    def run_child(job: tuple[str, int]) -> None:
        """One run in its own process on one thread; its output goes to a log beside the run."""
        label, seed = job
        command = [sys.executable, __file__, "--data", args.data, "--max-update", str(args.max_update), "--models", label,
                   "--seeds", str(seed)]
        started = time.perf_counter()
        with open(study.runs / f"{slug(label, seed)}.out", "a") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
        if code != 0:
            sys.exit(f"fig2_translation: {label!r} seed {seed} failed ({code}); see {log.name}")
        study.commands.append({"command": " ".join(command[1:]), "seconds": round(time.perf_counter() - started, 1)})

    if only is None and args.workers > 1 and not args.finished_only:  # with --seeds, this process is one worker
        missing = [(label, seed) for label in labels for seed in MODELS[label][2]
                   if not all(str(d) in known_scores(label, seed) for d in MODELS[label][3])]
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            list(pool.map(run_child, missing))

    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    for label in labels:
        for seed in MODELS[label][2]:
            if only is None or seed in only:
                scores = run(label, seed)
                if all(str(d) in scores for d in MODELS[label][3]):
                    per_seed.setdefault(label, {})[str(seed)] = scores
    if only is not None or args.models is not None:
        return
    lines: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    for label, by_seed in per_seed.items():
        name = line_name(label)
        for depth in MODELS[label][3]:
            values = [scores[str(depth)] for scores in by_seed.values()]
            lines.setdefault(name, {})[str(depth)] = statistics.mean(values)
            if len(values) > 1:
                spread.setdefault(name, {})[str(depth)] = statistics.stdev(values)
    # Each run's training and scoring wall time: runs shared the cores, so this overstates a lone run.
    compute = sum(scores["seconds"] for by_seed in per_seed.values() for scores in by_seed.values())
    study.write({"data": args.data, "metric": "test BLEU", "max_update": args.max_update, "higher_is_better": True, "layers": 6, "depths": DEPTHS,
                 "pruning": "every other (decoder)", "recipe": RECIPE, "lines": lines, "std": spread,
                 # keyed like "lines", so each per-seed score sits under the name its mean has
                 "per_seed": {line_name(label): by_seed for label, by_seed in per_seed.items()},
                 "compute_seconds": round(compute)})


if __name__ == "__main__":
    main()
