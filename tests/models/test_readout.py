"""The wave read-out and the roll-out gate (models.decisions.readout)."""

from __future__ import annotations

import numpy as np
import pytest

from models.decisions.readout import ArmTerms, gate, newcombe_interval, pool_readouts, read_wave

TERMS = {"a": ArmTerms(value=40.0, cost_per_contact=0.2), "b": ArmTerms(60.0, 4.0, 5.0)}


def _wave(rng: np.random.Generator, n: int, p: dict[str | None, float]) -> tuple[list, np.ndarray]:
    arms = list(rng.choice(np.array(list(p), dtype=object), size=n))
    y = np.array([rng.random() < p[a] for a in arms], dtype=float)
    return arms, y


def test_hand_computed_readout() -> None:
    # 100 contacts of arm a, 30 responders; 200 controls, 40 responders
    arm = ["a"] * 100 + [None] * 200
    y = np.r_[np.ones(30), np.zeros(70), np.ones(40), np.zeros(160)]
    reason = ["price"] * 10 + [None] * 90 + ["price"] * 0 + [None] * 200
    (r,) = [x for x in read_wave(arm, y, {"a": TERMS["a"]}, reason=reason) if x.arm == "a"]
    assert r.incremental_response == pytest.approx(0.3 - 0.2)
    assert r.profit_per_contact == pytest.approx(0.1 * 40 - 0.2)
    se = np.sqrt(40**2 * 0.3 * 0.7 / 100 + 40**2 * 0.2 * 0.8 / 200)
    assert r.profit_se == pytest.approx(se)
    assert r.profit_lower_one_sided == pytest.approx(3.8 - 1.2815515655 * se)
    lo, hi = newcombe_interval(30, 100, 40, 200, 0.9)
    assert r.incremental_response_ci == pytest.approx((float(lo), float(hi)))
    assert r.declined == {"price": (0.1, 0.0)}
    assert r.incremental_profit == pytest.approx(3.8 * 100)


def test_acceptance_cost_is_paid_on_every_response() -> None:
    arm = ["b"] * 100 + [None] * 100
    y = np.r_[np.ones(50), np.zeros(50), np.ones(30), np.zeros(70)]
    (r,) = read_wave(arm, y, {"b": TERMS["b"]})
    assert r.profit_per_contact == pytest.approx(0.2 * 60 - 5.0 * 0.5 - 4.0)


def test_expected_outside_the_interval_contradicts_the_model() -> None:
    arm = ["a"] * 400 + [None] * 400
    y = np.r_[np.ones(120), np.zeros(280), np.ones(80), np.zeros(320)]  # uplift 0.10
    plausible = read_wave(arm, y, {"a": TERMS["a"]}, expected_uplift=np.full(800, 0.11))
    wrong = read_wave(arm, y, {"a": TERMS["a"]}, expected_uplift=np.full(800, 0.30))
    assert plausible[0].contradicts_model is False
    assert wrong[0].contradicts_model is True
    assert wrong[0].expected_incremental_response == pytest.approx(0.30)


def test_gate_false_roll_outs_stay_under_the_confidence() -> None:
    # arm a: true profit per contact (0.205 - 0.2) * 40 - 0.2 = 0.0 -> rolled out <= 10 % at 90 %
    rng = np.random.default_rng(7)
    rolled = 0
    draws = 400
    for _ in range(draws):
        arms, y = _wave(rng, 3000, {"a": 0.205, None: 0.2})
        rolled += gate(read_wave(arms, y, {"a": TERMS["a"]}))[0].roll_out
    # a one-sided 90 % bound on a zero effect: 10 % +- 1.5 % (binomial sd over 400 draws)
    assert rolled / draws <= 0.14
    # and a clearly profitable arm is rolled out nearly always
    arms, y = _wave(rng, 3000, {"a": 0.35, None: 0.2})
    assert gate(read_wave(arms, y, {"a": TERMS["a"]}))[0].roll_out


def test_gate_holds_small_arms_and_checks_the_level() -> None:
    arm = ["a"] * 10 + [None] * 10
    y = np.r_[np.ones(10), np.zeros(10)]
    (d,) = gate(read_wave(arm, y, {"a": TERMS["a"]}))
    assert not d.roll_out and d.reason.startswith("held")
    with pytest.raises(ValueError, match="not the gate's confidence"):
        gate(read_wave(arm, y, {"a": TERMS["a"]}, level=0.7), confidence=0.9)


def test_pooling_waves_narrows_the_interval_and_keeps_each_control() -> None:
    rng = np.random.default_rng(3)
    waves = []
    for base in (0.1, 0.3):  # two waves with different baselines, the same effect (+0.1)
        arms, y = _wave(rng, 4000, {"a": base + 0.1, None: base})
        waves.append(read_wave(arms, y, {"a": TERMS["a"]}))
    (pooled,) = pool_readouts(waves)
    assert pooled.profit_se < min(w[0].profit_se for w in waves)
    assert pooled.incremental_response == pytest.approx(0.1, abs=0.03)
    assert pooled.contacts == sum(w[0].contacts for w in waves)


def test_predictive_pooling_widens_only_when_the_waves_disagree() -> None:
    rng = np.random.default_rng(4)
    disagree = []
    arms, y = _wave(rng, 4000, {"a": 0.2, None: 0.1})
    agree = [read_wave(arms, y, {"a": TERMS["a"]})] * 2  # the same figure twice: no spread
    for effect in (0.2, -0.05):  # a segment where the arm pays, then one where it does not
        arms, y = _wave(rng, 4000, {"a": 0.2 + effect, None: 0.2})
        disagree.append(read_wave(arms, y, {"a": TERMS["a"]}))
    (fe,) = pool_readouts(agree)
    (re,) = pool_readouts(agree, predictive=True)
    assert (re.profit_se, re.profit_per_contact) == (fe.profit_se, fe.profit_per_contact)
    (fe,) = pool_readouts(disagree)
    (re,) = pool_readouts(disagree, predictive=True)
    # the next wave may be like either: its uncertainty includes the spread between waves
    assert re.profit_se > 3 * fe.profit_se
    assert not gate([re])[0].roll_out
    (one,) = pool_readouts(disagree[:1], predictive=True)
    assert one.profit_se == pytest.approx(disagree[0][0].profit_se)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="no value / cost terms"):
        read_wave(["z", None], np.array([1, 0]), TERMS)
    with pytest.raises(ValueError, match="responded"):
        read_wave(["a", None], np.array([2, 0]), TERMS)


def test_a_population_read_excludes_held_customers_and_other_arms() -> None:
    from models.decisions.readout import read_population

    # population: the first 6; there 2 contacts of "a" (1 responder), 1 of "b", 1 held, 2
    # controls (1 responder); outside it, contacts and controls that must not count
    given = ["a", "a", "b", None, None, None, "a", None]
    population = [1, 1, 1, 1, 1, 1, 0, 0]
    control = [0, 0, 0, 0, 1, 1, 0, 1]  # the 4th: held (no contact, not a control)
    y = [1, 0, 1, 1, 0, 1, 1, 1]
    r = read_population("a", given, population, control, y, TERMS["a"], key="a for b")
    assert r is not None and r.arm == "a for b"
    assert (r.contacts, r.responders, r.control, r.control_responders) == (2, 1, 2, 1)
    assert read_population("b", given, [0] * 8, control, y, TERMS["b"]) is None


def test_the_rollout_gives_an_arm_only_to_customers_it_was_read_on() -> None:
    from models.decisions.readout import NO_ARM, rollout_by_population

    rng = np.random.default_rng(0)
    n, arms = 2_000, 5
    plan = rng.integers(-1, arms, n)
    fallback = rng.integers(-1, arms, n)
    passed = [0, 2]
    everyone = [4]  # a never-tested arm read (and passed) on everyone
    pairs = [(2, 1)]  # arm 2 read and passed on the customers whose plan is arm 1
    out = rollout_by_population(
        plan, passed, read_on_everyone=everyone, fallback=fallback, fallback_passed=pairs
    )
    own = np.isin(plan, passed)
    assert (out[own] == plan[own]).all()  # a passed arm's segment gets it
    for i in np.flatnonzero(out != NO_ARM):
        # every arm given was read on this customer: its own segment, everyone, or the pair
        assert (
            (out[i] == plan[i] and plan[i] in passed)
            or out[i] in everyone
            or (int(out[i]), int(plan[i])) in pairs
        )
    # a dropped arm's customers whose best passed arm was not read on them are held
    unread = ~own & (fallback == 0)
    assert unread.any() and (out[unread] == NO_ARM).all()
    # the never-tested arm that passed on everyone reaches the customers without a passed arm
    new = ~own & (fallback == 4)
    assert new.any() and (out[new] == 4).all()
    # no fallback: only the segments of the passed arms
    alone = rollout_by_population(plan, passed)
    assert set(np.unique(alone[~own])) == {NO_ARM}


def _reads(y: float, se: float) -> list:
    """A read of arm 'a' with profit per contact ``y`` and standard error ``se``."""
    from dataclasses import replace

    return [replace(_READ[0], profit_per_contact=y, profit_se=se)]


_READ = read_wave(
    ["a"] * 500 + [None] * 500,
    np.r_[np.ones(60), np.zeros(440), np.ones(50), np.zeros(450)],
    {"a": TERMS["a"]},
)


def test_the_current_read_with_earlier_reads_as_prior() -> None:
    from models.decisions.readout import pool_toward_current

    now = _reads(-1.0, 1.0)
    # no earlier read: the current read as it is
    assert pool_toward_current(now, [], {"a": 1.0}) == now
    # earlier populations that agree closely, a current one far below: a narrow prior on the
    # spread pulls the current read to them, a wide one leaves it nearly alone
    earlier = [_reads(3.0, 0.3), _reads(3.2, 0.3), _reads(2.9, 0.3)]
    (tight,) = pool_toward_current(now, earlier, {"a": 0.01})
    (wide,) = pool_toward_current(now, earlier, {"a": 10.0})
    assert tight.profit_per_contact > 2.5 and tight.profit_lower_one_sided > 0
    assert wide.profit_per_contact < 0 and wide.profit_lower_one_sided < 0
    assert tight.contacts == now[0].contacts  # the counts are the current population's
    # earlier reads that agree with the current one narrow it
    (agree,) = pool_toward_current(_reads(1.0, 1.0), [_reads(1.0, 1.0)] * 3, {"a": 0.5})
    assert agree.profit_se < 1.0 and agree.profit_per_contact == pytest.approx(1.0)


def test_gating_the_current_population_errs_less_where_populations_differ() -> None:
    # an arm whose profit differs between populations (sd 1 around +0.8): three earlier
    # populations read precisely, the current one read noisily. Where the current population
    # truly loses, the pooled predictive read rolls it out about twice as often as the
    # current population's posterior, which also rolls out more of those that gain
    from models.decisions.readout import pool_toward_current

    rng = np.random.default_rng(0)
    rolled = {"pooled": [0, 0], "current": [0, 0]}  # [negative, positive] populations
    counts = [0, 0]
    se = np.array([0.3, 0.3, 0.3, 1.0])
    for _ in range(600):
        theta = rng.normal(0.8, 1.0, 4)
        y = rng.normal(theta, se)
        earlier = [_reads(y[k], se[k]) for k in range(3)]
        now = _reads(y[3], se[3])
        gain = int(theta[3] >= 0)
        counts[gain] += 1
        (p,) = pool_readouts([*earlier, now], predictive=True)
        (c,) = pool_toward_current(now, earlier, {"a": 1.0})
        rolled["pooled"][gain] += p.profit_lower_one_sided > 0
        rolled["current"][gain] += c.profit_lower_one_sided > 0
    neg = {k: v[0] / counts[0] for k, v in rolled.items()}
    pos = {k: v[1] / counts[1] for k, v in rolled.items()}
    assert neg["current"] <= 0.15 < neg["pooled"], neg
    assert pos["current"] > pos["pooled"], pos


def _fallback_half_segment(
    rng: np.random.Generator, n: int
) -> tuple[list, list, np.ndarray, np.ndarray]:
    """A segment of arm 'a' (the plan gives everyone 'a'), half of it at risk: a control with
    probability 1/2, else a contact of 'a' — except that half of the at-risk customers get 'b'
    (their fallback) instead. At-risk customers respond 0.30 without contact, the others 0.05;
    'a' adds +0.05 for everyone (+1.80 profit per contact)."""
    at_risk = rng.random(n) < 0.5
    control = rng.random(n) < 0.5
    fallback = at_risk & (rng.random(n) < 0.5)
    given = [None if c else ("b" if f else "a") for c, f in zip(control, fallback, strict=True)]
    p = np.where(at_risk, 0.30, 0.05) + np.where(np.array(given) == "a", 0.05, 0.0)
    return given, ["a"] * n, (rng.random(n) < p).astype(float), at_risk


def test_the_segment_read_is_stratified_by_the_chance_of_being_a_contact() -> None:
    # the plan arm's contacts hold a third of at-risk customers, its controls half: the plain
    # difference is biased toward zero; read per stratum and combined by the controls' shares
    # it finds the effect, and its interval covers it as often as it says
    from models.decisions.readout import read_targeted

    rng = np.random.default_rng(0)
    terms = {"a": TERMS["a"]}
    truth = 0.05 * 40 - 0.2
    plain, strat = [], []
    for _ in range(300):
        given, planned, y, at_risk = _fallback_half_segment(rng, 2_000)
        (p,) = read_targeted(given, planned, y, terms)
        (s,) = read_targeted(given, planned, y, terms, stratum=at_risk)
        plain.append(p)
        strat.append(s)
        assert (s.contacts, s.control) == (p.contacts, p.control)

    def covered(reads: list) -> float:
        return float(
            np.mean(
                [r.profit_per_contact_ci[0] <= truth <= r.profit_per_contact_ci[1] for r in reads]
            )
        )

    assert np.mean([r.incremental_response for r in plain]) < 0.02  # biased: truth 0.05
    assert np.mean([r.incremental_response for r in strat]) == pytest.approx(0.05, abs=0.004)
    assert np.mean([r.profit_per_contact for r in strat]) == pytest.approx(truth, abs=0.15)
    assert covered(plain) < 0.5
    assert 0.85 <= covered(strat) <= 0.95  # 90 % intervals: the variance is right
    z = [(r.profit_per_contact - truth) / r.profit_se for r in strat]
    assert np.std(z) == pytest.approx(1.0, abs=0.12)
    # one stratum is the plain read, to the bit; an arm read on everyone is not stratified
    given, planned, y, at_risk = _fallback_half_segment(rng, 500)
    assert read_targeted(given, planned, y, terms, stratum=np.zeros(500)) == read_targeted(
        given, planned, y, terms
    )
    assert read_targeted(
        given, planned, y, terms, untargeted=["a"], stratum=at_risk
    ) == read_targeted(given, planned, y, terms, untargeted=["a"])


def test_a_stratified_population_read_by_hand() -> None:
    from models.decisions.readout import read_population

    # stratum 0: 10 contacts (5 respond), 20 controls (4); stratum 1: 40 contacts (4), 20 (2)
    given = ["a"] * 10 + [None] * 20 + ["a"] * 40 + [None] * 20
    control = [g is None for g in given]
    y = np.r_[np.ones(5), np.zeros(5), np.ones(4), np.zeros(16), np.ones(4), np.zeros(36)]
    y = np.r_[y, np.ones(2), np.zeros(18)]
    stratum = [0] * 30 + [1] * 40
    stratum = stratum + [1] * 20
    r = read_population("a", given, [True] * 90, control, y, TERMS["a"], stratum=stratum)
    assert r is not None
    p0, p1 = (0.5 - 0.2) * 40 - 0.2, (0.1 - 0.1) * 40 - 0.2
    assert r.profit_per_contact == pytest.approx(0.5 * p0 + 0.5 * p1)
    v0 = 40**2 * (0.25 / 10 + 0.16 / 20)
    v1 = 40**2 * (0.09 / 40 + 0.09 / 20)
    between = (0.5 * p0**2 + 0.5 * p1**2 - (0.5 * p0 + 0.5 * p1) ** 2) / 40
    assert r.profit_se == pytest.approx(np.sqrt(0.25 * v0 + 0.25 * v1 + between))
    assert r.incremental_response == pytest.approx(0.5 * 0.3 + 0.5 * 0.0)
    assert (r.contacts, r.responders, r.control, r.control_responders) == (50, 9, 40, 6)
    assert r.control_rate == pytest.approx(6 / 40)


def test_a_spread_shared_by_the_arms_is_estimated_on_all_their_reads() -> None:
    # twelve arms of different values per response, each read in two waves whose true
    # incremental response differs by a spread common to every arm (sd 0.02); each arm's own
    # moment estimate rests on one degree of freedom, the shared one on twelve
    from dataclasses import replace

    from models.decisions.readout import shared_tau2

    rng = np.random.default_rng(7)
    tau, se_u = 0.02, 0.01
    values = {f"arm{k}": float(v) for k, v in enumerate(rng.uniform(20, 80, 12))}
    shared, own = [], []
    for _ in range(200):
        waves: list[list] = [[], []]
        for arm, v in values.items():
            for wave in waves:
                u = rng.normal(0.03, tau) + rng.normal(0, se_u)
                wave.append(
                    replace(_READ[0], arm=arm, profit_per_contact=u * v, profit_se=se_u * v)
                )
        shared.append(shared_tau2(waves, values))
        own += [shared_tau2(waves, {arm: v}) for arm, v in values.items()]  # each alone
    assert np.sqrt(np.mean(shared)) == pytest.approx(tau, rel=0.15)
    # the same spread, far steadier: the per-arm estimates scatter about sqrt(12) times more
    assert np.std(own) > 2.5 * np.std(shared)
    # given, it is each arm's spread in its own units: tau^2 x value^2, added for the next wave
    (given,) = pool_readouts(
        [[r for r in w if r.arm == "arm0"] for w in waves],
        predictive=True,
        tau2_per_unit=tau**2,
        scale=values,
    )
    fixed_se2 = _fixed_se2(waves, "arm0")
    t2 = tau**2 * values["arm0"] ** 2
    assert given.profit_se**2 == pytest.approx(1 / (2 / (se_u**2 * values["arm0"] ** 2 + t2)) + t2)
    assert given.profit_se**2 > fixed_se2
    # one read: the fixed-effect figures, as without a shared spread
    (one,) = pool_readouts([[waves[0][0]]], predictive=True, tau2_per_unit=tau**2, scale=values)
    assert one.profit_se == pytest.approx(se_u * values["arm0"])
    # no spread between the waves: about none estimated
    calm = [
        [
            replace(
                _READ[0],
                arm=a,
                profit_per_contact=(0.03 + rng.normal(0, se_u)) * v,
                profit_se=se_u * v,
            )
            for a, v in values.items()
        ]
        for _ in range(2)
    ]
    assert shared_tau2(calm, values) < (tau / 2) ** 2


def _fixed_se2(waves: list[list], arm: str) -> float:
    (fe,) = pool_readouts([[r for r in w if r.arm == arm] for w in waves])
    return fe.profit_se**2


def test_the_spread_between_two_reads_integrated_over_a_prior() -> None:
    from models.decisions.readout import pool_predictive_bayes

    agree = [_reads(2.0, 0.5), _reads(2.1, 0.5)]
    disagree = [_reads(4.0, 0.5), _reads(0.0, 0.5)]
    (m_agree,), (m_dis,) = (pool_readouts(r, predictive=True) for r in (agree, disagree))
    # the moment estimate: none of the spread when two reads agree, a spread of about their
    # difference when they do not (one degree of freedom either way)
    assert m_agree.profit_se == pytest.approx(0.5 / np.sqrt(2))
    assert m_dis.profit_se > 2.5
    # over a prior of scale 0.5 per contact: some spread kept when they agree, and a
    # disagreement weighed against what the prior believes possible
    (b_agree,) = pool_predictive_bayes(agree, {"a": 0.5})
    (b_dis,) = pool_predictive_bayes(disagree, {"a": 0.5})
    assert m_agree.profit_se < b_agree.profit_se < 1.0
    assert 0.5 < b_dis.profit_se < m_dis.profit_se
    assert b_dis.profit_lower_one_sided > m_dis.profit_lower_one_sided
    assert b_dis.profit_per_contact == pytest.approx(2.0)  # equal noise: the mean between them
    # a prior of almost no spread: the fixed-effect figures
    (tight,) = pool_predictive_bayes(disagree, {"a": 1e-4})
    (fixed,) = pool_readouts(disagree)
    assert tight.profit_se == pytest.approx(fixed.profit_se, rel=1e-3)
    assert tight.profit_lower_one_sided == pytest.approx(fixed.profit_lower_one_sided, rel=1e-3)
    # one read, or an arm without a prior: pool_readouts' figures
    assert pool_predictive_bayes([agree[0]], {"a": 0.5}) == pool_readouts(
        [agree[0]], predictive=True
    )
    assert pool_predictive_bayes(disagree, {}) == [m_dis]


def test_the_roll_out_population_judged_on_its_own_read() -> None:
    """The roll-out goes to the rest of the population the test cell read: the gate's figure is
    that population's posterior, narrower than a new population's predictive."""
    from models.decisions.readout import pool_on_current_bayes, pool_predictive_bayes

    earlier, now = _reads(2.0, 0.3), _reads(2.2, 0.3)
    (pred,) = pool_predictive_bayes([earlier, now], {"a": 1.0})
    (cur,) = pool_on_current_bayes([earlier, now], {"a": 1.0})
    # both reads agree: same centre, but the predictive adds the whole spread between
    # populations again, the posterior of the read population does not
    assert cur.profit_se < pred.profit_se
    assert cur.profit_lower_one_sided > pred.profit_lower_one_sided
    assert cur.contacts == pred.contacts == 1000  # counts of every read pooled
    # the current population is pulled toward its own read, the predictive sits between them
    (cur_far,) = pool_on_current_bayes([_reads(2.0, 0.3), _reads(-1.0, 0.3)], {"a": 1.0})
    (pred_far,) = pool_predictive_bayes([_reads(2.0, 0.3), _reads(-1.0, 0.3)], {"a": 1.0})
    assert cur_far.profit_per_contact < pred_far.profit_per_contact
    assert cur_far.profit_per_contact < 0.0
    # no read now (the population was never read): the predictive; one read only: as it is
    assert pool_on_current_bayes([earlier, earlier, []], {"a": 1.0}) == pool_predictive_bayes(
        [earlier, earlier, []], {"a": 1.0}
    )
    assert pool_on_current_bayes([now], {"a": 1.0}) == pool_readouts([now], predictive=True)


def test_a_targeted_wave_is_read_on_each_arms_segment() -> None:
    """Two arms with no effect at all, given to segments that differ before any contact: read
    against the whole control group the high segment's arm looks like a gain and the other's
    like a loss; read on their own segments, neither is."""
    from models.decisions.readout import read_segments

    rng = np.random.default_rng(7)
    n = 40_000
    planned = np.where(rng.random(n) < 0.5, "a", "b")
    base = np.where(planned == "a", 0.30, 0.05)  # the plan's segments differ before contact
    control = rng.random(n) < 0.2
    y = (rng.random(n) < base).astype(float)  # no arm changes anything
    given = [None if c else p for c, p in zip(control, planned, strict=True)]
    terms = {"a": ArmTerms(10.0, 0.0, 0.0), "b": ArmTerms(10.0, 0.0, 0.0)}
    whole = {r.arm: r for r in read_wave(given, y, terms)}
    seg = {r.arm: r for r in read_segments(given, list(planned), y, terms)}
    assert whole["a"].incremental_response_ci[0] > 0.05  # a spurious gain
    assert whole["b"].incremental_response_ci[1] < -0.05  # a spurious loss
    for arm in ("a", "b"):
        lo, hi = seg[arm].incremental_response_ci
        assert lo < 0 < hi
        assert seg[arm].control == int((control & (planned == arm)).sum())
        assert seg[arm].contacts == int((~control & (planned == arm)).sum())
    # a contact must have got the plan's arm
    with pytest.raises(ValueError, match="other than the plan's"):
        read_segments(["a", None], ["b", "b"], [1.0, 0.0], terms)


def test_a_population_read_thinly_borrows_from_the_arms_other_populations() -> None:
    """A dropped arm's customers read on few contacts: with the arm's reads elsewhere as the
    prior, a thin read that agrees with them passes, one that clearly disagrees does not, and
    a population never read gets nothing."""
    from dataclasses import replace as with_

    from models.decisions.readout import pool_population_in_arm

    def fb(y: float, se: float) -> list:
        return [with_(_READ[0], arm="a as a fallback", profit_per_contact=y, profit_se=se)]

    elsewhere = [_reads(4.0, 0.4)[0], _reads(3.6, 0.5)[0]]  # the arm earns on its segments
    alone = pool_population_in_arm([fb(1.5, 1.5)], [], "a as a fallback", 1.0)
    with_prior = pool_population_in_arm([fb(1.5, 1.5)], elsewhere, "a as a fallback", 1.0)
    assert alone is not None and with_prior is not None
    assert alone.profit_lower_one_sided < 0 < with_prior.profit_lower_one_sided
    assert 1.5 < with_prior.profit_per_contact < 4.0  # pulled toward the arm's other reads
    assert with_prior.arm == "a as a fallback"
    # a precise read there that says the arm loses on these customers is believed
    losing = pool_population_in_arm([fb(-2.0, 0.4)], elsewhere, "a as a fallback", 1.0)
    assert losing is not None and losing.profit_lower_one_sided < 0
    # never read on them: no figure, whatever the arm earns elsewhere
    assert pool_population_in_arm([[]], elsewhere, "a as a fallback", 1.0) is None
    # a prior of almost no spread between populations: the arm's pooled mean
    tight = pool_population_in_arm([fb(1.5, 1.5)], elsewhere, "a as a fallback", 1e-3)
    assert tight is not None and tight.profit_per_contact == pytest.approx(3.8, abs=0.15)


def _baseline_sample(
    rng: np.random.Generator, n: int, share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A randomised comparison where a pre-treatment covariate predicts the response: each
    customer's response probability without contact ``b`` (uniform 0.02-0.6) is the
    covariate; a contact (drawn with ``share``) adds 0.05 + 0.2 (b - 0.31), an effect that
    differs by customer, 0.05 on average. Returns contact, response, covariate, and a noise
    covariate that predicts nothing."""
    b = rng.uniform(0.02, 0.6, n)
    contact = rng.random(n) < share
    p = np.where(contact, b + 0.05 + 0.2 * (b - 0.31), b)
    y = (rng.random(n) < p).astype(float)
    return contact, y, b, rng.random(n)


def test_a_read_adjusted_by_the_baseline_is_unbiased_and_narrower() -> None:
    """Lin's regression adjustment by a pre-treatment covariate: over 400 randomised samples
    with a known effect (0.05 incremental response, 0.05 x 40 - 0.2 = 1.8 per contact) the
    adjusted read is centred on it as the plain read is, its 90 % intervals cover it as often
    as they say, and its standard error is smaller — by what the covariate explains (about
    13-16 % of a response's variance here, so ~8 % off the SE) — in the formula and in the
    reads' actual spread; a covariate that predicts nothing costs (almost) nothing."""
    from models.decisions.readout import read_adjusted, read_strata

    rng = np.random.default_rng(7)
    terms = TERMS["a"]
    truth = 0.05 * 40 - 0.2
    plain, adj, noise = [], [], []
    for _ in range(400):
        c, y, b, u = _baseline_sample(rng, 3_000, 0.25)
        one = read_strata("a", c, y, np.zeros(c.size), terms)
        assert one is not None
        plain.append(one)
        adj.append(read_adjusted("a", c, y, b, terms))
        noise.append(read_adjusted("a", c, y, u, terms))
    for reads in (plain, adj):
        assert np.mean([r.incremental_response for r in reads]) == pytest.approx(0.05, abs=0.002)
        assert np.mean([r.profit_per_contact for r in reads]) == pytest.approx(truth, abs=0.08)
    inside = [r.profit_per_contact_ci[0] <= truth <= r.profit_per_contact_ci[1] for r in adj]
    assert 0.86 <= np.mean(inside) <= 0.94
    z = [(r.profit_per_contact - truth) / r.profit_se for r in adj]
    assert np.std(z) == pytest.approx(1.0, abs=0.1)
    se_plain = np.mean([r.profit_se for r in plain])
    se_adj = np.mean([r.profit_se for r in adj])
    assert 0.89 < se_adj / se_plain < 0.94  # the formula: ~8 % narrower
    spread = np.std([r.profit_per_contact for r in adj]) / np.std(
        [r.profit_per_contact for r in plain]
    )
    assert spread < 0.95  # and the reads really scatter less
    se_noise = np.mean([r.profit_se for r in noise])
    assert se_noise / se_plain == pytest.approx(1.0, abs=0.005)
    # the counts and rates stay as observed; the profit is the adjusted uplift's
    r = adj[-1]
    assert (r.contacts, r.responders) == (plain[-1].contacts, plain[-1].responders)
    assert r.profit_per_contact == pytest.approx(r.incremental_response * 40 - 0.2)


def test_an_adjusted_read_by_hand_and_through_the_segment_reads() -> None:
    from models.decisions.readout import read_adjusted, read_population, read_targeted

    # a constant covariate is the plain read (profit and its standard error)
    c = np.array([True] * 100 + [False] * 200)
    y = np.r_[np.ones(30), np.zeros(70), np.ones(40), np.zeros(160)]
    (plain,) = read_wave(["b" if v else None for v in c], y, {"b": TERMS["b"]})
    flat = read_adjusted("b", c, y, np.full(300, 0.2), TERMS["b"])
    assert flat.profit_per_contact == pytest.approx(plain.profit_per_contact)
    assert flat.profit_se == pytest.approx(plain.profit_se)
    # by hand: each group's mean on its own line, at the covariate's mean over both groups
    x = np.r_[np.linspace(0, 1, 100), np.linspace(0, 2, 200)]
    got = read_adjusted("b", c, y, x, TERMS["b"])
    means = []
    for rows in (c, ~c):
        slope, icpt = np.polyfit(x[rows], y[rows], 1)
        resid = y[rows] - (icpt + slope * x[rows])
        means.append((icpt + slope * x.mean(), resid @ resid / (rows.sum() - 1) / rows.sum()))
    (m_t, v_t), (m_c, v_c) = means
    assert got.incremental_response == pytest.approx(m_t - m_c)
    assert got.profit_per_contact == pytest.approx((60 - 5) * m_t - 60 * m_c - 4.0)
    assert got.profit_se == pytest.approx(np.sqrt(55**2 * v_t + 60**2 * v_c))
    # read_targeted / read_population pass the covariate to each stratum's read; None: as before
    given = ["b" if v else None for v in c]
    planned = ["b"] * 300
    (seg,) = read_targeted(given, planned, y, {"b": TERMS["b"]}, covariate=x)
    assert seg.profit_per_contact == pytest.approx(got.profit_per_contact)
    assert read_targeted(given, planned, y, {"b": TERMS["b"]}, covariate=None) == [plain]
    pop = read_population("b", given, np.ones(300, bool), ~c, y, TERMS["b"], covariate=x)
    assert pop is not None and pop.profit_se == pytest.approx(got.profit_se)
    with pytest.raises(ValueError, match="covariate"):
        read_adjusted("b", c, y, x[:10], TERMS["b"])
    with pytest.raises(ValueError, match="value per response"):
        read_adjusted("b", c, y, x, ArmTerms(None, 0.2))
