"""Each GLUE task's official metrics, from scikit-learn and scipy, in percent (as GLUE reports them)."""

from __future__ import annotations

from collections.abc import Sequence

HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "mcc": True, "pearson": True, "spearman": True}


def glue_metrics(names: Sequence[str], predictions: Sequence[float], labels: Sequence[float],
                 positive: int = 1) -> dict[str, float]:
    """``names`` from accuracy, f1 (of class id ``positive``), mcc (Matthews), pearson, spearman."""
    # Imported here: they take 1.7 s to import, which every other command would pay at start.
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    out = {}
    for name in names:
        if name == "accuracy":
            out[name] = 100.0 * accuracy_score(labels, predictions)
        elif name == "f1":
            out[name] = 100.0 * f1_score(labels, predictions, pos_label=positive, zero_division=0.0)
        elif name == "mcc":
            out[name] = 100.0 * matthews_corrcoef(labels, predictions)
        elif name in ("pearson", "spearman"):
            constant = len(set(predictions)) < 2 or len(set(labels)) < 2  # correlation undefined: report 0
            out[name] = 0.0 if constant else 100.0 * float((pearsonr if name == "pearson" else spearmanr)(predictions, labels)[0])
        else:
            raise ValueError(f"unknown GLUE metric {name!r}")
    return out


def glue_score(metrics: dict[str, float], names: Sequence[str]) -> float:
    """One number per task, as the GLUE leaderboard takes it: the mean of the task's metrics."""
    return sum(metrics[name] for name in names) / len(names)
