"""Figure 4 (left): the structured dropout units compared, at full depth and pruned to half along the
unit each model was trained with.

Tiny Shakespeare, character level, the 8-layer model of fig2_lm (width 128) trained for 1,500 updates,
each unit dropped with p = 0.5. Halving: every other layer (layer, head+layer), self-attention in the
even layers and FFN in the odd ones (sublayer, head+sublayer), heads 0 and 2 of 4 (head), the first
half of every FFN (ffn-half). The baseline (p = 0) is halved by layers. Validation loss, nats per character.

    python reproduce/fig4_units.py      # about 14 minutes on 2 cores
"""

from __future__ import annotations

import argparse

from fig2_lm import PRESETS
from study import Study, keep_list, table_value

EVEN, ODD = keep_list(8, 4), "1,3,5,7"
HALF = {
    "layer": ["--decoder-layers-to-keep", EVEN],
    "sublayer": ["--decoder-attention-layers-to-keep", EVEN, "--decoder-ffn-layers-to-keep", ODD],
    "head": ["--decoder-heads-to-keep", "0,2"],
    "ffn-half": ["--decoder-ffn-halves-to-keep", "0"],
    "head+layer": ["--decoder-layers-to-keep", EVEN],
    "head+sublayer": ["--decoder-attention-layers-to-keep", EVEN, "--decoder-ffn-layers-to-keep", ODD],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="your own corpus directory (default: the embedded Tiny Shakespeare)")
    parser.add_argument("--p", type=float, default=0.5)
    args = parser.parse_args()
    study = Study("fig4_units", "Figure 4 (left): structured dropout units at full and half size", seeds=[1])
    flags = [f for f in PRESETS["shakespeare"]["flags"]]
    flags[flags.index("--max-update") + 1] = "1500"
    data = ["--data", args.data] if args.data else []

    def loss(checkpoint, prune: list[str]) -> tuple[float, int]:
        out = study.layerdrop("eval", "--path", checkpoint, "--batch-size", "32", *prune)
        return table_value(out, "loss"), int(out.split("num. model params: ")[1].split()[0])

    rows = {}
    for unit, prune in {"baseline (p=0)": HALF["layer"], **HALF}.items():
        p = 0.0 if unit.startswith("baseline") else args.p
        unit_flag = [] if unit.startswith("baseline") else ["--layerdrop-unit", unit]
        checkpoint = study.train(unit.split()[0] if p else "baseline",
                                 [*data, "--decoder-layers", "8", "--decoder-layerdrop", str(p), *unit_flag, *flags])
        (full, full_params), (half, half_params) = loss(checkpoint, []), loss(checkpoint, prune)
        rows[unit] = {"full": full, "half": half, "params_full": full_params, "params_half": half_params,
                      "half_flags": " ".join(prune)}
    study.write({"metric": "valid loss", "higher_is_better": False, "p": args.p, "units": rows})


if __name__ == "__main__":
    main()
