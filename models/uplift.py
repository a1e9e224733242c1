"""Uplift (CATE) estimators on XGBoost and the metrics that judge them: Qini, AUUC, uplift at k.

Why our own small learners and not causalml: causalml 0.18 installs (+350 MB) and its X-learner
gives the same kind of result (STACK.md), but the X- and T-learners are ~100 lines on the
XGBoost we already ship, keep the scikit-learn contract (``clone``, ``Pipeline``,
``mlflow``'s cloudpickle), and add no dependency. scikit-uplift's metrics use a scikit-learn
function removed in 1.10, so the metrics are here too, with scikit-uplift's definitions.

The estimator contract, with one addition: ``fit(X, y, treatment=...)``. The treatment is a
keyword argument aligned with the rows of ``X`` (1 / True = treated, 0 / False = control), not a
column of ``X``, so that ``X`` holds the same features at fit and at predict time and a
preprocessing ``Pipeline`` works unchanged: ``pipe.fit(X, y, uplift__treatment=t)``.
(causalml's order is ``fit(X, treatment, y)``; we keep scikit-learn's ``X, y`` first.)
``predict(X)`` returns the estimated conditional average treatment effect (CATE) per row:
``P(y | x, treated) - P(y | x, control)`` for a binary outcome, the difference of means otherwise.

Metrics (``y`` outcome, ``treatment`` 0/1, ``score`` the ranking, highest first):

* Qini curve at the ``k`` highest scores: ``Q(k) = Y_T(k) - Y_C(k) * N_T(k) / N_C(k)``
  (incremental responses among the targeted, control scaled to the treated count); points only at
  distinct scores, so ties (e.g. a constant score) give the random diagonal.
* Qini coefficient (normalised): ``(A(model) - A(random)) / (A(perfect) - A(random))`` with
  ``A`` the area under the Qini curve, random the straight line to ``Q(N)`` and perfect the curve
  of the score ``y * t - y * (1 - t)`` (treated responders first, control responders last), as
  scikit-uplift's ``qini_auc_score(negative_effect=True)``. 0 = random, 1 = perfect.
* AUUC (normalised): the same ratio on the uplift curve ``U(k) = (Y_T(k) / N_T(k) - Y_C(k) /
  N_C(k)) * k``, with scikit-uplift's perfect uplift curve.
* Uplift at top ``k`` (a fraction): response rate of the treated minus that of the controls among
  the ``ceil(k N)`` highest-scored rows; random targeting's expectation is the overall uplift.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyRegressor
from sklearn.utils.validation import check_is_fitted, validate_data
from xgboost import XGBClassifier, XGBRegressor

DEFAULT_UPLIFT_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 3,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 10,
    "tree_method": "hist",
    # one thread per model: at campaign-contact sizes (~10^4 rows) two threads gain little and
    # lose a lot when the cores are busy (measured 10x slower under load on 2 cores)
    "n_jobs": 1,
}


def _treatment_array(treatment: Any, n: int) -> np.ndarray:
    """The treatment as a 0/1 int array of length ``n``; refuses anything but two groups."""
    if treatment is None:
        raise ValueError("fit needs treatment=<0/1 per row> (1 = treated, 0 = control)")
    t = np.asarray(treatment)
    if t.shape != (n,):
        raise ValueError(f"treatment has shape {t.shape}; expected ({n},)")
    if t.dtype == bool:
        t = t.astype(int)
    values = set(np.unique(t).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"treatment must be 0/1 or boolean, got values {sorted(values)[:5]}")
    if values != {0, 1}:
        raise ValueError("treatment needs both treated (1) and control (0) rows")
    return t.astype(int)


def _is_binary(y: np.ndarray) -> bool:
    return set(np.unique(y).tolist()) <= {0, 1}


class _UpliftBase(BaseEstimator):
    """Shared parts of the meta-learners: validation and the per-group outcome models."""

    def __init__(self, params: dict[str, Any] | None = None, random_state: int = 0) -> None:
        self.params = params
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # XGBoost routes missing values; fit allows NaN
        return tags

    def _xgb_params(self) -> dict[str, Any]:
        return {**DEFAULT_UPLIFT_PARAMS, **(self.params or {}), "random_state": self.random_state}

    def _outcome_model(self, X: np.ndarray, y: np.ndarray) -> Any:
        """P(y = 1 | x) (binary y) or E[y | x] fitted on one group's rows."""
        if self.binary_:
            if len(np.unique(y)) < 2:  # a group with a single outcome: that constant
                return DummyRegressor().fit(X, y.astype(float))
            return XGBClassifier(**self._xgb_params()).fit(X, y)
        return XGBRegressor(**self._xgb_params()).fit(X, y)

    def _effect_model(self, X: np.ndarray, d: np.ndarray) -> Any:
        if len(d) < 2 or np.ptp(d) == 0:
            return DummyRegressor().fit(X, d)
        return XGBRegressor(**self._xgb_params()).fit(X, d)

    def _mean(self, model: Any, X: np.ndarray) -> np.ndarray:
        if isinstance(model, XGBClassifier):
            return np.asarray(model.predict_proba(X)[:, 1], dtype=float)
        return np.asarray(model.predict(X), dtype=float)

    def _validate_fit(self, X: Any, y: Any, treatment: Any) -> tuple[np.ndarray, ...]:
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        t = _treatment_array(treatment, X.shape[0])
        y = np.asarray(y, dtype=float)
        self.binary_ = _is_binary(y)
        if self.binary_:
            y = y.astype(int)
        self.treated_share_ = float(t.mean())
        return X, y, t

    def _validate_predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "treated_share_")
        return validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)

    def predict_outcomes(self, X: Any) -> np.ndarray:
        """Columns: expected outcome under control, under treatment (P(respond) if binary)."""
        X = self._validate_predict(X)
        return np.column_stack(
            [self._mean(self.control_model_, X), self._mean(self.treated_model_, X)]
        )

    def predict_response_treated(self, X: Any) -> np.ndarray:
        """P(respond | x, treated): the "response model" a campaign would target by."""
        return self.predict_outcomes(X)[:, 1]


class TLearner(_UpliftBase):
    """Two-model (T-) learner: ``tau(x) = mu_1(x) - mu_0(x)`` with one XGBoost per group."""

    def fit(self, X: Any, y: Any, treatment: Any = None) -> TLearner:
        """Fit the control and the treated outcome models."""
        X, y, t = self._validate_fit(X, y, treatment)
        self.control_model_ = self._outcome_model(X[t == 0], y[t == 0])
        self.treated_model_ = self._outcome_model(X[t == 1], y[t == 1])
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Estimated CATE per row."""
        outcomes = self.predict_outcomes(X)
        return outcomes[:, 1] - outcomes[:, 0]


class XLearner(_UpliftBase):
    """X-learner (Künzel et al. 2019) on XGBoost.

    1. outcome models ``mu_0`` on the controls and ``mu_1`` on the treated;
    2. imputed effects ``D_1 = y - mu_0(x)`` on the treated and ``D_0 = mu_1(x) - y`` on the
       controls;
    3. effect models ``tau_1`` on ``D_1`` and ``tau_0`` on ``D_0``;
    4. ``tau(x) = e tau_0(x) + (1 - e) tau_1(x)`` with ``e`` the propensity. Campaign groups are
       assigned at random, so ``e`` is the treated share of the training rows (a constant), as
       in causalml when it is given the known propensity.
    """

    def fit(self, X: Any, y: Any, treatment: Any = None) -> XLearner:
        """Fit the outcome models, then the effect models on the imputed effects."""
        X, y, t = self._validate_fit(X, y, treatment)
        x0, y0, x1, y1 = X[t == 0], y[t == 0], X[t == 1], y[t == 1]
        self.control_model_ = self._outcome_model(x0, y0)
        self.treated_model_ = self._outcome_model(x1, y1)
        d1 = y1 - self._mean(self.control_model_, x1)
        d0 = self._mean(self.treated_model_, x0) - y0
        self.effect_treated_model_ = self._effect_model(x1, d1)
        self.effect_control_model_ = self._effect_model(x0, d0)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Estimated CATE per row."""
        X = self._validate_predict(X)
        e = self.treated_share_
        tau0 = np.asarray(self.effect_control_model_.predict(X), dtype=float)
        tau1 = np.asarray(self.effect_treated_model_.predict(X), dtype=float)
        return e * tau0 + (1 - e) * tau1


class MultiArmUplift(BaseEstimator):
    """Uplift of several treatment arms (e.g. (offer, channel) pairs) against one shared control.

    ``learner``:

    * ``x`` / ``t``: one two-group learner per arm, fitted on that arm's rows and the control rows
      — each arm's effect from its own randomised cell, against the same control group. The
      price: an arm learns only from its own cell, and the control's noise is shared.
    * ``s``: one pooled outcome model over every row with the arm as a one-hot input (control:
      all zeros); the uplift of arm ``a`` is the prediction with ``a`` set minus with none. It
      shares what the arms have in common (the baseline response, the shape of the effect over
      recency and frequency) across all cells, at the risk of shrinking a weak arm's effect
      towards none. Measured on the multi-arm synthetic campaigns (bench/offpolicy.py, 3
      seeds), the per-arm X-learner's policy earned more (85 % of the oracle's profit against
      77 %; docs/decisions.md).

    ``fit(X, y, arm=...)``: ``arm`` per row, an arm index ``0 .. A - 1`` or ``-1`` for the
    control group. ``predict(X)`` is the (n, A) uplift; ``predict_outcomes(X)`` the (n, A + 1)
    response probabilities, one column per arm and the control's last (the layout of
    ``models.decisions.offpolicy.Log.propensity``).
    """

    def __init__(
        self, learner: str = "x", params: dict[str, Any] | None = None, random_state: int = 0
    ) -> None:
        self.learner = learner
        self.params = params
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X: Any, y: Any, arm: Any = None) -> MultiArmUplift:
        """Fit one learner per arm on its rows and the control rows."""
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        if self.learner not in ("x", "t", "s"):
            raise ValueError(f"unknown multi-arm learner {self.learner!r}; known: s, t, x")
        if arm is None:
            raise ValueError("fit needs arm=<arm index per row, -1 = control>")
        a = np.asarray(arm)
        if a.shape != (X.shape[0],) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"arm: one integer per row ({X.shape[0]}), -1 = control")
        control = a == -1
        if not control.any():
            raise ValueError("arm: no control rows (-1): uplift needs a control group")
        n_arms = int(a.max()) + 1
        if n_arms < 1 or (a < -1).any():
            raise ValueError("arm: indices 0 .. A - 1 for the arms and -1 for the control")
        empty = [j for j in range(n_arms) if not (a == j).any()]
        if empty:
            raise ValueError(f"arm: arms {empty} have no rows")
        self.n_arms_ = n_arms
        if self.learner == "s":
            pooled = _UpliftBase(self.params, self.random_state)
            pooled.binary_ = _is_binary(y)
            self.pooled_ = pooled._outcome_model(self._with_arm(X, a), y)
            self.learners_: list[Any] = []
            return self
        self.learners_ = []
        for j in range(n_arms):
            rows = control | (a == j)
            learner = make_learner(self.learner, self.params, self.random_state)
            self.learners_.append(learner.fit(X[rows], y[rows], treatment=(a[rows] == j)))
        return self

    def _with_arm(self, X: np.ndarray, arm: np.ndarray) -> np.ndarray:
        """The features and the arm one-hot (control: all zeros), the pooled model's input."""
        onehot = np.zeros((X.shape[0], self.n_arms_))
        treated = arm >= 0
        onehot[np.flatnonzero(treated), arm[treated]] = 1.0
        return np.hstack([X, onehot])

    def _pooled_outcomes(self, X: np.ndarray) -> np.ndarray:
        columns = []
        for j in [*range(self.n_arms_), -1]:
            x_arm = self._with_arm(X, np.full(X.shape[0], j))
            model = self.pooled_
            if isinstance(model, XGBClassifier):
                columns.append(np.asarray(model.predict_proba(x_arm)[:, 1], dtype=float))
            else:
                columns.append(np.asarray(model.predict(x_arm), dtype=float))
        return np.column_stack(columns)

    def predict(self, X: Any) -> np.ndarray:
        """Estimated uplift per (row, arm)."""
        check_is_fitted(self, "learners_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        if self.learner == "s":
            outcomes = self._pooled_outcomes(X)
            return outcomes[:, :-1] - outcomes[:, -1:]
        return np.column_stack([learner.predict(X) for learner in self.learners_])

    def predict_outcomes(self, X: Any) -> np.ndarray:
        """P(respond) per arm, then without contact (the mean of the arms' control models)."""
        check_is_fitted(self, "learners_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        if self.learner == "s":
            return self._pooled_outcomes(X)
        outcomes = [learner.predict_outcomes(X) for learner in self.learners_]
        control = np.mean([o[:, 0] for o in outcomes], axis=0)
        return np.column_stack([*(o[:, 1] for o in outcomes), control])


def make_learner(kind: str, params: dict[str, Any] | None = None, random_state: int = 0) -> Any:
    """An unfitted learner by name: ``x`` (X-learner) or ``t`` (T-learner)."""
    learners = {"x": XLearner, "t": TLearner}
    if kind not in learners:
        raise ValueError(f"unknown uplift learner {kind!r}; known: {sorted(learners)}")
    return learners[kind](params=params, random_state=random_state)


# --------------------------------------------------------------------------- metrics


def _arrays(y: Any, treatment: Any, score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=float)
    t_arr = np.asarray(treatment).astype(int)
    s_arr = np.asarray(score, dtype=float)
    if not (y_arr.shape == t_arr.shape == s_arr.shape) or y_arr.ndim != 1:
        raise ValueError("y, treatment and score must be 1-D arrays of the same length")
    if not set(np.unique(t_arr).tolist()) <= {0, 1}:
        raise ValueError("treatment must be 0/1")
    return y_arr, t_arr, s_arr


def _cumulative(
    y: np.ndarray, t: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts at each distinct-score threshold (highest first): k, N_T, N_C, Y_T, Y_C."""
    order = np.argsort(-score, kind="mergesort")
    y, t, score = y[order], t[order], score[order]
    ends = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    n_t = np.cumsum(t)[ends].astype(float)
    y_t = np.cumsum(y * t)[ends]
    y_c = np.cumsum(y * (1 - t))[ends]
    k = (ends + 1).astype(float)
    return k, n_t, k - n_t, y_t, y_c


def qini_curve(y: Any, treatment: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    """(number targeted, incremental responses Q(k)) from 0 to N, at distinct scores."""
    y_arr, t_arr, s_arr = _arrays(y, treatment, score)
    k, n_t, n_c, y_t, y_c = _cumulative(y_arr, t_arr, s_arr)
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0)
    return np.r_[0.0, k], np.r_[0.0, y_t - y_c * ratio]


def uplift_curve(y: Any, treatment: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    """(number targeted, (rate_T(k) - rate_C(k)) * k) from 0 to N, at distinct scores."""
    y_arr, t_arr, s_arr = _arrays(y, treatment, score)
    k, n_t, n_c, y_t, y_c = _cumulative(y_arr, t_arr, s_arr)
    rate_t = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t > 0)
    rate_c = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    return np.r_[0.0, k], np.r_[0.0, (rate_t - rate_c) * k]


def _normalised_area(
    curve: tuple[np.ndarray, np.ndarray], perfect: tuple[np.ndarray, np.ndarray]
) -> float:
    """(area(curve) - area(random)) / (area(perfect) - area(random)), random the chord."""
    x_p, y_p = perfect
    random_area = 0.5 * float(x_p[-1]) * float(y_p[-1])
    best = float(np.trapezoid(y_p, x_p)) - random_area
    if best == 0:
        return float("nan")
    return (float(np.trapezoid(curve[1], curve[0])) - random_area) / best


def qini_coefficient(y: Any, treatment: Any, score: Any) -> float:
    """Normalised Qini coefficient: 0 for random targeting, 1 for the perfect ranking."""
    y_arr, t_arr, s_arr = _arrays(y, treatment, score)
    perfect = qini_curve(y_arr, t_arr, y_arr * t_arr - y_arr * (1 - t_arr))
    return _normalised_area(qini_curve(y_arr, t_arr, s_arr), perfect)


def auuc(y: Any, treatment: Any, score: Any) -> float:
    """Normalised area under the uplift curve: 0 for random, 1 for the perfect ranking."""
    y_arr, t_arr, s_arr = _arrays(y, treatment, score)
    control_responders = np.sum((y_arr == 1) & (t_arr == 0))
    treated_non = np.sum((y_arr == 0) & (t_arr == 1))
    summand = y_arr if control_responders > treated_non else t_arr
    perfect = uplift_curve(y_arr, t_arr, 2.0 * (y_arr == t_arr) + summand)
    return _normalised_area(uplift_curve(y_arr, t_arr, s_arr), perfect)


def uplift_at_k(y: Any, treatment: Any, score: Any, k: float) -> float:
    """Treated minus control response rate among the top ``k`` (fraction) by score."""
    if not 0 < k <= 1:
        raise ValueError(f"k is a fraction in (0, 1], got {k}")
    y_arr, t_arr, s_arr = _arrays(y, treatment, score)
    top = np.argsort(-s_arr, kind="mergesort")[: math.ceil(k * y_arr.size)]
    yt, tt = y_arr[top], t_arr[top]
    if tt.sum() == 0 or tt.sum() == tt.size:
        return float("nan")
    return float(yt[tt == 1].mean() - yt[tt == 0].mean())


def uplift_by_bin(
    y: Any, treatment: Any, score: Any, n_bins: int = 10, truth: Any = None
) -> pd.DataFrame:
    """Rows ranked by score in equal bins: treated / control counts and rates, observed uplift
    (and the mean true uplift when ``truth`` is given)."""
    y_arr, t_arr, s_arr = _arrays(y, treatment, score)
    order = np.argsort(-s_arr, kind="mergesort")
    true = None if truth is None else np.asarray(truth, dtype=float)
    rows = []
    for i, idx in enumerate(np.array_split(order, n_bins), start=1):
        yb, tb = y_arr[idx], t_arr[idx]
        n_t, n_c = int(tb.sum()), int((1 - tb).sum())
        rate_t = yb[tb == 1].mean() if n_t else np.nan
        rate_c = yb[tb == 0].mean() if n_c else np.nan
        row = {
            "bin": i,
            "customers": len(idx),
            "treated": n_t,
            "control": n_c,
            "rate_treated": rate_t,
            "rate_control": rate_c,
            "uplift": rate_t - rate_c,
            "mean_score": float(s_arr[idx].mean()),
        }
        if true is not None:
            row["mean_true_uplift"] = float(true[idx].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def uplift_metrics(
    y: Any, treatment: Any, score: Any, top_k: list[float] | tuple[float, ...] = (0.1, 0.2, 0.3)
) -> dict[str, float]:
    """Qini coefficient, AUUC and uplift at each top-k fraction of one ranking."""
    out = {"qini": qini_coefficient(y, treatment, score), "auuc": auuc(y, treatment, score)}
    for k in top_k:
        out[f"uplift_at_{round(100 * k)}pct"] = uplift_at_k(y, treatment, score, k)
    return out


__all__ = [
    "DEFAULT_UPLIFT_PARAMS",
    "TLearner",
    "XLearner",
    "auuc",
    "make_learner",
    "qini_coefficient",
    "qini_curve",
    "uplift_at_k",
    "uplift_by_bin",
    "uplift_curve",
    "uplift_metrics",
]
