"""Probability calibration on a validation cutoff, with the method chosen by a stated rule.

Rule (``choose_calibration``): with fewer than ``min_per_class`` validation rows in either class,
Platt scaling (sigmoid: two parameters, safe on little data). Otherwise both Platt and isotonic are
cross-fitted on the validation rows (5 folds, seeded) and the one with the lower Brier score wins;
a tie goes to Platt (the smoother map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold

Method = Literal["sigmoid", "isotonic"]


@dataclass(frozen=True)
class CalibrationChoice:
    """The chosen method and the cross-fitted Brier scores it was chosen on."""

    method: Method
    brier: dict[str, float]
    rule: str


def _crossfit_brier(p: np.ndarray, y: np.ndarray, method: Method, seed: int) -> float:
    out = np.empty_like(p)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    for fit_idx, pred_idx in folds.split(p.reshape(-1, 1), y):
        if method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            out[pred_idx] = iso.fit(p[fit_idx], y[fit_idx]).predict(p[pred_idx])
        else:
            lr = LogisticRegression().fit(_logit(p[fit_idx]), y[fit_idx])
            out[pred_idx] = lr.predict_proba(_logit(p[pred_idx]))[:, 1]
    return float(brier_score_loss(y, out))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q)).reshape(-1, 1)


def choose_calibration(
    p_valid: np.ndarray, y_valid: np.ndarray, min_per_class: int = 200, seed: int = 0
) -> CalibrationChoice:
    """Pick Platt or isotonic for uncalibrated scores on validation rows (rule in module doc)."""
    y = np.asarray(y_valid).astype(int)
    p = np.asarray(p_valid, dtype=float)
    counts = np.bincount(y, minlength=2)
    if counts.min() < min_per_class:
        return CalibrationChoice(
            "sigmoid", {}, f"fewer than {min_per_class} validation rows in a class: Platt"
        )
    brier = {m: _crossfit_brier(p, y, m, seed) for m in ("sigmoid", "isotonic")}
    method: Method = "isotonic" if brier["isotonic"] < brier["sigmoid"] else "sigmoid"
    return CalibrationChoice(method, brier, "lower cross-fitted Brier on the validation cutoff")


def calibrate(estimator: Any, x_valid: Any, y_valid: np.ndarray, method: Method) -> Any:
    """Wrap an already fitted classifier with a calibrator fitted on the validation rows."""
    return CalibratedClassifierCV(FrozenEstimator(estimator), method=method).fit(x_valid, y_valid)


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the mean |observed rate - mean prediction| over equal-width bins, weighted by size."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y)) if len(y) else float("nan")


def reliability_curve(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Rows (mean prediction, observed rate, count) per equal-width bin that holds rows."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = [
        (p[bins == b].mean(), y[bins == b].mean(), (bins == b).sum())
        for b in range(n_bins)
        if (bins == b).any()
    ]
    return np.array(rows, dtype=float).reshape(-1, 3)
