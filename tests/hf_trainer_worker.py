"""One rank of a Hugging Face Trainer run with layerdrop's LayerDrop, for tests/test_hf.py under torchrun.

Writes OUT/rank<N>.json: the layers that ran on each forward and a checksum of every parameter at the end."""

import json
import os
import sys

import torch
import transformers

from layerdrop.integrations.hf import LayerDropCallback, apply_layerdrop


class RandomTokens(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        ids = torch.randint(2, 96, (8,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": ids}


def main(out: str) -> None:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                      vocab_size=96, num_hidden_layers=4, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config)
    handle = apply_layerdrop(model, p=0.5, seed=11)
    ran, first_tokens = [], []

    def record(module, args, kwargs, output):
        ran.append([p.runs for p in handle.current["decoder"]])
        first_tokens.append(kwargs["input_ids"][0, 0].item())

    model.register_forward_hook(record, with_kwargs=True)
    args = transformers.TrainingArguments(output_dir=out, max_steps=8, per_device_train_batch_size=2, report_to=[],
                                          use_cpu=True, ddp_backend="gloo", save_strategy="no", learning_rate=1e-3,
                                          disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=RandomTokens(), callbacks=[LayerDropCallback(handle)])
    trainer.train()
    rank = int(os.environ["RANK"])
    checksum = {name: float(p.detach().double().sum()) for name, p in model.named_parameters()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"ran": ran, "checksum": checksum, "world": trainer.args.world_size, "first_tokens": first_tokens,
                   "distributed": torch.distributed.is_initialized(),
                   "ddp": type(trainer.model_wrapped).__name__}, f)


if __name__ == "__main__":
    main(sys.argv[1])
