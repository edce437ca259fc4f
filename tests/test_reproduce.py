"""The reproduction study's plumbing, end to end, with every budget shrunk to a few updates
(REPRODUCE_QUICK=1). The experiments that need ../shared/data are left to `make reproduce`."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_EXPERIMENTS = [["fig2_lm.py", "--corpus", "shakespeare"], ["fig6_rates.py"], ["fig5_importance.py"],
                     ["fig4_strategies.py"], ["fig4_units.py"], ["fig7_speed.py"]]


def test_study_runs_and_writes_results_md(tmp_path):
    env = {**os.environ, "REPRODUCE_QUICK": "1", "REPRODUCE_DIR": str(tmp_path)}
    for command in QUICK_EXPERIMENTS + [["report.py"]]:
        proc = subprocess.run([sys.executable, str(ROOT / "reproduce" / command[0]), *command[1:]], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    results = tmp_path / "results"
    page = (results / "RESULTS.md").read_text()
    for name in ("fig2_lm_shakespeare", "fig4_strategies", "fig4_units", "fig5_importance", "fig6_rates", "fig7_speed"):
        assert (results / f"{name}.json").is_file() and f"({name}.json)" in page
    assert (results / "fig2_lm_shakespeare.png").read_bytes()[:4] == b"\x89PNG"
    claims = page.split("## The paper's claims, measured")[1]
    verdicts = [line.rsplit("|", 2)[1].strip() for line in claims.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert all(v in ("holds", "does not hold") or v.startswith("does not hold (holds at ") for v in verdicts), verdicts
    assert len(verdicts) >= 8  # fig2 (3), every-other (2), importance (2), rates (1), speed (1)
    assert "Not run yet: `python reproduce/fig2_lm.py --corpus wikitext2`" in page


def test_results_merged_by_two_processes_at_once_keep_both(tmp_path):
    """Two diagnostics writing one results file at the same time each keep the other's entries."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from study import merge_json\n"
              "for i in range(200): merge_json(Path(sys.argv[2]), lambda d: d.update({f'{sys.argv[3]}{i}': i}))")
    path = tmp_path / "results.json"
    writers = [subprocess.Popen([sys.executable, "-c", script, str(ROOT / "reproduce"), str(path), name]) for name in "ab"]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    import json
    assert set(json.loads(path.read_text())) == {f"{name}{i}" for name in "ab" for i in range(200)}
