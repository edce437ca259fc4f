"""What the analyses leave behind: a JSON file with the numbers and a PNG plot (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a replace; after a failure, no half file is left beside it


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """Quality against depth, one line per checkpoint."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in result["runs"]:
        points = sorted(run["points"], key=lambda p: p["depth"])
        ax.plot([p["depth"] for p in points], [p["score"] for p in points], marker="o", label=run["label"])
    ax.set_xlabel(f"{result['stack']} layers kept ({result['strategy']})")
    ax.set_ylabel(result["metric"] + (" (higher is better)" if result["higher_is_better"] else " (lower is better)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_importance(result: dict[str, Any], path: Path) -> None:
    """Relative importance of each layer (the paper's Figure 5)."""
    plt = _pyplot()
    values = [0.0 if v is None else v for v in result["relative_importance"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(values)), values, color=["tab:blue" if v >= 0 else "tab:red" for v in values])
    ax.set_xticks(range(len(values)), [str(n) for n in result.get("layer_numbers", range(len(values)))])
    ax.set_xlabel(f"{result['stack']} layer (the checkpoint's numbers)")
    ax.set_ylabel("relative importance")
    ax.set_title(f"{result['samples']} random {result['depth']}-layer subsets, {result['metric']}", fontsize=9)
    ax.axhline(0, color="black", linewidth=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
