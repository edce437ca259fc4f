"""Figure 2, language modeling: quality at each depth for LayerDrop models pruned every other way, the
baseline pruned the same way, and models of that depth trained from scratch on the same budget.

Two corpora: Tiny Shakespeare at character level (the embedded copy; validation loss in nats per
character) and WikiText-2 at word level (the standard split; test perplexity, as in the literature).

    python reproduce/fig2_lm.py --corpus shakespeare     # 18 minutes on 2 cores
    python reproduce/fig2_lm.py --corpus wikitext2       # 19 minutes on 2 cores; needs ../shared/data
    python reproduce/fig2_lm.py --corpus shakespeare --data my_corpus_dir   # the same study on your data
"""

from __future__ import annotations

import argparse

from study import keep_list, SHARED_DATA, Study, table_value

PRESETS = {
    # 8 layers of width 128 (the demo's model), 2,500 updates of 16 x 64 characters.
    "shakespeare": dict(
        layers=8, depths=[8, 6, 4, 2, 1], data=None, metric="valid loss", split="valid",
        flags=["--decoder-embed-dim", "128", "--decoder-ffn-embed-dim", "512", "--decoder-attention-heads", "4",
               "--tokens-per-sample", "64", "--dropout", "0.0", "--max-update", "2500", "--batch-size", "16",
               "--lr", "2e-3", "--min-lr", "2e-4", "--warmup-updates", "100", "--validate-interval-updates", "500",
               "--max-valid-steps", "50", "--seed", "1"]),
    # 6 layers of width 128 on WikiText-2 words (33,278-word vocabulary), 1,800 updates of 16 x 64 tokens
    # (0.9 epochs). A full softmax over the vocabulary would cost several times the layers; the adaptive
    # softmax (cutoffs 2,000 and 10,000, exact probabilities) is what makes six models fit in 30 minutes.
    "wikitext2": dict(
        layers=6, depths=[6, 3, 2, 1], data=str(SHARED_DATA / "wikitext-2"), metric="test ppl", split="test",
        flags=["--tokenizer", "word", "--adaptive-softmax-cutoff", "2000,10000", "--decoder-embed-dim", "128",
               "--decoder-ffn-embed-dim", "512", "--decoder-attention-heads", "4", "--tokens-per-sample", "64",
               "--dropout", "0.1", "--max-update", "1800", "--batch-size", "16", "--lr", "2e-3", "--min-lr", "2e-4",
               "--warmup-updates", "100", "--validate-interval-updates", "600", "--max-valid-steps", "50", "--seed", "1"]),
}
RATES = {"LayerDrop p=0.2": 0.2, "LayerDrop p=0.5": 0.5, "baseline p=0": 0.0}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=list(PRESETS), default="shakespeare")
    parser.add_argument("--data", default=None, help="your own corpus directory (default: the preset's)")
    args = parser.parse_args()
    preset = PRESETS[args.corpus]
    data = args.data or preset["data"]
    data_flags = ["--data", data] if data else []
    layers, depths = preset["layers"], preset["depths"]
    study = Study(f"fig2_lm_{args.corpus}", f"Figure 2, language modeling, {args.corpus}", seeds=[1])

    def score(checkpoint, keep: str | None = None) -> float:
        keep_flags = ["--decoder-layers-to-keep", keep] if keep else []
        out = study.layerdrop("eval", "--path", checkpoint, "--split", preset["split"], "--batch-size", "32", *keep_flags)
        return table_value(out, "ppl" if preset["metric"].endswith("ppl") else "loss")

    lines: dict[str, dict[int, float]] = {}
    for label, p in RATES.items():
        checkpoint = study.train(f"p{p}", [*data_flags, "--decoder-layers", str(layers), "--decoder-layerdrop", str(p),
                                           *preset["flags"]])
        lines[label] = {d: score(checkpoint, None if d == layers else keep_list(layers, d)) for d in depths}
    lines["trained from scratch at that depth"] = {}
    for depth in depths:
        if depth == layers:
            lines["trained from scratch at that depth"][depth] = lines["baseline p=0"][layers]
            continue
        checkpoint = study.train(f"scratch{depth}", [*data_flags, "--decoder-layers", str(depth), *preset["flags"]])
        lines["trained from scratch at that depth"][depth] = score(checkpoint)
    study.write({"corpus": args.corpus, "data": data or "embedded Tiny Shakespeare", "metric": preset["metric"],
                 "higher_is_better": False, "layers": layers, "depths": depths, "pruning": "every other",
                 "lines": {label: {str(d): v for d, v in values.items()} for label, values in lines.items()}})


if __name__ == "__main__":
    main()
