"""The training loop: AdamW, warmup + cosine decay, clipping, periodic evaluation and checkpoints.

Every random choice of update ``n`` (batches, dropout masks, LayerDrop draws) is a function of
(seed, n), so a run stopped and resumed from a checkpoint makes exactly the decisions, and logs
exactly the losses, of an unbroken run. SIGTERM and Ctrl-C finish the current update, save
``checkpoint_last`` and stop; running the same command again resumes there.

What is trained on what data is the task's business (``layerdrop.tasks``); this loop is the same for all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from layerdrop.checkpoint import (
    RUN, TRAINER_STATE, build_model, check_free_space, load_checkpoint, physical_memory, publish_copy, read_json,
    recover_dir, remove_stale_temporaries, save_checkpoint,
)
from layerdrop.config import MAX_UPDATES, check_finite, flag_name, option, shorten
from layerdrop.data.corpus import parse_fractions
from layerdrop.distill import distill_backward, sandwich_turn
from layerdrop.distributed import World, all_sum, average_buffers, average_gradients, barrier, shard, weigher
from layerdrop.parallelize import (
    AMP_DTYPES, autocast, compile_layers, full_model_state, full_optimizer_state, is_sharded, load_full_optimizer_state,
    local_part, shard_model,
)
from layerdrop.data.tokenizers import TOKENIZER_KINDS
from layerdrop.errors import Diverged, UserError
from layerdrop.models import num_params
from layerdrop.nn.stack import layers_run, model_drop_plan, model_smallest_plan, stacks
from layerdrop.seeding import derive_seed
from layerdrop.optim import learning_rate, make_optimizer, parse_betas
from layerdrop.plateau import PlateauWatch
from layerdrop.run_lock import SaveDirLock
from layerdrop.signals import StopSignal

# Streams of randomness derived from (seed, update): one each for batches and dropout.
_BATCH_STREAM, _DROPOUT_STREAM = 1, 2
LOG_FILE = "train_log.jsonl"
TASK_NAMES = ("lm", "masked_lm", "classification", "translation")
MAX_RATE_OR_DECAY = 1000.0
# Integer flags and the largest value each may take (beyond it: a typing mistake that would exhaust memory).
LIMITS = {"max_update": MAX_UPDATES, "batch_size": 2**20, "validate_interval_updates": MAX_UPDATES,
          "bpe_vocab_size": 2**20, "max_nonfinite_updates": MAX_UPDATES}


@dataclass
class TrainConfig:
    task: str = option("lm", f"task: {', '.join(TASK_NAMES)}")
    data: str | None = option(None, "corpus directory or file; for lm the default is the embedded Tiny Shakespeare")
    tokenizer: str | None = option(None, "tokenizer: char (lm default), word (pre-tokenized, <eos> per line) or bpe")
    bpe_vocab_size: int = option(8000, "vocabulary size of the BPE tokenizer")
    split_fractions: str = option("0.9,0.05,0.05", "train,valid,test fractions when --data is one file")
    source_lang: str = option("de", "translation: source language suffix of the data files")
    target_lang: str = option("en", "translation: target language suffix of the data files")
    label_smoothing: float = option(0.1, "translation: label smoothing of the cross-entropy")
    glue_task: str | None = option(None, "classification: the GLUE task (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI); "
                                         "default: detected from train.tsv")
    valid_from_train: int = option(0, "classification: validate on N examples held out of train.tsv (one fixed draw, "
                                      "the same for every --seed) instead of dev, so that checkpoint_best and any choice "
                                      "of flags never see dev (start from a masked-LM checkpoint: a classifier fine-tuned "
                                      "on all of train.tsv has seen them); 0: validate on dev")
    mask_prob: float = option(0.15, "masked_lm: share of tokens chosen for prediction (80/10/10 mask/random/same)")
    save_dir: str = option("checkpoints", "where checkpoints and the training log go")
    restore_file: str | None = option(None, "checkpoint to start from (an existing SAVE_DIR/checkpoint_last is resumed instead)")
    reset_optimizer: bool = option(False, "with --restore-file: start optimizer, schedule and update count fresh (fine-tuning)")
    seed: int = option(1, "seed for initialisation, batches, dropout and LayerDrop")
    max_update: int = option(2000, "number of updates")
    batch_size: int = option(12, "sequences (or sentence pairs) per update")
    lr: float = option(1e-3, "peak learning rate")
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay")
    warmup_updates: int = option(100, "linear warmup updates")
    weight_decay: float = option(0.1, "AdamW weight decay (matrices only; not biases, norms)")
    adam_betas: str = option("(0.9, 0.99)", "AdamW betas")
    clip_norm: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    validate_interval_updates: int = option(250, "evaluate and save a checkpoint every N updates")
    max_valid_steps: int | None = option(None, "at most this many validation batches per evaluation")
    keep_interval_updates: int = option(2, "keep the last N periodic checkpoints (plus _last and _best)")
    no_progress_bar: bool = option(False, "print plain log lines instead of a progress bar")
    layerdrop_distill: bool = option(False, "in-place self-distillation: each update trains the full depth on the labels and "
                                            "this update's LayerDrop sub-network towards the full depth's predictions")
    layerdrop_sandwich: bool = option(False, "with --layerdrop-distill and --layerdrop-depths: each update also trains the "
                                             "smallest served depth towards the full depth (slimmable networks' sandwich "
                                             "rule), unless its draw already ran it; from the end of the rate warmup")
    layerdrop_sandwich_share: float = option(1.0, "with --layerdrop-sandwich: the share of updates that run the sandwich "
                                                  "pass, spread evenly over them (0.5: every other update; 1: every update)")
    compile: bool = option(False, "torch.compile each layer (LayerDrop decisions stay outside the compiled graphs: "
                                  "a new plan never recompiles)")
    amp: str | None = option(None, "autocast the training forward pass: bf16 (weights and optimizer state stay float32)")
    fsdp: bool = option(False, "under torchrun: shard parameters, gradients and optimizer state with FSDP2, one unit "
                               "per layer (a skipped layer is gathered on no rank)")
    max_nonfinite_updates: int = option(1, "stop when this many updates in a row have a non-finite loss or gradient norm "
                                           "(each is skipped before the optimizer step; 1: stop at the first)")

    def validate(self) -> None:
        if self.task not in TASK_NAMES:
            raise UserError(f"--task: got {shorten(self.task)}; valid: {', '.join(TASK_NAMES)}")
        if self.tokenizer is not None and self.tokenizer not in TOKENIZER_KINDS:
            raise UserError(f"--tokenizer: got {shorten(self.tokenizer)}; valid: {', '.join(TOKENIZER_KINDS)}")
        for name, cap in LIMITS.items():
            value = getattr(self, name)
            if not 1 <= value <= cap:
                raise UserError(f"{flag_name(name)}: got {shorten(value)}; valid: an integer from 1 to {cap:,}")
        for name in ("warmup_updates", "keep_interval_updates"):
            if not 0 <= getattr(self, name) <= MAX_UPDATES:
                raise UserError(f"{flag_name(name)}: got {shorten(getattr(self, name))}; valid: an integer from 0 to {MAX_UPDATES:,}")
        if not 0 <= self.seed < 2**63:
            raise UserError(f"--seed: got {shorten(self.seed)}; valid: an integer from 0 to 2**63 - 1")
        check_finite({"lr": self.lr, "min_lr": self.min_lr, "weight_decay": self.weight_decay, "clip_norm": self.clip_norm})
        # Beyond these, AdamW's decay factor 1 - lr x weight decay leaves float32's range before any loss is seen.
        for name in ("lr", "min_lr", "weight_decay"):
            if getattr(self, name) > MAX_RATE_OR_DECAY:
                raise UserError(f"{flag_name(name)}: got {getattr(self, name)!r}; valid: a number from 0 to {MAX_RATE_OR_DECAY:g}")
        if not self.lr > 0:
            raise UserError(f"--lr: got {self.lr}; valid: a finite number above 0")
        if not 0 <= self.valid_from_train <= MAX_UPDATES:
            raise UserError(f"--valid-from-train: got {shorten(self.valid_from_train)}; valid: an integer from 0 to "
                            f"{MAX_UPDATES:,} (and fewer than train.tsv's examples)")
        if self.valid_from_train and self.task != "classification":
            raise UserError(f"--valid-from-train: only --task classification holds out training examples; got --task "
                            f"{self.task}")
        if not 0 < self.mask_prob < 1:
            raise UserError(f"--mask-prob: got {self.mask_prob}; valid: a number in (0, 1)")
        if not 0 < self.layerdrop_sandwich_share <= 1:
            raise UserError(f"--layerdrop-sandwich-share: got {self.layerdrop_sandwich_share}; valid: a number in (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing: got {self.label_smoothing}; valid: a number in [0, 1)")
        if self.max_valid_steps is not None and self.max_valid_steps < 1:
            raise UserError(f"--max-valid-steps: got {self.max_valid_steps}; valid: a positive integer")
        parse_betas(self.adam_betas)
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise UserError(f"--amp: got {shorten(self.amp)}; valid: {', '.join(AMP_DTYPES)}")
        parse_fractions(self.split_fractions)

@dataclass
class TrainResult:
    update: int
    train_loss: float | None
    valid: dict[str, float] | None
    best_valid_loss: float | None  # of the task's selection metric (the loss, or a GLUE score)
    seconds: float
    tokens_per_second: float
    save_dir: Path
    stopped_by: str | None = None
    best_metric: str = "loss"


def _resolved(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _resume_source(run: TrainConfig) -> tuple[Path | None, str]:
    """fairseq's rule, made safe to rerun: an existing SAVE_DIR/checkpoint_last resumes the run (if it was
    started from the same --restore-file); otherwise --restore-file, if given, is where training starts."""
    last = Path(run.save_dir) / "checkpoint_last"
    if last.exists() and not last.is_dir():
        raise UserError(f"--save-dir: {last} is a file, not a checkpoint directory; valid: move it away (to start afresh) "
                        "or put the checkpoint directory back (to resume)")
    if last.is_dir():
        stored_run = read_json(last / RUN, "--save-dir") if (last / RUN).is_file() else {}
        stored = stored_run.get("restore_file")
        if run.restore_file is not None and stored != _resolved(run.restore_file):
            raise UserError(
                f"--restore-file: got {run.restore_file!r}, but {last} exists and was started from {stored!r}; "
                "valid: the same --restore-file (to resume that run) or a new --save-dir"
            )
        held = stored_run.get("valid_from_train", 0)
        if run.valid_from_train != held:
            raise UserError(f"--valid-from-train: got {run.valid_from_train}, but {last} was trained with {held}; valid: "
                            f"{held} (to resume that run; its held-out examples must stay out of training) or a new --save-dir")
        return last, "--save-dir"
    if run.restore_file:
        return Path(run.restore_file), "--restore-file"
    return None, ""


def _model_config_for_resume(stored: Any, model_args: dict[str, Any], source: Path) -> Any:
    for name in stored.architecture_fields:
        if name not in model_args or model_args[name] == getattr(stored, name):
            continue
        stack = name[: -len("_layers")] if name.endswith("_layers") else None
        if stack and getattr(stored, f"{stack}_kept_layers", None) and model_args.get(f"{stack}_layers_to_keep"):
            continue  # a pruned run resumed with its original command: the keep list sets the depth
        raise UserError(
            f"{flag_name(name)}: got {model_args[name]!r} but the checkpoint {source} has {getattr(stored, name)!r}; "
            "valid: omit the flag or give the stored value (architecture flags cannot change on resume)"
        )
    changes = {k: v for k, v in model_args.items() if k not in stored.architecture_fields}
    return dataclasses.replace(stored, **changes)


def _truncate_log(path: Path, update: int) -> None:
    """Drop log lines past the checkpoint we resume from (those updates run again), and any torn line."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["update"] <= update:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in kept))


def _prune_old_checkpoints(save_dir: Path, keep: int) -> None:
    # Oldest written first, not lowest number: after --reset-optimizer restarts the count, the new checkpoint_250
    # must not be the one removed while an earlier run's checkpoint_1000 stays.
    numbered = sorted(
        (p for p in save_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint_\d+", p.name)),
        key=lambda p: (p.stat().st_mtime_ns, int(p.name.split("_")[1])),
    )
    for old in numbered[: max(0, len(numbered) - keep)]:
        shutil.rmtree(old)


def _describe(metrics: dict[str, float]) -> str:
    return " | ".join(f"{k} {v:.4f}" if k == "loss" else f"{k} {v:.2f}" if abs(v) < 1e6 else f"{k} {v:.3g}"
                      for k, v in metrics.items())


def check_distill(run: TrainConfig, config: Any, model: torch.nn.Module) -> None:
    """--layerdrop-distill needs a sub-network to distil into and logits to compare; --layerdrop-sandwich needs
    --layerdrop-distill and served depths."""
    if run.layerdrop_sandwich_share != 1 and not run.layerdrop_sandwich:
        raise UserError(f"--layerdrop-sandwich-share: got {run.layerdrop_sandwich_share} without --layerdrop-sandwich "
                        "(the share of updates that run its pass); valid: add --layerdrop-sandwich, or leave the share out")
    if run.layerdrop_sandwich and not run.layerdrop_distill:
        raise UserError("--layerdrop-sandwich: needs --layerdrop-distill (the smallest depth learns from the full "
                        "depth's predictions); got it without")
    if not run.layerdrop_distill:
        return
    if not any(stack.layerdrop.active for stack in stacks(model)):
        names = " or ".join(f"--{stack.name}-layerdrop" for stack in stacks(model))
        raise UserError(f"--layerdrop-distill: needs {names} above 0 (the rate of the sampled sub-network); got 0")
    if run.layerdrop_sandwich and not any(stack.layerdrop.depths for stack in stacks(model)):
        raise UserError("--layerdrop-sandwich: needs served depths (--layerdrop-depths) to know the smallest one; "
                        "got none")
    if run.layerdrop_sandwich and not any(stack.layerdrop.active and stack.smallest_served_depth() < len(stack.layers)
                                          for stack in stacks(model)):
        raise UserError("--layerdrop-sandwich: no stack with LayerDrop serves a depth below its own layer count "
                        "(a pruned model keeps its parent's depths); valid: --layerdrop-depths below the layer count")
    if getattr(config, "adaptive_softmax_cutoff", None):
        raise UserError("--layerdrop-distill: does not work with --adaptive-softmax-cutoff (the adaptive softmax never forms "
                        "the full distribution to distil); valid: a full softmax")


def with_default_gamma(config: Any, max_update: int) -> Any:
    """The progressive schedule's ramp speed defaults to 5 / --max-update; the value is stored in config.json."""
    if config.layerdrop_schedule == "progressive" and config.layerdrop_gamma is None:
        return dataclasses.replace(config, layerdrop_gamma=5.0 / max_update)
    return config


def describe_layerdrop(model: torch.nn.Module, max_update: int, distill: bool, sandwich: bool = False,
                       sandwich_share: float = 1.0) -> list[str]:
    """One line per stack with LayerDrop: its settings and the expected share of its computation skipped."""
    lines = []
    for stack in stacks(model):
        drop = stack.layerdrop
        if not drop.active:
            continue
        final = ", ".join(f"{r:.2f}" for r in drop.rates(len(stack.layers), max_update))
        cut_by_sandwich = sandwich and stack.smallest_served_depth() < len(stack.layers)
        lines.append(
            f"| LayerDrop {stack.name}: p={drop.p}{' (mean of learned per-layer rates)' if drop.learned_gates else ''}, "
            f"unit {drop.unit}, {drop.schedule} schedule"
            + (f" (rates by layer at the end: {final})" if drop.schedule != "uniform" else "")
            + (f", rising from 0 over the first {drop.warmup} updates" if drop.warmup else "")
            + (f", {drop.sampling} sampling" if drop.sampling != "per-layer" else "")
            + (f" (served depths {', '.join(map(str, drop.depths))}, counts rounded {drop.depths_round.replace('-', ' ')})" if drop.depths else "")
            + (", with in-place distillation (the full depth also runs every update)" if distill else "")
            + (f", and the smallest served depth ({stack.smallest_served_depth()}) "
               + ("every update" if sandwich_share == 1 else f"on {sandwich_share * 100:g}% of updates")
               + f"{' after the rate warmup' if drop.warmup else ''} (sandwich rule)"
               if cut_by_sandwich else "")
            + skipped_phrase(stack.name, stack.expected_skipped(max_update), distill, cut_by_sandwich))
    return lines


def skipped_phrase(name: str, skipped: float, distill: bool, sandwich: bool) -> str:
    """The expected skipped share, said of the pass it applies to: with distillation the sampled pass is a second
    pass beside the full-depth one, so an update costs more layers than a baseline update, not fewer."""
    if not distill:
        return f"; expected share of {name} layer compute skipped over the run: {skipped:.1%}"
    return (f"; expected share of {name} layer compute skipped in the sub-network pass over the run: {skipped:.1%}, "
            f"so an update runs about {2 - skipped:.2f} times a baseline update's {name} layers"
            + (", not counting the sandwich pass" if sandwich else ""))


def _finite_or_none(value: float | None) -> float | None:
    """The log is strict JSON: a non-finite number is written as null (and the update marked skipped)."""
    return value if value is not None and math.isfinite(value) else None


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(local_part(p)).all()) for p in model.parameters())


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def _check_step_fits_memory(config: Any, batch_size: int) -> None:
    """A rough upper estimate of one update's activations, for models with a fixed sequence length (LM, encoder),
    so a mistyped --batch-size is refused with a message instead of the kernel killing the process."""
    length = getattr(config, "tokens_per_sample", None)
    if length is None:
        return
    stack = "decoder" if hasattr(config, "decoder_layers") else "encoder"
    width, ffn = getattr(config, f"{stack}_embed_dim"), getattr(config, f"{stack}_ffn_embed_dim")
    layers, heads = getattr(config, f"{stack}_layers"), getattr(config, f"{stack}_attention_heads")
    per_token = layers * (10 * width + 2 * ffn + 3 * heads * length) + 3 * config.vocab_size
    needed = 4 * batch_size * length * per_token
    if needed > physical_memory():
        raise UserError(f"--batch-size {batch_size}: one update of {batch_size} x {length} tokens would need about "
                        f"{needed / 2**30:,.0f} GB for activations, more than this machine's {physical_memory() / 2**30:,.0f} GB; "
                        "valid: a smaller --batch-size or --tokens-per-sample")


def train(run: TrainConfig, model_args: dict[str, Any], log: Callable[[str], None] = print,
          world: World | None = None) -> TrainResult:
    """Train the task's model; ``model_args`` are the model flags the user gave (others keep defaults).

    Rank 0 (the only process without torchrun) holds SAVE_DIR's lock for the whole run, so a second run on
    the same directory is refused; the other ranks neither write nor log."""
    run.validate()
    world = world or World()
    if not world.is_main:
        return _train(run, model_args, lambda _: None, world)
    with SaveDirLock(Path(run.save_dir)):
        return _train(run, model_args, log, world)


def _train(run: TrainConfig, model_args: dict[str, Any], log: Callable[[str], None], world: World) -> TrainResult:
    from layerdrop.tasks import TASKS

    save_dir = Path(run.save_dir)
    if world.is_main:  # only the rank holding the lock tidies up, and the others read after it has
        stale = remove_stale_temporaries(save_dir)
        if stale:
            log(f"| removed {len(stale)} half-written checkpoint(s) left by an earlier run that was killed: "
                + ", ".join(p.name for p in stale))
        recover_dir(save_dir / "checkpoint_last")
    barrier(world)
    if run.fsdp and not world.parallel:
        raise UserError("--fsdp: shards the model over data-parallel processes, and this is one process; valid: "
                        "torchrun --nproc-per-node N (N >= 2) -m layerdrop train --fsdp ..., or no --fsdp")
    if world.parallel and run.batch_size < world.size:
        raise UserError(f"--batch-size {run.batch_size}: the global batch is split over {world.size} processes; "
                        f"valid: at least {world.size} (one row per process)")
    task = TASKS[run.task](run)
    torch.manual_seed(run.seed)
    source, flag = _resume_source(run)
    trainer_state = None
    if source is not None:
        ckpt = load_checkpoint(source, flag, expected_type=task.model_type, with_trainer_state=True)
        log(f"| loading {source} ({'checkpoint_last in --save-dir' if flag == '--save-dir' else flag})")
        tokenizer = ckpt.tokenizer
        config = with_default_gamma(_model_config_for_resume(ckpt.config, model_args, source), run.max_update)
        state_dict, adapted = ckpt.state_dict, False
        if hasattr(task, "adapt_checkpoint"):  # e.g. a masked-LM encoder gets a classification head
            config, state_dict, adapted = task.adapt_checkpoint(config, state_dict)
        model = build_model(config, state_dict, task.model_type, str(source), log)
        pruned_now = any(getattr(model.cfg, f"{s}_{what}", None) != getattr(ckpt.config, f"{s}_{what}", None)
                         for s in ("encoder", "decoder") for what in ("kept_layers", "layer_heads", "layer_ffn_dims"))
        if pruned_now or adapted:
            log(f"| the model was {'pruned' if pruned_now else 'given a new head'} at load: optimizer and schedule start fresh")
        elif flag == "--save-dir" and ckpt.trainer_state is None:
            # Resuming is all or nothing: weights without their optimizer and update count are never taken silently.
            if not run.reset_optimizer:
                raise UserError(f"--save-dir: {source} has no {TRAINER_STATE}, so the run cannot resume where it stopped; "
                                "valid: put the file back, or add --reset-optimizer to continue from these weights with a "
                                "fresh optimizer, schedule and update count (the training log then starts again)")
            log(f"| --reset-optimizer: {source} has no {TRAINER_STATE}; continuing from its weights with a fresh optimizer, "
                "schedule and update count")
        elif run.reset_optimizer and flag == "--restore-file":
            log("| --reset-optimizer: optimizer and schedule start fresh")
        else:
            trainer_state = ckpt.trainer_state
    else:
        tokenizer = task.build_tokenizer()
        config = with_default_gamma(task.new_config(model_args, tokenizer), run.max_update)
        model = build_model(config, None, task.model_type, "model flags", log)
    model.train()
    config = model.cfg
    if run.task in ("lm", "masked_lm"):  # fixed-length batches; classification pads to each batch's longest row
        _check_step_fits_memory(config, run.batch_size)
    data_summary = task.prepare(tokenizer, config)

    # The best checkpoint is chosen by the task's metric: the loss, or for GLUE the task's official score.
    best_metric, higher_is_better = getattr(task, "selection", ("loss", False))
    model_name, model_params = type(model).__name__, num_params(model)  # before sharding changes both
    if run.compile:
        compile_layers(model)
    sharded = run.fsdp
    if sharded:
        shard_model(model)
    optimizer = make_optimizer(model, run.lr, run.weight_decay, parse_betas(run.adam_betas))
    start_update, best_valid = 0, None
    if trainer_state is not None:
        try:
            load_full_optimizer_state(model, optimizer, trainer_state["optimizer"], sharded)
        except (ValueError, KeyError) as error:
            raise UserError(f"{flag} {source}: its optimizer state does not fit the model ({error})") from None
        start_update = int(trainer_state["update"])
        best_valid = trainer_state.get("best_valid_loss")  # of the selection metric, despite the name (kept for old checkpoints)
        if trainer_state.get("best_metric", "loss") != best_metric:
            best_valid = None  # stored for another metric (a run from before GLUE scores): the next validation decides
        log(f"| resuming at update {start_update}")

    log(f"| model: {model_name}, vocab {config.vocab_size} ({tokenizer.kind})")
    log(f"num. model params: {model_params}")
    check_distill(run, config, model)
    for line in describe_layerdrop(model, run.max_update, run.layerdrop_distill, run.layerdrop_sandwich,
                                   run.layerdrop_sandwich_share):
        log(line)
    log(f"| data: {data_summary}")

    # A save writes weights and two AdamW moments, and briefly holds the old checkpoint beside the new one.
    if world.is_main:
        check_free_space(save_dir, 2 * 3 * sum(p.numel() * p.element_size() for p in model.parameters()))
    log_path = save_dir / LOG_FILE
    if world.is_main:
        _truncate_log(log_path, start_update)
    if world.parallel:
        log(f"| data parallel: {world.size} processes (gloo), {run.batch_size} rows per update in all"
            + (", parameters sharded with FSDP2 (one unit per layer)" if sharded else ""))
    if run.compile or run.amp:
        log(f"| {'layers compiled with torch.compile' if run.compile else ''}"
            f"{', ' if run.compile and run.amp else ''}{f'{run.amp} autocast' if run.amp else ''}")
    run_json = {**dataclasses.asdict(run), "data": _resolved(run.data), "restore_file": _resolved(run.restore_file)}

    last_saved = start_update if trainer_state is not None and flag == "--save-dir" else None
    # A resumed run keeps its watch: a warning given before the stop is not given again.
    watched = trainer_state.get("plateau", {}) if trainer_state is not None and flag == "--save-dir" else {}
    plateau = PlateauWatch(task.frequency_plateau, run.warmup_updates, run.max_update, task.predicts, **watched)

    def diverged(update: int, what: str) -> Diverged:
        kept = (f"{save_dir / 'checkpoint_last'} still holds update {last_saved}, the last finite state saved"
                if last_saved is not None else "no checkpoint had been saved yet")
        remedies = "a lower --lr or a longer --warmup-updates" + ("" if run.clip_norm > 0 else ", or --clip-norm 1")
        return Diverged(f"update {update}: {what}; training stopped before the optimizer step, and {kept}. Likely cause: "
                        f"the learning rate is too high for this model (--lr {run.lr:g}, {lr:.3g} at this update); "
                        f"valid: {remedies}")

    def save(update: int, valid_score: float | None) -> None:
        nonlocal best_valid, last_saved
        finite = all_sum([float(not _all_finite(model))], world)[0] == 0  # shards: every rank must agree
        if not finite:
            raise diverged(update, "the weights hold non-finite values")
        is_best = valid_score is not None and (best_valid is None or (
            valid_score > best_valid if higher_is_better else valid_score < best_valid))
        if is_best:
            best_valid = valid_score
        last_saved = update
        if not (world.is_main or sharded):
            return
        weights, optimizer_state = full_model_state(model, sharded), full_optimizer_state(model, optimizer, sharded)
        if not world.is_main:  # every rank took part in gathering the shards; one writes them
            return
        state = {"update": update, "optimizer": optimizer_state, "best_valid_loss": best_valid, "best_metric": best_metric,
                 "plateau": {"since": plateau.since, "warned": plateau.warned}}
        written = save_checkpoint(save_dir / "checkpoint_last", task.model_type, config, weights, tokenizer, state, run_json)
        if run.keep_interval_updates > 0 and valid_score is not None:
            publish_copy(written, save_dir / f"checkpoint_{update}")
            _prune_old_checkpoints(save_dir, run.keep_interval_updates)
        if is_best:
            publish_copy(written, save_dir / "checkpoint_best")

    total_layers = layers_run(None, model)
    train_loss, valid, smoothed = None, None, None
    seconds, tokens_seen = 0.0, 0
    # Redirected output (CI, make demo > log) gets a bar redrawn every 30 s, not ten times a second.
    bar = tqdm(total=run.max_update, initial=start_update, disable=run.no_progress_bar or not world.is_main,
               dynamic_ncols=True, unit="upd", mininterval=0.1 if sys.stderr.isatty() else 30.0)
    say = bar.write if world.is_main else (lambda _: None)
    parameters = list(model.parameters())
    update, lr, nonfinite_in_a_row, stopping = start_update, run.lr, 0, False
    log_opened = open(log_path, "a", buffering=1) if world.is_main else contextlib.nullcontext(None)
    with StopSignal() as stop, log_opened as log_file:  # line-buffered: no torn lines
        weigh = weigher(world, lambda: stop.received is not None)
        while update < run.max_update:
            started = time.perf_counter()
            plan = model_drop_plan(model, run.seed, update)  # the same on every rank and on every rerun
            smallest = (model_smallest_plan(model, update)
                        if run.layerdrop_sandwich and sandwich_turn(update, run.layerdrop_sandwich_share) else None)
            # Dropout masks differ between ranks (rank 0 draws what one process would).
            torch.manual_seed(derive_seed(run.seed, update, _DROPOUT_STREAM, *([world.rank] if world.rank else [])))
            batch_rng = torch.Generator().manual_seed(derive_seed(run.seed, update, _BATCH_STREAM))
            lr = learning_rate(update, run.lr, run.min_lr, run.warmup_updates, run.max_update)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                batch = shard(task.train_batch(batch_rng, update), world)  # every rank builds the global batch
                def forward(plan_):
                    with autocast(run.amp):
                        return task.train_outputs(model, batch, plan_)

                if run.layerdrop_distill:
                    out, distill_losses = distill_backward(forward, plan, weigh, smallest)
                else:
                    out, distill_losses = forward(plan), []
                    (out.loss * weigh(out)).backward()
            except RuntimeError as error:
                if not _out_of_memory(error):
                    raise
                raise UserError(f"--batch-size {run.batch_size}: out of memory at update {update + 1} "
                                f"({shorten(str(error), 120)}); valid: a smaller --batch-size or model") from None
            if not sharded:  # FSDP2 reduces the gradients itself
                average_gradients(parameters, world)
            train_loss, tokens = weigh.last["loss"], weigh.last["tokens"]
            # One process stops at the end of the update a signal came in; ranks agree on the update through weigh.
            stopping = weigh.last["stop"] or (not world.parallel and stop.received is not None)
            # The norm is measured even without clipping: a non-finite one must never reach the optimizer.
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, run.clip_norm if run.clip_norm > 0 else math.inf)
            grad_norm = (grad_norm.full_tensor() if is_sharded(grad_norm) else grad_norm).item()
            finite = math.isfinite(train_loss) and math.isfinite(grad_norm)
            if finite:
                optimizer.step()
                nonfinite_in_a_row = 0
            else:
                nonfinite_in_a_row += 1
            optimizer.zero_grad(set_to_none=True)
            average_buffers(model, world)  # learned gates' running means: the next plan must agree everywhere
            update += 1
            elapsed = time.perf_counter() - started
            seconds += elapsed
            tokens_seen += tokens
            if finite:
                smoothed = train_loss if smoothed is None else 0.9 * smoothed + 0.1 * train_loss
            ran, total = layers_run(plan, model), total_layers
            record = {"update": update, "loss": _finite_or_none(train_loss), "gnorm": _finite_or_none(round(grad_norm, 5)),
                      "lr": lr, "layers": ran, "ms": round(elapsed * 1000, 3), "time": round(time.time(), 3)}
            if distill_losses:
                record["distill"] = _finite_or_none(distill_losses[0])
            if smallest is not None:  # the sandwich rule: its own pass, or the draw's
                record["distill_smallest"] = _finite_or_none(distill_losses[-1])
            if not finite:
                record["skipped"] = "non-finite loss or gradient norm"
            if log_file is not None:
                log_file.write(json.dumps(record, allow_nan=False) + "\n")
            if nonfinite_in_a_row >= run.max_nonfinite_updates:
                raise diverged(update, f"the training loss is {train_loss:g} and the gradient norm {grad_norm:g}"
                               + (f" ({nonfinite_in_a_row} updates in a row)" if nonfinite_in_a_row > 1 else ""))
            bar.update(1)
            shown = math.nan if smoothed is None else smoothed
            bar.set_postfix(loss=f"{shown:.3f}", ppl=f"{math.exp(min(shown, 50)):.1f}",
                            tok_s=f"{tokens / elapsed:,.0f}", layers=f"{ran}/{total}", refresh=False)
            if run.no_progress_bar and (update % 100 == 0 or update == run.max_update):
                log(f"| update {update:>6} | loss {shown:.3f} | lr {lr:.2e} | {tokens / elapsed:,.0f} tok/s | layers {ran}/{total}")
            if update % run.validate_interval_updates == 0 or update == run.max_update:
                valid = task.validate(model)
                if valid is not None:
                    say(f"| valid at update {update}: {_describe(valid)}")
                    if not math.isfinite(valid["loss"]):
                        raise diverged(update, f"the validation loss is {valid['loss']:g}")
                    if stuck := plateau.check(valid["loss"], update):
                        say(stuck)
                for stack in stacks(model):
                    if stack.layerdrop.learned_gates and stack.layerdrop.active:
                        with torch.no_grad():
                            rates = stack.learned_rates().tolist()
                        say(f"| learned {stack.name} drop rates: " + " ".join(f"{r:.2f}" for r in rates))
                save(update, None if valid is None else valid[best_metric])
            if stopping:  # any rank's signal stops every rank after the same update
                save(update, None)
                break
    bar.close()
    stopped_by = stop.name or ("a signal to another process" if stopping else None)
    if stopped_by:
        log(f"| stopped by {stopped_by} at update {update}; saved {save_dir / 'checkpoint_last'}; run the same command to resume")
    return TrainResult(update, train_loss, valid, best_valid, seconds, tokens_seen / seconds if seconds else 0.0,
                       save_dir, stopped_by, best_metric)
