"""Pruned inference against the ideal: forward latency and KV-cache generation speed at full, 1/2 and 1/4 depth.

One 16-layer LM (width 256, FFN 1024, context 256) is pruned every other way with ``prune_state_dict`` to 8
and 4 layers, and to 1 layer (the intercept). The models take turns in rounds. The ideal time at depth d is
the straight line through the measured 1-layer and full-depth times,

    ideal(d) = t(1) + (t(L) - t(1)) (d - 1) / (L - 1),

that is, the layers cost in proportion to their number and everything else (embeddings, output layer,
sampling) stays. Reported: time relative to full depth, ideal relative time, and measured / ideal. The
target is measured / ideal at most 1.10: a pruned model carries no cost of the layers it lost. Below 1 is
not a fault: one-token generation steps are bound by reading the weights, and a pruned model's weights fit
in the CPU's caches where the full model's do not (16 layers: 50 MB of float32, 4 layers: 13 MB; the
machine of the README has 32 MB of L3).

Writes benchmarks/results/pruned_inference.json. Usage: python benchmarks/pruned_inference.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from layerdrop.generate import generate
from layerdrop.models import TransformerLM, TransformerLMConfig
from layerdrop.pruning import every_other, prune_state_dict

RESULTS = Path(__file__).parent / "results" / "pruned_inference.json"
LAYERS = 16
CONFIG = dict(vocab_size=66, decoder_layers=LAYERS, decoder_embed_dim=256, decoder_ffn_embed_dim=1024,
              decoder_attention_heads=4, tokens_per_sample=256, dropout=0.0)
DEPTHS = [16, 8, 4, 1]
BATCH = 8
NEW_TOKENS = 64


def pruned(full: TransformerLM, depth: int) -> TransformerLM:
    config, state = prune_state_dict(full.cfg, full.state_dict(), {"decoder": every_other(LAYERS, depth)})
    model = TransformerLM(config).eval()
    model.load_state_dict(state)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args()
    torch.manual_seed(0)
    full = TransformerLM(TransformerLMConfig(**CONFIG)).eval()
    models = {depth: pruned(full, depth) for depth in DEPTHS}
    tokens = torch.randint(0, CONFIG["vocab_size"], (BATCH, CONFIG["tokens_per_sample"]), generator=torch.Generator().manual_seed(0))
    prompt = tokens[0, :32].tolist()

    def forward(model):
        with torch.no_grad():
            model(tokens)

    def sample(model):
        generate(model, prompt, NEW_TOKENS, temperature=0.0)

    measures = {"forward": forward, "generation": sample}
    seconds = {(name, depth): 0.0 for name in measures for depth in DEPTHS}
    for name, run in measures.items():  # warm-up
        for model in models.values():
            run(model)
    for round_index in range(args.rounds):
        for name, run in measures.items():
            for depth in (DEPTHS if round_index % 2 == 0 else DEPTHS[::-1]):
                start = time.perf_counter()
                run(models[depth])
                seconds[name, depth] += time.perf_counter() - start
        print(f"round {round_index + 1}/{args.rounds}", flush=True)

    rows = []
    for name in measures:
        t_full, t_one = seconds[name, LAYERS], seconds[name, 1]
        for depth in DEPTHS[1:-1]:
            ideal = (t_one + (t_full - t_one) * (depth - 1) / (LAYERS - 1)) / t_full
            measured = seconds[name, depth] / t_full
            rows.append({"measure": name, "depth": depth, "of_full_depth": depth / LAYERS, "time_vs_full": measured,
                         "ideal_time_vs_full": ideal, "measured_over_ideal": measured / ideal,
                         "ms": 1000 * seconds[name, depth] / args.rounds, "full_ms": 1000 * t_full / args.rounds,
                         "tokens_per_second": (BATCH * CONFIG["tokens_per_sample"] if name == "forward" else NEW_TOKENS)
                         * args.rounds / seconds[name, depth]})
    result = {"benchmark": "pruned_inference", "model": CONFIG, "forward_batch": [BATCH, CONFIG["tokens_per_sample"]],
              "generated_tokens": NEW_TOKENS, "rounds": args.rounds, "rows": rows,
              "one_layer_ms": {name: 1000 * seconds[name, 1] / args.rounds for name in measures},
              "target": "measured / ideal at most 1.10 (no more than 10 % slower than the ideal ratio)",
              "target_met": all(r["measured_over_ideal"] <= 1.10 for r in rows),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'measure':<11} {'depth':>5} {'ms':>8} {'tokens/s':>9} {'vs full':>8} {'ideal':>7} {'meas/ideal':>10}")
    for r in rows:
        print(f"{r['measure']:<11} {r['depth']:>5} {r['ms']:>8.1f} {r['tokens_per_second']:>9,.0f} {r['time_vs_full']:>8.3f} "
              f"{r['ideal_time_vs_full']:>7.3f} {r['measured_over_ideal']:>10.3f}")
    print(f"target met: {result['target_met']}\nwrote {out}")


if __name__ == "__main__":
    main()
