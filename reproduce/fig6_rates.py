"""Figure 6: the training rate p against quality after pruning to each depth.

Tiny Shakespeare, the 8-layer model of fig2_lm, trained with p = 0.1 here; p = 0.2 and 0.5 (and the
baseline) come from fig2_lm's runs, trained with the same settings. Every-other pruning, validation loss.

    python reproduce/fig6_rates.py    # about 5 minutes on 2 cores, after fig2_lm.py --corpus shakespeare
"""

from __future__ import annotations

import json

from fig2_lm import PRESETS
from study import RESULTS, Study, keep_list, table_value


def main() -> None:
    study = Study("fig6_rates", "Figure 6: training rate p against quality after pruning", seeds=[1])
    fig2_path = RESULTS / "fig2_lm_shakespeare.json"
    if not fig2_path.is_file():
        raise SystemExit("fig6_rates needs fig2_lm's results; run python reproduce/fig2_lm.py --corpus shakespeare")
    fig2 = json.loads(fig2_path.read_text())
    depths = fig2["depths"]
    checkpoint = study.train("p0.1", ["--decoder-layers", "8", "--decoder-layerdrop", "0.1", *PRESETS["shakespeare"]["flags"]])
    lines = {"p=0.1": {}}
    for depth in depths:
        keep = [] if depth == 8 else ["--decoder-layers-to-keep", keep_list(8, depth)]
        out = study.layerdrop("eval", "--path", checkpoint, "--split", "valid", "--batch-size", "32", *keep)
        lines["p=0.1"][str(depth)] = table_value(out, "loss")
    for label, p in (("p=0.2", "LayerDrop p=0.2"), ("p=0.5", "LayerDrop p=0.5"), ("p=0 (baseline)", "baseline p=0")):
        lines[label] = fig2["lines"][p]
    study.write({"metric": "valid loss", "higher_is_better": False, "layers": 8, "depths": depths, "lines": lines,
                 "from_fig2_lm": ["p=0.2", "p=0.5", "p=0 (baseline)"]})


if __name__ == "__main__":
    main()
