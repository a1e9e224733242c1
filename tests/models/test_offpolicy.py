"""Off-policy evaluation (models.decisions.offpolicy) and the multi-arm uplift learner."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from models.decisions.offpolicy import (
    NO_CONTACT,
    ArmEconomics,
    Log,
    best_choice,
    doubly_robust,
    dr_difference,
    ips,
    policy_from_choice,
    randomised_log,
    true_value,
)
from models.uplift import MultiArmUplift

SHARE = np.array([0.25, 0.25, 0.25])  # three arms, control 0.25


def _world(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, P(respond | no contact) and P(respond | arm) with effects that differ by x."""
    x = rng.normal(size=(n, 2))
    p0 = 1 / (1 + np.exp(-(-1.0 + 0.5 * x[:, 0])))
    effect = np.column_stack([0.10 * (x[:, 1] > 0), 0.12 * (x[:, 1] <= 0), np.full(n, 0.03)])
    return x, p0, np.clip(p0[:, None] + effect - 0.02 * (x[:, :1] > 1), 0, 1)


def _econ(n: int) -> ArmEconomics:
    return ArmEconomics(
        np.tile([40.0, 40.0, 25.0], (n, 1)), np.array([0.2, 3.0, 0.1]), np.array([0.0, 0.0, 2.0])
    )


def _draw(rng: np.random.Generator, p0: np.ndarray, p1: np.ndarray) -> Log:
    n = p0.size
    pick = rng.choice(4, size=n, p=np.append(SHARE, 1 - SHARE.sum()))
    p = np.column_stack([p1, p0])[np.arange(n), pick]
    return randomised_log(np.where(pick == 3, NO_CONTACT, pick), rng.random(n) < p, SHARE)


def test_hand_computed_values() -> None:
    econ = ArmEconomics(np.array([[10.0, 20.0], [10.0, 20.0]]), np.array([1.0, 2.0]), np.zeros(2))
    p0, p1 = np.array([0.1, 0.5]), np.array([[0.3, 0.2], [0.5, 0.4]])
    profit = econ.profit(p0, p1)
    np.testing.assert_allclose(profit, [[1.0, 0.0], [-1.0, -4.0]])
    choice = best_choice(profit)
    assert choice.tolist() == [0, NO_CONTACT]  # a zero profit is not worth a contact
    assert true_value(policy_from_choice(choice, 2), econ, p0, p1) == pytest.approx(1.0)
    assert true_value(np.zeros((2, 2)), econ, p0, p1) == 0.0
    # a stochastic policy is the probability-weighted mix
    assert true_value(np.full((2, 2), 0.5), econ, p0, p1) == pytest.approx(0.5 * (1 - 1 - 4))


def test_estimators_cover_the_truth_and_dr_is_tighter() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    _, p0, p1 = _world(n, rng)
    econ = _econ(n)
    oracle = policy_from_choice(best_choice(econ.profit(p0, p1)), 3)
    policies = {"oracle": oracle, "all arm 0": policy_from_choice(np.zeros(n, int), 3)}
    draws = 1000
    covered = {(k, e): 0 for k in policies for e in ("ips", "dr")}
    # the DR model is deliberately wrong (a constant): DR stays unbiased via the known design
    m0, m1 = np.full(n, 0.3), np.full((n, 3), 0.35)
    for _ in range(draws):
        log = _draw(rng, p0, p1)
        for name, pi in policies.items():
            truth = true_value(pi, econ, p0, p1)
            e_ips, e_dr = ips(pi, log, econ), doubly_robust(pi, log, econ, m0, m1)
            covered[(name, "ips")] += e_ips.covers(truth)
            covered[(name, "dr")] += e_dr.covers(truth)
    # 90 % intervals: over 1000 draws coverage is 0.90 +- 0.0095 (1 sd); 0.87 is ~3.2 sd below
    for key, hits in covered.items():
        assert hits / draws >= 0.87, (key, hits / draws)
    # with the true model, DR's interval is narrower than IPS's
    log = _draw(rng, p0, p1)
    e_ips, e_dr = ips(oracle, log, econ), doubly_robust(oracle, log, econ, p0, p1)
    assert e_dr.high - e_dr.low < e_ips.high - e_ips.low


def test_treat_none_is_exactly_zero_and_bad_inputs_are_named() -> None:
    rng = np.random.default_rng(0)
    _, p0, p1 = _world(200, rng)
    log, econ = _draw(rng, p0, p1), _econ(200)
    none = np.zeros((200, 3))
    assert ips(none, log, econ).value == 0.0
    assert doubly_robust(none, log, econ, p0, p1).value == 0.0
    with pytest.raises(ValueError, match="policy"):
        ips(np.ones((200, 3)), log, econ)  # probabilities summing to 3
    with pytest.raises(ValueError, match="Log.action"):
        Log(np.array([0, 5]), np.array([0, 1]), np.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="sum 1"):
        Log(np.array([0, 1]), np.array([0, 1]), np.full((2, 4), 0.3))
    with pytest.raises(ValueError, match="responded"):
        Log(np.array([0, 1]), np.array([0, 2]), np.full((2, 4), 0.25))


@pytest.mark.parametrize("learner", ["x", "t", "s"])
def test_multi_arm_learner_finds_which_arm_works_for_whom(learner: str) -> None:
    rng = np.random.default_rng(1)
    n = 12_000
    x, p0, p1 = _world(n, rng)
    log = _draw(rng, p0, p1)
    params = {"n_estimators": 60, "max_depth": 2, "learning_rate": 0.1}
    model = MultiArmUplift(learner=learner, params=params).fit(x, log.responded, arm=log.action)
    uplift = model.predict(x)
    assert uplift.shape == (n, 3)
    outcomes = model.predict_outcomes(x)
    assert outcomes.shape == (n, 4) and ((outcomes >= 0) & (outcomes <= 1)).all()
    # arm 0 works where x1 > 0, arm 1 where x1 <= 0: the learner ranks them that way
    pos = x[:, 1] > 0.5
    neg = x[:, 1] < -0.5
    assert uplift[pos, 0].mean() > uplift[pos, 1].mean() + 0.04
    assert uplift[neg, 1].mean() > uplift[neg, 0].mean() + 0.04
    assert clone(model).get_params() == model.get_params()


def test_multi_arm_learner_refuses_bad_arms() -> None:
    x = np.zeros((4, 1))
    with pytest.raises(ValueError, match="no control"):
        MultiArmUplift().fit(x, np.array([0, 1, 0, 1]), arm=np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="arms \\[1\\] have no rows"):
        MultiArmUplift().fit(x, np.array([0, 1, 0, 1]), arm=np.array([-1, 0, 2, 0]))
    with pytest.raises(ValueError, match="unknown multi-arm learner"):
        MultiArmUplift(learner="q").fit(x, np.array([0, 1, 0, 1]), arm=np.array([-1, 0, -1, 0]))


def test_paired_difference_covers_and_is_narrower_than_either_value() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    _, p0, p1 = _world(n, rng)
    econ = _econ(n)
    oracle = policy_from_choice(best_choice(econ.profit(p0, p1)), 3)
    arm0 = policy_from_choice(np.zeros(n, int), 3)
    truth = true_value(oracle, econ, p0, p1) - true_value(arm0, econ, p0, p1)
    m0, m1 = np.full(n, 0.3), np.full((n, 3), 0.35)  # a wrong model: unbiased still
    hits, draws = 0, 1000
    for _ in range(draws):
        log = _draw(rng, p0, p1)
        hits += dr_difference(oracle, arm0, log, econ, m0, m1).covers(truth)
    assert hits / draws >= 0.87  # 90 % intervals; 0.87 is ~3.2 binomial sd below
    log = _draw(rng, p0, p1)
    d = dr_difference(oracle, arm0, log, econ, p0, p1)
    a = doubly_robust(oracle, log, econ, p0, p1)
    assert d.high - d.low < a.high - a.low
