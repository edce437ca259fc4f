"""Figure 2, translation: Multi30k de->en BLEU with the decoder pruned to each depth, for a LayerDrop
model, the baseline pruned the same way, and decoders of that depth trained from scratch.

A 3-layer encoder and a 6-layer decoder (width 256, FFN 512, joint BPE 8000), 700 updates of 64 pairs
(4 to 6.5 minutes per model on 2 cores: five models and 15 beam searches take 28 minutes).
LayerDrop is on the decoder only (the stack that is pruned). BLEU: detokenized sacreBLEU on
test_2016_flickr, beam 5, on checkpoint_last (nothing is chosen on the test split).

    python reproduce/fig2_translation.py       # 28 minutes on 2 cores; needs ../shared/data
"""

from __future__ import annotations

import argparse

from study import keep_list, SHARED_DATA, Study, number

DEPTHS = [6, 3, 2, 1]
FLAGS = ["--task", "translation", "--source-lang", "de", "--target-lang", "en", "--bpe-vocab-size", "8000",
         "--encoder-layers", "3", "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
         "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "--dropout", "0.1", "--batch-size", "64", "--lr", "1e-3", "--min-lr", "1e-4",
         "--warmup-updates", "150", "--label-smoothing", "0.1", "--max-update", "700", "--validate-interval-updates", "350",
         "--seed", "1"]



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "multi30k-de-en"))
    parser.add_argument("--p", type=float, default=0.2, help="decoder LayerDrop rate of the LayerDrop model")
    args = parser.parse_args()
    study = Study("fig2_translation", "Figure 2, translation (Multi30k de->en, decoder pruned)", seeds=[1])

    def bleu(checkpoint, keep: str | None = None) -> float:
        keep_flags = ["--decoder-layers-to-keep", keep] if keep else []
        out = study.layerdrop("eval", "--path", checkpoint, "--split", "test", "--beam", "5", "--batch-size", "64", *keep_flags)
        return number(r"BLEU =", out)

    lines: dict[str, dict[int, float]] = {}
    for label, p in ((f"LayerDrop p={args.p}", args.p), ("baseline p=0", 0.0)):
        checkpoint = study.train(f"p{p}", ["--data", args.data, "--decoder-layers", "6", "--decoder-layerdrop", str(p), *FLAGS])
        lines[label] = {d: bleu(checkpoint, None if d == 6 else keep_list(6, d)) for d in DEPTHS}
    scratch = lines["trained from scratch at that depth"] = {6: lines["baseline p=0"][6]}
    for depth in DEPTHS[1:]:
        scratch[depth] = bleu(study.train(f"scratch{depth}", ["--data", args.data, "--decoder-layers", str(depth), *FLAGS]))
    study.write({"data": args.data, "metric": "test BLEU", "higher_is_better": True, "layers": 6, "depths": DEPTHS,
                 "pruning": "every other (decoder)",
                 "lines": {label: {str(d): v for d, v in values.items()} for label, values in lines.items()}})


if __name__ == "__main__":
    main()
