"""`make demo`: train a baseline and a LayerDrop character LM on the embedded Tiny Shakespeare,
then compare their validation loss at full depth, every other layer, and every fourth layer.

Running it again reuses the finished runs in runs/demo (training resumes from checkpoint_last).
"""

from __future__ import annotations

import dataclasses
import time

from layerdrop.checkpoint import build_model, load_checkpoint
from layerdrop.data.corpus import load_corpus
from layerdrop.data.tokenizers import encode_tensor
from layerdrop.evaluate import evaluate_lm
from layerdrop.pruning import every_other
from layerdrop.train import TrainConfig, train

LAYERS = 8
MODEL = dict(decoder_layers=LAYERS, decoder_embed_dim=128, decoder_ffn_embed_dim=512, decoder_attention_heads=4,
             tokens_per_sample=64, dropout=0.0)
RUN = dict(max_update=1200, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_updates=100,
           validate_interval_updates=600, max_valid_steps=50, seed=1)
MODELS = {"baseline (p=0)": ("baseline", 0.0), "LayerDrop (p=0.5)": ("layerdrop_p0.5", 0.5)}
DEPTHS = {"full (8 layers)": LAYERS, "every other (4)": LAYERS // 2, "every fourth (2)": LAYERS // 4}


def main(root: str = "runs/demo") -> None:
    start = time.perf_counter()
    for label, (slug, p) in MODELS.items():
        print(f"\n=== training {label} ===")
        train(TrainConfig(save_dir=f"{root}/{slug}", **RUN), {**MODEL, "decoder_layerdrop": p})
    valid_text = load_corpus(None).split("valid")
    rows = []
    for label, (slug, _) in MODELS.items():
        ckpt = load_checkpoint(f"{root}/{slug}/checkpoint_last")
        tokens = encode_tensor(ckpt.tokenizer, valid_text)
        losses = []
        for depth in DEPTHS.values():
            keep = ",".join(map(str, every_other(LAYERS, depth)))
            config = dataclasses.replace(ckpt.config, decoder_layers_to_keep=keep)
            model = build_model(config, ckpt.state_dict, ckpt.model_type, slug, log=lambda _: None)
            losses.append(evaluate_lm(model, tokens, config.tokens_per_sample, 64).loss)
        rows.append((label, losses))
    print("\nValidation loss (nats/char) on the embedded Tiny Shakespeare, whole valid split, pruned every other way:\n")
    header = ["model"] + list(DEPTHS)
    width = max(len(label) for label in MODELS)
    print(f"{header[0]:<{width}}  " + "  ".join(f"{h:>16}" for h in header[1:]))
    print("-" * width + "  " + "  ".join("-" * 16 for _ in DEPTHS))
    for label, losses in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{loss:>16.3f}" for loss in losses))
    print("\nkept layers: " + "; ".join(f"{d}: {every_other(LAYERS, d)}" for d in DEPTHS.values()))
    print(f"demo finished in {time.perf_counter() - start:.0f}s; checkpoints in {root}/")


if __name__ == "__main__":
    main()
