"""`make reproduce`: every experiment in turn (each resumes where it stopped), the budget studies, then RESULTS.md.

Experiments that need ../shared/data are skipped, with a note, when it is absent.

    python reproduce/run_all.py [--only fig2_lm_shakespeare,fig5_importance]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from study import SHARED_DATA

HERE = Path(__file__).resolve().parent
# (name, script and arguments, needs ../shared/data); the order respects what each reuses.
EXPERIMENTS = [
    ("fig2_lm_shakespeare", ["fig2_lm.py", "--corpus", "shakespeare"], False),
    ("fig6_rates", ["fig6_rates.py"], False),
    ("fig5_importance", ["fig5_importance.py"], False),
    ("fig4_strategies", ["fig4_strategies.py"], False),
    ("fig4_units", ["fig4_units.py"], False),
    ("fig7_speed", ["fig7_speed.py"], False),
    ("fig2_lm_wikitext2", ["fig2_lm.py", "--corpus", "wikitext2"], True),
    ("fig2_translation", ["fig2_translation.py"], True),
    ("fig3_classification", ["fig3_classification.py"], True),
]
# The studies of docs/layerdrop_at_short_budgets.md: many runs of 10 to 90 minutes each. A run already in
# their JSON is read back, not trained again, so on a clone these only redraw their plots and tables.
BUDGET_STUDIES = [
    ("translation_budget", ["translation_budget.py"], True),
    ("lm_budget", ["lm_budget.py"], False),
    ("glue_budget", ["glue_budget.py"], True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated experiment names")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else None
    for name, command, needs_data in EXPERIMENTS + BUDGET_STUDIES:
        if chosen is not None and name not in chosen:
            continue
        if needs_data and not SHARED_DATA.is_dir():
            print(f"=== {name}: skipped ({SHARED_DATA} is absent)", flush=True)
            continue
        print(f"=== {name}: python reproduce/{' '.join(command)}", flush=True)
        subprocess.run([sys.executable, str(HERE / command[0]), *command[1:]], check=True)
    subprocess.run([sys.executable, str(HERE / "report.py")], check=True)


if __name__ == "__main__":
    main()
