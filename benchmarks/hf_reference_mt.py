"""An independent LayerDrop reference: Hugging Face transformers' BART, trained from scratch on the
same batches, with the same optimizer, schedule and budget as a ``layerdrop train --task translation`` run.

Only the model and its LayerDrop come from transformers (``BartConfig(decoder_layerdrop=p)``: each
decoder layer is skipped when a draw from the global generator falls below p, as in fairseq). The data
pipeline is layerdrop's (same BPE tokenizer, same length-bucketed batches in the same order), so the
two runs differ in the model implementation alone. BART is post-LayerNorm with a LayerNorm on the
embeddings and N(0, 0.02) initialisation; it does not scale residual projections with depth.

    pip install "layerdrop[bench]"
    python benchmarks/hf_reference_mt.py --p 0.2 --seed 1 --out runs/hf_p0.2.json \\
        --data ../shared/data/multi30k-de-en

Writes a JSON with the validation loss (nats per target token, no label smoothing) every
``--validate-interval`` updates and the training loss of every update. About 12 minutes for 700
updates on one thread.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from layerdrop.seeding import derive_seed
from layerdrop.optim import learning_rate, make_optimizer
from layerdrop.tasks.translation import TranslationTask
from layerdrop.train import TrainConfig
from reference_training import optimizer_step, write_record


def build_bart(vocab_size: int, p: float, ids: dict[str, int], dropout: float):
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=vocab_size, d_model=256, encoder_layers=3, decoder_layers=6, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, activation_function="gelu",
        dropout=dropout, attention_dropout=0.0, activation_dropout=0.0, max_position_embeddings=256,
        decoder_layerdrop=p, encoder_layerdrop=0.0, pad_token_id=ids["pad_id"], bos_token_id=ids["bos_id"],
        eos_token_id=ids["eos_id"], decoder_start_token_id=ids["bos_id"], forced_eos_token_id=None,
        tie_word_embeddings=True, scale_embedding=False,
    )
    return BartForConditionalGeneration(config)


def logits_of(model, src: torch.Tensor, prev: torch.Tensor, pad_id: int) -> torch.Tensor:
    return model(input_ids=src, attention_mask=src.ne(pad_id), decoder_input_ids=prev,
                 decoder_attention_mask=prev.ne(pad_id)).logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="parallel corpus directory (train/val .de/.en)")
    parser.add_argument("--p", type=float, default=0.0, help="decoder_layerdrop")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-update", type=int, default=700)
    parser.add_argument("--validate-interval", type=int, default=175)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    run = TrainConfig(task="translation", data=args.data, bpe_vocab_size=8000, batch_size=64, seed=args.seed,
                      max_update=args.max_update, lr=args.lr, min_lr=1e-4, warmup_updates=150, label_smoothing=0.1)
    task = TranslationTask(run)
    tokenizer = task.build_tokenizer()
    config = task.new_config({}, tokenizer)
    task.prepare(tokenizer, config)
    torch.manual_seed(args.seed)
    model = build_bart(len(tokenizer), args.p, tokenizer.special_ids(), args.dropout)
    optimizer = make_optimizer(model, run.lr, run.weight_decay, (0.9, 0.99))
    pad = config.pad_id

    @torch.no_grad()
    def validate() -> float:
        model.eval()
        total, tokens = 0.0, 0
        src_all, tgt_all = task.valid
        for start in range(0, len(src_all), 64):
            src, prev, target = task.batch(src_all[start:start + 64], tgt_all[start:start + 64])
            logits = logits_of(model, src, prev, pad)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=pad,
                                     reduction="sum").item()
            tokens += int(target.ne(pad).sum())
        model.train()
        return total / tokens

    model.train()
    record = {"implementation": "transformers BartForConditionalGeneration", "p": args.p, "seed": args.seed,
              "max_update": args.max_update, "lr": args.lr, "dropout": args.dropout, "valid": {}, "train_loss": []}
    started = time.perf_counter()
    for update in range(args.max_update):
        torch.manual_seed(derive_seed(args.seed, update, 2))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(update, run.lr, run.min_lr, run.warmup_updates, run.max_update)
        src, prev, target = task.train_batch(None, update)
        logits = logits_of(model, src, prev, pad)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=pad,
                               label_smoothing=run.label_smoothing)
        record["train_loss"].append(optimizer_step(model, optimizer, loss, run.clip_norm))
        if (update + 1) % args.validate_interval == 0 or update + 1 == args.max_update:
            record["valid"][str(update + 1)] = round(validate(), 5)
            print(f"update {update + 1}: valid loss {record['valid'][str(update + 1)]:.4f}", flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    write_record(args.out, record)


if __name__ == "__main__":
    main()
