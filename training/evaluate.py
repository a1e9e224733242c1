"""Evaluation the way a campaign manager reads it: ranking, calibration and lift by decile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def decile_table(y_true: np.ndarray, score: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Customers ranked by score, cut into equal bins: positives, rate, lift, cumulative gains."""
    order = np.argsort(-score, kind="stable")
    y = np.asarray(y_true)[order]
    bins = np.array_split(np.arange(len(y)), n_bins)
    base = y.mean() if len(y) else np.nan
    rows, cum_pos = [], 0
    for i, idx in enumerate(bins, start=1):
        pos = int(y[idx].sum())
        cum_pos += pos
        rate = pos / len(idx) if len(idx) else np.nan
        rows.append(
            {
                "decile": i,
                "customers": len(idx),
                "positives": pos,
                "rate": rate,
                "lift": rate / base if base else np.nan,
                "cumulative_gain": cum_pos / y.sum() if y.sum() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def binary_metrics(y_true: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier and lift in the top decile."""
    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(score, dtype=float), 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "lift_top_decile": float(decile_table(y, p)["lift"].iloc[0]),
        "positive_rate": float(y.mean()),
        "n": float(len(y)),
    }


def plot_gains(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Cumulative gains chart of several scorers on the same customers, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for name, (y, s) in curves.items():
        order = np.argsort(-s, kind="stable")
        gains = np.concatenate([[0.0], np.cumsum(np.asarray(y)[order]) / max(np.sum(y), 1)])
        share = np.linspace(0, 1, len(gains))
        ax.plot(share * 100, gains * 100, label=name)
    ax.plot([0, 100], [0, 100], ls="--", color="grey", label="random")
    ax.set_xlabel("customers contacted (%, highest score first)")
    ax.set_ylabel("positives captured (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
