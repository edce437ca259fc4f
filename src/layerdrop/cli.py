"""The ``layerdrop`` command: train, eval, prune, generate.

Flags keep fairseq's names and meaning (``--decoder-layerdrop``, ``--decoder-layers-to-keep``,
``--model-overrides``, ``--restore-file``, ``--path``, ``--save-dir``, ...). Model and run flags are
generated from the config dataclasses, one flag per field.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import torch

from layerdrop.checkpoint import keep_overrides, load_checkpoint, load_model, parse_overrides, save_checkpoint
from layerdrop.config import flag_name
from layerdrop.data.corpus import EMBEDDED_NAME, load_corpus
from layerdrop.data.tokenizers import encode_tensor
from layerdrop.errors import UserError
from layerdrop.evaluate import evaluate_lm
from layerdrop.models import LM_MODEL_TYPE, TransformerLMConfig, num_params
from layerdrop.pruning import apply_layers_to_keep
from layerdrop.train import TrainConfig, train

_TYPES = {"int": int, "float": float, "str": str}


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, only: set[str] | None = None) -> None:
    """One flag per CLI field of ``config_class``; defaults stay None so we know what the user gave."""
    for f in dataclasses.fields(config_class):
        if not f.metadata.get("cli", True) or (only is not None and f.name not in only):
            continue
        help_text = f"{f.metadata['help']} (default: {f.default})"
        base = str(f.type).split("|")[0].strip()
        if base == "bool" and f.default is False:
            parser.add_argument(flag_name(f.name), action="store_const", const=True, default=None, help=f.metadata["help"])
        elif base == "bool":
            parser.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag_name(f.name), type=_TYPES.get(base, str), default=None, metavar=f.name.upper(), help=help_text)


def given(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if getattr(args, f.name, None) is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    run = TrainConfig(**given(args, TrainConfig))
    result = train(run, given(args, TransformerLMConfig))
    _print_table(
        ["update", "train loss", "valid loss", "best valid", "valid ppl", "train time", "tokens/s"],
        [[result.update, _fmt(result.train_loss), _fmt(result.valid_loss), _fmt(result.best_valid_loss),
          _fmt(None if result.valid_loss is None else torch.tensor(result.valid_loss).exp().item(), 2),
          f"{result.seconds:.0f}s", f"{result.tokens_per_second:,.0f}"]],
    )
    if result.stopped_by:
        return 143 if result.stopped_by == "SIGTERM" else 130
    return 0


def _load_for_inference(args: argparse.Namespace, log=print):
    overrides = parse_overrides(args.model_overrides)
    overrides.update(keep_overrides(args, TransformerLMConfig))
    return load_model(args.path, "--path", overrides, expected_type=LM_MODEL_TYPE, log=log)


def _cmd_eval(args: argparse.Namespace) -> int:
    model, ckpt = _load_for_inference(args)
    run = ckpt.run or {}
    data = args.data if args.data is not None else run.get("data")
    corpus = load_corpus(data, run.get("split_fractions", "0.9,0.05,0.05"))
    tokens = encode_tensor(ckpt.tokenizer, corpus.split(args.split))
    context = model.cfg.tokens_per_sample
    print(f"num. model params: {num_params(model)}")
    result = evaluate_lm(model, tokens, context, args.batch_size, args.max_valid_steps, f"{args.split} split")
    _print_table(
        ["checkpoint", "split", "layers", "loss", "ppl", "tokens", "tokens/s"],
        [[str(args.path), args.split, model.cfg.decoder_layers, f"{result.loss:.4f}", f"{result.perplexity:.2f}",
          f"{result.tokens:,}", f"{result.tokens_per_second:,.0f}"]],
    )
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    keep = keep_overrides(args, TransformerLMConfig)
    if not keep:
        raise UserError("prune: no keep list given; valid: --decoder-layers-to-keep 0,2,4")
    ckpt = load_checkpoint(args.path, "--path", expected_type=LM_MODEL_TYPE)
    before = sum(t.numel() for t in ckpt.state_dict.values())
    print(f"num. model params: {before} (before)")
    config = dataclasses.replace(ckpt.config, **keep)
    config.validate()
    config, state_dict = apply_layers_to_keep(config, ckpt.state_dict)
    out = save_checkpoint(args.out, ckpt.model_type, config, state_dict, ckpt.tokenizer, run=ckpt.run)
    print(f"num. model params: {sum(t.numel() for t in state_dict.values())}")
    print(f"| wrote {out}: {config.decoder_layers} layers (original layers {config.decoder_kept_layers})")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from layerdrop.generate import generate

    # Only the generated text goes to stdout, so it can be piped; notes go to stderr.
    model, ckpt = _load_for_inference(args, log=lambda message: print(message, file=sys.stderr))
    prompt = ckpt.tokenizer.encode(args.prompt)
    if ckpt.tokenizer.kind == "word" and prompt and prompt[-1] == ckpt.tokenizer.eos_id:
        prompt = prompt[:-1]  # a prompt is the start of a line, not a finished one
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    out = generate(model, prompt, args.max_new_tokens, args.temperature, args.top_k, generator)
    seconds = time.perf_counter() - start
    print(args.prompt + ckpt.tokenizer.decode(out))
    print(f"| {len(out)} tokens in {seconds:.2f}s ({len(out) / seconds:,.0f} tokens/s), {model.cfg.decoder_layers} layers",
          file=sys.stderr)
    return 0


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))


def _keep_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, TransformerLMConfig, {"decoder_layers_to_keep"})


def _inference_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", required=True, help="checkpoint directory")
    _keep_flags(parser)
    parser.add_argument("--model-overrides", default=None,
                        help="override stored model config at load time, e.g. \"{'decoder_layers_to_keep':'0,2,4'}\"")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerdrop", description="Train Transformers with LayerDrop; prune them to any depth.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a model (resumes from SAVE_DIR/checkpoint_last when present)")
    add_config_flags(p, TrainConfig)
    add_config_flags(p, TransformerLMConfig)
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("eval", help="loss, perplexity and speed of a checkpoint on a split")
    _inference_flags(p)
    p.add_argument("--data", default=None, help="corpus (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="valid", help="train, valid or test (default: valid)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-valid-steps", type=int, default=None, help="evaluate at most this many batches")
    p.set_defaults(func=_cmd_eval)

    p = commands.add_parser("prune", help="write a smaller checkpoint holding only the kept layers")
    p.add_argument("--path", required=True, help="checkpoint directory to prune")
    _keep_flags(p)
    p.add_argument("--out", required=True, help="directory for the pruned checkpoint")
    p.set_defaults(func=_cmd_prune)

    p = commands.add_parser("generate", help="sample text from a language model")
    _inference_flags(p)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as error:
        print(f"layerdrop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerdrop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
