"""layerdrop against Hugging Face transformers at equal shapes, batch and LayerDrop rate, side by side.

- decoder-only: our ``TransformerLM`` against ``OPTForCausalLM`` with ``layerdrop=p`` (pre-LN, GELU, learned
  positions, tied embeddings in both);
- encoder-decoder: our ``TransformerTranslation`` against ``BartForConditionalGeneration`` with
  ``encoder_layerdrop`` = ``decoder_layerdrop`` = p.

Both sides use PyTorch's scaled_dot_product_attention, no dropout, AdamW, and the same cross-entropy on the
logits. Training is timed at p = 0, 0.2 and 0.5 (AdamW step included); inference is a no-grad forward in eval
mode. The contenders take turns in rounds, so machine noise hits both alike. Needs the benchmark extra:
``pip install -e ".[bench]"``.

With ``--amp bf16`` both sides run under the same ``torch.autocast`` (bf16 matrix products, float32 weights
and optimizer) and the result goes to hf_speed_bf16.json; there layerdrop keeps attention in float32 on a
CPU (see benchmarks/step_profile.py) while transformers leaves it to autocast.

Writes benchmarks/results/hf_speed.json. Usage: python benchmarks/hf_speed.py [--rounds 4] [--amp bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from layerdrop.models import TransformerLM, TransformerLMConfig, TransformerTranslation, TransformerTranslationConfig
from layerdrop.nn.stack import model_drop_plan

RESULTS = Path(__file__).parent / "results" / "hf_speed.json"
VOCAB, LAYERS, WIDTH, FFN, HEADS, LENGTH, BATCH = 8000, 6, 256, 1024, 4, 128, 16
RATES = [0.0, 0.2, 0.5]


def ours_lm(p: float):
    return TransformerLM(TransformerLMConfig(vocab_size=VOCAB, decoder_layers=LAYERS, decoder_embed_dim=WIDTH,
                                             decoder_ffn_embed_dim=FFN, decoder_attention_heads=HEADS,
                                             tokens_per_sample=LENGTH, dropout=0.0, decoder_layerdrop=p))


def hf_lm(p: float):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS, ffn_dim=FFN, num_attention_heads=HEADS,
                       max_position_embeddings=LENGTH, word_embed_proj_dim=WIDTH, do_layer_norm_before=True, dropout=0.0,
                       attention_dropout=0.0, activation_function="gelu", layerdrop=p, enable_bias=True)
    return OPTForCausalLM._from_config(config, attn_implementation="sdpa")


def ours_mt(p: float):
    sides = {f"{side}_{name}": value for side in ("encoder", "decoder") for name, value in
             (("layers", LAYERS), ("embed_dim", WIDTH), ("ffn_embed_dim", FFN), ("attention_heads", HEADS))}
    return TransformerTranslation(TransformerTranslationConfig(vocab_size=VOCAB, max_source_positions=LENGTH,
                                                               max_target_positions=LENGTH, dropout=0.0,
                                                               encoder_layerdrop=p, decoder_layerdrop=p, **sides))


def hf_mt(p: float):
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(vocab_size=VOCAB, d_model=WIDTH, encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_ffn_dim=FFN,
                        decoder_ffn_dim=FFN, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                        max_position_embeddings=LENGTH, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                        activation_function="gelu", encoder_layerdrop=p, decoder_layerdrop=p)
    return BartForConditionalGeneration._from_config(config, attn_implementation="sdpa")


def logits_fn(kind: str, side: str, model, src, tgt):
    """A function plan -> logits for one contender (plans only for ours; HF draws its own)."""
    if side == "ours" and kind == "lm":
        return lambda plan: model(src, plan=plan)[0]
    if side == "ours":
        return lambda plan: model(src, tgt, plan)
    if kind == "lm":
        return lambda plan: model(input_ids=src).logits
    return lambda plan: model(input_ids=src, decoder_input_ids=tgt).logits


def count_layer_calls(model, side: str, counter: dict) -> None:
    """Count the Transformer layers that run (HF draws its LayerDrop from the global RNG: the share skipped in
    the timed updates can differ from ours, so it is reported beside the speed)."""
    if side == "ours":
        from layerdrop.nn.stack import stacks

        layers = [layer for stack in stacks(model) for layer in stack.layers]
    else:
        layers = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1].isdigit() and name.split(".")[-2] == "layers"]
    counter["layers"] = len(layers)
    for layer in layers:
        layer.register_forward_hook(lambda *_: counter.__setitem__("calls", counter.get("calls", 0) + 1))


def contender(kind: str, side: str, p: float, training: bool, counter: dict, amp: str | None = None):
    torch.manual_seed(0)
    model = {"lm": {"ours": ours_lm, "hf": hf_lm}, "mt": {"ours": ours_mt, "hf": hf_mt}}[kind][side](p)
    count_layer_calls(model, side, counter)
    tokens = torch.randint(4, VOCAB, (BATCH, LENGTH + 1), generator=torch.Generator().manual_seed(0))
    src, tgt, targets = tokens[:, :-1], tokens[:, :-1], tokens[:, 1:]
    plain = logits_fn(kind, side, model, src, tgt)

    def forward(plan):
        with torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            return plain(plan)

    if not training:
        model.eval()

        def infer() -> None:
            with torch.no_grad():
                forward(None)

        return infer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    state = {"update": 0}

    def step() -> None:
        plan = model_drop_plan(model, 1, state["update"]) if side == "ours" else None
        state["update"] += 1
        F.cross_entropy(forward(plan).float().flatten(0, 1), targets.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def race(functions: dict, rounds: int, steps: int, warmup: int) -> dict[str, float]:
    """Seconds per call of each function, taking turns."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    seconds = dict.fromkeys(functions, 0.0)
    names = list(functions)
    for round_index in range(rounds):
        for name in (names if round_index % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            for _ in range(steps):
                functions[name]()
            seconds[name] += time.perf_counter() - start
    return {name: value / (rounds * steps) for name, value in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--amp", choices=("bf16",), default=None, help="both sides under bf16 autocast")
    parser.add_argument("--out", default=None, help="JSON file to write (default: results/hf_speed[_bf16].json)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else RESULTS.with_name(f"hf_speed{'_' + args.amp if args.amp else ''}.json")
    try:
        import transformers
    except ImportError:
        raise SystemExit('hf_speed: needs Hugging Face transformers; install the benchmark extra: pip install -e ".[bench]"')
    rows = []
    tokens = BATCH * LENGTH  # target tokens per batch (for the encoder-decoder, source tokens come on top)
    for kind in ("lm", "mt"):
        cases = [("training", p) for p in RATES] + [("inference", None)]
        for mode, p in cases:
            counters = {"ours": {}, "hf": {}}
            per_call = race({side: contender(kind, side, p or 0.0, mode == "training", counters[side], args.amp)
                             for side in ("ours", "hf")},
                            args.rounds, args.steps_per_round, args.warmup)
            calls = args.rounds * args.steps_per_round + args.warmup
            ran = {side: c.get("calls", 0) / (calls * c["layers"]) for side, c in counters.items()}
            model = "decoder-only vs OPTForCausalLM" if kind == "lm" else "encoder-decoder vs BartForConditionalGeneration"
            row = {"model": model + (f", {args.amp} autocast" if args.amp else ""),
                   "mode": mode, "p": p, "ours_tokens_per_second": tokens / per_call["ours"],
                   "hf_tokens_per_second": tokens / per_call["hf"], "ratio": per_call["hf"] / per_call["ours"],
                   "ours_layers_run_share": ran["ours"], "hf_layers_run_share": ran["hf"]}
            rows.append(row)
            print(f"{row['model']:<48} {mode:<9} p={p if p is not None else '-':<4} ours {row['ours_tokens_per_second']:>8,.0f} "
                  f"tok/s  hf {row['hf_tokens_per_second']:>8,.0f} tok/s  ratio {row['ratio']:.2f}x  layers run "
                  f"{ran['ours']:.0%} / {ran['hf']:.0%}", flush=True)
    result = {"benchmark": "hf_speed", "amp": args.amp, "shape": dict(vocab=VOCAB, layers=LAYERS, width=WIDTH, ffn=FFN, heads=HEADS,
                                                      length=LENGTH, batch=BATCH),
              "rows": rows, "target": "ratio (ours tokens/s / HF tokens/s) >= 1.1 in every row",
              "target_met": all(r["ratio"] >= 1.1 for r in rows), "transformers": transformers.__version__,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"target met: {result['target_met']}\nwrote {out}")


if __name__ == "__main__":
    main()
