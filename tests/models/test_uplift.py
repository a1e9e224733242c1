"""Uplift learners and metrics: hand-checked metric values, recovery of a known effect, contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.uplift import (
    TLearner,
    XLearner,
    auuc,
    make_learner,
    qini_coefficient,
    qini_curve,
    uplift_at_k,
    uplift_by_bin,
    uplift_curve,
    uplift_metrics,
)

FAST = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1}

# --------------------------------------------------------------------------- metrics by hand

# six customers, score order = list order: treated responder, control non-responder, treated
# non-responder, control responder, treated responder, control non-responder
Y = np.array([1, 0, 0, 1, 1, 0])
T = np.array([1, 0, 1, 0, 1, 0])
S = np.array([6.0, 5, 4, 3, 2, 1])


def test_qini_curve_by_hand() -> None:
    x, q = qini_curve(Y, T, S)
    assert x.tolist() == [0, 1, 2, 3, 4, 5, 6]
    # Q(k) = Y_T(k) - Y_C(k) N_T(k) / N_C(k); Q(1) = 1 (no control yet: ratio taken as 0)
    expected = [0, 1, 1 - 0 * 1, 1 - 0 * 2, 1 - 1 * 2 / 2, 2 - 1 * 3 / 2, 2 - 1 * 3 / 3]
    assert q == pytest.approx(expected)
    x, u = uplift_curve(Y, T, S)
    # U(k) = (Y_T/N_T - Y_C/N_C) k
    assert u[4] == pytest.approx((1 / 2 - 1 / 2) * 4) and u[6] == pytest.approx((2 / 3 - 1 / 3) * 6)


def test_ties_give_the_random_line_and_perfect_gives_one() -> None:
    rng = np.random.default_rng(0)
    y, t = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    x, q = qini_curve(y, t, np.zeros(500))
    assert x.tolist() == [0, 500]  # a constant score has no inner points: the chord
    assert qini_coefficient(y, t, np.zeros(500)) == pytest.approx(0.0)
    assert auuc(y, t, np.zeros(500)) == pytest.approx(0.0)
    perfect = y * t - y * (1 - t)
    assert qini_coefficient(y, t, perfect) == pytest.approx(1.0)
    assert qini_coefficient(y, t, -perfect) < 0  # the worst order is worse than random


def test_uplift_at_k_by_hand() -> None:
    # top half: rows 0..2 -> treated {1, 0}, control {0}: 1/2 - 0 = 0.5
    assert uplift_at_k(Y, T, S, 0.5) == pytest.approx(0.5)
    # everyone: 2/3 - 1/3
    assert uplift_at_k(Y, T, S, 1.0) == pytest.approx(1 / 3)
    assert np.isnan(uplift_at_k(Y, T, S, 1 / 6))  # one treated row only: undefined
    with pytest.raises(ValueError):
        uplift_at_k(Y, T, S, 0.0)
    metrics = uplift_metrics(Y, T, S, [0.5, 1.0])
    assert set(metrics) == {"qini", "auuc", "uplift_at_50pct", "uplift_at_100pct"}


def test_uplift_by_bin() -> None:
    table = uplift_by_bin(Y, T, S, n_bins=2, truth=np.arange(6.0))
    assert table["customers"].tolist() == [3, 3]
    assert table["treated"].tolist() == [2, 1]
    assert table["uplift"].tolist() == pytest.approx([0.5, 1 - 0.5])
    assert table["mean_true_uplift"].tolist() == pytest.approx([1.0, 4.0])


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        qini_coefficient(Y, T, S[:-1])
    with pytest.raises(ValueError):
        qini_coefficient(Y, np.array([0, 1, 2, 0, 1, 0]), S)


# --------------------------------------------------------------------------- learners


def simulated(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """A randomised campaign with a known effect: the response rises with x0 (customers who buy
    anyway), the contact adds 0.25 when x1 > 0 and takes 0.15 from the x0 > 0.8 buyers ("sleeping
    dogs"); x2 is noise."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, 3)), columns=["x0", "x1", "x2"])
    x0 = x["x0"].to_numpy()
    base = 0.15 + 0.45 / (1 + np.exp(-2 * x0))
    tau = np.where(x["x1"] > 0, 0.25, 0.0) - np.where(x0 > 0.8, 0.15, 0.0)
    tau = np.clip(base + tau, 0, 1) - base
    t = (rng.random(n) < 0.5).astype(int)
    y = (rng.random(n) < base + t * tau).astype(int)
    return x, y, t, tau


@pytest.fixture(scope="module")
def campaign():
    return simulated(6000, 1), simulated(4000, 2)


@pytest.mark.parametrize("kind", ["x", "t"])
def test_learners_recover_a_known_effect(campaign, kind) -> None:
    (x, y, t, _), (xt, yt, tt, tau) = campaign
    model = make_learner(kind, FAST, random_state=0).fit(x, y, treatment=t)
    cate = model.predict(xt)
    assert np.corrcoef(cate, tau)[0, 1] > 0.7  # levels 0.15-0.25 apart, outcome noise s.d. ~0.5
    assert abs(cate.mean() - tau.mean()) < 0.03
    assert cate[tau > 0.2].mean() - cate[tau < 0].mean() > 0.2
    # the uplift ranking beats targeting by response (which favours x0, who buy anyway) by at
    # least half of what the truth gains over it: noise-free, by the true effect of the top 30 %,
    # and on the observed Qini
    response = model.predict_response_treated(xt)

    def top_effect(score: np.ndarray) -> float:
        return float(tau[np.argsort(-score)[: len(tau) * 3 // 10]].mean())

    gain = top_effect(tau) - top_effect(response)
    assert top_effect(cate) - top_effect(response) > 0.5 * gain > 0
    q_model, q_response, q_truth = (qini_coefficient(yt, tt, s) for s in (cate, response, tau))
    assert q_model - q_response > 0.5 * (q_truth - q_response) > 0
    outcomes = model.predict_outcomes(xt)
    assert outcomes.shape == (len(xt), 2) and ((outcomes >= 0) & (outcomes <= 1)).all()


def test_x_learner_combines_with_the_treated_share(campaign) -> None:
    (x, y, t, _), (xt, *_) = campaign
    model = XLearner(FAST).fit(x, y, treatment=t)
    e = t.mean()
    assert model.treated_share_ == pytest.approx(e)
    expected = e * model.effect_control_model_.predict(xt.to_numpy()) + (1 - e) * (
        model.effect_treated_model_.predict(xt.to_numpy())
    )
    assert model.predict(xt) == pytest.approx(expected, rel=1e-6, abs=1e-7)


# --------------------------------------------------------------------------- contract


def test_estimator_contract() -> None:
    x, y, t, _ = simulated(400, 3)
    model = XLearner(params=FAST, random_state=5)
    assert model.get_params() == {"params": FAST, "random_state": 5}
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        model.predict(x)
    assert model.fit(x, y, treatment=t) is model
    assert list(model.feature_names_in_) == ["x0", "x1", "x2"] and model.n_features_in_ == 3
    with pytest.raises(ValueError):
        model.predict(x[["x0", "x1"]])
    # same seed, same data: same effects
    again = clone(model).fit(x, y, treatment=t)
    assert again.predict(x) == pytest.approx(model.predict(x))


def test_treatment_is_checked() -> None:
    x, y, t, _ = simulated(200, 4)
    with pytest.raises(ValueError, match="treatment"):
        TLearner(FAST).fit(x, y)
    with pytest.raises(ValueError, match="0/1"):
        TLearner(FAST).fit(x, y, treatment=t * 2)
    with pytest.raises(ValueError, match="both"):
        TLearner(FAST).fit(x, y, treatment=np.ones_like(t))
    with pytest.raises(ValueError, match="shape"):
        TLearner(FAST).fit(x, y, treatment=t[:-1])
    TLearner(FAST).fit(x, y, treatment=t.astype(bool))


def test_pipeline_routes_the_treatment_and_missing_values_pass() -> None:
    x, y, t, _ = simulated(500, 5)
    x.loc[::7, "x2"] = np.nan
    pipe = Pipeline([("scale", StandardScaler()), ("uplift", XLearner(FAST))])
    pipe.fit(x, y, uplift__treatment=t)
    assert pipe.predict(x).shape == (500,)
    assert not hasattr(pipe, "predict_proba")  # pyfunc wrappers then score by predict = uplift


def test_constant_group_and_continuous_outcome() -> None:
    x, y, t, _ = simulated(400, 6)
    y_const = np.where(t == 0, 0, y)  # no control responds
    model = XLearner(FAST).fit(x, y_const, treatment=t)
    assert np.isfinite(model.predict(x)).all()
    spend = y * 20.0 + np.random.default_rng(0).normal(size=400)
    reg = TLearner(FAST).fit(x, spend, treatment=t)
    assert not reg.binary_ and reg.predict(x).shape == (400,)
