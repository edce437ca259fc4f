"""Training speed against the LayerDrop rate, measured side by side in one run, for the three model kinds.

For each model (``--model lm``, ``encoder``, ``translation`` or ``all``), one fixed configuration trains at
p = 0, 0.2 and 0.5 (for translation, on both the encoder and the decoder), plus a run with every layer
skipped, which measures what the rest of the step costs (embeddings, output layer, loss, the optimizer for
the non-layer parameters). The modes take turns in short rounds so machine noise hits all of them alike.

    ideal saving(p) = (share of layers skipped in the measured updates) x (layer share of step time)
    efficiency      = measured saving / ideal saving

Writes benchmarks/results/train_speed.json (one entry per model). Usage:
python benchmarks/train_speed.py [--model all] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from layerdrop.models import (
    TransformerEncoderConfig, TransformerEncoderModel, TransformerLM, TransformerLMConfig, TransformerTranslation,
    TransformerTranslationConfig,
)
from layerdrop.nn.drop_plan import kept_layers
from layerdrop.nn.stack import model_drop_plan, stacks
from layerdrop.nn.structured import SKIPPED

RESULTS = Path(__file__).parent / "results" / "train_speed.json"
SHAPE = dict(embed_dim=256, ffn_embed_dim=1024, attention_heads=4)
LENGTH, BATCH, VOCAB = 128, 16, 66
MODELS = {
    # 12 layers for the decoder-only and encoder-only models; 6 + 6 for the encoder-decoder.
    "lm": dict(decoder_layers=12, **{f"decoder_{k}": v for k, v in SHAPE.items()}, tokens_per_sample=LENGTH),
    "encoder": dict(encoder_layers=12, **{f"encoder_{k}": v for k, v in SHAPE.items()}, tokens_per_sample=LENGTH + 1),
    "translation": dict(encoder_layers=6, decoder_layers=6, **{f"{side}_{k}": v for side in ("encoder", "decoder")
                                                               for k, v in SHAPE.items()}),
}
RATES = [0.0, 0.2, 0.5]
NO_LAYERS = "no layers"


def build(kind: str, p: float) -> tuple[torch.nn.Module, callable]:
    """The model at rate p and its loss for a plan, on one fixed batch."""
    tokens = torch.randint(5, VOCAB, (BATCH, LENGTH + 1), generator=torch.Generator().manual_seed(0))
    if kind == "lm":
        model = TransformerLM(TransformerLMConfig(vocab_size=VOCAB, dropout=0.0, decoder_layerdrop=p, **MODELS[kind]))
        return model, lambda plan: model(tokens[:, :-1], tokens[:, 1:], plan=plan)[1]
    if kind == "encoder":  # masked-LM loss on every position: the encoder's cost, not the masking's
        model = TransformerEncoderModel(TransformerEncoderConfig(vocab_size=VOCAB, dropout=0.0, encoder_layerdrop=p,
                                                                 **MODELS[kind]))
        return model, lambda plan: F.cross_entropy(model.lm_head(model(tokens, plan)).flatten(0, 1), tokens.flatten())
    model = TransformerTranslation(TransformerTranslationConfig(vocab_size=VOCAB, dropout=0.0, encoder_layerdrop=p,
                                                                decoder_layerdrop=p, **MODELS[kind]))
    return model, lambda plan: F.cross_entropy(model(tokens[:, :-1], tokens[:, :-1], plan).flatten(0, 1),
                                               tokens[:, 1:].flatten())


def make_trainer(kind: str, mode):
    torch.manual_seed(0)
    model, loss_of = build(kind, mode if isinstance(mode, float) else 0.0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    state = {"update": 0}

    def step() -> int:
        if mode == NO_LAYERS:  # every layer skipped: the cost of everything else
            plan = {stack.name: (SKIPPED,) * len(stack.layers) for stack in stacks(model)}
        else:
            plan = model_drop_plan(model, 1, state["update"])
        state["update"] += 1
        loss_of(plan).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sum(len(kept_layers(stack_plan)) for stack_plan in plan.values())

    return step, sum(len(stack.layers) for stack in stacks(model))


def measure(kind: str, rates: list[float], args: argparse.Namespace) -> dict:
    modes = rates + [NO_LAYERS]
    steppers = {mode: make_trainer(kind, mode) for mode in modes}
    num_layers = steppers[0.0][1]
    for step, _ in steppers.values():
        for _ in range(args.warmup):
            step()
    seconds = {mode: 0.0 for mode in modes}
    layers_run = {mode: 0 for mode in modes}
    updates = args.rounds * args.steps_per_round
    for round_index in range(args.rounds):
        for mode in (modes if round_index % 2 == 0 else modes[::-1]):
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                layers_run[mode] += steppers[mode][0]()
            seconds[mode] += time.perf_counter() - start
        print(f"{kind} round {round_index + 1}/{args.rounds}: " + ", ".join(f"{m}: {seconds[m]:.1f}s" for m in modes),
              flush=True)
    tokens_per_update = BATCH * LENGTH
    full, rest = seconds[0.0], seconds[NO_LAYERS]
    layer_share = (full - rest) / full
    rows = []
    for p in rates:
        skipped_share = 1 - layers_run[p] / (updates * num_layers)
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
    half = next((r["fraction_of_ideal_saving"] for r in rows if r["p"] == 0.5), None)
    return {"model": {**MODELS[kind], "vocab_size": VOCAB, "batch_size": BATCH, "tokens_per_update": tokens_per_update},
            "updates_per_mode": updates, "no_layers_ms_per_update": 1000 * rest / updates,
            "layer_share_of_step_time": layer_share, "rows": rows,
            "target": "fraction_of_ideal_saving >= 0.95 at p = 0.5", "target_met": None if half is None else half >= 0.95}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="LayerDrop rates to compare (0 must be one)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args()
    rates = sorted(float(r) for r in args.rates.split(","))
    if rates[0] != 0.0:
        parser.error("--rates: the rates must include 0 (the baseline every speedup is measured against)")
    kinds = list(MODELS) if args.model == "all" else [args.model]
    result = {"benchmark": "train_speed", "models": {kind: measure(kind, rates, args) for kind in kinds},
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "processor": platform.processor() or platform.platform()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'model':<12} {'p':>4}  {'tokens/s':>9}  {'ms/upd':>7}  {'speedup':>7}  {'skipped':>7}  {'saving':>7}  "
          f"{'ideal':>7}  {'of ideal':>8}")
    for kind, entry in result["models"].items():
        for r in entry["rows"]:
            frac = "-" if r["fraction_of_ideal_saving"] is None else f"{r['fraction_of_ideal_saving']:.1%}"
            print(f"{kind:<12} {r['p']:>4}  {r['tokens_per_second']:>9,.0f}  {r['ms_per_update']:>7.1f}  "
                  f"{r['speedup_vs_p0']:>6.2f}x  {r['layers_skipped_share']:>7.1%}  {r['measured_time_saving']:>7.1%}  "
                  f"{r['ideal_time_saving']:>7.1%}  {frac:>8}")
        print(f"{kind:<12} layer share of step time {entry['layer_share_of_step_time']:.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
