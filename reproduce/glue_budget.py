"""Does masked-LM pretraining on WikiText-2 pay on GLUE at a budget 2 cores can afford?

Figure 3 (``fig3_classification.py``) pretrains its encoders for 1,000 updates of 16 blocks of 128 tokens and
every fine-tuned model sits near the majority class on RTE (52.7 %) and near 77 % on SST-2, pretrained or
not, so its pruning comparison has nothing to compare. Before any LayerDrop question can be asked there,
pretraining has to matter: the issue asks for fine-tuned accuracy at least 3 points above an encoder
fine-tuned from random initialisation. This script asks whether five times figure 3's budget gets there.

- The figure's 8-layer encoder (width 128) with the figure's pretraining flags, only the budget changed:
  5,000 updates (about 10 M tokens, four passes over WikiText-2), the cosine schedule stretched to it,
  masked-LM validation loss every 1,000 updates with each of those checkpoints kept.
- Fine-tuning with the figure's flags on SST-2 and RTE from the checkpoints at 1,000 and 5,000 updates, and
  from random initialisation (the same shape and flags, no ``--restore-file``; its BPE is learned on the task's
  own training text, which if anything favours it).
- Dev accuracy of checkpoint_last (GLUE's test labels are not public, so dev is the reported split; nothing
  here is chosen on it: the budget and every flag were fixed before the first run).

Runs go one at a time, one thread each; each resumes where it stopped and a scored run is read back.
Results: docs/results/glue_budget.json.

    python reproduce/glue_budget.py [--only NAME,NAME]   # pretraining about 50 minutes on one thread; fine-tuning 1.5 minutes each
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fig3_classification import FINETUNE, FINETUNE_COMMON, LAYERS, PRETRAIN, SHAPE
from study import RESULTS, RUNS, SHARED_DATA, table_value, train_variants

from layerdrop.data.glue import load_glue
from layerdrop.tasks.classification import hold_out

PRETRAIN_UPDATES = 5000
VALIDATE_EVERY = 1000
# Later flags override the figure's (argparse keeps the last); every validation checkpoint is kept.
LONG_PRETRAIN = [*PRETRAIN, "--max-update", str(PRETRAIN_UPDATES), "--validate-interval-updates", str(VALIDATE_EVERY),
                 "--keep-interval-updates", str(PRETRAIN_UPDATES // VALIDATE_EVERY)]
# name -> flags of a pretrained encoder. 40 % masking (Wettig et al., 2022, "Should You Mask 15% in Masked Language
# Modeling?") gives 2.7 times the predictions per update at nearly the same cost: the first lever tried on a model
# that is still close to a unigram model's loss after 5,000 updates at 15 %.
PRETRAINED = {"p0.0": ["--encoder-layerdrop", "0.0"],
              "p0.0_mask0.4": ["--encoder-layerdrop", "0.0", "--mask-prob", "0.4"],
              "p0.0_mask0.4_sst2text": ["--encoder-layerdrop", "0.0", "--mask-prob", "0.4"]}
# Round eleven: task-adaptive pretraining (Gururangan et al., 2020, "Don't Stop Pretraining"). The 40 % encoder
# reads SST-2 through a vocabulary fitted to WikiText-2, while the encoder from random initialisation learns its
# BPE on SST-2's own text. This one pretrains on WikiText-2's training text and SST-2's training sentences
# (no labels, nothing from dev or from the held-out examples), so its BPE and its masked LM cover the task's words.
# Validation stays WikiText-2's text, though its masked-LM losses are per token of its own vocabulary.
TASK_ADAPTIVE = {"p0.0_mask0.4_sst2text": "SST-2"}
SOURCES = {"random": None, "p0.0_u1000": ("p0.0", 1000), "p0.0_u5000": ("p0.0", PRETRAIN_UPDATES),
           "p0.0_mask0.4_u5000": ("p0.0_mask0.4", PRETRAIN_UPDATES),
           "p0.0_mask0.4_sst2text_u5000": ("p0.0_mask0.4_sst2text", PRETRAIN_UPDATES)}
FINETUNE_SEEDS = (1,)
# Round ten: fine-tuning chosen on examples held out of train.tsv (--valid-from-train), never on dev. For each task
# and starting point, a grid fixed before any of these runs (figure 3's peak lr and a third of it; figure 3's
# updates and three times as many); checkpoint_best is chosen on the held-out examples, the configuration with the
# best held-out score is the one reported, and dev is scored once per run, for the record.
HELD_OUT = {"SST-2": 1000, "RTE": 250}  # 1.5 % and 10 % of train.tsv
GRID_LRS = ("1e-4", "3e-4")
GRID_LENGTHS = (1, 3)  # multiples of figure 3's --max-update
GRID_SOURCES = {"random": ("SST-2", "RTE"), "p0.0_mask0.4_u5000": ("SST-2", "RTE"),
                "p0.0_mask0.4_sst2text_u5000": ("SST-2",)}
RUN_DIR = RUNS / "glue_budget"
RESULT = RESULTS / "glue_budget.json"
DATA = {"pretrain": SHARED_DATA / "wikitext-2", "glue": SHARED_DATA / "glue"}


def variants() -> dict[str, tuple]:
    names: dict[str, tuple] = {f"pretrain_{name}": ("pretrain", name) for name in PRETRAINED}
    # Each pretrained encoder's checkpoints scored at 15 % masking, so encoders pretrained at other rates compare.
    names.update({f"mask0.15_loss_{name}": ("masked_loss", name) for name in PRETRAINED})
    for task in FINETUNE:
        for source in SOURCES:
            if SOURCES[source] and SOURCES[source][0] in TASK_ADAPTIVE:
                continue  # fine-tuned on the held-out grid only
            for seed in FINETUNE_SEEDS:
                names[f"{task}_{source}_s{seed}"] = ("finetune", task, source, seed)
    for task in FINETUNE:
        for source in (source for source, tasks in GRID_SOURCES.items() if task in tasks):
            for lr in GRID_LRS:
                for length in GRID_LENGTHS:
                    names[f"{task}_{source}_lr{lr}_x{length}_held_s1"] = ("finetune", task, source, 1, lr, length)
    return names


VARIANTS = variants()


def train(out_dir, flags: list[str]) -> list[str]:
    command = [sys.executable, "-m", "layerdrop", "train", "--save-dir", str(out_dir), "--no-progress-bar", *flags]
    with open(out_dir.parent / f"{out_dir.name}.out", "a") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       check=True)
    return command[1:]


def task_adaptive_corpus(task: str) -> Path:
    """WikiText-2 with ``task``'s training sentences appended to its train split (valid and test unchanged). The
    sentences are read as fine-tuning reads them, less the ones --valid-from-train holds out to choose the
    fine-tuning, so the held-out choice sees text the encoder never read, as dev is."""
    corpus = RUN_DIR / f"corpus_wikitext2_{task.lower().replace('-', '')}_less{HELD_OUT[task]}held"
    if not (corpus / "train.txt").exists():
        kept, _ = hold_out(load_glue(DATA["glue"] / task, "train", task)[0], HELD_OUT[task])
        corpus.mkdir(parents=True, exist_ok=True)
        for split in ("valid", "test"):
            shutil.copyfile(DATA["pretrain"] / f"{split}.txt", corpus / f"{split}.txt")
        sentences = "\n".join(sentence.strip() for text in kept.texts for sentence in text)
        tmp = corpus / "train.txt.tmp"
        tmp.write_text((DATA["pretrain"] / "train.txt").read_text(encoding="utf-8") + "\n" + sentences + "\n",
                       encoding="utf-8")
        os.replace(tmp, corpus / "train.txt")  # last, so a half-written corpus is never taken for a whole one
    return corpus


def pretrain(name: str) -> dict:
    out_dir = RUN_DIR / f"pretrain_{name}"
    data = task_adaptive_corpus(TASK_ADAPTIVE[name]) if name in TASK_ADAPTIVE else DATA["pretrain"]
    command = train(out_dir, ["--data", str(data), "--encoder-layers", str(LAYERS), *SHAPE,
                              *LONG_PRETRAIN, *PRETRAINED[name]])
    log = (RUN_DIR / f"pretrain_{name}.out").read_text()
    valid = {m.group(1): float(m.group(2)) for m in re.finditer(r"valid at update (\d+): loss ([\d.]+)", log)}
    return {"command": command, "masked_lm_valid_loss": valid}


def masked_loss(name: str, rate: float = 0.15) -> dict:
    """Masked-LM loss of every kept checkpoint of ``pretrain_{name}`` at ``rate`` on the whole validation split."""
    losses = {}
    for update in range(VALIDATE_EVERY, PRETRAIN_UPDATES + 1, VALIDATE_EVERY):
        out = RUN_DIR / f"mask{rate}_loss_{name}_{update}.json"
        subprocess.run([sys.executable, "-m", "layerdrop", "eval", "--path",
                        str(RUN_DIR / f"pretrain_{name}" / f"checkpoint_{update}"), "--batch-size", "16",
                        "--mask-prob", str(rate), "--json", str(out)], capture_output=True, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        losses[str(update)] = round(json.loads(out.read_text())["results"]["masked_lm"]["loss"], 4)
    return {"mask_prob": rate, "split": "valid (whole)", "masked_lm_loss": losses}


def finetune(task: str, source: str, seed: int, lr: str | None = None, length: int | None = None) -> dict:
    """Figure 3's fine-tuning; with ``lr`` and ``length``, a point of the grid validated on held-out train examples."""
    grid = lr is not None
    out_dir = RUN_DIR / (f"{task}_{source}_lr{lr}_x{length}_held_s{seed}" if grid else f"{task}_{source}_s{seed}")
    if SOURCES[source] is None:
        start = ["--encoder-layers", str(LAYERS), *SHAPE, "--bpe-vocab-size", "8000"]
    else:
        name, update = SOURCES[source]
        checkpoint = RUN_DIR / f"pretrain_{name}" / f"checkpoint_{update}"
        if not checkpoint.is_dir():
            raise SystemExit(f"{checkpoint} is missing: run `python reproduce/glue_budget.py --only pretrain_{name}` first")
        start = ["--restore-file", str(checkpoint)]
    flags = []
    if grid:
        updates = length * int(FINETUNE[task][FINETUNE[task].index("--max-update") + 1])
        flags = ["--lr", lr, "--min-lr", str(float(lr) / 10), "--max-update", str(updates),
                 "--validate-interval-updates", str(updates // 4), "--valid-from-train", str(HELD_OUT[task])]
    command = train(out_dir, ["--data", str(DATA["glue"] / task), *start, *FINETUNE_COMMON, *FINETUNE[task],
                              "--seed", str(seed), *flags])
    checkpoint = out_dir / ("checkpoint_best" if grid else "checkpoint_last")  # best: chosen on the held-out examples
    scored = subprocess.run([sys.executable, "-m", "layerdrop", "eval", "--path", str(checkpoint), "--split", "dev",
                             "--batch-size", "64"], capture_output=True, text=True, check=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    record = {"task": task, "source": source, "seed": seed, "command": command,
              "dev_accuracy": table_value(scored.stdout, "accuracy")}
    if grid:
        log = (out_dir.parent / f"{out_dir.name}.out").read_text()
        record.update(lr=float(lr), max_update=updates, checkpoint="checkpoint_best",
                      held_out_accuracy=max(float(m) for m in re.findall(r"\| valid at update \d+:.*?\| score ([\d.]+)", log)))
    return record


def run_one(name: str) -> dict:
    kind, *rest = VARIANTS[name]
    return {"pretrain": pretrain, "masked_loss": masked_loss, "finetune": finetune}[kind](*rest)


def add_run(results: dict, name: str, record: dict) -> None:
    results.update(pretrain_updates=PRETRAIN_UPDATES, metric="dev accuracy (%)", split="dev")
    results.setdefault("runs", {})[name] = record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated variant names (default: all, in order)")
    args = parser.parse_args()
    if not DATA["pretrain"].is_dir() or not DATA["glue"].is_dir():
        raise SystemExit(f"needs {DATA['pretrain']} and {DATA['glue']} (../shared/data beside the repository)")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    # One at a time: fine-tuning reads the checkpoints pretraining writes.
    train_variants(args.only.split(",") if args.only else list(VARIANTS), VARIANTS, RESULT, run_one, add_run, 1)


if __name__ == "__main__":
    main()
