"""Figure 3, classification: SST-2 and RTE dev accuracy of a LayerDrop-pretrained encoder pruned to 1/2
and 1/4 of its depth before fine-tuning, against the baseline pruned the same way and encoders of that
depth pretrained from scratch on the same budget.

Encoders: 8 layers of width 128 (FFN 512, 4 heads, 128 tokens), masked-LM pretraining on WikiText-2
(1,000 updates of 16 blocks; LayerDrop 0.5 or none). Fine-tuning: no LayerDrop, 600 updates of 32
sentences (SST-2) or 300 of 16 pairs (RTE), scored on checkpoint_last. GLUE test labels are not public,
so dev is the reported split, and nothing is chosen on it.

    python reproduce/fig3_classification.py     # 19 minutes on 2 cores; needs ../shared/data
"""

from __future__ import annotations

import argparse

from study import SHARED_DATA, Study, keep_list, table_value

LAYERS = 8
DEPTHS = [8, 4, 2]
SHAPE = ["--encoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
         "--tokens-per-sample", "128"]
PRETRAIN = ["--task", "masked_lm", "--bpe-vocab-size", "8000", "--batch-size", "16", "--max-update", "1000",
            "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-updates", "100", "--dropout", "0.1",
            "--validate-interval-updates", "500", "--max-valid-steps", "20", "--seed", "1"]
FINETUNE = {
    "SST-2": ["--batch-size", "32", "--max-update", "600"],
    "RTE": ["--batch-size", "16", "--max-update", "300"],
}
FINETUNE_COMMON = ["--task", "classification", "--lr", "3e-4", "--min-lr", "3e-5", "--warmup-updates", "50",
                   "--weight-decay", "0.01", "--dropout", "0.1", "--encoder-layerdrop", "0.0",
                   "--validate-interval-updates", "300", "--seed", "1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-data", default=str(SHARED_DATA / "wikitext-2"))
    parser.add_argument("--glue", default=str(SHARED_DATA / "glue"), help="directory holding SST-2/ and RTE/")
    args = parser.parse_args()
    study = Study("fig3_classification", "Figure 3, classification (SST-2, RTE dev accuracy)", seeds=[1])

    pretrained = {}
    for slug, layers, p in (("ld0.5", LAYERS, 0.5), ("baseline", LAYERS, 0.0)) + tuple(
            (f"scratch{d}", d, 0.0) for d in DEPTHS[1:]):
        pretrained[slug] = study.train(f"pretrain_{slug}", ["--data", args.pretrain_data, "--encoder-layers", str(layers),
                                                            "--encoder-layerdrop", str(p), *SHAPE, *PRETRAIN])

    def finetune(task: str, source: str, depth: int) -> float:
        keep = ["--encoder-layers-to-keep", keep_list(LAYERS, depth)] if depth < LAYERS and "scratch" not in source else []
        checkpoint = study.train(f"{task}_{source}_{depth}", ["--data", f"{args.glue}/{task}", "--restore-file",
                                                             pretrained[source], *keep, *FINETUNE_COMMON, *FINETUNE[task]])
        return table_value(study.layerdrop("eval", "--path", checkpoint, "--batch-size", "64"), "accuracy")

    results = {}
    for task in FINETUNE:
        lines = {"LayerDrop p=0.5, pruned": {d: finetune(task, "ld0.5", d) for d in DEPTHS},
                 "baseline p=0, pruned": {d: finetune(task, "baseline", d) for d in DEPTHS}}
        lines["pretrained from scratch at that depth"] = {LAYERS: lines["baseline p=0, pruned"][LAYERS],
                                                          **{d: finetune(task, f"scratch{d}", d) for d in DEPTHS[1:]}}
        results[task] = {label: {str(d): v for d, v in values.items()} for label, values in lines.items()}
    study.write({"metric": "dev accuracy (%)", "higher_is_better": True, "layers": LAYERS, "depths": DEPTHS,
                 "pruning": "every other, before fine-tuning", "tasks": results})


if __name__ == "__main__":
    main()
