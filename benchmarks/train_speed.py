"""Training speed against the LayerDrop rate, measured side by side in one run.

One fixed LM (12 layers, width 256) trains at p = 0, 0.2 and 0.5, plus a run with every layer
skipped, which measures what the rest of the step costs (embeddings, output layer, loss, the
optimizer for the non-layer parameters). The modes take turns in short rounds so machine noise
hits all of them alike.

    ideal saving(p) = (share of layers skipped in the measured updates) x (layer share of step time)
    efficiency      = measured saving / ideal saving

Writes benchmarks/results/train_speed.json. Usage: python benchmarks/train_speed.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from layerdrop.models import TransformerLM, TransformerLMConfig
from layerdrop.nn.drop_plan import kept_layers
from layerdrop.nn.structured import SKIPPED

RESULTS = Path(__file__).parent / "results" / "train_speed.json"
CONFIG = dict(vocab_size=66, decoder_layers=12, decoder_embed_dim=256, decoder_ffn_embed_dim=1024,
              decoder_attention_heads=4, tokens_per_sample=128, dropout=0.0)
BATCH = 16
RATES = [0.0, 0.2, 0.5]
NO_LAYERS = "no layers"


def make_trainer(mode):
    torch.manual_seed(0)
    p = mode if isinstance(mode, float) else 0.0
    model = TransformerLM(TransformerLMConfig(**CONFIG, decoder_layerdrop=p)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, CONFIG["vocab_size"], (BATCH, CONFIG["tokens_per_sample"] + 1),
                           generator=torch.Generator().manual_seed(0))
    state = {"update": 0}

    def step() -> int:
        if mode == NO_LAYERS:  # every layer skipped: the cost of everything else
            plan = {"decoder": (SKIPPED,) * len(model.layers)}
        else:
            plan = {"decoder": model.decoder.drop_plan(1, state["update"])}
        state["update"] += 1
        _, loss = model(tokens[:, :-1], tokens[:, 1:], plan=plan)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(kept_layers(plan["decoder"]))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="LayerDrop rates to compare (0 must be one)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args()
    rates = sorted(float(r) for r in args.rates.split(","))
    if rates[0] != 0.0:
        parser.error("--rates: the rates must include 0 (the baseline every speedup is measured against)")
    out = Path(args.out)

    modes = rates + [NO_LAYERS]
    steppers = {mode: make_trainer(mode) for mode in modes}
    for step in steppers.values():
        for _ in range(args.warmup):
            step()
    seconds = {mode: 0.0 for mode in modes}
    layers_run = {mode: 0 for mode in modes}
    updates = args.rounds * args.steps_per_round
    for round_index in range(args.rounds):
        order = modes if round_index % 2 == 0 else modes[::-1]
        for mode in order:
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                layers_run[mode] += steppers[mode]()
            seconds[mode] += time.perf_counter() - start
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{m}: {seconds[m]:.1f}s" for m in modes))

    tokens_per_update = BATCH * CONFIG["tokens_per_sample"]
    full, rest = seconds[0.0], seconds[NO_LAYERS]
    layer_share = (full - rest) / full
    rows = []
    for p in rates:
        skipped_share = 1 - layers_run[p] / (updates * CONFIG["decoder_layers"])
        measured = 1 - seconds[p] / full
        ideal = skipped_share * layer_share
        rows.append({
            "p": p,
            "tokens_per_second": tokens_per_update * updates / seconds[p],
            "ms_per_update": 1000 * seconds[p] / updates,
            "speedup_vs_p0": full / seconds[p],
            "layers_skipped_share": skipped_share,
            "measured_time_saving": measured,
            "ideal_time_saving": ideal,
            "fraction_of_ideal_saving": measured / ideal if ideal > 0 else None,
        })
    result = {
        "benchmark": "train_speed",
        "model": {**CONFIG, "batch_size": BATCH, "tokens_per_update": tokens_per_update},
        "updates_per_mode": updates,
        "no_layers_ms_per_update": 1000 * rest / updates,
        "layer_share_of_step_time": layer_share,
        "rows": rows,
        "target": "fraction_of_ideal_saving >= 0.95 at p = 0.5",
        "target_met": next((r["fraction_of_ideal_saving"] >= 0.95 for r in rows if r["p"] == 0.5 and r["fraction_of_ideal_saving"]), None),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "processor": platform.processor() or platform.platform(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nlayer share of step time: {layer_share:.3f} (no-layer step {result['no_layers_ms_per_update']:.1f} ms)")
    print(f"{'p':>4}  {'tokens/s':>9}  {'ms/upd':>7}  {'speedup':>7}  {'skipped':>7}  {'saving':>7}  {'ideal':>7}  {'of ideal':>8}")
    for r in rows:
        frac = "-" if r["fraction_of_ideal_saving"] is None else f"{r['fraction_of_ideal_saving']:.1%}"
        print(f"{r['p']:>4}  {r['tokens_per_second']:>9,.0f}  {r['ms_per_update']:>7.1f}  {r['speedup_vs_p0']:>6.2f}x  "
              f"{r['layers_skipped_share']:>7.1%}  {r['measured_time_saving']:>7.1%}  {r['ideal_time_saving']:>7.1%}  {frac:>8}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
