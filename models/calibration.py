"""Probability calibration, with the method chosen by a stated rule.

Two uses:

* ``choose_calibration`` / ``calibrate`` (next-best-offer pairs): with fewer than
  ``min_per_class`` validation rows in either class, Platt scaling (sigmoid: two parameters, safe on
  little data); otherwise Platt and isotonic are cross-fitted on the validation rows (5 folds,
  seeded) and the lower Brier score wins; a tie goes to Platt (the smoother map).
* ``choose_score_map`` / ``ScoreMap`` / ``CalibratedModel`` (binary families): the calibrator is
  fitted on *out-of-fold* scores — scores of models that never saw the rows, e.g. each training
  cutoff scored by a model fitted on earlier cutoffs — and kept only when it lowers the expected
  calibration error held out: each fold is re-scored by a map fitted on the other folds, and
  ``none`` (the identity) competes with Platt and isotonic on that cross-fitted ECE.
  ``CalibratedModel`` then applies the map to a classifier fitted on all rows (scikit-learn's
  ``CalibratedClassifierCV(ensemble=False)`` scheme, with folds chosen by the caller).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.utils.validation import check_is_fitted

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


MapMethod = Literal["none", "sigmoid", "isotonic"]


@dataclass(frozen=True)
class ScoreMap:
    """A fitted map from an uncalibrated probability to a calibrated one (``none``: identity)."""

    method: MapMethod
    slope: float = 1.0  # sigmoid: p' = 1 / (1 + exp(-(slope * logit(p) + intercept)))
    intercept: float = 0.0
    x: tuple[float, ...] = ()  # isotonic: the fitted step function's knots
    y: tuple[float, ...] = ()

    @classmethod
    def fit(cls, p: Any, y: Any, method: MapMethod) -> ScoreMap:
        p, y = np.asarray(p, dtype=float), np.asarray(y).astype(int)
        if method == "none":
            return cls("none")
        if method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
            return cls(
                "isotonic",
                x=tuple(map(float, iso.X_thresholds_)),
                y=tuple(map(float, iso.y_thresholds_)),
            )
        lr = LogisticRegression(C=1e6).fit(_logit(p), y)
        return cls("sigmoid", slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))

    def __call__(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.method == "none":
            return p
        if self.method == "isotonic":
            return np.interp(p, np.asarray(self.x), np.asarray(self.y))
        z = self.slope * _logit(p).ravel() + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method == "sigmoid":
            out |= {"slope": self.slope, "intercept": self.intercept}
        if self.method == "isotonic":
            out["knots"] = len(self.x)
        return out


@dataclass(frozen=True)
class MapChoice:
    """The map kept, the cross-fitted ECE of every candidate, and the rule that chose."""

    method: MapMethod
    ece: dict[str, float]
    rule: str
    folds: int
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def crossfit_map(
    p: np.ndarray, y: np.ndarray, fold: np.ndarray, method: MapMethod, seed: int = 0
) -> np.ndarray:
    """Each fold's scores mapped by a ``method`` map fitted on the other folds (with one fold,
    five seeded random folds of its rows)."""
    p, y, fold = np.asarray(p, dtype=float), np.asarray(y).astype(int), np.asarray(fold)
    if len(np.unique(fold)) < 2:
        fold = np.random.default_rng(seed).integers(0, 5, size=len(p))
    out = np.empty_like(p)
    for f in np.unique(fold):
        held = fold == f
        rest = ~held
        if method != "none" and len(np.unique(y[rest])) < 2:
            out[held] = p[held]  # nothing to fit on: the identity
            continue
        out[held] = ScoreMap.fit(p[rest], y[rest], method)(p[held])
    return out


def choose_score_map(
    p: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    candidates: tuple[MapMethod, ...] = ("none", "sigmoid", "isotonic"),
    min_per_class: int = 200,
    seed: int = 0,
) -> MapChoice:
    """Among ``candidates``, the map with the lowest cross-fitted ECE on out-of-fold scores;
    ``none`` wins ties and whenever no map lowers the held-out ECE. Isotonic needs at least
    ``min_per_class`` rows of each class (else it is not tried)."""
    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2)
    tried = [m for m in candidates if m != "isotonic" or counts.min() >= min_per_class]
    if "none" not in tried:
        tried.insert(0, "none")
    ece: dict[str, float] = {
        m: expected_calibration_error(y, crossfit_map(p, y, fold, m, seed)) for m in tried
    }
    best = min(tried, key=lambda m: (ece[m], m != "none"))
    n_folds = len(np.unique(fold))
    held = "each fold re-scored by a map fitted on the others" if n_folds > 1 else "5 random folds"
    rule = (
        f"lowest held-out ECE on out-of-fold scores ({held}); the identity unless a map lowers it"
    )
    if "isotonic" in candidates and "isotonic" not in tried:
        rule += f"; isotonic not tried (fewer than {min_per_class} rows in a class)"
    return MapChoice(best, ece, rule, n_folds, len(y))


class CalibratedModel(ClassifierMixin, BaseEstimator):
    """A binary classifier whose probabilities pass through a ``ScoreMap``.

    ``fit(X, y)`` is scikit-learn's ``ensemble=False`` scheme: the map is fitted on ``cv``-fold
    out-of-fold scores of ``estimator`` and the estimator is then refitted on all rows. Training
    jobs that choose their own (out-of-time) folds build it with ``from_parts`` instead.
    """

    def __init__(self, estimator: Any = None, method: MapMethod = "sigmoid", cv: int = 3) -> None:
        self.estimator = estimator
        self.method = method
        self.cv = cv

    @classmethod
    def from_parts(cls, fitted: Any, score_map: ScoreMap) -> CalibratedModel:
        """Wrap an already fitted classifier with an already fitted map."""
        model = cls(estimator=fitted, method=score_map.method)
        model.estimator_ = fitted
        model.map_ = score_map
        model.classes_ = np.asarray(getattr(fitted, "classes_", [0, 1]))
        if hasattr(fitted, "n_features_in_"):
            model.n_features_in_ = fitted.n_features_in_
        if hasattr(fitted, "feature_names_in_"):
            model.feature_names_in_ = fitted.feature_names_in_
        return model

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        if tags.classifier_tags is not None:
            tags.classifier_tags.multi_class = False  # a binary classifier
        return tags

    def fit(self, X: Any, y: Any) -> CalibratedModel:  # noqa: N803
        from sklearn.utils.multiclass import check_classification_targets, type_of_target
        from sklearn.utils.validation import check_X_y

        if not hasattr(X, "columns"):
            X, y = check_X_y(X, y)  # noqa: N806
        check_classification_targets(y)
        if type_of_target(y) != "binary":
            raise ValueError("Only binary classification is supported. y has more than 2 classes")
        if len(np.unique(y)) < 2:
            raise ValueError("y has 1 class: a classifier needs both classes")
        if len(y) < 2 * self.cv:
            raise ValueError(f"n_samples={len(y)}: too few rows for {self.cv} calibration folds")
        base = self.estimator if self.estimator is not None else LogisticRegression()
        classes = np.unique(y)
        y01 = (np.asarray(y) == classes[1]).astype(int)
        oof = cross_val_predict(clone(base), X, y01, cv=self.cv, method="predict_proba")[:, 1]
        self.map_ = ScoreMap.fit(oof, y01, self.method)
        self.estimator_ = clone(base).fit(X, y01)
        self.classes_ = classes
        self.n_features_in_ = np.asarray(X).shape[1]
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self, "map_")
        p = self.map_(self.estimator_.predict_proba(X)[:, 1])
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        positive = self.predict_proba(X)[:, 1] >= 0.5
        return self.classes_[positive.astype(int)]
