"""Figure 7: training speed (tokens per second; characters here, words for a word-level corpus) against p.

benchmarks/train_speed.py trains one LM (12 layers, width 256, context 128, batch 16) at each rate,
the rates taking turns in short rounds so machine noise hits them alike.

    python reproduce/fig7_speed.py    # about 6 minutes on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from study import QUICK, RESULTS, ROOT, Study

RATES = "0,0.1,0.2,0.3,0.5,0.7"


def main() -> None:
    study = Study("fig7_speed", "Figure 7: training speed against the LayerDrop rate", seeds=[0])
    raw = RESULTS / "fig7_speed_raw.json"
    rates = "0,0.5" if QUICK else RATES  # the plumbing needs two rates, not six
    command = [sys.executable, "benchmarks/train_speed.py", "--model", "lm", "--rates", rates, "--out", str(raw)]
    if QUICK:
        command += ["--rounds", "1", "--steps-per-round", "1", "--warmup", "1"]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    study.commands.append({"command": " ".join(["python", *command[1:]]), "seconds": round(time.perf_counter() - start, 1)})
    data = json.loads(raw.read_text())["models"]["lm"]
    study.write({"metric": "training tokens/s", "model": data["model"], "updates_per_rate": data["updates_per_mode"],
                 "rows": [{k: r[k] for k in ("p", "tokens_per_second", "speedup_vs_p0", "layers_skipped_share",
                                             "measured_time_saving", "ideal_time_saving")} for r in data["rows"]]})


if __name__ == "__main__":
    main()
