"""Customer lifetime value: BG/NBD purchases, Gamma-Gamma spend, discounted CLV and CLV metrics.

Both models are fitted by maximum likelihood on the published log-likelihoods:

* BG/NBD: Fader, Hardie & Lee (2005), "Counting your customers the easy way: an alternative to the
  Pareto/NBD model", Marketing Science 24(2) -- eq. 6 (likelihood), 9 (E[X(t)]), 10 (conditional
  expectation); P(alive) from Fader, Hardie & Lee (2008), "Computing P(alive) using the BG/NBD
  model".
* Gamma-Gamma: Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer base
  analysis", JMR 42(4); Fader & Hardie (2013), "The Gamma-Gamma model of monetary value".

Inputs are the summary of ``features.clv_summary``: a DataFrame with columns ``frequency`` (x,
repeat purchase periods), ``recency`` (t_x), ``T`` and, for Gamma-Gamma, ``monetary_value`` (mean
value of the repeat purchases). A plain array is read in that column order. Time is in whatever unit
the summary used; ``alpha`` is in that unit.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

BGNBD_COLUMNS = ("frequency", "recency", "T")
GG_COLUMNS = ("frequency", "monetary_value")
_LOG_BOUND = 15.0  # log-parameters are kept in [-15, 15]: exp(15) ~ 3.3e6


def _columns(X, names: tuple[str, ...]) -> list[np.ndarray]:  # noqa: N803 - scikit-learn's name
    """The named columns of X as float arrays (a DataFrame by name, else an array by position)."""
    if isinstance(X, pd.DataFrame):
        missing = [n for n in names if n not in X.columns]
        if missing:
            raise ValueError(f"X has no column(s) {missing}; expected {list(names)}")
        cols = [X[n].to_numpy(dtype=np.float64, na_value=np.nan) for n in names]
    else:
        # check_array refuses sparse, complex, 1-D and featureless input with the standard
        # messages; missing values are left to the per-column message below
        arr = check_array(X, dtype=np.float64, ensure_all_finite=False, ensure_min_samples=0)
        if arr.shape[1] < len(names):
            raise ValueError(
                f"X has {arr.shape[1]} feature(s); expected the columns "
                f"{list(names)}, got shape {arr.shape}"
            )
        cols = [arr[:, i] for i in range(len(names))]
    for name, col in zip(names, cols, strict=True):
        if not np.all(np.isfinite(col)):
            raise ValueError(f"column {name!r} has missing or infinite values")
    return cols


def _bgnbd_inputs(X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: N803
    """Validated (x, t_x, T) of a BG/NBD summary."""
    x, t_x, t = _columns(X, BGNBD_COLUMNS)
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t < 0):  # tagged positive_only: its message
        raise ValueError(
            "Negative values in data: frequency must hold non-negative whole "
            "numbers (repeat purchase periods), recency and T must be >= 0"
        )
    if np.any(x != np.round(x)):
        raise ValueError("frequency must hold non-negative whole numbers (repeat purchase periods)")
    if np.any(t_x < 0) or np.any(t_x > t + 1e-9):
        raise ValueError("recency must lie in [0, T]")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("recency must be 0 where frequency is 0")
    return x, t_x, t


def _positive_only_tags(tags: Any) -> Any:
    """Tags of a model of counts, times and money: negative inputs are refused."""
    tags.input_tags.positive_only = True
    return tags


def _weighted_unique(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows and their counts: the likelihood is evaluated once per pattern."""
    rows, counts = np.unique(np.column_stack(cols), axis=0, return_counts=True)
    return [rows[:, i] for i in range(rows.shape[1])], counts.astype(np.float64)


def _fit_log_params(
    nll_grad, x0: np.ndarray, n: float, names: tuple[str, ...], model: str
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Minimise a mean negative log-likelihood over log-parameters; optimum and total Hessian."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(x0)
    res = minimize(
        nll_grad,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9},
    )
    # a line search that stalls at the optimum ("ABNORMAL") is not a failure: judge by the gradient
    grad_norm = float(np.max(np.abs(nll_grad(res.x)[1])))
    converged = bool(res.success) or grad_norm < 1e-6
    if not converged:
        warnings.warn(
            f"{model} fit did not converge: {res.message} (max |gradient| {grad_norm:.2g})",
            ConvergenceWarning,
            stacklevel=3,
        )
    at_bound = np.abs(res.x) >= _LOG_BOUND - 1e-6
    if np.any(at_bound):
        warnings.warn(
            f"{model} parameter(s) {[m for m, b in zip(names, at_bound, strict=True) if b]} hit "
            "the search bound: the data do not identify them",
            ConvergenceWarning,
            stacklevel=3,
        )
    # observed information by central differences of the analytic gradient
    k, h = len(res.x), 1e-5
    hess = np.empty((k, k))
    for i in range(k):
        step = np.zeros(k)
        step[i] = h
        hess[i] = (nll_grad(res.x + step)[1] - nll_grad(res.x - step)[1]) / (2 * h)
    return res.x, n * (hess + hess.T) / 2, int(res.nit), converged


def _standard_errors(log_params: np.ndarray, hess: np.ndarray) -> np.ndarray:
    """Delta-method standard errors of the parameters from the Hessian in log space."""
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return np.full(len(log_params), np.nan)
    var = np.diag(cov)
    return np.where(var > 0, np.exp(log_params) * np.sqrt(np.abs(var)), np.nan)


def _bgnbd_loglik_terms(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pattern BG/NBD log-likelihood (FHL 2005 eq. 6) and its gradient in the parameters."""
    r, alpha, a, b = params
    pos = x > 0
    common = (
        gammaln(r + x)
        - gammaln(r)
        + r * np.log(alpha)
        + gammaln(a + b)
        + gammaln(b + x)
        - gammaln(b)
        - gammaln(a + b + x)
    )
    c3 = -(r + x) * np.log(alpha + t)
    bx1 = np.where(pos, b + x - 1.0, 1.0)
    c4 = np.where(pos, np.log(a) - np.log(bx1) - (r + x) * np.log(alpha + t_x), -np.inf)
    ll = common + np.logaddexp(c3, c4)
    w4 = np.where(pos, expit(c4 - np.where(pos, c3, 0.0)), 0.0)  # share of the "dropped" branch
    w3 = 1.0 - w4
    d_r = (
        digamma(r + x)
        - digamma(r)
        + np.log(alpha)
        - w3 * np.log(alpha + t)
        - w4 * np.log(alpha + t_x)
    )
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + t) + w4 / (alpha + t_x))
    d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    d_b = (
        digamma(a + b)
        + digamma(b + x)
        - digamma(b)
        - digamma(a + b + x)
        - np.where(pos, w4 / bx1, 0.0)
    )
    return ll, np.stack([d_r, d_alpha, d_a, d_b])


def _hyp2f1_stable(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """2F1(a, b; c; z) for 0 <= z < 1; Euler's transformation where the direct sum overflows."""
    direct = hyp2f1(a, b, c, z)
    bad = ~np.isfinite(direct)
    if np.any(bad):
        euler = (1.0 - z) ** (c - a - b) * hyp2f1(c - a, c - b, c, z)
        direct = np.where(bad, euler, direct)
    return direct


class BetaGeoModel(BaseEstimator):
    """BG/NBD model of repeat purchases (Fader, Hardie & Lee 2005), fitted by maximum likelihood.

    Parameters: ``prediction_periods`` is the horizon of ``predict`` (expected repeat purchases in
    the next that many time units); ``penalizer`` adds ``penalizer * sum(params**2)`` to the mean
    negative log-likelihood, on the parameters with time rescaled so max(T) = 10 (as ``lifetimes``
    does; 0 = plain maximum likelihood).
    Learned: ``params_`` (r, alpha, a, b), ``standard_errors_``, ``log_likelihood_``,
    ``n_customers_``, ``time_scale_``, ``converged_``, ``n_iter_``.
    """

    param_names = ("r", "alpha", "a", "b")

    def __init__(self, prediction_periods: float = 1.0, penalizer: float = 0.0) -> None:
        self.prediction_periods = prediction_periods
        self.penalizer = penalizer

    def __sklearn_tags__(self) -> Any:
        return _positive_only_tags(super().__sklearn_tags__())

    def fit(self, X, y=None):  # noqa: N803
        """Fit r, alpha, a, b by maximum likelihood on log-parameters (L-BFGS-B, exact gradient)."""
        x, t_x, t = _bgnbd_inputs(X)
        # n_features_in_ (and feature_names_in_ for a frame) as the contract asks; predict reads
        # its columns by name or position and ignores the others, so it does not check them
        validate_data(self, X, skip_check_array=True)
        if len(x) == 0:
            raise ValueError("cannot fit on an empty summary")
        if self.penalizer < 0:
            raise ValueError("penalizer must be >= 0")
        # rescale time so max(T) = 10: alpha lives in the time unit and would otherwise be far
        # from the other parameters' scale; alpha is scaled back after the fit.
        scale = 10.0 / max(float(t.max()), 1e-12)
        (ux, utx, ut), w = _weighted_unique(x, t_x * scale, t * scale)
        n = w.sum()
        pen = self.penalizer

        def nll_grad(log_p: np.ndarray) -> tuple[float, np.ndarray]:
            p = np.exp(log_p)
            ll, grad = _bgnbd_loglik_terms(p, ux, utx, ut)
            f = -(w @ ll) / n + pen * np.sum(p**2)
            g = -(grad @ w) * p / n + pen * 2 * p**2
            return float(f), g

        log_p, hess, nit, ok = _fit_log_params(nll_grad, np.zeros(4), n, self.param_names, "BG/NBD")
        params = np.exp(log_p)
        se = _standard_errors(log_p, hess)
        params[1] /= scale
        se[1] /= scale
        self.params_ = pd.Series(params, index=list(self.param_names), name="estimate")
        self.standard_errors_ = pd.Series(se, index=list(self.param_names), name="std_error")
        # the log-likelihood in the caller's time unit (rescaling time adds a Jacobian term)
        self.log_likelihood_ = float(
            w @ _bgnbd_loglik_terms(params, ux, utx / scale, ut / scale)[0]
        )
        self.n_customers_ = int(n)
        self.time_scale_ = scale
        self.converged_ = ok
        self.n_iter_ = nit
        return self

    def _params(self) -> tuple[float, float, float, float]:
        check_is_fitted(self, "params_")
        r, alpha, a, b = (float(v) for v in self.params_.to_numpy())
        return r, alpha, a, b

    def log_likelihood(self, X) -> np.ndarray:  # noqa: N803
        """Per-customer log-likelihood of the summary under the fitted parameters."""
        x, t_x, t = _bgnbd_inputs(X)
        return _bgnbd_loglik_terms(np.array(self._params()), x, t_x, t)[0]

    def score(self, X, y=None) -> float:  # noqa: N803
        """Mean log-likelihood per customer (higher is better)."""
        return float(np.mean(self.log_likelihood(X)))

    def probability_alive(self, X) -> np.ndarray:  # noqa: N803
        """P(alive at T | x, t_x, T); 1 for customers without a repeat purchase."""
        r, alpha, a, b = self._params()
        x, t_x, t = _bgnbd_inputs(X)
        pos = x > 0
        log_odds_dead = (
            np.log(a)
            - np.log(np.where(pos, b + x - 1.0, 1.0))
            + (r + x) * (np.log(alpha + t) - np.log(alpha + t_x))
        )
        return np.where(pos, expit(-log_odds_dead), 1.0)

    def expected_purchases(self, X, t: float | np.ndarray) -> np.ndarray:  # noqa: N803
        """Expected repeat purchases in (T, T + t] given each history (FHL 2005 eq. 10)."""
        r, alpha, a, b = self._params()
        x, _, age = _bgnbd_inputs(X)
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape)
        if np.any(t < 0):
            raise ValueError("t must be >= 0")
        z = t / (alpha + age + t)
        hyp = _hyp2f1_stable(r + x, b + x, a + b + x - 1.0, z)
        ratio = np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + age + t)))
        unconditional = (a + b + x - 1.0) / (a - 1.0) * (1.0 - ratio * hyp)
        return np.where(t > 0, self.probability_alive(X) * unconditional, 0.0)

    def expected_purchases_new_customer(self, t: float | np.ndarray) -> np.ndarray:
        """Expected repeat purchases in (0, t] of a customer just acquired (FHL 2005 eq. 9)."""
        r, alpha, a, b = self._params()
        t = np.asarray(t, dtype=np.float64)
        hyp = hyp2f1(r, b, a + b - 1.0, t / (alpha + t))
        return (a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** r * hyp)

    def predict(self, X) -> np.ndarray:  # noqa: N803
        """Expected repeat purchases in the next ``prediction_periods`` time units."""
        return self.expected_purchases(X, self.prediction_periods)


def _gg_loglik_terms(
    params: np.ndarray, x: np.ndarray, m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pattern Gamma-Gamma log-likelihood of a mean value m of x purchases, with gradient."""
    p, q, v = params
    px = p * x
    log_vm = np.log(v + x * m)
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * log_vm
    )
    d_p = x * (digamma(px + q) - digamma(px) + np.log(m) + np.log(x) - log_vm)
    d_q = digamma(px + q) - digamma(q) + np.log(v) - log_vm
    d_v = q / v - (px + q) / (v + x * m)
    return ll, np.stack([d_p, d_q, d_v])


class GammaGammaModel(BaseEstimator):
    """Gamma-Gamma model of the mean purchase value (Fader, Hardie & Lee 2005; Fader & Hardie 2013).

    Fitted on customers with at least one repeat purchase and a positive ``monetary_value``; the
    others are left out of the fit (``n_customers_`` counts those used). ``penalizer`` as in
    ``BetaGeoModel``, with money rescaled so the mean value is 1. Learned: ``params_`` (p, q, v),
    ``standard_errors_``, ``log_likelihood_``.
    """

    param_names = ("p", "q", "v")

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def __sklearn_tags__(self) -> Any:
        return _positive_only_tags(super().__sklearn_tags__())

    @staticmethod
    def _inputs(X) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        x, m = _columns(X, GG_COLUMNS)
        if np.any(x < 0) or np.any(m < 0):
            raise ValueError("Negative values in data: frequency and monetary_value must be >= 0")
        return x, m

    def fit(self, X, y=None):  # noqa: N803
        """Fit p, q, v by maximum likelihood on the repeat buyers' mean purchase values."""
        x, m = self._inputs(X)
        validate_data(self, X, skip_check_array=True)  # n_features_in_ as in BetaGeoModel.fit
        keep = (x > 0) & (m > 0)
        if keep.sum() < 2:
            raise ValueError(
                "Gamma-Gamma needs at least 2 customers with repeat purchases and "
                f"positive value; {int(keep.sum())} sample(s) qualify"
            )
        if self.penalizer < 0:
            raise ValueError("penalizer must be >= 0")
        # rescale money so the mean value is 1; v scales with money and is scaled back afterwards
        scale = 1.0 / float(m[keep].mean())
        (ux, um), w = _weighted_unique(x[keep], m[keep] * scale)
        n = w.sum()
        pen = self.penalizer

        def nll_grad(log_p: np.ndarray) -> tuple[float, np.ndarray]:
            theta = np.exp(log_p)
            ll, grad = _gg_loglik_terms(theta, ux, um)
            f = -(w @ ll) / n + pen * np.sum(theta**2)
            g = -(grad @ w) * theta / n + pen * 2 * theta**2
            return float(f), g

        log_p, hess, nit, ok = _fit_log_params(
            nll_grad, np.zeros(3), n, self.param_names, "Gamma-Gamma"
        )
        params = np.exp(log_p)
        se = _standard_errors(log_p, hess)
        params[2] /= scale
        se[2] /= scale
        self.params_ = pd.Series(params, index=list(self.param_names), name="estimate")
        self.standard_errors_ = pd.Series(se, index=list(self.param_names), name="std_error")
        self.log_likelihood_ = float(w @ _gg_loglik_terms(params, ux, um / scale)[0])
        self.n_customers_ = int(n)
        self.money_scale_ = scale
        self.converged_ = ok
        self.n_iter_ = nit
        return self

    def expected_spend(self, X) -> np.ndarray:  # noqa: N803
        """E[mean purchase value | x, m_x]: a weighted mean of the population mean and m_x."""
        check_is_fitted(self, "params_")
        p, q, v = (float(s) for s in self.params_.to_numpy())
        if q <= 1:
            raise ValueError(f"the population mean value is infinite (q = {q:.3f} <= 1)")
        x, m = self._inputs(X)
        m = np.where(x > 0, m, 0.0)
        return p * (v + x * m) / (p * x + q - 1.0)

    def population_mean_spend(self) -> float:
        """Mean purchase value of a new customer, p v / (q - 1)."""
        check_is_fitted(self, "params_")
        p, q, v = (float(s) for s in self.params_.to_numpy())
        return p * v / (q - 1.0) if q > 1 else math.inf

    def predict(self, X) -> np.ndarray:  # noqa: N803
        """Expected mean purchase value of each customer (``expected_spend``)."""
        return self.expected_spend(X)


def expected_purchases(model: BetaGeoModel, X, t: float | np.ndarray) -> np.ndarray:  # noqa: N803
    """Expected repeat purchases in the next ``t`` time units."""
    return model.expected_purchases(X, t)


def probability_alive(model: BetaGeoModel, X) -> np.ndarray:  # noqa: N803
    """Probability that each customer is still active at the cutoff."""
    return model.probability_alive(X)


def expected_spend(model: GammaGammaModel, X) -> np.ndarray:  # noqa: N803
    """Expected value of each customer's future purchases (Gamma-Gamma conditional mean)."""
    return model.expected_spend(X)


def customer_lifetime_value(
    bgnbd: BetaGeoModel,
    gg: GammaGammaModel,
    X,  # noqa: N803
    horizon_periods: float,
    discount_rate_per_period: float = 0.0,
    margin: float = 1.0,
) -> np.ndarray:
    """Discounted CLV over the horizon: sum_k (E[Y(k)] - E[Y(k-1)]) * spend * margin / (1+d)^k.

    Periods are the summary's time unit; a fractional horizon ends with a partial last period
    (discounted as period ceil(horizon)).
    """
    if horizon_periods <= 0:
        raise ValueError("horizon_periods must be > 0")
    if discount_rate_per_period <= -1:
        raise ValueError("discount_rate_per_period must be > -1")
    spend = gg.expected_spend(X) * margin
    ends = np.minimum(
        np.arange(1, math.ceil(horizon_periods) + 1, dtype=np.float64), horizon_periods
    )
    value = np.zeros(len(spend))
    before = np.zeros(len(spend))
    for k, end in enumerate(ends, start=1):
        cum = bgnbd.expected_purchases(X, end)
        value += (cum - before) / (1.0 + discount_rate_per_period) ** k
        before = cum
    return value * spend


def _gini(actual: np.ndarray, order_by: np.ndarray) -> float:
    """Gini of ``actual`` along the Lorenz curve of customers sorted by ``order_by`` descending."""
    order = np.lexsort((np.arange(len(order_by)), -order_by))  # ties keep the input order
    total = actual.sum()
    cum_share = np.cumsum(actual[order]) / total
    n = len(actual)
    return float(cum_share.sum() / n - (n + 1) / (2 * n))


def clv_metrics(y_true, y_pred) -> dict[str, float]:
    """MAE, RMSE, Spearman, top-decile capture, normalised Gini and total ratio of CLV predictions.

    ``top_decile_capture`` is the share of the actual total held by the ceil(n/10) customers with
    the highest prediction; ``gini`` is the Gini of actual value ordered by prediction divided by
    the Gini of actual value ordered by itself (1 = perfect ranking, 0 = random, < 0 = reversed).
    Ties in the prediction keep the input order.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError("y_true and y_pred must be non-empty 1-D arrays of the same length")
    err = p - y
    total = y.sum()
    n_top = math.ceil(len(y) / 10)
    top = np.lexsort((np.arange(len(p)), -p))[:n_top]
    const = np.all(y == y[0]) or np.all(p == p[0])
    perfect = _gini(y, y) if total > 0 else 0.0
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "spearman": float("nan") if const else float(spearmanr(y, p).statistic),
        "top_decile_capture": float(y[top].sum() / total) if total > 0 else float("nan"),
        "gini": _gini(y, p) / perfect if perfect > 0 else float("nan"),
        "total_ratio": float(p.sum() / total) if total > 0 else float("nan"),
        "n": float(len(y)),
    }
