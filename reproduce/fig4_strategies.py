"""Figure 4 (right): pruning strategies compared at half and quarter depth.

The Tiny Shakespeare models of fig2_lm (8 layers: LayerDrop 0.5 and the baseline) plus one trained the
same way with learned gates (--decoder-learned-gates, p = 0.5). Each strategy picks the layers with
`layerdrop select`; the score is the validation loss (nats per character) of the kept layers.

    python reproduce/fig4_strategies.py    # about 7 minutes on 2 cores, after fig2_lm.py --corpus shakespeare
"""

from __future__ import annotations

import json

from fig2_lm import PRESETS
from study import RESULTS, RUNS, Study

DEPTHS = [4, 2]
STRATEGIES = ["every-other", "search", "block-influence", "angular", "learned"]


def main() -> None:
    study = Study("fig4_strategies", "Figure 4 (right): pruning strategies", seeds=[1])
    fig2 = RUNS / "fig2_lm_shakespeare"
    models = {"LayerDrop p=0.5": fig2 / "p0.5" / "checkpoint_last", "baseline p=0": fig2 / "p0.0" / "checkpoint_last"}
    missing = [str(path) for path in models.values() if not path.is_dir()]
    if missing:
        raise SystemExit(f"fig4_strategies needs the fig2_lm models; run python reproduce/fig2_lm.py --corpus shakespeare ({missing})")
    models["learned gates p=0.5"] = study.train("learned", ["--decoder-layers", "8", "--decoder-layerdrop", "0.5",
                                                            "--decoder-learned-gates", *PRESETS["shakespeare"]["flags"]])
    rows: dict[str, dict[str, dict]] = {}
    for label, checkpoint in models.items():
        rows[label] = {}
        for strategy in STRATEGIES:
            if strategy == "learned" and not label.startswith("learned"):
                continue  # only a gated model has learned scores
            for depth in DEPTHS:
                out = RESULTS / "fig4_strategies" / f"{label.split()[0]}_{strategy}_{depth}.json"
                study.layerdrop("select", "--path", checkpoint, "--depth", depth, "--strategy", strategy, "--out", out)
                chosen = json.loads(out.read_text())
                rows[label].setdefault(strategy, {})[str(depth)] = {"keep": chosen["keep"], "score": chosen["score"]}
        rows[label]["full depth"] = {"8": {"keep": list(range(8)), "score": chosen["full_depth_score"]}}
    study.write({"metric": "valid loss", "higher_is_better": False, "depths": DEPTHS, "models": rows})


if __name__ == "__main__":
    main()
