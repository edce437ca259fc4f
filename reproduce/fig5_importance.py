"""Figure 5: relative importance of each layer, from 20 random 4-layer subsets of the 8-layer Tiny
Shakespeare models of fig2_lm (LayerDrop 0.5 and the baseline), scored on the validation set.

    python reproduce/fig5_importance.py    # about 1 minute on 2 cores, after fig2_lm.py --corpus shakespeare
"""

from __future__ import annotations

import json

from study import RESULTS, RUNS, Study


def main() -> None:
    study = Study("fig5_importance", "Figure 5: relative importance of each layer", seeds=[1])
    fig2 = RUNS / "fig2_lm_shakespeare"
    results = {}
    for label, slug in (("LayerDrop p=0.5", "p0.5"), ("baseline p=0", "p0.0")):
        checkpoint = fig2 / slug / "checkpoint_last"
        if not checkpoint.is_dir():
            raise SystemExit(f"fig5_importance needs {checkpoint}; run python reproduce/fig2_lm.py --corpus shakespeare")
        out = RESULTS / f"fig5_importance_{slug}"
        study.layerdrop("importance", "--path", checkpoint, "--depth", "4", "--samples", "20", "--seed", "1", "--out", out)
        data = json.loads(out.with_name(out.name + ".json").read_text())
        results[label] = {"relative_importance": data["relative_importance"], "importance": data["importance"],
                          "full_depth_score": data["full_depth_score"], "plot": out.name + ".png"}
    study.write({"metric": "valid loss", "depth": 4, "samples": 20, "models": results})


if __name__ == "__main__":
    main()
