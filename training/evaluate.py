"""Evaluation the way a campaign manager reads it: ranking, calibration, lift by decile, grades.

Grades (documented in docs/evaluation.md): against the family's simple baseline on the family's
out-of-time metric, A = better by at least ``a_margin``, B = better by less, C = not better.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from models.calibration import expected_calibration_error, reliability_curve


def decile_table(
    y_true: np.ndarray, score: np.ndarray, value: np.ndarray | None = None, n_bins: int = 10
) -> pd.DataFrame:
    """Customers ranked by score in equal bins: positives, rate, lift, cumulative gains and the
    share of ``value`` (e.g. revenue) captured."""
    order = np.argsort(-np.asarray(score), kind="stable")
    y = np.asarray(y_true, dtype=float)[order]
    v = np.asarray(value, dtype=float)[order] if value is not None else None
    bins = np.array_split(np.arange(len(y)), n_bins)
    base = y.mean() if len(y) else np.nan
    total_pos, total_val = y.sum(), (np.nansum(v) if v is not None else np.nan)
    rows, cum_pos, cum_val = [], 0.0, 0.0
    for i, idx in enumerate(bins, start=1):
        pos = float(y[idx].sum())
        cum_pos += pos
        rate = pos / len(idx) if len(idx) else np.nan
        row = {
            "decile": i,
            "customers": len(idx),
            "positives": pos,
            "rate": rate,
            "lift": rate / base if base else np.nan,
            "cumulative_gain": cum_pos / total_pos if total_pos else np.nan,
        }
        if v is not None:
            val = float(np.nansum(v[idx]))
            cum_val += val
            row["value"] = val
            row["cumulative_value_share"] = cum_val / total_val if total_val else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def binary_metrics(y_true: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier, ECE and lift in the top decile."""
    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(score, dtype=float), 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_top_decile": float(decile_table(y, p)["lift"].iloc[0]),
        "positive_rate": float(y.mean()),
        "n": float(len(y)),
    }


def grade(model: float, baseline: float, a_margin: float, higher_is_better: bool = True) -> str:
    """A / B / C of a model's metric against its baseline's."""
    gain = (model - baseline) if higher_is_better else (baseline - model)
    if gain >= a_margin:
        return "A"
    return "B" if gain > 0 else "C"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gains(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Cumulative gains chart of several scorers on the same customers, saved as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for name, (y, s) in curves.items():
        order = np.argsort(-np.asarray(s), kind="stable")
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


def plot_lift(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Lift by decile of several scorers, saved as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    width = 0.8 / max(len(curves), 1)
    for i, (name, (y, s)) in enumerate(curves.items()):
        table = decile_table(y, s)
        ax.bar(
            table["decile"] + (i - (len(curves) - 1) / 2) * width, table["lift"], width, label=name
        )
    ax.axhline(1.0, ls="--", color="grey")
    ax.set_xlabel("decile (1 = highest score)")
    ax.set_ylabel("lift")
    ax.set_xticks(range(1, 11))
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_calibration(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str
) -> Path:
    """Reliability diagram: observed rate against mean prediction per bin, saved as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect")
    for name, (y, p) in curves.items():
        rc = reliability_curve(y, p)
        ax.plot(
            rc[:, 0],
            rc[:, 1],
            marker="o",
            label=f"{name} (ECE {expected_calibration_error(y, p):.3f})",
        )
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_importance(importance: pd.DataFrame, path: Path, title: str, top: int = 15) -> Path:
    """Horizontal bar chart of mean |SHAP| per feature."""
    plt = pyplot()
    top_rows = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top_rows) + 1.2), dpi=110)
    ax.barh(top_rows["feature"], top_rows["mean_abs_shap"])
    ax.set_xlabel("mean |SHAP contribution|")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
