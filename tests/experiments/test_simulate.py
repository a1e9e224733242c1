"""The campaign loop simulator (experiments.simulate, `patron campaign simulate`)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.offpolicy import arms_of
from experiments.simulate import LoopSettings, simulable, simulate_loop, simulation_data, summarise
from models.decisions import load_campaign
from patron.cli import mount

ROOT = Path(__file__).resolve().parents[2]
LOOP = ROOT / "experiments" / "campaigns" / "loop_demo.yaml"
# a gate's reason: "dropped: ... (N contacts, M controls)" or "held: N contacts and M controls ..."
COUNTS = re.compile(r"([\d,]+) contacts(?:,| and) ([\d,]+) controls")
FAST = LoopSettings(params={"n_estimators": 30, "max_depth": 2, "learning_rate": 0.1})


@pytest.fixture(scope="module")
def data(arms_state):
    arms = arms_of(load_campaign(LOOP))
    return arms, simulation_data(
        arms_state,
        "synthetic_arms",
        ["ARMS_2023_09"],
        ["ARMS_2024_01", "ARMS_2024_05"],
        arms,
        "churn_v1",
    )


@pytest.mark.parametrize("method", ["targeted", "refit", "unproven", "adjusted"])
def test_the_oracle_bounds_both_ways_on_every_wave(data, method: str) -> None:
    arms, d = data
    known = [0, 3]  # e-mail only: sms and phone are new
    settings = replace(FAST, method=method)
    if method == "unproven":  # the larger test cell where reads are thin, reads stratified
        settings = replace(FAST, stratified_reads=True, unproven_cell=True)
    if method == "adjusted":  # every read regression-adjusted by the predicted baseline
        settings = replace(FAST, adjusted_reads=True)
    out = simulate_loop(
        d.history,
        d.waves,
        d.features,
        d.categorical,
        arms,
        known,
        settings,
        np.random.default_rng(0),
    )
    assert [w.wave for w in out] == ["ARMS_2024_01", "ARMS_2024_05"]
    for w in out:
        assert w.oracle >= w.fixed - 1e-6 and w.oracle >= w.loop - 1e-6
        assert len(w.gate) == len(arms)
        assert 0 <= w.false_roll_outs <= w.arms_rolled_out
        assert w.arms_rolled_out <= sum(g["roll_out"] for g in w.gate)  # reached anyone
        # the regret's parts add up to the regret, and only the test cell can be negative
        assert sum(w.regret.values()) == pytest.approx(w.oracle - w.loop, rel=1e-9, abs=1e-6)
        assert min(v for k, v in w.regret.items() if k != "test_cell") >= -1e-6
        # the held customers' share of the under-contact is a part of it
        assert -1e-6 <= w.held_regret <= w.regret["under_contact"] + 1e-6
        if method == "refit":  # the first design holds no one
            assert w.held_regret == 0.0
    s = summarise([out, out])
    assert s["loop_minus_fixed"]["mean"] == pytest.approx(sum(w.loop - w.fixed for w in out))


def test_same_seed_same_run(data) -> None:
    arms, d = data
    runs = [
        simulate_loop(
            d.history,
            d.waves[:1],
            d.features,
            d.categorical,
            arms,
            list(range(len(arms))),
            FAST,
            np.random.default_rng(5),
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_adjusted_reads_read_the_same_customers_with_other_figures(data) -> None:
    """The option changes the reads' figures, not who was read: the first wave's gate sees the
    same contacts and controls per arm, and at least one arm's profit per contact moves."""
    arms, d = data
    counts = re.compile(r"\(([\d,]+) contacts, ([\d,]+) controls\)")
    profit = re.compile(r"per contact ([+-][\d.]+)")
    gates = []
    for adjusted in (False, True):
        (w,) = simulate_loop(
            d.history,
            d.waves[:1],
            d.features,
            d.categorical,
            arms,
            list(range(len(arms))),
            replace(FAST, adjusted_reads=adjusted),
            np.random.default_rng(5),
        )
        gates.append(w.gate)
    plain, adj = gates
    assert [counts.findall(g["reason"]) for g in plain] == [
        counts.findall(g["reason"]) for g in adj
    ]
    moved = [
        profit.findall(a["reason"]) != profit.findall(b["reason"])
        for a, b in zip(plain, adj, strict=True)
        if profit.search(a["reason"])
    ]
    assert moved and any(moved)


def test_an_unknown_loop_method_is_refused(data) -> None:
    arms, d = data
    with pytest.raises(ValueError, match="unknown loop method 'bandit'"):
        simulate_loop(
            d.history,
            d.waves,
            d.features,
            d.categorical,
            arms,
            [0],
            replace(FAST, method="bandit"),
            np.random.default_rng(0),
        )


def test_a_campaign_with_budgets_is_refused_not_ignored() -> None:
    campaign = load_campaign(ROOT / "experiments" / "campaigns" / "arms_demo.yaml")
    with pytest.raises(ValueError, match="budget.*contact_policy"):
        simulable(campaign)


def test_cli_prints_waves_and_gate(arms_state) -> None:
    args = [
        "campaign",
        "simulate",
        "--campaign",
        str(LOOP),
        "--dataset",
        "synthetic_arms",
        "--history",
        "ARMS_2023_09",
        "--wave",
        "ARMS_2024_01",
        "--known",
        "RET_01/email",
        "--home",
        str(arms_state.home),
    ]
    result = CliRunner().invoke(mount(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "ARMS_2024_01" in result.output and "roll-out gate at 90% confidence" in result.output
    assert "regret" in result.output
    truth = re.search(
        r"truly loses, (\d+) of (\d+) rolled out; where it gains, (\d+) of (\d+)",
        " ".join(result.output.split()),
    )
    assert truth is not None, result.output
    lost, losing, gained, gaining = map(int, truth.groups())
    assert lost <= losing and gained <= gaining and losing + gaining > 0
    bad = CliRunner().invoke(mount(), [*args[:-2], "--known", "RET_01/fax"])
    assert bad.exit_code != 0


def _world(n: int, seed: int, new_effect: float = 0.5, waves: int = 1) -> tuple:
    """A small world of two arms: arm 0 (known, no effect) and arm 1 (never tested before the
    campaign: ``new_effect`` on everyone's response); one randomised campaign of arm 0 before
    it; ``waves`` waves of the same customers."""
    from experiments.offpolicy import Arm
    from experiments.simulate import Wave

    rng = np.random.default_rng(seed)
    arms = [Arm("OLD", "email", 40.0, 0.2), Arm("NEW", "sms", 40.0, 0.1)]
    x = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n)})
    history = x.copy()
    history["arm"] = np.where(rng.random(n) < 0.5, 0, -1)
    history["label"] = (rng.random(n) < 0.2).astype(int)
    history["campaign_id"] = "BEFORE"
    p0 = np.full(n, 0.2)
    p_arms = np.column_stack([p0, p0 + new_effect])
    return arms, history, [Wave(f"W{i + 1}", x.copy(), (p0, p_arms)) for i in range(waves)]


SMALL = replace(FAST, params={"n_estimators": 10, "max_depth": 2, "learning_rate": 0.1})


def _small_loop(world: tuple, **options: Any) -> list:
    """The loop on a ``_world`` whose first arm only is known, ``SMALL`` with ``options``."""
    arms, history, waves = world
    return simulate_loop(
        history,
        waves,
        ["f1", "f2"],
        [],
        arms,
        [0],
        replace(SMALL, **options),
        np.random.default_rng(1),
    )


def test_a_new_arm_that_passes_on_everyone_is_rolled_out() -> None:
    world = _world(4_000, 0)
    (out,) = _small_loop(world)
    decisions = {g["arm"]: g["roll_out"] for g in out.gate}
    assert decisions["NEW/sms"]  # +0.5 x 40 per contact, read on everyone's test cell
    # rolled out beyond the test cell: the roll-out earns most of the oracle's profit
    assert out.arms_rolled_out >= 1 and out.loop > 0.8 * out.oracle
    # the populations it reached are recorded, JSON-ready (bench/loop.py writes them)
    (pop,) = out.populations
    assert pop["read"] == "NEW/sms" and pop["arm"] == 1 and pop["true_profit"] > 0
    # every population the gate decided on is recorded with its truth, the rolled-out ones too
    decided = {(c["read"], c["arm"]): c for c in out.candidates}
    assert decided[("NEW/sms", 1)]["rolled_out"] and decided[("NEW/sms", 1)]["true_profit"] > 0
    assert decided[("NEW/sms", 1)]["customers"] >= pop["customers"]
    assert all(c["rolled_out"] == (c["read"] == "NEW/sms") for c in out.candidates)
    json.dumps(out.as_dict())
    # the design before gave it to no one: no model knew the arm
    (before,) = _small_loop(world, rollout="extend")
    assert before.loop < 0.2 * before.oracle


def test_gate_error_rates_count_every_population_decided() -> None:
    from experiments.simulate import gate_error_rates

    got = gate_error_rates(
        [
            {"true_profit": -5.0, "rolled_out": True},
            {"true_profit": -1.0, "rolled_out": False},
            {"true_profit": -2.0, "rolled_out": False},
            {"true_profit": 3.0, "rolled_out": True},
        ]
    )
    assert got["negative_populations"] == 3 and got["negative_rolled_out"] == 1
    assert got["negative_rolled_out_rate"] == pytest.approx(1 / 3)
    assert got["positive_rolled_out_rate"] == 1.0


def test_kept_test_reads_reach_the_next_waves_gate() -> None:
    """With ``keep_test_reads`` the test cell's read of an arm that was not rolled out is pooled
    by the next wave's gate; by default it is lost (only roll-outs' reads are kept)."""
    # the new arm loses: dropped, never rolled out
    world = _world(4_000, 0, new_effect=-0.05, waves=2)

    def new_arm_gate(keep: bool) -> list[str]:
        out = _small_loop(world, keep_test_reads=keep)
        assert all(not g["roll_out"] for w in out for g in w.gate if g["arm"] == "NEW/sms")
        return [g["reason"] for w in out for g in w.gate if g["arm"] == "NEW/sms"]

    first, second = new_arm_gate(keep=False)
    kept_first, kept_second = new_arm_gate(keep=True)
    read = re.search(r"\(([\d,]+) contacts, ([\d,]+) controls\)", first)
    assert read is not None and kept_first == first  # the first wave is the same
    # the plan gives the dropped new arm to no one in the second wave: by default nothing
    # reads it there; kept, the first wave's test-cell read still decides
    assert second.startswith("held: the plan gives it to no one")
    assert kept_second.startswith("dropped") and read.group(0) in kept_second


def test_the_unproven_cell_tests_thin_reads_at_the_control_fraction_per_arm() -> None:
    """With ``unproven_cell`` the customers whose plan arm the evidence does not pass yet are
    tested at the control fraction per arm read on them: the at-risk ones (half get their
    fallback) at twice it, the others at once it, so each of those reads has about as many
    contacts as controls; the rest stay at the test fraction, and a never-tested arm's random
    share stays the same share of everyone."""
    from experiments.simulate import NO_CONTACT, cell_shares, draw_test_cell

    rng = np.random.default_rng(0)
    n = 120_000
    group = np.arange(n) % 4  # 0: passed plan arm; 1: unproven, at risk; 2: unproven; 3: none
    plan = np.select([group == 0, group == 3], [0, NO_CONTACT], 1)
    at_risk = group == 1
    second = np.where(at_risk, 0, NO_CONTACT)
    settings = LoopSettings(test_fraction=0.05, control_fraction=0.1)
    control = rng.random(n) < settings.control_fraction
    untested = [2]  # one never-tested arm of three

    def cell(unproven: bool) -> tuple:
        s = replace(settings, unproven_cell=unproven)
        share = cell_shares(plan, [0], at_risk, s)
        test, given = draw_test_cell(
            plan, second, at_risk, share, control, untested, 3, s, np.random.default_rng(1)
        )
        return share, test, given

    share, test, given = cell(unproven=False)
    assert (share == 0.05).all()
    share, test, given = cell(unproven=True)
    assert [float(share[group == g][0]) for g in range(4)] == [0.05, 0.2, 0.1, 0.05]
    for g, rate in enumerate([0.05, 0.2, 0.1, 0.05]):
        out = ~control & (group == g)
        assert test[out].mean() == pytest.approx(rate, abs=0.006)
        # the new arm: 1/3 of the base test fraction of everyone, whatever the group
        assert (given[out] == 2).mean() == pytest.approx(0.05 / 3, abs=0.003)
    # each arm read on the unproven customers gets about as many contacts as controls (less
    # the control group's 10 % and the new arm's share): at risk, plan arm and fallback each
    # (0.2 - 0.05 / 3) / 2 x 0.9 / 0.1 = 0.825; the others (0.1 - 0.05 / 3) x 0.9 / 0.1 = 0.75
    for g, arm, expected in [(1, 1, 0.825), (1, 0, 0.825), (2, 1, 0.75)]:
        ratio = ((group == g) & (given == arm)).sum() / (control & (group == g)).sum()
        assert ratio == pytest.approx(expected, abs=0.05)


def test_the_default_gate_weighs_two_disagreeing_reads_against_the_prior() -> None:
    """The loop's and ``patron campaign rollout``'s gate (``gate_pool``): by default the spread
    between an arm's reads is integrated over a half-normal prior of scale ``tau_uplift`` x
    the arm's value per response, not estimated by moments on one degree of freedom."""
    from experiments.simulate import gate_pool
    from models.decisions.readout import ArmTerms, pool_readouts, read_wave

    rng = np.random.default_rng(3)
    terms = {"a": ArmTerms(value=40.0, cost_per_contact=0.5)}
    reads = []
    for effect in (0.09, 0.03):  # two populations that disagree beyond their noise
        arms = list(rng.choice(np.array(["a", None], dtype=object), size=6000))
        y = np.array([rng.random() < 0.1 + (effect if a else 0.0) for a in arms], dtype=float)
        reads.append(read_wave(arms, y, terms))
    settings = LoopSettings()
    assert settings.gate_reads == "bayes"
    default = gate_pool(reads, settings, {"a": 40.0})["a"]
    (moments,) = pool_readouts(reads, settings.confidence, predictive=True)
    assert gate_pool(reads, replace(settings, gate_reads="pooled"), {"a": 40.0})["a"] == moments
    # the prior (sd 0.02 x 40 = 0.8 per contact) keeps the spread near what it believes
    # possible: a narrower predictive interval than the moments' own, centred between the reads
    assert default.profit_se < moments.profit_se
    lo, hi = sorted(r[0].profit_per_contact for r in reads)
    assert lo < default.profit_per_contact < hi


def test_the_fallbacks_prior_is_the_arms_segment_read_moved_by_the_estimated_difference() -> None:
    from experiments.simulate import shifted_segment_reads
    from models.decisions.readout import ArmTerms, read_wave

    (seg,) = read_wave(
        ["a"] * 300 + [None] * 300, [1.0] * 90 + [0.0] * 510, {"a": ArmTerms(40.0, 0.2)}
    )
    (moved,) = shifted_segment_reads([seg], np.array([0.5, 1.5]), np.array([3.0, 4.0, 5.0]))
    # the customers it falls back to are estimated 3 per contact worse than its segment
    assert moved.profit_per_contact == pytest.approx(seg.profit_per_contact - 3.0)
    assert moved.profit_se == seg.profit_se and moved.contacts == seg.contacts
    assert shifted_segment_reads([seg], np.array([]), np.array([3.0])) == []


def test_the_new_arm_cell_gives_each_never_tested_arm_the_test_fraction_of_everyone() -> None:
    """With ``new_arm_cell`` each never-tested arm gets the test fraction of everyone at random
    (its own share, not ``1 / A`` of one), the plan keeps the test fraction of the others, and
    ``new_arm_shares`` states the chances the draw made; off, the new arms share the test cell
    as before, draw for draw."""
    from experiments.simulate import NO_CONTACT, draw_test_cell, new_arm_shares

    n = 200_000
    plan = np.where(np.arange(n) % 2 == 0, 0, NO_CONTACT)  # half the plan gives arm 0
    second = np.full(n, NO_CONTACT)
    at_risk = np.zeros(n, bool)
    settings = LoopSettings(test_fraction=0.05, control_fraction=0.1)
    control = np.random.default_rng(0).random(n) < settings.control_fraction
    share = np.full(n, settings.test_fraction)
    untested = [1, 2, 3, 4]  # four never-tested arms of six, as the "new channels" bench

    def cell(on: bool, untested: list[int] = untested) -> tuple:
        s = replace(settings, new_arm_cell=on)
        test, given = draw_test_cell(
            plan, second, at_risk, share, control, untested, 6, s, np.random.default_rng(1)
        )
        return test, given, new_arm_shares(share, untested, 6, s)

    out = ~control
    test, given, (p_new, p_plan, p_roll) = cell(on=False)
    assert p_new == pytest.approx(0.05 / 6)
    for j in untested:  # each new arm: a sixth of the 5 % test cell, over everyone
        assert (given[out] == j).mean() == pytest.approx(0.05 / 6, abs=0.001)
    test_on, given_on, (p_new, p_plan, p_roll) = cell(on=True)
    assert p_new == 0.05 and p_plan[0] == pytest.approx(0.05 * 0.8)
    assert p_roll[0] == pytest.approx(0.95 * 0.8)
    for j in untested:  # each new arm: 5 % of everyone, whatever the plan gives them
        for planned in (0, NO_CONTACT):
            where = out & (plan == planned)
            assert (given_on[where] == j).mean() == pytest.approx(0.05, abs=0.003)
    # the plan's test contacts: its share of the customers no new arm took
    assert (given_on[out & (plan == 0)] == 0).mean() == pytest.approx(p_plan[0], abs=0.003)
    assert test_on[out].mean() == pytest.approx(1 - p_roll[0], abs=0.003)
    assert not test_on[control].any() and not (given_on[control] != NO_CONTACT).any()
    # four times the contacts of a new arm's first read; the read over everyone stays random
    assert (given_on == 1).sum() > 5 * (given == 1).sum()
    # no never-tested arm (every later wave, every wave with the arms known): the same draws
    same_off, same_on = cell(on=False, untested=[]), cell(on=True, untested=[])
    assert (same_off[0] == same_on[0]).all() and (same_off[1] == same_on[1]).all()
    assert (same_off[1][same_off[0]] == plan[same_off[0]]).all()


def test_the_new_arm_cell_reads_new_arms_on_more_contacts_in_the_loop(data) -> None:
    """In the loop, with e-mail known only, the first wave reads each new arm over everyone on
    about six times the contacts (its own 5 % instead of a sixth of it), against about the
    same controls."""
    arms, d = data
    reads = []
    for option in (False, True):
        (w,) = simulate_loop(
            d.history,
            d.waves[:1],
            d.features,
            d.categorical,
            arms,
            [0, 3],
            replace(FAST, new_arm_cell=option),
            np.random.default_rng(5),
        )
        got: dict[str, tuple[int, ...]] = {}
        for g in w.gate:
            m = COUNTS.search(g["reason"])
            if m:
                got[g["arm"]] = tuple(int(v.replace(",", "")) for v in m.groups())
        reads.append(got)
    off, on = reads
    new = [a.label for j, a in enumerate(arms) if j not in (0, 3)]
    assert set(new) <= set(off) and set(new) <= set(on)
    for label in new:
        assert on[label][0] > 3 * off[label][0]  # contacts
        # against everyone's controls (and the test cell's customers the plan leaves out)
        assert on[label][1] == pytest.approx(off[label][1], rel=0.1)


def test_explore_unplanned_tries_again_the_arms_the_plan_gives_to_no_one(data) -> None:
    """With e-mail known only, a new arm the refitted plan gives to no one is held without a
    read by default; with ``explore_unplanned`` it is tried at random in the test cell and read
    over everyone instead, so no wave holds an arm for want of a plan."""
    arms, d = data
    unplanned = "held: the plan gives it to no one"
    held = {}
    for option in (False, True):
        out = simulate_loop(
            d.history,
            d.waves,
            d.features,
            d.categorical,
            arms,
            [0, 3],
            replace(FAST, explore_unplanned=option),
            np.random.default_rng(3),
        )
        held[option] = [g["arm"] for w in out for g in w.gate if g["reason"].startswith(unplanned)]
        if option:
            later = out[1].gate  # the second wave: every arm read, on some contacts
            assert all(COUNTS.search(g["reason"]) for g in later)
    assert held[False], "the scenario must have an arm the plan gives to no one"
    assert held[True] == []


def test_the_powered_cell_gives_a_thin_arm_a_larger_test_share() -> None:
    """An arm whose expected profit per contact is small against its read's noise gets a
    larger test share (up to the cap), one with a clear expected profit the test fraction; the
    share is the one the power formula asks for (checked against its inverse)."""
    from statistics import NormalDist

    from experiments.offpolicy import Arm
    from experiments.simulate import powered_shares

    arms = [
        Arm("A", "email", 100.0, 0.5, 0.0),
        Arm("B", "email", 100.0, 0.5, 0.0),
    ]
    n = 20_000
    plan = np.repeat([0, 1], n // 2)
    control = np.zeros(n, bool)
    control[::10] = True
    profit = np.zeros((n, 2))
    profit[plan == 0, 0] = 3.0  # 3 per contact on a 10 % response: thin
    profit[plan == 1, 1] = 20.0  # clear
    response = np.full((n, 2), 0.12)
    baseline = np.full(n, 0.10)
    settings = replace(FAST, powered_goal=0.8, powered_cap=0.5)
    share = powered_shares(plan, profit, response, baseline, arms, control, settings)
    assert share[plan == 1].max() == pytest.approx(settings.test_fraction)
    a = share[plan == 0][0]
    assert settings.test_fraction < a < 0.5
    # the gate's power at that share is the goal
    n_t = a * int(((plan == 0) & ~control).sum())
    n_c = int(((plan == 0) & control).sum())
    se = np.sqrt(100.0**2 * 0.12 * 0.88 / n_t + 100.0**2 * 0.1 * 0.9 / n_c)
    z = NormalDist().inv_cdf(settings.confidence)
    assert NormalDist().cdf(3.0 / se - z) == pytest.approx(0.8, abs=1e-6)
    capped = replace(settings, powered_cap=a / 2)  # the cap binds below the share asked for
    assert powered_shares(plan, profit, response, baseline, arms, control, capped)[0] == a / 2


def test_crossfit_deals_a_thin_arms_rows_over_the_folds() -> None:
    from experiments.simulate import crossfit

    arms, history, _ = _world(600, 3)
    settings = replace(FAST, params={"n_estimators": 5, "max_depth": 2, "learning_rate": 0.1})
    # arm 1 read on two contacts only: the fold draw often puts both in one fold, whose
    # complement then has no row of it (before: a model of one arm fewer, a shape error)
    thin = history.copy()
    thin.loc[thin.index[:2], "arm"] = 1
    for seed in range(6):
        uplift, outcomes = crossfit(thin, [0, 1], ["f1", "f2"], [], settings, seed)
        assert uplift.shape == (600, 2) and np.isfinite(uplift).all()
        assert outcomes.shape == (600, 3) and np.isfinite(outcomes).all()


def test_shift_reads_moves_each_earlier_read_to_the_arms_segment_now() -> None:
    from experiments.simulate import shift_to_segment
    from models.decisions.readout import ArmTerms, read_wave

    terms = {"a": ArmTerms(40.0, 0.2), "b": ArmTerms(40.0, 0.2)}
    labels = ["a"] * 200 + ["b"] * 200 + [None] * 200
    (ra, rb) = read_wave(labels, [1.0] * 60 + [0.0] * 140 + [1.0] * 50 + [0.0] * 350, terms)
    profit = {"a": np.array([1.0, 2.0, 3.0, 10.0]), "b": np.array([5.0, 5.0, 5.0, 5.0])}
    rows = [{"a": np.array([0, 1, 2]), "b": np.array([], dtype=int)}]
    ((ma, mb),) = shift_to_segment([[ra, rb]], rows, profit, {"a": 0.5, "b": 1.0})
    # a's read was made where the model estimates 2 per contact; its segment now 0.5
    assert ma.profit_per_contact == pytest.approx(ra.profit_per_contact - 1.5)
    assert ma.profit_se == ra.profit_se and ma.contacts == ra.contacts
    assert mb == rb  # no rows: kept as made
    # an arm without a segment now keeps its read
    ((ka, _),) = shift_to_segment([[ra, rb]], rows, profit, {"b": 1.0})
    assert ka == ra


def test_not_shown_to_lose_reads_the_upper_bound_over_random_customers() -> None:
    from experiments.simulate import not_shown_to_lose
    from models.decisions.readout import ArmReadout, ArmTerms, read_wave

    terms = {"a": ArmTerms(40.0, 0.2)}

    def read(contacts: int, rate: float) -> ArmReadout:
        n = 2 * contacts
        y = [1.0] * int(rate * contacts) + [0.0] * (contacts - int(rate * contacts))
        y += [1.0] * int(0.2 * contacts) + [0.0] * (contacts - int(0.2 * contacts))
        (r,) = read_wave(["a"] * contacts + [None] * (n - contacts), y, terms)
        return r

    assert not_shown_to_lose([], 0.9)  # never read over everyone: worth a try
    assert not not_shown_to_lose([read(4_000, 0.1)], 0.9)  # 10 points below the control
    assert not_shown_to_lose([read(4_000, 0.3)], 0.9)
    # a small loss on few contacts is not shown; pooled with many like it, it is
    assert not_shown_to_lose([read(100, 0.18)], 0.9)
    assert not not_shown_to_lose([read(100, 0.18)] + [read(4_000, 0.18)] * 3, 0.9)


def test_explore_promising_tries_again_only_the_arms_not_shown_to_lose() -> None:
    """Which arms are tried again: those no customer is given (as plan arm or fallback); with
    the reads over random customers, only those not shown to lose there."""
    from experiments.simulate import arms_to_explore
    from models.decisions.readout import ArmTerms, read_wave

    labels = ["A", "B", "C", "D"]
    plan = np.array([0, 0, -1, -1])
    fallback = np.array([-1, 1, -1, -1])  # B is a fallback in the test cell
    (losing,) = read_wave(
        ["C"] * 2_000 + [None] * 2_000,
        [0.0] * 2_000 + [1.0] * 400 + [0.0] * 1_600,
        {"C": ArmTerms(40.0, 0.2)},
    )
    assert arms_to_explore(plan, fallback, [0, 1, 2, 3], None, labels, 0.9) == [2, 3]
    reads = {"C": [losing], "D": []}  # D never read over everyone: worth a try
    assert arms_to_explore(plan, fallback, [0, 1, 2, 3], reads, labels, 0.9) == [3]
    assert arms_to_explore(plan, fallback, [0, 1, 2], reads, labels, 0.9) == []


def test_explore_promising_leaves_held_an_arm_its_random_read_showed_to_lose() -> None:
    """NEW, first read at random in the first wave, loses 6 per contact; the second wave's plan
    gives it to no one. ``explore_unplanned`` tries it again at random, ``explore_promising``
    leaves it held."""
    world = _world(4_000, 0, new_effect=-0.15, waves=2)
    unplanned = "held: the plan gives it to no one"
    held = {}
    for option in ("none", "unplanned", "promising"):
        out = _small_loop(
            world,
            explore_unplanned=option == "unplanned",
            explore_promising=option == "promising",
        )
        held[option] = {g["arm"] for g in out[1].gate if g["reason"].startswith(unplanned)}
    assert held == {"none": {"NEW/sms"}, "unplanned": set(), "promising": {"NEW/sms"}}
