"""Quality sanity check against nanoGPT's CPU example.

nanoGPT's README trains Tiny Shakespeare at character level on a CPU with: 4 layers, 4 heads, width
128, context 64, batch 12, 2000 iterations, no dropout (lr 1e-3 decaying to 1e-4, warmup 100,
weight decay 0.1, betas (0.9, 0.99), no biases, 90/10 split), and reports validation loss 1.88.
This trains our p = 0 model with that configuration through the same `train()` the CLI uses,
evaluates the whole validation split, and records the median milliseconds per update.

Writes benchmarks/results/nanogpt_quality.json (with ``--amp bf16``: nanogpt_quality_bf16.json, the same
training under bf16 autocast, which nanoGPT's train.py does not do on a CPU). Usage:
python benchmarks/nanogpt_quality.py [--amp bf16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

from layerdrop.checkpoint import load_model
from layerdrop.data.corpus import load_corpus
from layerdrop.data.tokenizers import encode_tensor
from layerdrop.evaluate import evaluate_lm
from layerdrop.train import LOG_FILE, TrainConfig, train

RESULTS = Path(__file__).parent / "results" / "nanogpt_quality.json"
MODEL = dict(decoder_layers=4, decoder_attention_heads=4, decoder_embed_dim=128, decoder_ffn_embed_dim=512,
             tokens_per_sample=64, dropout=0.0, bias=False, decoder_layerdrop=0.0)
RUN = dict(max_update=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup_updates=100, weight_decay=0.1,
           adam_betas="(0.9, 0.99)", clip_norm=1.0, split_fractions="0.9,0.1,0", validate_interval_updates=2000,
           seed=1337, no_progress_bar=True)
NANOGPT = {"valid_loss": 1.88, "ms_per_iter_median": 45.0, "source": "nanoGPT README CPU example; timing measured on this machine"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amp", choices=("bf16",), default=None, help="train under bf16 autocast")
    args = parser.parse_args()
    run = {**RUN, **({"amp": args.amp} if args.amp else {})}
    results = RESULTS.with_name(f"nanogpt_quality_{args.amp}.json") if args.amp else RESULTS
    save_dir = Path(tempfile.mkdtemp(prefix="nanogpt_quality_"))
    try:
        train(TrainConfig(save_dir=str(save_dir), **run), MODEL, log=lambda _: None)
        milliseconds = [json.loads(line)["ms"] for line in (save_dir / LOG_FILE).read_text().splitlines()]
        model, ckpt = load_model(save_dir / "checkpoint_last", log=lambda _: None)
        valid = encode_tensor(ckpt.tokenizer, load_corpus(None, RUN["split_fractions"]).split("valid"))
        result = evaluate_lm(model, valid, MODEL["tokens_per_sample"], 64)
    finally:
        shutil.rmtree(save_dir, ignore_errors=True)
    out = {
        "benchmark": "nanogpt_quality",
        "model": MODEL, "run": run,
        "valid_loss": result.loss, "valid_tokens": result.tokens,
        "ms_per_update_median": statistics.median(milliseconds),
        "nanogpt": NANOGPT,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=2) + "\n")
    print(f"valid loss {result.loss:.3f} over {result.tokens:,} characters (nanoGPT: 1.88); "
          f"{out['ms_per_update_median']:.1f} ms per update, median (nanoGPT: 45 ms)")
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
