"""Learning from a campaign's own responses: how far to trust a model's per-customer uplift.

A model's uplift per (customer, arm) is noisy, and the arm a plan picks is the one whose noise
happened to be highest (the winner's curse): an arm learned from a few hundred contacts looks
best for many customers where it is not. Before the loop plans again, each arm's estimates are
**calibrated on randomised responses the model did not see** and the calibration is **shrunk
toward the model by empirical Bayes** — the model's own figures with few responses, the data's
with many.

1. **Best linear predictor of the uplift** (Chernozhukov, Demirer, Duflo & Fernández-Val,
   "Generic machine learning inference on heterogeneous treatment effects in randomized
   experiments", 2018): on customers who could have received arm ``a`` or been held out, with
   ``p`` the known probability of the arm rather than the control (the design's), regress the
   response ``y`` on ``[1, B, T - p, (T - p)(S - mean S)]`` with weights ``1 / (p (1 - p))``
   (``S`` the model's uplift, ``B`` its response without contact, both cross-fitted: from a
   model that did not see the row). The coefficient of ``T - p`` is the arm's average uplift
   (``ate``); that of ``(T - p)(S - mean S)`` is how much of the model's spread across customers
   is real (``slope``: 1 = the model's spread is right, 0 = none of it is signal). The calibrated
   uplift of a customer is ``ate + slope (S - mean S)``. Covariance: heteroscedasticity-robust
   (HC1).
2. **Empirical-Bayes shrinkage across arms**: each arm's measured ``ate`` and ``slope`` are
   drawn around the model's own figures (``mean S`` and 1) with a variance ``tau^2`` estimated
   from all arms by moments, ``tau^2 = max(0, mean((measured - prior)^2 - se^2))``; the
   posterior mean is ``prior + tau^2 / (tau^2 + se^2) (measured - prior)``. An arm measured on
   few responses (large ``se``) keeps the model's figures; one measured on many takes the data's.

Pure functions on arrays; the loop (``experiments.simulate``) cross-fits the model and calls
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearFit:
    """One arm's best linear predictor: average uplift and slope on the model's uplift."""

    ate: float
    slope: float
    ate_se: float
    slope_se: float
    centre: float  # mean of the model's uplift over the rows of the fit
    rows: int


def best_linear_predictor(
    y: np.ndarray, treated: np.ndarray, p: np.ndarray, score: np.ndarray, baseline: np.ndarray
) -> LinearFit:
    """The BLP of the uplift on ``score`` from randomised rows (see the module docstring).

    ``treated``: 1 where the row got the arm, 0 where held out; ``p``: the design's probability
    of the arm (rather than the control) per row, strictly between 0 and 1."""
    y, t, p, s, b = (np.asarray(v, dtype=float) for v in (y, treated, p, score, baseline))
    n = y.size
    if not (t.size == p.size == s.size == b.size == n):
        raise ValueError("y, treated, p, score, baseline: one value per row")
    if n < 8 or not ((p > 0) & (p < 1)).all():
        raise ValueError("best_linear_predictor: at least 8 rows with 0 < p < 1")
    w = 1.0 / (p * (1.0 - p))
    centre = float(np.average(s, weights=w))
    d = t - p
    x = np.column_stack([np.ones(n), b, d, d * (s - centre)])
    xw = x * w[:, None]
    xtwx = x.T @ xw
    try:
        inv = np.linalg.inv(xtwx)
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(xtwx)
    beta = inv @ (xw.T @ y)
    resid = y - x @ beta
    meat = (xw * resid[:, None]).T @ (xw * resid[:, None])
    cov = inv @ meat @ inv * n / max(n - x.shape[1], 1)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return LinearFit(float(beta[2]), float(beta[3]), float(se[2]), float(se[3]), centre, n)


def eb_shrink(measured: np.ndarray, se: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, float]:
    """Posterior means of several measured figures around their priors, with the prior variance
    estimated from the figures themselves (moments); returns (posterior, tau^2). ``tau^2 = 0``
    (the figures vary no more than their noise) gives the priors back."""
    m, s, pr = (np.asarray(v, dtype=float) for v in (measured, se, prior))
    ok = np.isfinite(m) & np.isfinite(s)
    if not ok.any():
        return pr.copy(), 0.0
    tau2 = float(max(0.0, np.mean((m[ok] - pr[ok]) ** 2 - s[ok] ** 2)))
    post = pr.copy()
    weight = tau2 / (tau2 + s[ok] ** 2) if tau2 > 0 else np.zeros(int(ok.sum()))
    post[ok] = pr[ok] + weight * (m[ok] - pr[ok])
    return post, tau2


@dataclass(frozen=True)
class Calibration:
    """Per arm of a model: the shrunk average uplift and slope, and the centre of the slope."""

    ate: np.ndarray
    slope: np.ndarray
    centre: np.ndarray
    fits: tuple[LinearFit | None, ...]
    tau2: tuple[float, float]  # prior variances of ate and slope across arms

    def apply(self, uplift: np.ndarray) -> np.ndarray:
        """Calibrated uplift per (customer, arm) from the model's (same columns)."""
        u = np.asarray(uplift, dtype=float)
        return self.ate + self.slope * (u - self.centre)


def calibrate(fits: list[LinearFit | None]) -> Calibration:
    """Shrink each arm's BLP toward the model (``ate`` toward the model's mean uplift of the arm
    on the same rows, ``centre``; ``slope`` toward 1). An arm without a fit (None) keeps the
    model's figures."""
    k = len(fits)
    ate = np.array([f.ate if f else np.nan for f in fits])
    ate_se = np.array([f.ate_se if f else np.nan for f in fits])
    slope = np.array([f.slope if f else np.nan for f in fits])
    slope_se = np.array([f.slope_se if f else np.nan for f in fits])
    centre = np.array([f.centre if f else 0.0 for f in fits])
    post_ate, tau_ate = eb_shrink(ate, ate_se, centre)
    post_slope, tau_slope = eb_shrink(slope, slope_se, np.ones(k))
    return Calibration(post_ate, post_slope, centre, tuple(fits), (tau_ate, tau_slope))
