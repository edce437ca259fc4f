"""The ``layerdrop`` command: train, eval, prune, generate, and the layer analyses select, sweep, importance.

Flags keep fairseq's names and meaning (``--decoder-layerdrop``, ``--decoder-layers-to-keep``,
``--model-overrides``, ``--restore-file``, ``--path``, ``--save-dir``, ...). Model and run flags are
generated from the config dataclasses, one flag per field.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from layerdrop.checkpoint import load_checkpoint, load_model, parse_overrides, save_checkpoint
from layerdrop.config import MAX_SIZE, check_field_types, flag_name, shorten
from layerdrop.errors import UserError
from layerdrop.output_paths import check_new_directory, check_output_path, write_failed
from layerdrop.models import (
    ENCODER_MODEL_TYPE, LM_MODEL_TYPE, TRANSLATION_MODEL_TYPE, TransformerEncoderConfig, TransformerLMConfig, TransformerTranslationConfig,
    num_params,
)
from layerdrop.pruning import apply_layers_to_keep
from layerdrop.distributed import close, world_from_env
from layerdrop.train import TrainConfig, train

MODEL_CONFIGS = {"lm": TransformerLMConfig, "masked_lm": TransformerEncoderConfig,
                 "classification": TransformerEncoderConfig, "translation": TransformerTranslationConfig}
KEEP_FLAGS = tuple(f"{stack}_{what}" for stack in ("encoder", "decoder") for what in (
    "layers_to_keep", "heads_to_keep", "attention_layers_to_keep", "ffn_layers_to_keep", "ffn_halves_to_keep"))
_TYPES = {"int": int, "float": float, "str": str}


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, only: set[str] | None = None, seen: set[str] | None = None) -> None:
    """One flag per CLI field of ``config_class``; defaults stay None so we know what the user gave."""
    seen = set() if seen is None else seen
    for f in dataclasses.fields(config_class):
        if not f.metadata.get("cli", True) or (only is not None and f.name not in only) or f.name in seen:
            continue
        seen.add(f.name)
        help_text = f"{f.metadata['help']} (default: {f.default})"
        base = str(f.type).split("|")[0].strip()
        if base == "bool" and f.name.startswith("no_"):  # already a negation (--no-progress-bar): a switch
            parser.add_argument(flag_name(f.name), action="store_const", const=True, default=None, help=help_text)
        elif base == "bool":  # --x and --no-x both, so a command can state either choice whatever the default
            parser.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag_name(f.name), type=_TYPES.get(base, str), default=None, metavar=f.name.upper(), help=help_text)


def given(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if getattr(args, f.name, None) is not None}


def keep_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in KEEP_FLAGS if getattr(args, name, None) is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    run = TrainConfig(**given(args, TrainConfig))
    run.validate()
    config_class = MODEL_CONFIGS[run.task]
    model_args = given(args, config_class)
    other = {name for cls in MODEL_CONFIGS.values() for name in given(args, cls)} - set(model_args)
    if other:
        raise UserError(f"{', '.join(sorted(flag_name(n) for n in other))}: not a setting of --task {run.task}")
    # Model flags are checked now, before any data is read; the vocabulary is a stand-in until the tokenizer exists.
    check_field_types(config_class, model_args)
    config_class(**{**model_args, "vocab_size": MAX_SIZE}).validate()
    world = world_from_env()  # under torchrun: one data-parallel rank of WORLD_SIZE
    try:
        result = train(run, model_args, print if world.is_main else (lambda _: None), world)
    finally:
        close(world)
    if not world.is_main:
        return 0 if not result.stopped_by else 130
    valid = result.valid or {}
    best = "best valid" if result.best_metric == "loss" else f"best {result.best_metric}"
    extra = "valid ppl" if "ppl" in valid or result.best_metric == "loss" else f"valid {result.best_metric}"
    _print_table(
        ["update", "train loss", "valid loss", best, extra, "train time", "tokens/s"],
        [[result.update, _fmt(result.train_loss), _fmt(valid.get("loss")), _fmt(result.best_valid_loss),
          _fmt(valid.get("ppl", valid.get(result.best_metric)), 2), f"{result.seconds:.0f}s", f"{result.tokens_per_second:,.0f}"]],
    )
    if result.stopped_by:
        return 143 if result.stopped_by == "SIGTERM" else 130
    return 0


def _load_for_inference(args: argparse.Namespace, log=print):
    return load_model(args.path, "--path", parse_overrides(args.model_overrides), log=log, flag_overrides=keep_flags(args))


def _positive(value: int | None, flag: str, allow_none: bool = True, maximum: int = MAX_SIZE) -> None:
    if value is None and allow_none:
        return
    if value is None or not 1 <= value <= maximum:
        raise UserError(f"{flag}: got {shorten(value)}; valid: an integer from 1 to {maximum:,}")


def _finite(value: float, flag: str, minimum: float, valid: str) -> None:
    if not (math.isfinite(value) and value >= minimum):
        raise UserError(f"{flag}: got {value!r}; valid: {valid}")


def _cmd_eval(args: argparse.Namespace) -> int:
    _positive(args.batch_size, "--batch-size", allow_none=False)
    _positive(args.max_valid_steps, "--max-valid-steps")
    _positive(args.beam, "--beam", allow_none=False, maximum=1000)
    _finite(args.lenpen, "--lenpen", 0.0, "a finite number >= 0")
    if args.mask_prob is not None and not 0 < args.mask_prob < 1:
        raise UserError(f"--mask-prob: got {args.mask_prob}; valid: a number in (0, 1)")
    if args.json:
        check_output_path(args.json, "--json")
    model, ckpt = _load_for_inference(args)
    if args.mask_prob is not None and (ckpt.model_type != ENCODER_MODEL_TYPE or model.cfg.num_classes):
        raise UserError(f"--mask-prob: only masked-LM checkpoints are scored with masking; {args.path} is not one")
    print(f"num. model params: {num_params(model)}")
    if ckpt.model_type == TRANSLATION_MODEL_TYPE:
        return _eval_translation(args, model, ckpt)
    if ckpt.model_type == ENCODER_MODEL_TYPE:
        return _eval_encoder(args, model, ckpt)
    return _eval_lm(args, model, ckpt)


def _eval_encoder(args: argparse.Namespace, model, ckpt) -> int:
    run = ckpt.run or {}
    data = args.data if args.data is not None else run.get("data")
    layers = model.cfg.encoder_layers
    if model.cfg.num_classes:
        return _eval_glue(args, model, ckpt, data)
    from layerdrop.tasks.masked_lm import MaskedLMTask, evaluate_masked_lm

    task = MaskedLMTask(TrainConfig(task="masked_lm", data=data, split_fractions=run.get("split_fractions", "0.9,0.05,0.05"),
                                    mask_prob=args.mask_prob or run.get("mask_prob", 0.15)))
    task.config, task.block = model.cfg, model.cfg.tokens_per_sample - 1
    stream = task.stream(ckpt.tokenizer, task.corpus.split(args.split))
    start = time.perf_counter()
    metrics = evaluate_masked_lm(task, model, stream, args.batch_size, args.max_valid_steps)
    _print_table(["checkpoint", "split", "layers", "masked-LM loss", "ppl", "tokens/s"],
                 [[str(args.path), args.split, layers, f"{metrics['loss']:.4f}", f"{metrics['ppl']:.2f}",
                   f"{stream.numel() / (time.perf_counter() - start):,.0f}"]])
    _write_eval_json(args, model, {"masked_lm": {"loss": metrics["loss"], "ppl": metrics["ppl"]}})
    return 0


def _eval_glue(args: argparse.Namespace, model, ckpt, data: str | None) -> int:
    """Dev splits: the task's official metrics. Test splits (no labels): a predictions file for the GLUE server."""
    from layerdrop.data.glue import check_directory, load_glue, resolve_task
    from layerdrop.tasks.classification import encode_examples, evaluate_classifier, label_ids, metric_names, predict, report_skipped

    directory = check_directory(data)
    glue = resolve_task(directory, args.glue_task or model.cfg.glue_task)
    if model.cfg.glue_task and glue.name != model.cfg.glue_task:
        raise UserError(f"--glue-task/--data: {glue.name} files, but the model was fine-tuned on {model.cfg.glue_task}; "
                        f"valid: {model.cfg.glue_task} data")
    model.cfg.glue_task = glue.name  # a checkpoint from before tasks were recorded: score it by this task's metric
    if args.max_valid_steps is not None and args.split.startswith("test"):
        raise UserError(f"--max-valid-steps: the {args.split} split is written as a GLUE submission, which needs every row; "
                        "valid: omit --max-valid-steps")
    names = metric_names(model.cfg)
    header = ["checkpoint", "file", "layers", *names, "loss", "examples", "examples/s"]
    rows, results = [], {}
    for examples in load_glue(directory, args.split, glue.name):
        report_skipped(examples)
        keep = len(examples) if args.max_valid_steps is None else args.max_valid_steps * args.batch_size
        ids = encode_examples(ckpt.tokenizer, type(examples)(examples.texts[:keep], None), model.cfg)
        start = time.perf_counter()
        if examples.labels is None:
            predictions, _ = predict(model, ids, args.batch_size)
            submission = glue.submission[glue.test.index(examples.file.name)]
            path = _write_predictions(Path(args.predictions_dir) / submission, examples.ids[:keep], predictions, model.cfg)
            print(f"| {examples.file.name}: {len(predictions):,} predictions written to {path} (GLUE server format)")
            results[examples.file.name] = {"predictions": str(path), "examples": len(predictions)}
            continue
        labels = label_ids(model.cfg, type(examples)(examples.texts[:keep], examples.labels[:keep]), examples.file.name)
        metrics = evaluate_classifier(model, ids, labels, args.batch_size)
        seconds = time.perf_counter() - start
        rows.append([str(args.path), examples.file.name, model.cfg.encoder_layers, *(f"{metrics[n]:.2f}" for n in names),
                     f"{metrics['loss']:.4f}", len(labels), f"{len(labels) / seconds:,.0f}"])
        results[examples.file.name] = {**metrics, "examples": len(labels)}
    if rows:
        print(f"{glue.name} ({', '.join(names)}, in percent):")
        _print_table(header, rows)
    _write_eval_json(args, model, results, task=glue.name)
    return 0


def _write_predictions(path: Path, ids: list[str], predictions: list, config) -> Path:
    """``index<TAB>prediction`` with the label names (or scores) the GLUE server expects; written atomically."""
    if config.regression_range is not None:
        values = [f"{p:.3f}" for p in predictions]
    else:
        values = [config.label_names[p] for p in predictions]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("index\tprediction\n" + "".join(f"{i}\t{v}\n" for i, v in zip(ids, values)))
        os.replace(tmp, path)
    except OSError as error:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise UserError(f"--predictions-dir: cannot write {path} ({error.strerror})") from None
    return path


def _write_eval_json(args: argparse.Namespace, model, results: dict[str, Any], **extra: Any) -> None:
    """--json OUT: what eval printed, for scripts (split, metrics by file or kind, kept layers, parameters)."""
    if not args.json:
        return
    from layerdrop.analysis.report import write_json

    cfg = model.cfg
    kept = {s: getattr(cfg, f"{s}_kept_layers", None) or list(range(getattr(cfg, f"{s}_layers")))
            for s in ("encoder", "decoder") if hasattr(cfg, f"{s}_layers")}
    payload = {"checkpoint": str(args.path), "split": args.split, **extra, "results": results, "kept_layers": kept,
               "parameters": num_params(model)}
    try:
        write_json(payload, Path(args.json))
    except OSError as error:
        raise UserError(f"--json: cannot write {args.json!r} ({error.strerror})") from None
    print(f"| wrote {args.json}")


def _eval_lm(args: argparse.Namespace, model, ckpt) -> int:
    from layerdrop.data.corpus import load_corpus
    from layerdrop.data.tokenizers import encode_tensor
    from layerdrop.evaluate import evaluate_lm

    run = ckpt.run or {}
    data = args.data if args.data is not None else run.get("data")
    corpus = load_corpus(data, run.get("split_fractions", "0.9,0.05,0.05"))
    tokens = encode_tensor(ckpt.tokenizer, corpus.split(args.split))
    result = evaluate_lm(model, tokens, model.cfg.tokens_per_sample, args.batch_size, args.max_valid_steps, f"{args.split} split")
    _print_table(
        ["checkpoint", "split", "layers", "loss", "ppl", "tokens", "tokens/s"],
        [[str(args.path), args.split, model.cfg.decoder_layers, f"{result.loss:.4f}", f"{result.perplexity:.2f}",
          f"{result.tokens:,}", f"{result.tokens_per_second:,.0f}"]],
    )
    _write_eval_json(args, model, {"lm": {"loss": result.loss, "ppl": result.perplexity, "tokens": result.tokens}})
    return 0


def _eval_translation(args: argparse.Namespace, model, ckpt) -> int:
    import sacrebleu

    from layerdrop.data.parallel import load_parallel
    from layerdrop.tasks.translation import translate

    run = ckpt.run or {}
    data = args.data if args.data is not None else run.get("data")
    corpus = load_parallel(data, run.get("source_lang", "de"), run.get("target_lang", "en"), args.test_subset, need_train=False)
    sources, references = corpus.split(args.split)
    if args.max_valid_steps is not None:
        sources, references = sources[: args.max_valid_steps * args.batch_size], references[: args.max_valid_steps * args.batch_size]
    start = time.perf_counter()
    hypotheses = translate(model, ckpt.tokenizer, sources, args.beam, args.lenpen, args.batch_size, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    _print_table(
        ["checkpoint", "split", "enc layers", "dec layers", "beam", "BLEU", "sentences", "sentences/s"],
        [[str(args.path), args.split, model.cfg.encoder_layers, model.cfg.decoder_layers, args.beam, f"{bleu.score:.2f}",
          len(sources), f"{len(sources) / seconds:,.1f}"]],
    )
    print(f"| {bleu}")
    _write_eval_json(args, model, {"translation": {"bleu": bleu.score, "sentences": len(sources), "beam": args.beam}})
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    keep = keep_flags(args)
    if not keep:
        raise UserError("prune: no keep list given; valid: --decoder-layers-to-keep 0,2,4 (and/or --encoder-layers-to-keep), "
                        "or a unit flag such as --decoder-heads-to-keep 0,2")
    check_new_directory(args.out, args.path, "--path")
    out = Path(args.out).resolve()
    ckpt = load_checkpoint(args.path, "--path", flag_overrides=keep)
    print(f"num. model params: {sum(t.numel() for t in ckpt.state_dict.values())} (before)")
    ckpt.config.validate()
    config, state_dict = apply_layers_to_keep(ckpt.config, ckpt.state_dict)
    written = save_checkpoint(out, ckpt.model_type, config, state_dict, ckpt.tokenizer, run=ckpt.run)
    print(f"num. model params: {sum(t.numel() for t in state_dict.values())}")
    notes = [f"{s} keeps original layers {getattr(config, f'{s}_kept_layers')}" for s in ("encoder", "decoder")
             if getattr(config, f"{s}_kept_layers", None)]
    notes += [f"{s} units pruned: {getattr(config, f'{s}_pruned_units')}" for s in ("encoder", "decoder")
              if getattr(config, f"{s}_pruned_units", None)]
    print(f"| wrote {written}: " + "; ".join(notes))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    _positive(args.max_new_tokens, "--max-new-tokens", allow_none=False)
    _positive(args.top_k, "--top-k")
    _positive(args.beam, "--beam", allow_none=False, maximum=1000)
    _finite(args.temperature, "--temperature", 0.0, "0 (greedy) or a finite number above it")
    _finite(args.lenpen, "--lenpen", 0.0, "a finite number >= 0")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed: got {shorten(args.seed)}; valid: an integer from 0 to 2**63 - 1")
    # Only the generated text goes to stdout, so it can be piped; notes go to stderr.
    note = lambda message: print(message, file=sys.stderr)
    model, ckpt = _load_for_inference(args, log=note)
    start = time.perf_counter()
    if ckpt.model_type == TRANSLATION_MODEL_TYPE:
        from layerdrop.tasks.translation import translate

        lines = _read_input(args.input)
        for line in translate(model, ckpt.tokenizer, lines, args.beam, args.lenpen):
            print(line)
        note(f"| {len(lines)} sentences in {time.perf_counter() - start:.2f}s, beam {args.beam}, "
             f"{model.cfg.encoder_layers} encoder / {model.cfg.decoder_layers} decoder layers")
        return 0
    if ckpt.model_type != LM_MODEL_TYPE:
        raise UserError(f"--path: {args.path!r} holds a {ckpt.model_type!r} model; generate needs a "
                        f"{LM_MODEL_TYPE!r} or {TRANSLATION_MODEL_TYPE!r} checkpoint")
    from layerdrop.generate import generate

    prompt = ckpt.tokenizer.encode(args.prompt)
    if ckpt.tokenizer.kind == "word" and prompt and prompt[-1] == ckpt.tokenizer.eos_id:
        prompt = prompt[:-1]  # a prompt is the start of a line, not a finished one
    unknown = prompt.count(getattr(ckpt.tokenizer, "unk_id", None))
    if unknown:
        shown = " (printed as ?)" if ckpt.tokenizer.kind == "char" else ""
        note(f"| --prompt: {unknown} of its {len(prompt)} tokens are not in the model's vocabulary; they became <unk>{shown}")
    out = generate(model, prompt, args.max_new_tokens, args.temperature, args.top_k, torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - start
    print(ckpt.tokenizer.decode(prompt + out))
    note(f"| {len(out)} tokens in {seconds:.2f}s ({len(out) / seconds:,.0f} tokens/s), {model.cfg.decoder_layers} layers")
    return 0


def _hf(module: str):
    """A module of the Hugging Face integration, or one clear message when transformers is missing."""
    import importlib

    try:
        import transformers
    except ImportError as error:
        raise UserError(f"needs transformers ({error}); valid: pip install 'layerdrop[hf]'") from None
    transformers.utils.logging.disable_progress_bar()  # one line per result, as the native commands print
    return importlib.import_module(f"layerdrop.integrations.hf.{module}")


def _scorer(args: argparse.Namespace, path: str):
    from layerdrop.analysis.scoring import Scorer

    _positive(args.batch_size, "--batch-size")
    _positive(args.max_valid_steps, "--max-valid-steps")
    if getattr(args, "hf", False):
        _positive(args.block_size, "--block-size")
        return _hf("scoring").TextScorer(path, args.data, args.stack, args.block_size, args.batch_size, args.max_valid_steps)
    return Scorer(path, args.data, args.batch_size, args.max_valid_steps, args.stack, keep_flags(args))


def _result_paths(prefix: str) -> tuple[Path, Path]:
    """An analysis leaves PREFIX.json (the numbers) and PREFIX.png (the plot); both are checked before it runs."""
    base = Path(prefix)
    if not base.name or base.name in (".", ".."):
        raise UserError(f"--out: got {prefix!r}; valid: a file prefix such as results/sweep")
    paths = base.with_name(base.name + ".json"), base.with_name(base.name + ".png")
    for path in paths:
        check_output_path(path, "--out")
    return paths


def _write_result(result: dict[str, Any], prefix: str, plot) -> int:
    from layerdrop.analysis.report import write_json

    json_path, png_path = _result_paths(prefix)
    for path, write in ((json_path, write_json), (png_path, plot)):
        try:
            write(result, path)
        except OSError as error:
            raise write_failed(path, "--out", error) from None
    print(f"| wrote {json_path} and {png_path}")
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from layerdrop.analysis.report import write_json
    from layerdrop.analysis.strategies import select_layers

    from layerdrop.analysis.scoring import check_depth

    _positive(args.budget, "--budget")
    _positive(args.search_beam, "--search-beam", maximum=1000)
    if args.out:
        check_output_path(args.out, "--out")
    scorer = _scorer(args, args.path)
    check_depth(args.depth, scorer.num_layers)
    full = scorer.score(None)
    selection = select_layers(scorer, args.depth, args.strategy, args.budget, args.search_beam)
    method = selection.details.get("method", "")
    _print_table(
        ["strategy", f"{scorer.stack} layers", "keep", scorer.metric.name, f"at full depth ({scorer.num_layers})", "subsets scored"],
        [[args.strategy + (f" ({method})" if method else ""), selection.depth, ",".join(map(str, scorer.numbered(selection.keep))),
          f"{selection.score:.4f}", f"{full:.4f}", selection.evaluated or "-"]],
    )
    kept = ",".join(map(str, scorer.numbered(selection.keep)))
    if getattr(args, "hf", False):
        flag = "--layers-to-keep" if scorer.describe()["model_type"] != "bart" else f"--{scorer.stack}-layers-to-keep"
        print(f"| keep with: layerdrop hf prune --model {args.path} {flag} {kept} --out DIR")
    else:
        print(f"| keep with: --{scorer.stack}-layers-to-keep {kept}")
    if args.out:
        result = {**scorer.describe(), "strategy": args.strategy, "depth": selection.depth, "keep": scorer.numbered(selection.keep),
                  "score": selection.score, "full_depth_score": full, "subsets_scored": selection.evaluated,
                  "details": selection.details}
        try:
            write_json(result, Path(args.out))
        except OSError as error:
            raise write_failed(Path(args.out), "--out", error) from None
        print(f"| wrote {args.out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from layerdrop.analysis.report import plot_sweep
    from layerdrop.analysis.sweep import parse_depths, sweep

    _positive(args.budget, "--budget")
    _positive(args.search_beam, "--search-beam", maximum=1000)
    depths = parse_depths(args.depths)
    _result_paths(args.out)
    scorers = [_scorer(args, path) for path in args.path]
    result = sweep(scorers, depths, args.strategy, args.budget, args.search_beam)
    header = ["checkpoint"] + [f"{d} layer{'s' if d > 1 else ''}" for d in depths]
    rows = [[run["label"]] + [f"{p['score']:.4f}" for p in run["points"]] for run in result["runs"]]
    print(f"{result['metric']} ({'higher' if result['higher_is_better'] else 'lower'} is better), "
          f"{result['stack']} pruned by {args.strategy}:")
    _print_table(header, rows)
    return _write_result(result, args.out, plot_sweep)


def _cmd_importance(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from layerdrop.analysis.importance import layer_importance
    from layerdrop.analysis.report import plot_importance

    _positive(args.samples, "--samples", maximum=100_000)
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed: got {shorten(args.seed)}; valid: an integer from 0 to 2**63 - 1")
    _result_paths(args.out)
    scorer = _scorer(args, args.path)
    progress = lambda items: tqdm(items, desc="scoring subsets", unit="subset", disable=not sys.stderr.isatty())
    result = layer_importance(scorer, args.depth, args.samples, args.seed, progress)
    print(f"{result['samples']} random {args.depth}-layer subsets of {scorer.num_layers} {scorer.stack} layers, "
          f"{scorer.metric.name} at full depth {result['full_depth_score']:.4f}:")
    _print_table(["layer", "importance", "relative"],
                 [[l, _fmt(v), _fmt(r, 2)] for l, v, r in zip(scorer.layer_numbers, result["importance"], result["relative_importance"])])
    return _write_result(result, args.out, plot_importance)


def _analysis_flags(parser: argparse.ArgumentParser) -> None:
    _keep_flags(parser)  # analyse a pruned model: e.g. the layers of a head-pruned one
    parser.add_argument("--data", default=None, help="validation data (default: what the checkpoint was trained on)")
    parser.add_argument("--stack", choices=("decoder", "encoder"), default=None,
                        help="which stack to prune (default: the decoder; an encoder model's encoder)")
    parser.add_argument("--batch-size", type=int, default=None, help="validation batch size (default: the training one)")
    parser.add_argument("--max-valid-steps", type=int, default=None, help="score on at most this many validation batches")


def _strategy_flags(parser: argparse.ArgumentParser, default: str | None, learned: bool = True) -> None:
    from layerdrop.analysis.strategies import STRATEGIES

    choices = [s for s in STRATEGIES if learned or s != "learned"]  # Hugging Face models have no learned gates
    parser.add_argument("--strategy", choices=choices, default=default, required=default is None,
                        help=f"{', '.join(choices[:-1])} or {choices[-1]} (search: on the validation set)")
    parser.add_argument("--budget", type=int, default=256, help="search: score every subset while there are at most this many")
    parser.add_argument("--search-beam", type=int, default=1, help="search beyond the budget: beam width (1: greedy)")


def _read_input(path: str) -> list[str]:
    if path == "-":
        try:
            return [line.rstrip("\n") for line in sys.stdin]
        except UnicodeDecodeError as error:
            raise UserError(f"--input: standard input is not UTF-8 text ({error})") from None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\n").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--input: cannot read {path!r} ({error}); valid: a UTF-8 text file, one sentence per line, or -") from None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _print_table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))


def _keep_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, TransformerTranslationConfig, set(KEEP_FLAGS))


def _inference_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", required=True, help="checkpoint directory")
    _keep_flags(parser)
    parser.add_argument("--model-overrides", default=None,
                        help="override stored model config at load time, e.g. \"{'decoder_layers_to_keep':'0,2,4'}\"")
    parser.add_argument("--beam", type=int, default=5, help="translation: beam size (1: greedy)")
    parser.add_argument("--lenpen", type=float, default=1.0, help="translation: length penalty (score / length**lenpen)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake gets one line (with long values shortened) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {shorten(message, 300)[1:-1] if len(message) > 300 else message} "
                     f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="layerdrop", description="Train Transformers with LayerDrop; prune them to any depth.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("train", help="train a model (resumes from SAVE_DIR/checkpoint_last when present)")
    add_config_flags(p, TrainConfig)
    seen: set[str] = set()
    for config_class in MODEL_CONFIGS.values():
        add_config_flags(p, config_class, seen=seen)
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("eval", help="LM: loss, perplexity, speed; translation: BLEU; GLUE: the task's official metric")
    _inference_flags(p)
    p.add_argument("--data", default=None, help="corpus (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="valid", help="train, valid (or dev) or test; GLUE: dev, and for MNLI dev_matched / "
                   "dev_mismatched; a GLUE test split writes predictions (default: valid)")
    p.add_argument("--glue-task", default=None, help="GLUE task of --data when the files do not tell (default: the model's, "
                   "or detected from the header)")
    p.add_argument("--predictions-dir", default=".", help="GLUE test splits: where TASK.tsv predictions go (default: .)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the metrics printed to this JSON file")
    p.add_argument("--test-subset", default=None, help="translation: test file stem when there are several (e.g. test_2016_flickr)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-valid-steps", type=int, default=None, help="evaluate at most this many batches")
    p.add_argument("--mask-prob", type=float, default=None, help="masked LM: share of tokens masked when scoring, so "
                   "models trained at different rates compare on one footing (default: the checkpoint's)")
    p.set_defaults(func=_cmd_eval)

    p = commands.add_parser("prune", help="write a smaller checkpoint holding only the kept layers")
    p.add_argument("--path", required=True, help="checkpoint directory to prune")
    _keep_flags(p)
    p.add_argument("--out", required=True, help="new directory for the pruned checkpoint")
    p.set_defaults(func=_cmd_prune)

    p = commands.add_parser("generate", help="LM: sample text after --prompt; translation: translate --input")
    _inference_flags(p)
    p.add_argument("--prompt", default="\n", help="LM: text to continue")
    p.add_argument("--input", default="-", help="translation: file with one sentence per line, or - for stdin")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_generate)

    p = commands.add_parser("select", help="choose K layers to keep with a pruning strategy; print them and their validation score")
    p.add_argument("--path", required=True, help="checkpoint directory")
    p.add_argument("--depth", type=int, required=True, help="number of layers to keep")
    _strategy_flags(p, None)
    _analysis_flags(p)
    p.add_argument("--out", default=None, help="also write the selection to this JSON file")
    p.set_defaults(func=_cmd_select)

    p = commands.add_parser("sweep", help="validation quality against depth for one or more checkpoints (table, JSON, PNG)")
    p.add_argument("--path", required=True, action="append", help="checkpoint directory (repeat to compare several)")
    p.add_argument("--depths", required=True, help="depths to score, e.g. 12,9,6,3")
    _strategy_flags(p, "every-other")
    _analysis_flags(p)
    p.add_argument("--out", default="sweep", help="writes OUT.json and OUT.png (default: sweep)")
    p.set_defaults(func=_cmd_sweep)

    p = commands.add_parser("importance", help="relative importance of each layer from random K-layer subsets (table, JSON, PNG)")
    p.add_argument("--path", required=True, help="checkpoint directory")
    p.add_argument("--depth", type=int, required=True, help="layers in each random subset")
    p.add_argument("--samples", type=int, default=20, help="number of random subsets")
    p.add_argument("--seed", type=int, default=1, help="seed for drawing the subsets")
    _analysis_flags(p)
    p.add_argument("--out", default="importance", help="writes OUT.json and OUT.png (default: importance)")
    p.set_defaults(func=_cmd_importance)
    _hf_commands(commands)
    return parser


def _hf_commands(commands) -> None:
    """``layerdrop hf prune|select|sweep``: the same analyses on Hugging Face model directories."""
    p = commands.add_parser("hf", help="Hugging Face models: prune, select, sweep (pip install 'layerdrop[hf]')")
    hf = p.add_subparsers(dest="hf_command", required=True, parser_class=_Parser)

    def scoring_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data", required=True, help="UTF-8 text file scored with the model's own tokenizer")
        q.add_argument("--stack", choices=("decoder", "encoder"), default=None,
                       help="which stack to prune (default: the decoder; BERT and RoBERTa: the encoder)")
        q.add_argument("--block-size", type=int, default=None, help="tokens per scored block (default: 128 or the model's positions)")
        q.add_argument("--batch-size", type=int, default=None, help="blocks per batch (default: 8)")
        q.add_argument("--max-valid-steps", type=int, default=None, help="score on at most this many batches")
        q.set_defaults(hf=True)

    q = hf.add_parser("prune", help="write a model directory (save_pretrained) holding only the kept layers")
    q.add_argument("--model", required=True, help="model directory (save_pretrained)")
    q.add_argument("--layers-to-keep", default=None, help="e.g. 0,2,4 (single-stack models)")
    q.add_argument("--encoder-layers-to-keep", default=None, help="encoder-decoders: the encoder's keep list")
    q.add_argument("--decoder-layers-to-keep", default=None, help="encoder-decoders: the decoder's keep list")
    q.add_argument("--out", required=True, help="new directory for the pruned model (and a copy of the tokenizer)")
    q.set_defaults(func=lambda args: _hf("cli").prune_command(args))

    q = hf.add_parser("select", help="choose K layers to keep with a pruning strategy, scored on --data")
    q.add_argument("--model", dest="path", required=True, help="model directory (save_pretrained, with its tokenizer)")
    q.add_argument("--depth", type=int, required=True, help="number of layers to keep")
    _strategy_flags(q, None, learned=False)
    scoring_flags(q)
    q.add_argument("--out", default=None, help="also write the selection to this JSON file")
    q.set_defaults(func=_cmd_select)

    q = hf.add_parser("sweep", help="loss on --data against depth for one or more models (table, JSON, PNG)")
    q.add_argument("--model", dest="path", required=True, action="append", help="model directory (repeat to compare several)")
    q.add_argument("--depths", required=True, help="depths to score, e.g. 12,8,6,4")
    _strategy_flags(q, "every-other", learned=False)
    scoring_flags(q)
    q.add_argument("--out", default="sweep", help="writes OUT.json and OUT.png (default: sweep)")
    q.set_defaults(func=_cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as error:
        print(f"layerdrop {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("layerdrop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
