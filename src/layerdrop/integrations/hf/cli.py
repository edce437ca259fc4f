"""``layerdrop hf prune``: write a Hugging Face model directory holding only the kept layers.

(``layerdrop hf select`` and ``layerdrop hf sweep`` are the native commands with :class:`TextScorer`.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from layerdrop.errors import UserError
from layerdrop.integrations.hf.families import family_of, layer_lists
from layerdrop.integrations.hf.pruning import KEPT_FIELD, prune
from layerdrop.integrations.hf.scoring import load_model
from layerdrop.output_paths import check_new_directory, write_failed
from layerdrop.pruning.indices import parse_layers_to_keep


def keep_request(args: argparse.Namespace, stacks: list[str]) -> dict:
    """The keep lists the flags ask for, by stack: --layers-to-keep names the only stack."""
    keep = {s: v for s, v in (("encoder", args.encoder_layers_to_keep), ("decoder", args.decoder_layers_to_keep))
            if v is not None}
    if args.layers_to_keep is not None:
        if keep:
            raise UserError("--layers-to-keep: given with a per-stack keep list; valid: one or the other")
        if len(stacks) > 1:
            raise UserError(f"--layers-to-keep: the model has {' and '.join(stacks)} layers; valid: "
                            "--encoder-layers-to-keep and/or --decoder-layers-to-keep")
        keep[stacks[0]] = args.layers_to_keep
    unknown = [s for s in keep if s not in stacks]
    if unknown:
        raise UserError(f"--{unknown[0]}-layers-to-keep: the model has no {unknown[0]}; valid stacks: {', '.join(stacks)}")
    if not keep:
        raise UserError("hf prune: no keep list given; valid: --layers-to-keep 0,2,4 (encoder-decoders: "
                        "--encoder-layers-to-keep / --decoder-layers-to-keep)")
    return keep


def copy_tokenizer(source: Path, out: Path) -> None:
    """The model's tokenizer, when it has one, saved beside the pruned weights (so select and sweep work on it)."""
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        print(f"| {source} has no tokenizer to copy")
        return
    tokenizer.save_pretrained(out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prune_command(args: argparse.Namespace) -> int:
    source, out = Path(args.model), Path(args.out).resolve()
    if not source.is_dir():
        raise UserError(f"--model: {args.model!r} is not a directory; valid: a model directory written by save_pretrained")
    check_new_directory(args.out, args.model, "--model")
    model = load_model(args.model, for_scoring=False)
    stacks = list(family_of(model).stacks)
    counts = {stack: len(layers) for stack, layers in layer_lists(model).items()}
    keep = {stack: parse_layers_to_keep(value, counts[stack], "--layers-to-keep" if args.layers_to_keep is not None
                                        and len(stacks) == 1 else f"--{stack}-layers-to-keep")
            for stack, value in keep_request(args, stacks).items()}
    before = sum(p.numel() for p in model.parameters())
    pruned = prune(model, keep)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        raise write_failed(out, "--out", error) from None
    try:
        pruned.save_pretrained(staging)
        copy_tokenizer(source, staging)
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private to this user
        staging.rename(out)  # the directory appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = {stack: len(layers) for stack, layers in layer_lists(pruned).items()}
    print(f"num. model params: {before} (before)\nnum. model params: {sum(p.numel() for p in pruned.parameters())} (after)")
    print(f"| wrote {out}: layers {counts}; original layers kept {getattr(pruned.config, KEPT_FIELD)}")
    return 0
