"""An independent masked-LM reference: Hugging Face transformers' RoBERTa, trained from scratch on the same
batches, with the same optimizer, schedule and budget as a ``layerdrop train --task masked_lm`` run.

Only the model comes from transformers (``RobertaForMaskedLM``: post-LayerNorm, N(0, 0.02) initialisation,
output embeddings tied to the input ones). The data pipeline is layerdrop's: the same BPE tokenizer, the same
blocks of ``--tokens-per-sample`` tokens and the same RoBERTa-style dynamic masking. So the two runs differ in
the model implementation alone, and a masked LM that stays on the unigram plateau in both is a property of
the setting (batch, rate, masking, budget), not of our model.

    pip install "layerdrop[bench]"
    python benchmarks/hf_reference_mlm.py --data ../shared/data/wikitext-2 --max-update 2000 \\
        --schedule-updates 5000 --out runs/hf_mlm.json

Defaults are figure 3's pretraining flags (8 layers of width 128, FFN 512, 4 heads, 16 blocks of 128 tokens,
lr 1e-3 warmed up over 100 updates, cosine to 1e-4, dropout 0.1). Writes the masked-LM validation loss
(nats per masked token, 20 batches of the validation split, fixed masking seed as ``layerdrop train``
validates) every ``--validate-interval`` updates, and the training loss of every update.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from layerdrop.optim import learning_rate, make_optimizer, parse_betas
from layerdrop.seeding import derive_seed
from layerdrop.tasks.masked_lm import IGNORE, MaskedLMTask
from layerdrop.train import TrainConfig
from reference_training import optimizer_step, write_record


def build_roberta(vocab_size: int, ids: dict[str, int], args: argparse.Namespace):
    from transformers import RobertaConfig, RobertaForMaskedLM

    config = RobertaConfig(
        vocab_size=vocab_size, hidden_size=args.width, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=args.ffn, hidden_act="gelu", hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=0.0,
        # RoBERTa offsets positions by pad_id + 1, so it needs that many more rows than the block length.
        max_position_embeddings=args.tokens_per_sample + ids["pad_id"] + 2, type_vocab_size=1,
        pad_token_id=ids["pad_id"], bos_token_id=ids["bos_id"], eos_token_id=ids["eos_id"], tie_word_embeddings=True,
    )
    return RobertaForMaskedLM(config)


def masked_loss(model, inputs: torch.Tensor, targets: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, int]:
    logits = model(input_ids=inputs, attention_mask=inputs.ne(pad_id)).logits
    chosen = targets.ne(IGNORE)
    return F.cross_entropy(logits[chosen], targets[chosen]), int(chosen.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="text corpus directory (train.txt, valid.txt)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-update", type=int, default=2000, help="updates to train")
    parser.add_argument("--schedule-updates", type=int, default=None,
                        help="length of the cosine schedule (default: --max-update), to follow a longer run's first updates")
    parser.add_argument("--validate-interval", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens-per-sample", type=int, default=128)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    schedule = args.schedule_updates or args.max_update
    run = TrainConfig(task="masked_lm", data=args.data, bpe_vocab_size=8000, batch_size=args.batch_size, seed=args.seed,
                      max_update=schedule, lr=args.lr, min_lr=1e-4, warmup_updates=100)
    task = MaskedLMTask(run)
    tokenizer = task.build_tokenizer()
    config = task.new_config({"tokens_per_sample": args.tokens_per_sample}, tokenizer)
    task.prepare(tokenizer, config)
    torch.manual_seed(args.seed)
    model = build_roberta(len(tokenizer), tokenizer.special_ids(), args)
    optimizer = make_optimizer(model, run.lr, run.weight_decay, parse_betas(run.adam_betas))
    pad = config.pad_id

    @torch.no_grad()
    def validate(batches: int = 20) -> float:
        model.eval()
        generator = torch.Generator().manual_seed(0)
        starts = torch.arange(0, task.valid_stream.numel() - task.block + 1, task.block)
        total, count = 0.0, 0
        for number, first in enumerate(range(0, len(starts), args.batch_size)):
            if number >= batches:
                break
            inputs, targets = task.mask(task.blocks(task.valid_stream, starts[first:first + args.batch_size]), generator)
            loss, n = masked_loss(model, inputs, targets, pad)
            total, count = total + loss.item() * n, count + n
        model.train()
        return total / max(count, 1)

    model.train()
    record = {"implementation": "transformers RobertaForMaskedLM", "seed": args.seed, "max_update": args.max_update,
              "schedule_updates": schedule, "lr": args.lr, "batch_size": args.batch_size,
              "tokens_per_sample": args.tokens_per_sample, "shape": [args.layers, args.width, args.ffn, args.heads],
              "dropout": args.dropout, "valid": {}, "train_loss": []}
    started = time.perf_counter()
    for update in range(args.max_update):
        generator = torch.Generator().manual_seed(derive_seed(args.seed, update, 1))
        torch.manual_seed(derive_seed(args.seed, update, 2))  # dropout
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(update, run.lr, run.min_lr, run.warmup_updates, schedule)
        inputs, targets = task.train_batch(generator, update)
        loss, _ = masked_loss(model, inputs, targets, pad)
        record["train_loss"].append(optimizer_step(model, optimizer, loss, run.clip_norm))
        if (update + 1) % args.validate_interval == 0 or update + 1 == args.max_update:
            record["valid"][str(update + 1)] = round(validate(), 5)
            print(f"update {update + 1}: valid loss {record['valid'][str(update + 1)]:.4f}", flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    write_record(args.out, record)


if __name__ == "__main__":
    main()
