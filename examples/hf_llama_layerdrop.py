"""Continue training a Hugging Face causal LM with LayerDrop, so that it can be pruned afterwards.

    # a real checkpoint: continue training with LayerDrop (and, to compare, without)
    python examples/hf_llama_layerdrop.py train --model DIR --data train.txt --p 0.2 --out runs/hf_ld
    python examples/hf_llama_layerdrop.py train --model DIR --data train.txt --p 0 --out runs/hf_base
    layerdrop hf sweep --model runs/hf_ld --model runs/hf_base --depths 8,6,4,2 --data valid.txt --out hf_sweep
    layerdrop hf prune --model runs/hf_ld --layers-to-keep 0,2,4,6 --out runs/hf_ld_half

    # no hub here: Tiny Shakespeare as train.txt / valid.txt, then a tiny randomly initialised Llama-style
    # model and a BPE tokenizer trained on the text
    python examples/hf_llama_layerdrop.py text --out runs/hf_text
    python examples/hf_llama_layerdrop.py tiny --data runs/hf_text/train.txt --out runs/hf_tiny

Training is the Hugging Face Trainer with layerdrop's plans (``LayerDropCallback``), so it runs in one
process or under ``torchrun`` unchanged. The model is saved without any trace of LayerDrop: plain
transformers loads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

from layerdrop.integrations.hf import LayerDropCallback, apply_layerdrop, remove_layerdrop


def write_tiny(data: str, out: str, layers: int = 8, width: int = 128, vocab: int = 2000) -> None:
    """A small Llama (random weights) and a byte-level BPE tokenizer trained on ``data``, saved to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train([data], trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                                eos_token="</s>", pad_token="</s>")
    config = transformers.LlamaConfig(vocab_size=fast.vocab_size, hidden_size=width, intermediate_size=4 * width,
                                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=256, bos_token_id=fast.bos_token_id,
                                      eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    print(f"wrote a {layers}-layer Llama ({sum(p.numel() for p in model.parameters()):,} parameters) and its tokenizer to {out}")


class TextBlocks(torch.utils.data.Dataset):
    """A text file's tokens in blocks of ``block`` tokens, each block its own labels (causal LM)."""

    def __init__(self, tokenizer, path: str, block: int):
        ids = tokenizer(Path(path).read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        self.blocks = torch.tensor(ids[: len(ids) // block * block]).view(-1, block)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.blocks[index], "labels": self.blocks[index]}


def train(model_dir: str, data: str, p: float, out: str, max_steps: int, batch_size: int, lr: float, block: int,
          seed: int) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    handle = apply_layerdrop(model, p=p, seed=seed)
    args = transformers.TrainingArguments(output_dir=out, max_steps=max_steps, per_device_train_batch_size=batch_size,
                                          learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=max_steps // 20,
                                          weight_decay=0.1, logging_steps=max(1, max_steps // 20), save_strategy="no",
                                          report_to=[], seed=seed, use_cpu=not torch.cuda.is_available())
    trainer = transformers.Trainer(model=model, args=args, train_dataset=TextBlocks(tokenizer, data, block),
                                   callbacks=[LayerDropCallback(handle)])
    trainer.train()
    remove_layerdrop(model)
    if trainer.is_world_process_zero():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        print(f"wrote {out} (trained {max_steps} steps with LayerDrop p = {p})")


def write_text(out: str) -> None:
    """The embedded Tiny Shakespeare, the first 90 % as train.txt and the rest as valid.txt."""
    from layerdrop.data.corpus import embedded_text

    text = embedded_text()
    cut = int(len(text) * 0.9)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "train.txt").write_text(text[:cut], encoding="utf-8")
    (Path(out) / "valid.txt").write_text(text[cut:], encoding="utf-8")
    print(f"wrote {out}/train.txt ({cut:,} characters) and {out}/valid.txt ({len(text) - cut:,})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser("text", help="write Tiny Shakespeare as OUT/train.txt and OUT/valid.txt")
    q.add_argument("--out", required=True)
    q = commands.add_parser("tiny", help="write a tiny random Llama-style model and a tokenizer trained on --data")
    q.add_argument("--data", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--layers", type=int, default=8)
    q = commands.add_parser("train", help="continue training --model with LayerDrop p on --data (Trainer)")
    q.add_argument("--model", required=True)
    q.add_argument("--data", required=True)
    q.add_argument("--p", type=float, required=True, help="LayerDrop rate (0: the baseline)")
    q.add_argument("--out", required=True)
    q.add_argument("--max-steps", type=int, default=600)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--block", type=int, default=128)
    q.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.command == "text":
        write_text(args.out)
    elif args.command == "tiny":
        write_tiny(args.data, args.out, args.layers)
    else:
        train(args.model, args.data, args.p, args.out, args.max_steps, args.batch_size, args.lr, args.block, args.seed)


if __name__ == "__main__":
    main()
