"""Learning from the wave (models.decisions.learning, readout.read_targeted): the calibration of
a model's uplift on randomised responses, its empirical-Bayes shrinkage, and the targeted
read-out the loop's gate judges an arm by."""

from __future__ import annotations

import numpy as np
import pytest

from models.decisions.learning import (
    LinearFit,
    best_linear_predictor,
    calibrate,
    eb_shrink,
)
from models.decisions.readout import ArmTerms, read_targeted, read_wave


def _randomised(n: int, slope: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A randomised arm (p = 0.7 of the arm, else control) whose true uplift is
    0.05 + slope * (score - 0.05): the model's score is right on average, its spread by
    ``slope``."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(-0.05, 0.15, n)
    base = rng.uniform(0.05, 0.25, n)
    p = np.full(n, 0.7)
    t = rng.random(n) < p
    uplift = 0.05 + slope * (score - 0.05)
    y = rng.random(n) < base + t * uplift
    return y.astype(float), t.astype(float), p, score, base


@pytest.mark.parametrize("slope", [0.0, 0.5, 1.0])
def test_the_best_linear_predictor_recovers_the_average_and_the_slope(slope: float) -> None:
    fit = best_linear_predictor(*_randomised(60_000, slope))
    assert fit.ate == pytest.approx(0.05, abs=3 * fit.ate_se)
    assert fit.slope == pytest.approx(slope, abs=3 * fit.slope_se)
    assert fit.slope_se < 0.15 and fit.rows == 60_000


def test_the_best_linear_predictor_refuses_a_design_without_randomisation() -> None:
    y, t, p, s, b = _randomised(100, 1.0)
    with pytest.raises(ValueError, match="0 < p < 1"):
        best_linear_predictor(y, t, np.ones(100), s, b)


def test_shrinkage_keeps_the_prior_with_few_responses_and_takes_the_data_with_many() -> None:
    measured = np.array([0.2, 1.8, 0.5, 1.4])
    prior = np.ones(4)
    # few responses: the figures vary no more than their noise -> the priors (the model)
    post, tau2 = eb_shrink(measured, np.full(4, 2.0), prior)
    assert tau2 == 0.0 and post == pytest.approx(prior)
    # many responses: the spread is real -> (almost) the measured figures
    post, tau2 = eb_shrink(measured, np.full(4, 0.01), prior)
    assert tau2 > 0.3 and post == pytest.approx(measured, abs=1e-3)
    # in between: each figure moves toward its prior by its own noise
    post, _ = eb_shrink(measured, np.array([0.05, 0.05, 0.6, 0.6]), prior)
    assert abs(post[0] - measured[0]) < abs(post[2] - measured[2])
    assert np.all(np.abs(post - prior) <= np.abs(measured - prior) + 1e-12)


def test_calibration_applies_per_arm_and_an_arm_without_a_fit_keeps_the_model() -> None:
    precise = [
        LinearFit(ate=0.04, slope=0.5, ate_se=1e-4, slope_se=1e-3, centre=0.06, rows=10**5),
        LinearFit(ate=0.01, slope=0.0, ate_se=1e-4, slope_se=1e-3, centre=0.03, rows=10**5),
        None,
    ]
    cal = calibrate(precise)
    uplift = np.array([[0.06, 0.03, 0.2], [0.10, 0.09, -0.1]])
    out = cal.apply(uplift)
    assert out[:, 0] == pytest.approx([0.04, 0.04 + 0.5 * 0.04], abs=1e-3)
    assert out[:, 1] == pytest.approx([0.01, 0.01], abs=1e-3)  # no signal in the spread
    assert out[:, 2] == pytest.approx(uplift[:, 2])  # no fit: the model as is


def test_the_calibration_of_a_randomised_arm_recovers_the_truth() -> None:
    """End to end: a model whose spread is twice the truth's is halved by the data."""
    y, t, p, score, base = _randomised(60_000, 0.5, seed=3)
    fit = best_linear_predictor(y, t, p, score, base)
    other = best_linear_predictor(*_randomised(60_000, 1.0, seed=4))
    cal = calibrate([fit, other])
    true = 0.05 + 0.5 * (score - 0.05)
    err_model = np.abs(score - true).mean()
    err_cal = np.abs(cal.apply(np.column_stack([score, score]))[:, 0] - true).mean()
    assert err_cal < 0.3 * err_model


TERMS = {"A": ArmTerms(10.0, 0.5), "B": ArmTerms(10.0, 0.5)}


def test_the_targeted_read_out_reads_an_arm_only_where_the_plan_gives_it() -> None:
    # customers 0-3: the plan gives A (two got A, two held out); 4-7: the plan gives B
    given = ["A", "A", None, None, "B", "B", None, None]
    planned = ["A", "A", "A", "A", "B", "B", "B", "B"]
    responded = [1, 1, 0, 0, 0, 0, 1, 1]
    out = {r.arm: r for r in read_targeted(given, planned, responded, TERMS)}
    assert (out["A"].contacts, out["A"].control) == (2, 2)
    assert out["A"].incremental_response == pytest.approx(1.0)
    assert out["B"].incremental_response == pytest.approx(-1.0)
    # the average read-out mixes the segments' controls: A looks half as good
    avg = {r.arm: r for r in read_wave(given, responded, TERMS)}
    assert avg["A"].incremental_response == pytest.approx(0.5)


def test_the_targeted_read_out_reads_an_untested_arm_on_everyone_and_skips_empty_ones() -> None:
    given = ["B", None, "B", None]
    planned = ["A", "A", None, None]  # the plan cannot give B: it has never been tested
    out = read_targeted(given, planned, [1, 0, 1, 0], TERMS, untargeted=["B"])
    assert [r.arm for r in out] == ["B"]  # A: no contact in its segment, left out
    assert (out[0].contacts, out[0].control) == (2, 2)
    with pytest.raises(ValueError, match="one value per customer"):
        read_targeted(given, planned[:3], [1, 0, 1, 0], TERMS)
