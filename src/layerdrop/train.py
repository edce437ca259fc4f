"""The training loop: AdamW, warmup + cosine decay, clipping, periodic evaluation and checkpoints.

Every random choice of update ``n`` (batch offsets, dropout masks, LayerDrop draws) is a function of
(seed, n), so a run stopped and resumed from a checkpoint makes exactly the decisions, and logs
exactly the losses, of an unbroken run. SIGTERM and Ctrl-C finish the current update, save
``checkpoint_last`` and stop; running the same command again resumes there.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from layerdrop.checkpoint import build_model, load_checkpoint, replace_dir, save_checkpoint
from layerdrop.config import flag_name, option
from layerdrop.data.batching import random_batch
from layerdrop.data.corpus import load_corpus, parse_fractions
from layerdrop.data.tokenizers import TOKENIZER_KINDS, build_tokenizer, encode_tensor
from layerdrop.errors import UserError
from layerdrop.evaluate import evaluate_lm
from layerdrop.models import LM_MODEL_TYPE, TransformerLMConfig, num_params
from layerdrop.nn.layerdrop import derive_seed, layerdrop_lists, set_layerdrop_step

# Streams of randomness derived from (seed, update): one each for batches and dropout.
_BATCH_STREAM, _DROPOUT_STREAM = 1, 2
# Config fields that fix parameter shapes: a resumed run must keep them.
ARCHITECTURE_FIELDS = (
    "decoder_layers", "decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_attention_heads",
    "decoder_normalize_before", "tokens_per_sample", "share_decoder_input_output_embed", "bias",
)
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainConfig:
    task: str = option("lm", "task: lm (language modeling)")
    data: str | None = option(None, "corpus directory (train/valid/test files) or one text file; default: embedded Tiny Shakespeare")
    tokenizer: str = option("char", "tokenizer: char, word (pre-tokenized, <eos> per line) or bpe")
    bpe_vocab_size: int = option(8000, "vocabulary size of the BPE tokenizer")
    split_fractions: str = option("0.9,0.05,0.05", "train,valid,test fractions when --data is one file")
    save_dir: str = option("checkpoints", "where checkpoints and the training log go")
    restore_file: str | None = option(None, "checkpoint to start from (default: SAVE_DIR/checkpoint_last when it exists)")
    seed: int = option(1, "seed for initialisation, batches, dropout and LayerDrop")
    max_update: int = option(2000, "number of updates")
    batch_size: int = option(12, "sequences per update")
    lr: float = option(1e-3, "peak learning rate")
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay")
    warmup_updates: int = option(100, "linear warmup updates")
    weight_decay: float = option(0.1, "AdamW weight decay (matrices only; not biases, norms)")
    adam_betas: str = option("(0.9, 0.99)", "AdamW betas")
    clip_norm: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    validate_interval_updates: int = option(250, "evaluate and save a checkpoint every N updates")
    max_valid_steps: int | None = option(None, "at most this many validation batches per evaluation")
    keep_interval_updates: int = option(2, "keep the last N periodic checkpoints (plus _last and _best)")
    reset_optimizer: bool = option(False, "with --restore-file: start optimizer, schedule and update count fresh (fine-tuning)")
    no_progress_bar: bool = option(False, "print plain log lines instead of a progress bar")

    def validate(self) -> None:
        if self.task != "lm":
            raise UserError(f"--task: got {self.task!r}; valid: lm")
        if self.tokenizer not in TOKENIZER_KINDS:
            raise UserError(f"--tokenizer: got {self.tokenizer!r}; valid: {', '.join(TOKENIZER_KINDS)}")
        for name in ("max_update", "batch_size", "validate_interval_updates", "bpe_vocab_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{flag_name(name)}: got {getattr(self, name)}; valid: a positive integer")
        for name in ("warmup_updates", "keep_interval_updates"):
            if getattr(self, name) < 0:
                raise UserError(f"{flag_name(name)}: got {getattr(self, name)}; valid: zero or more")
        if not self.lr > 0 or self.min_lr < 0:
            raise UserError(f"--lr/--min-lr: got {self.lr}/{self.min_lr}; valid: lr > 0, min-lr >= 0")
        if self.max_valid_steps is not None and self.max_valid_steps < 1:
            raise UserError(f"--max-valid-steps: got {self.max_valid_steps}; valid: a positive integer")
        parse_betas(self.adam_betas)
        parse_fractions(self.split_fractions)


def parse_betas(text: str) -> tuple[float, float]:
    try:
        betas = ast.literal_eval(text)
        if len(betas) == 2 and all(0 <= float(b) < 1 for b in betas):
            return float(betas[0]), float(betas[1])
    except (ValueError, SyntaxError, TypeError):
        pass
    raise UserError(f"--adam-betas: got {text!r}; valid: two numbers in [0, 1), e.g. '(0.9, 0.99)'")


def learning_rate(update: int, run: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``max_update``."""
    if update < run.warmup_updates:
        return run.lr * (update + 1) / (run.warmup_updates + 1)
    span = max(1, run.max_update - run.warmup_updates)
    progress = min(1.0, (update - run.warmup_updates) / span)
    return run.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (run.lr - run.min_lr)


def make_optimizer(model: torch.nn.Module, run: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": run.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=run.lr, betas=parse_betas(run.adam_betas))


class StopSignal:
    """Turns the first SIGTERM / Ctrl-C into a request to save and stop; a second Ctrl-C aborts."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class TrainResult:
    update: int
    train_loss: float | None
    valid_loss: float | None
    best_valid_loss: float | None
    seconds: float
    tokens_per_second: float
    save_dir: Path
    stopped_by: str | None = None


def _resume_source(run: TrainConfig) -> tuple[Path | None, str]:
    """fairseq's rule, made safe to rerun: an existing SAVE_DIR/checkpoint_last resumes the run;
    otherwise --restore-file (if given) is where training starts."""
    last = Path(run.save_dir) / "checkpoint_last"
    if last.is_dir():
        return last, "checkpoint_last in --save-dir"
    if run.restore_file:
        return Path(run.restore_file), "--restore-file"
    return None, ""


def _model_config_for_resume(stored: TransformerLMConfig, model_args: dict[str, Any], source: Path) -> TransformerLMConfig:
    for name in ARCHITECTURE_FIELDS:
        if name in model_args and model_args[name] != getattr(stored, name):
            raise UserError(
                f"{flag_name(name)}: got {model_args[name]!r} but the checkpoint {source} has {getattr(stored, name)!r}; "
                "valid: omit the flag or give the stored value (architecture flags cannot change on resume)"
            )
    changes = {k: v for k, v in model_args.items() if k not in ARCHITECTURE_FIELDS}
    return dataclasses.replace(stored, **changes)


def _truncate_log(path: Path, update: int) -> None:
    """Drop log lines past the checkpoint we resume from: those updates will be run again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["update"] <= update]
    path.write_text("".join(line + "\n" for line in kept))


def _prune_old_checkpoints(save_dir: Path, keep: int) -> None:
    numbered = sorted(
        (p for p in save_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint_\d+", p.name)),
        key=lambda p: int(p.name.split("_")[1]),
    )
    for old in numbered[: max(0, len(numbered) - keep)]:
        shutil.rmtree(old)


def _link_copy(source: Path, target: Path) -> None:
    """Publish a checkpoint under another name: hard links (files are never modified in place), atomically."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for file in source.iterdir():
        try:
            os.link(file, tmp / file.name)
        except OSError:
            shutil.copy2(file, tmp / file.name)
    replace_dir(tmp, target)


def train(run: TrainConfig, model_args: dict[str, Any], log: Callable[[str], None] = print) -> TrainResult:
    """Train a language model; ``model_args`` are the model flags the user gave (others keep defaults)."""
    run.validate()
    save_dir = Path(run.save_dir)
    corpus = load_corpus(run.data, run.split_fractions)
    torch.manual_seed(run.seed)
    source, source_flag = _resume_source(run)
    trainer_state = None
    if source is not None:
        flag = "--restore-file" if source_flag == "--restore-file" else "--save-dir"
        ckpt = load_checkpoint(source, flag, expected_type=LM_MODEL_TYPE, with_trainer_state=True)
        log(f"| loading {source} ({source_flag})")
        tokenizer = ckpt.tokenizer
        config = _model_config_for_resume(ckpt.config, model_args, source)
        model = build_model(config, ckpt.state_dict, LM_MODEL_TYPE, str(source), log)
        if model.cfg.decoder_kept_layers != ckpt.config.decoder_kept_layers:
            log("| the model was pruned at load: optimizer and schedule start fresh")
        elif run.reset_optimizer and source_flag == "--restore-file":
            log("| --reset-optimizer: optimizer and schedule start fresh")
        else:
            trainer_state = ckpt.trainer_state
    else:
        tokenizer = build_tokenizer(run.tokenizer, corpus.split("train"), run.bpe_vocab_size)
        config = TransformerLMConfig(**{**model_args, "vocab_size": len(tokenizer)})
        model = build_model(config, None, LM_MODEL_TYPE, "model flags", log)
    model.train()
    config = model.cfg
    context = config.tokens_per_sample
    train_tokens = encode_tensor(tokenizer, corpus.split("train"))
    valid_tokens = encode_tensor(tokenizer, corpus.texts["valid"]) if corpus.texts.get("valid") else None

    optimizer = make_optimizer(model, run)
    start_update, best_valid = 0, None
    if trainer_state is not None:
        optimizer.load_state_dict(trainer_state["optimizer"])
        start_update = int(trainer_state["update"])
        best_valid = trainer_state.get("best_valid_loss")
        log(f"| resuming at update {start_update}")

    log(f"| model: {config.decoder_layers} layers, width {config.decoder_embed_dim}, vocab {config.vocab_size} ({tokenizer.kind})")
    log(f"num. model params: {num_params(model)}")
    for layers in layerdrop_lists(model):
        expected = sum(1 - p for p in layers.drop_rates)
        log(f"| LayerDrop {layers.name}: p={layers.drop_rates[0] if len(set(layers.drop_rates)) == 1 else layers.drop_rates}, "
            f"expected {expected:.1f} of {len(layers)} layers run per update ({1 - expected / len(layers):.0%} of layer compute skipped)")
    log(f"| data: {corpus.source}: {train_tokens.numel():,} train tokens"
        + (f", {valid_tokens.numel():,} valid tokens" if valid_tokens is not None else ", no valid split"))

    save_dir.mkdir(parents=True, exist_ok=True)
    log_path = save_dir / LOG_FILE
    _truncate_log(log_path, start_update)
    run_json = dataclasses.asdict(run)
    if run.data:  # so `layerdrop eval` finds the corpus from any working directory
        run_json["data"] = str(Path(run.data).resolve())

    def save(update: int, valid_loss: float | None) -> None:
        nonlocal best_valid
        is_best = valid_loss is not None and (best_valid is None or valid_loss < best_valid)
        if is_best:
            best_valid = valid_loss
        state = {"update": update, "optimizer": optimizer.state_dict(), "best_valid_loss": best_valid}
        written = save_checkpoint(save_dir / "checkpoint_last", LM_MODEL_TYPE, config, model.state_dict(), tokenizer, state, run_json)
        if run.keep_interval_updates > 0 and valid_loss is not None:
            _link_copy(written, save_dir / f"checkpoint_{update}")
            _prune_old_checkpoints(save_dir, run.keep_interval_updates)
        if is_best:
            _link_copy(written, save_dir / "checkpoint_best")

    tokens_per_update = run.batch_size * context
    train_loss = valid_loss = None
    smoothed = None
    seconds = 0.0
    # Redirected output (CI, make demo > log) gets a bar redrawn every 30 s, not ten times a second.
    bar = tqdm(total=run.max_update, initial=start_update, disable=run.no_progress_bar, dynamic_ncols=True, unit="upd",
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    stopped_by = None
    update = start_update
    with StopSignal() as stop, open(log_path, "a") as log_file:
        while update < run.max_update:
            started = time.perf_counter()
            set_layerdrop_step(model, update, run.seed)
            torch.manual_seed(derive_seed(run.seed, update, _DROPOUT_STREAM))
            batch_rng = torch.Generator().manual_seed(derive_seed(run.seed, update, _BATCH_STREAM))
            inputs, targets = random_batch(train_tokens, run.batch_size, context, batch_rng, "train split")
            lr = learning_rate(update, run)
            for group in optimizer.param_groups:
                group["lr"] = lr
            _, loss = model(inputs, targets)
            loss.backward()
            if run.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), run.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            update += 1
            elapsed = time.perf_counter() - started
            seconds += elapsed
            train_loss = loss.item()
            smoothed = train_loss if smoothed is None else 0.9 * smoothed + 0.1 * train_loss
            ran = sum(len(layers.last_kept) for layers in layerdrop_lists(model))
            total = sum(len(layers) for layers in layerdrop_lists(model))
            log_file.write(json.dumps({"update": update, "loss": train_loss, "lr": lr, "layers": ran,
                                       "ms": round(elapsed * 1000, 3)}) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{smoothed:.3f}", ppl=f"{math.exp(min(smoothed, 50)):.1f}",
                            tok_s=f"{tokens_per_update / elapsed:,.0f}", layers=f"{ran}/{total}", refresh=False)
            if run.no_progress_bar and (update % 100 == 0 or update == run.max_update):
                log(f"| update {update:>6} | loss {smoothed:.3f} | lr {lr:.2e} | {tokens_per_update / elapsed:,.0f} tok/s | layers {ran}/{total}")
            if update % run.validate_interval_updates == 0 or update == run.max_update:
                if valid_tokens is not None:
                    result = evaluate_lm(model, valid_tokens, context, run.batch_size, run.max_valid_steps, "valid split")
                    valid_loss = result.loss
                    bar.write(f"| valid at update {update}: loss {valid_loss:.4f} | ppl {result.perplexity:.2f}")
                log_file.flush()
                save(update, valid_loss)
            if stop.received is not None:
                stopped_by = signal.Signals(stop.received).name
                log_file.flush()
                save(update, None)
                break
    bar.close()
    result = TrainResult(update, train_loss, valid_loss, best_valid, seconds,
                         tokens_per_update * (update - start_update) / seconds if seconds else 0.0, save_dir, stopped_by)
    if stopped_by:
        log(f"| stopped by {stopped_by} at update {update}; saved {save_dir / 'checkpoint_last'}; run the same command to resume")
    return result
