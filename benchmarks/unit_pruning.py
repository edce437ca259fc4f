"""Pruning each structured dropout unit to half: parameter count and inference time, side by side.

One LM (12 layers, width 256, FFN 1024, 4 heads) is pruned to half along each unit with the same
pruning functions the CLI uses (the weights are removed, not masked):

    layers      --decoder-layers-to-keep 0,2,...,10
    sublayers   --decoder-attention-layers-to-keep 0,2,...,10 --decoder-ffn-layers-to-keep 1,3,...,11
    heads       --decoder-heads-to-keep 0,2
    ffn halves  --decoder-ffn-halves-to-keep 0

Each model then scores the same batch (eval mode, no gradient); the models take turns in rounds so that
machine noise hits them alike. Reported: parameters and time relative to the full model.

Writes benchmarks/results/unit_pruning.json. Usage: python benchmarks/unit_pruning.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from layerdrop.checkpoint import build_model
from layerdrop.models import TransformerLM, TransformerLMConfig, num_params

RESULTS = Path(__file__).parent / "results" / "unit_pruning.json"
CONFIG = dict(vocab_size=66, decoder_layers=12, decoder_embed_dim=256, decoder_ffn_embed_dim=1024,
              decoder_attention_heads=4, tokens_per_sample=256, dropout=0.0)
EVEN, ODD = ",".join(map(str, range(0, 12, 2))), ",".join(map(str, range(1, 12, 2)))
PRUNINGS = {
    "full": {},
    "layers": {"decoder_layers_to_keep": EVEN},
    "sublayers": {"decoder_attention_layers_to_keep": EVEN, "decoder_ffn_layers_to_keep": ODD},
    "heads": {"decoder_heads_to_keep": "0,2"},
    "ffn halves": {"decoder_ffn_halves_to_keep": "0"},
}
BATCH = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    full = TransformerLM(TransformerLMConfig(**CONFIG))
    models = {}
    for name, request in PRUNINGS.items():
        config = dataclasses.replace(full.cfg, **request)
        models[name] = build_model(config, full.state_dict(), "transformer_lm", name, log=lambda _: None).eval()
    tokens = torch.randint(0, CONFIG["vocab_size"], (BATCH, CONFIG["tokens_per_sample"]), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model(tokens)  # warm up
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(tokens)
                times[name].append(time.perf_counter() - start)
    base_params, base_time = num_params(models["full"]), statistics.median(times["full"])
    rows = {}
    print(f"{'pruned to half':<12} {'params':>10} {'of full':>8} {'ms':>8} {'of full':>8}")
    for name, model in models.items():
        params, ms = num_params(model), statistics.median(times[name]) * 1000
        rows[name] = {"params": params, "params_ratio": params / base_params, "median_ms": ms,
                      "time_ratio": ms / 1000 / base_time, "request": PRUNINGS[name]}
        print(f"{name:<12} {params:>10,} {params / base_params:>8.2f} {ms:>8.1f} {ms / 1000 / base_time:>8.2f}")
    result = {"config": CONFIG, "batch": BATCH, "rounds": args.rounds, "threads": args.threads,
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "models": rows,
              "command": "python benchmarks/unit_pruning.py"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
