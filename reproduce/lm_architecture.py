"""Does the translation finding carry over to language modeling? (docs/layerdrop_at_short_budgets.md)

On translation, BART's architecture choices (post-LN, a LayerNorm on the embeddings, no residual scaling)
cut what decoder LayerDrop costs at full depth from 0.85 to 0.29 nats. This trains Figure 2's Tiny
Shakespeare LM (8 layers, width 128, 2,500 updates, seed 1) with those choices, at p = 0 and 0.2, and a
4-layer model from scratch with them, then scores each on the validation split at 8 and 4 layers (every
other). The default architecture's numbers are read from ``fig2_lm_shakespeare.json`` (same flags, seed
and data). Each run resumes; the result is ``docs/results/lm_architecture.json``.

    python reproduce/lm_architecture.py      # three runs, about 15 minutes on 2 cores
"""

from __future__ import annotations

import json

from fig2_lm import PRESETS
from study import keep_list, RESULTS, Study, table_value

BART_LIKE = ["--no-decoder-normalize-before", "--layernorm-embedding", "--no-scale-residual-init"]
# slug -> (decoder layers, LayerDrop rate)
RUNS = {"bartlike_p0.0": (8, 0.0), "bartlike_p0.2": (8, 0.2), "bartlike_scratch4": (4, 0.0)}


def main() -> None:
    preset = PRESETS["shakespeare"]
    study = Study("lm_architecture", "LayerDrop's cost on the Tiny Shakespeare LM, default against BART's choices", seeds=[1])

    def score(checkpoint, keep: str | None = None) -> float:
        keep_flags = ["--decoder-layers-to-keep", keep] if keep else []
        return table_value(study.layerdrop("eval", "--path", checkpoint, "--split", "valid", "--batch-size", "32", *keep_flags),
                           "loss")

    bart_like: dict[str, dict[str, float]] = {}
    for slug, (layers, p) in RUNS.items():
        checkpoint = study.train(slug, ["--decoder-layers", str(layers), "--decoder-layerdrop", str(p), *BART_LIKE,
                                        *preset["flags"]])
        bart_like[slug] = {str(layers): score(checkpoint)}
        if layers == 8:
            bart_like[slug]["4"] = score(checkpoint, keep_list(8, 4))
    default_file = RESULTS / "fig2_lm_shakespeare.json"
    default = json.loads(default_file.read_text())["lines"] if default_file.exists() else {}
    study.write({"metric": "valid loss (nats per character)", "flags": preset["flags"], "architecture_flags": BART_LIKE,
                 "bart_like": bart_like,
                 "default": {"p0.0": default.get("baseline p=0"), "p0.2": default.get("LayerDrop p=0.2"),
                             "scratch": default.get("trained from scratch at that depth")}})


if __name__ == "__main__":
    main()
