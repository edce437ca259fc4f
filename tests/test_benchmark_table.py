"""The `make bench` table reads every speed benchmark's JSON and applies each target to the measured ratio."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def table(results: Path) -> str:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "table.py"), "--results", str(results)],
                          capture_output=True, text=True, check=True)
    return proc.stdout


def test_missing_results_are_listed_as_not_run(tmp_path):
    out = table(tmp_path)
    for name in ("train_speed", "hf_speed", "nanogpt_speed", "ddp_speed", "pruned_inference"):
        assert f"| {name} | | not run (no {name}.json)" in out


def test_targets_follow_the_measured_ratios(tmp_path):
    nanogpt = {"ms_per_update_median": {"nanoGPT": 40.0, "layerdrop": 29.0, "layerdrop --compile": 31.0},
               "ratio_to_nanogpt": {"layerdrop": 0.725, "layerdrop --compile": 0.775}}
    (tmp_path / "nanogpt_speed.json").write_text(json.dumps(nanogpt))
    pruned = {"model": {"decoder_layers": 16}, "rows": [
        {"measure": "forward", "depth": 8, "time_vs_full": 0.6, "ideal_time_vs_full": 0.5, "measured_over_ideal": 1.2},
        {"measure": "generation", "depth": 4, "time_vs_full": 0.2, "ideal_time_vs_full": 0.25, "measured_over_ideal": 0.8}]}
    (tmp_path / "pruned_inference.json").write_text(json.dumps(pruned))
    lines = {line.split(" | ")[1]: line for line in table(tmp_path).splitlines()[2:] if "not run" not in line}
    assert lines["nanoGPT CPU config, layerdrop"].endswith("| met |")
    assert "**not met**" in lines["nanoGPT CPU config, layerdrop --compile"]
    assert "**not met**" in lines["pruned forward, 8 of 16 layers"]
    assert lines["pruned generation, 4 of 16 layers"].endswith("| met |")


def test_the_shipped_results_make_a_table():
    out = table(BENCHMARKS / "results")
    assert "not run" not in out and out.count("\n") > 10  # every speed benchmark ships its JSON
