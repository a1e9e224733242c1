"""Evaluation the way a campaign manager reads it: ranking, calibration, lift by decile, grades.

Grades (documented in docs/evaluation.md): against the family's simple baseline on the family's
out-of-time metric, A = better by at least ``a_margin``, B = better by less, C = not better.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from models.calibration import expected_calibration_error, reliability_curve
from training.evidence import MetricOf


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
    """ROC AUC, PR AUC, log loss, Brier, ECE, and lift and precision in the top decile."""
    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(score, dtype=float), 1e-7, 1 - 1e-7)
    top = decile_table(y, p).iloc[0]
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_top_decile": float(top["lift"]),
        "precision_top_decile": float(top["rate"]),
        "positive_rate": float(y.mean()),
        "n": float(len(y)),
    }


# ---------------------------------------------------------------- fast metrics for the bootstrap


_SHARE = re.compile(r"^precision_at_(\d+(?:\.\d+)?)pct$")


def fast_binary_metric(metric: str, y_true: np.ndarray) -> MetricOf | None:
    """``metric_of(idx, scores)`` of one binary metric on the rows ``idx`` (drawn with
    replacement), vectorised for the paired bootstrap: ROC AUC by counting (score, label) cells,
    log loss, Brier, ECE, lift and precision in the top decile, ``precision_at_<k>pct``. It equals
    ``binary_metrics`` on all rows; None for a metric it does not know (e.g. ``pr_auc``). What
    depends only on a score array (its distinct values, its order) is computed once per array."""
    y = np.asarray(y_true).astype(int)
    share = {"lift_top_decile": 0.1, "precision_top_decile": 0.1}.get(metric)
    match = _SHARE.match(metric)
    if match:
        share = float(match.group(1)) / 100.0
    prepared: dict[int, tuple[np.ndarray, Any]] = {}

    def prepare(scores: np.ndarray, build: Callable[[np.ndarray], Any]) -> Any:
        key = id(scores)
        if key not in prepared or prepared[key][0] is not scores:
            prepared[key] = (scores, build(np.clip(scores, 1e-7, 1 - 1e-7)))
        return prepared[key][1]

    def auc(idx: np.ndarray, scores: np.ndarray) -> float:
        codes, n_distinct = prepare(scores, lambda p: _auc_cells(p, y))
        counts = np.bincount(codes[idx], minlength=2 * n_distinct).reshape(n_distinct, 2)
        neg, pos = counts[:, 0].astype(float), counts[:, 1].astype(float)
        den = pos.sum() * neg.sum()
        if den == 0:
            raise ValueError("ROC AUC needs both classes")
        return float(np.sum(pos * (np.cumsum(neg) - 0.5 * neg)) / den)

    def brier(idx: np.ndarray, scores: np.ndarray) -> float:
        p = prepare(scores, lambda p: p)
        return float(np.mean((p[idx] - y[idx]) ** 2))

    def logloss(idx: np.ndarray, scores: np.ndarray) -> float:
        loss = prepare(scores, lambda p: -(y * np.log(p) + (1 - y) * np.log1p(-p)))
        return float(np.mean(loss[idx]))

    def ece(idx: np.ndarray, scores: np.ndarray) -> float:
        p, bins = prepare(scores, lambda p: (p, np.minimum((p * 10).astype(int), 9)))
        gaps = np.bincount(bins[idx], weights=y[idx] - p[idx], minlength=10)
        return float(np.abs(gaps).sum() / len(idx))

    def top(idx: np.ndarray, scores: np.ndarray) -> float:
        # rank = position in the stable descending order (decile_table's): the top k of a
        # resample are its k smallest ranks
        rank, y_by_rank = prepare(scores, _descending_ranks(y))
        k = max(1, math.ceil(len(idx) * (share or 0.1)))
        ranks = rank[idx]
        chosen = np.partition(ranks, k - 1)[:k] if k < len(ranks) else ranks
        rate = float(y_by_rank[chosen].mean())
        if metric == "lift_top_decile":
            base = float(y[idx].mean())
            if base == 0:
                raise ValueError("lift needs positives")
            return rate / base
        return rate

    if metric == "roc_auc":
        return auc
    if metric == "brier":
        return brier
    if metric == "log_loss":
        return logloss
    if metric == "ece":
        return ece
    if share is not None:
        return top
    return None


def _auc_cells(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Per row: 2 × (rank of its distinct score) + label; and the number of distinct scores."""
    uniques, group = np.unique(p, return_inverse=True)
    return 2 * group.astype(np.int64) + y, len(uniques)


def _descending_ranks(y: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def build(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-p, kind="stable")
        rank = np.empty(len(p), dtype=np.int64)
        rank[order] = np.arange(len(p))
        return rank, y[order].astype(float)

    return build


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
