"""Example tests of models.decisions: schema, value of a contact, exact optimum, labels."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from models.decisions import (
    BASIS_NON_CAUSAL,
    BASIS_UPLIFT,
    EXCLUSION_REASONS,
    ChurnProbability,
    HouseholdMaps,
    ResponseProbability,
    UpliftEstimate,
    allocation_problem,
    contact_history,
    contact_values,
    load_campaign,
    parse_campaign,
    plan_campaign,
)
from models.decisions.allocate import solve_exact

ROOT = Path(__file__).resolve().parents[2]


def _campaign(**over: object) -> dict:
    base: dict = {
        "campaign_id": "c-test",
        "offers": [
            {"id": "a", "kind": "retention", "value": 50.0, "cost_per_acceptance": 4.0},
            {"id": "b", "kind": "cross_sell", "value": 30.0, "budget": {"contacts": 2}},
        ],
        "channels": [
            {"name": "email", "cost_per_contact": 0.2},
            {"name": "phone", "cost_per_contact": 4.0, "capacity": 2},
        ],
        "budget": {"money": 12.0},
    }
    base.update(over)
    return base


def _customers(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "consent_email": rng.random(n) < 0.8,
            "consent_phone": rng.random(n) < 0.6,
        }
    )


# --------------------------------------------------------------------------- schema


def test_example_yaml_loads() -> None:
    c = load_campaign(ROOT / "experiments/campaigns/retention_example.yaml")
    assert len(c.offers) >= 2 and len(c.channels) >= 3
    cost = {ch.name: ch.cost_per_contact for ch in c.channels}
    assert cost["email"] == pytest.approx(cost["phone"] / 20)


def test_unknown_field_is_an_error_naming_it() -> None:
    data = _campaign()
    data["budjet"] = data.pop("budget")
    with pytest.raises(ValidationError, match="budjet"):
        parse_campaign(data)
    data = _campaign()
    data["channels"][0]["capacty"] = 3
    with pytest.raises(ValidationError, match="capacty"):
        parse_campaign(data)


def test_money_budget_without_any_cost_is_refused_naming_the_field() -> None:
    free = [{"name": "email", "cost_per_contact": 0.0}]
    offers = [{"id": "a", "kind": "retention", "value": 10.0}]
    with pytest.raises(ValidationError, match=r"budget\.money"):
        parse_campaign(_campaign(channels=free, offers=offers, budget={"money": 100.0}))
    offers_b = [{"id": "a", "kind": "retention", "value": 10.0, "budget": {"money": 5.0}}]
    with pytest.raises(ValidationError, match=r"offers\[0\]\.budget\.money"):
        parse_campaign(_campaign(channels=free, offers=offers_b, budget={}))
    # a cost per acceptance is a cost: then the money budget can bind
    ok = [{"id": "a", "kind": "retention", "value": 10.0, "cost_per_acceptance": 1.0}]
    parse_campaign(_campaign(channels=free, offers=ok, budget={"money": 100.0}))


def test_non_causal_ranking_needs_a_reason() -> None:
    with pytest.raises(ValidationError, match="reason"):
        parse_campaign(_campaign(ranking={"basis": "non_causal_score"}))


# --------------------------------------------------------------------------- value


def test_value_of_a_contact_formula() -> None:
    c = parse_campaign(_campaign())
    u = np.array([[[0.1, 0.2], [0.05, 0.0]]])
    p = np.array([[[0.3, 0.4], [0.2, 0.1]]])
    v = contact_values(c, UpliftEstimate(u, ResponseProbability(p)))
    expected = np.array([[[0.1 * 50 - 4 * 0.3 - 0.2, 0.2 * 50 - 4 * 0.4 - 4.0],
                          [0.05 * 30 - 0.2, 0.0 * 30 - 4.0]]])  # fmt: skip
    np.testing.assert_allclose(v.profit, expected)
    np.testing.assert_allclose(v.spend, [[[0.2 + 1.2, 4 + 1.6], [0.2, 4.0]]])
    assert v.basis == BASIS_UPLIFT


def test_acceptance_cost_needs_the_treated_response_probability() -> None:
    c = parse_campaign(_campaign())
    with pytest.raises(ValueError, match="p_accept"):
        contact_values(c, UpliftEstimate(np.full((2, 2, 2), 0.1)))


def test_churn_probability_is_never_a_response_probability() -> None:
    churn = ChurnProbability(np.array([0.9, 0.2]))
    with pytest.raises(TypeError, match="churn probability is not a response probability"):
        UpliftEstimate(np.full((2, 2), 0.1), p_accept=churn)  # type: ignore[arg-type]
    c = parse_campaign(_campaign())
    with pytest.raises(TypeError, match="not an incremental effect"):
        contact_values(c, churn)
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="not an incremental effect"):
        plan_campaign(c, _customers(2, rng), churn)
    # even when non-causal ranking is allowed, a churn score does not price acceptances
    nc = parse_campaign(_campaign(ranking={"basis": "non_causal_score", "reason": "no uplift yet"}))
    with pytest.raises(ValueError, match="churn probability says nothing about accepting"):
        contact_values(nc, churn)


def test_non_causal_ranking_labels_every_figure() -> None:
    offers = [{"id": "a", "kind": "retention", "value": 100.0}]
    c = parse_campaign(
        _campaign(
            offers=offers,
            ranking={"basis": "non_causal_score", "reason": "pilot before the first control"},
        )
    )
    rng = np.random.default_rng(1)
    customers = _customers(6, rng)
    plan = plan_campaign(c, customers, ChurnProbability(rng.random(6)))
    cols = set(plan.customers.columns)
    assert "expected_incremental_profit" not in cols
    assert "expected_incremental_responses" not in cols
    assert "non_causal_ranking_value" in cols
    assert (plan.customers["basis"] == BASIS_NON_CAUSAL).all()
    assert plan.summary["basis"] == BASIS_NON_CAUSAL
    assert "non-incremental" in plan.summary["warning"]
    assert not any("incremental_profit" in k for k in plan.summary)
    assert all("incremental" not in c for c in plan.by_offer.columns)


# --------------------------------------------------------------------------- the optimum


def _brute_force(values: np.ndarray, spend: np.ndarray, camp: dict, allowed: np.ndarray) -> float:
    n, n_off, n_ch = values.shape
    choices = [None] + [(o, ch) for o in range(n_off) for ch in range(n_ch)]
    best = 0.0
    for combo in itertools.product(choices, repeat=n):
        money, per_offer, per_channel, total = 0.0, [0] * n_off, [0] * n_ch, 0.0
        ok = True
        for i, pick in enumerate(combo):
            if pick is None:
                continue
            o, ch = pick
            if not allowed[i, o, ch] or values[i, o, ch] <= 0:
                ok = False
                break
            money += spend[i, o, ch]
            per_offer[o] += 1
            per_channel[ch] += 1
            total += values[i, o, ch]
        if not ok or money > camp["budget"]["money"] + 1e-9:
            continue
        if per_offer[1] > 2 or per_channel[1] > 2:
            continue
        best = max(best, total)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_case_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5
    camp = _campaign()
    c = parse_campaign(camp)
    customers = _customers(n, rng)
    u = rng.uniform(-0.05, 0.3, (n, 2, 2))
    p = np.clip(u + rng.uniform(0, 0.3, (n, 2, 2)), 0, 1)
    est = UpliftEstimate(u, ResponseProbability(p))
    v = contact_values(c, est)
    consent = customers[["consent_email", "consent_phone"]].to_numpy()
    allowed = np.broadcast_to(consent[:, None, :], (n, 2, 2))
    optimum = _brute_force(v.profit, v.spend, camp, allowed)
    for method in ("exact", "lagrangian"):
        plan = plan_campaign(c, customers, est, method=method, households=HouseholdMaps())
        solver = plan.summary["solver"]
        assert solver["bound"] >= optimum - 1e-6
        if method == "exact":
            assert solver["objective"] == pytest.approx(optimum, abs=1e-6)
        else:
            assert solver["objective"] <= optimum + 1e-6
        assert plan.summary["expected_incremental_profit_selected"] == pytest.approx(
            solver["objective"]
        )


def test_lagrangian_is_close_to_the_exact_optimum_on_a_medium_case() -> None:
    rng = np.random.default_rng(7)
    n = 1000
    c = parse_campaign(
        _campaign(
            budget={"money": 400.0, "contacts": 600},
            offers=[
                {"id": "a", "kind": "retention", "value": 50.0, "cost_per_acceptance": 4.0},
                {"id": "b", "kind": "cross_sell", "value": 30.0, "budget": {"contacts": 150}},
            ],
            channels=[
                {"name": "email", "cost_per_contact": 0.2},
                {"name": "phone", "cost_per_contact": 4.0, "capacity": 40},
            ],
        )
    )
    customers = _customers(n, rng)
    u = np.minimum(rng.beta(1, 15, (n, 2, 2)) * np.array([1.0, 2.5]), 0.9)
    est = UpliftEstimate(u, ResponseProbability(np.clip(u + 0.05, 0, 1)))
    exact = plan_campaign(c, customers, est, method="exact").summary["solver"]
    lag = plan_campaign(c, customers, est, method="lagrangian").summary["solver"]
    problem = allocation_problem(c, customers, est)
    lp = solve_exact(problem.options, problem.constraints, relax=True)
    # the dual function's minimum is the LP bound; any λ gives an upper bound of it
    assert lp.objective <= lag["bound"] <= lp.objective * (1 + 1e-4)
    assert exact["status"].startswith("Optimization terminated successfully")
    assert lag["bound"] >= exact["objective"] - 1e-6
    assert lag["objective"] <= exact["objective"] + 1e-6
    assert lag["objective"] >= 0.995 * exact["objective"]
    assert lag["gap"] < 0.005


# --------------------------------------------------------------------------- rules


def test_duplicates_households_policy_and_reasons() -> None:
    c = parse_campaign(
        _campaign(
            budget={},
            offers=[{"id": "a", "kind": "retention", "value": 50.0}],
            channels=[{"name": "email", "cost_per_contact": 0.2}],
            contact_policy={"max_contacts": 2, "window_days": 30, "quiet_days_after_negative": 60},
        )
    )
    customers = pd.DataFrame(
        {
            "customer_id": ["p1", "p1dup", "p2", "p3", "p4", "p5", "p6"],
            "consent_email": [True, True, True, True, "no", True, True],
        }
    )
    u = np.array([[0.2], [0.9], [0.3], [0.1], [0.5], [0.4], [-0.1]])
    maps = HouseholdMaps(
        household={"p1": "h1", "p1dup": "h1", "p2": "h2", "p3": "h2", "p5": "h5"},
        canonical={"p1dup": "p1"},
    )
    hist = pd.DataFrame(
        {
            "customer_id": ["p5", "p5", "p2"],
            "ts": pd.to_datetime(["2026-11-20", "2026-11-25", "2026-06-01"]),
            "group": ["treatment", "treatment", "treatment"],
            "responded": [False, True, False],
            "reason": [None, None, "price"],
        }
    )
    as_of = pd.Timestamp("2026-12-01")
    history = contact_history(hist, customers["customer_id"], as_of, window_days=30)
    assert history.contacts_in_window.tolist() == [0, 0, 0, 0, 0, 2, 0]
    assert history.days_since_negative[2] == pytest.approx(183.0)
    plan = plan_campaign(c, customers, UpliftEstimate(u), history=history, households=maps)
    t = plan.customers.set_index("customer_id")
    assert t.loc["p1dup", "exclusion_reason"] == "duplicate_record"
    assert bool(t.loc["p1", "selected"])  # the person, valued by the canonical record
    assert bool(t.loc["p2", "selected"]) and t.loc["p3", "exclusion_reason"] == "household"
    assert t.loc["p4", "exclusion_reason"] == "no_consent"
    assert t.loc["p5", "exclusion_reason"] == "contact_policy"  # 2 + this one > 2
    assert t.loc["p6", "exclusion_reason"] == "not_profitable"
    assert sum(plan.exclusions.values()) + plan.summary["selected"] == len(customers)
    assert set(plan.exclusions) == set(EXCLUSION_REASONS)


def test_quiet_period_after_a_negative_response() -> None:
    c = parse_campaign(
        _campaign(
            budget={},
            offers=[{"id": "a", "kind": "retention", "value": 50.0}],
            channels=[{"name": "email", "cost_per_contact": 0.2}],
            contact_policy={"quiet_days_after_negative": 60},
        )
    )
    customers = pd.DataFrame({"customer_id": ["x", "y"], "consent_email": [1, 1]})
    hist = pd.DataFrame(
        {
            "customer_id": ["x", "y"],
            "ts": pd.to_datetime(["2026-11-01", "2026-08-01"]),
            "group": ["treatment", "treatment"],
            "responded": [False, False],
            "reason": ["price", "fit"],
        }
    )
    history = contact_history(hist, customers["customer_id"], pd.Timestamp("2026-12-01"), 30)
    plan = plan_campaign(c, customers, UpliftEstimate(np.full((2, 1), 0.2)), history=history)
    assert plan.customers["exclusion_reason"].tolist() == ["contact_policy", ""]


def test_groups_are_fixed_by_the_campaign_id() -> None:
    rng = np.random.default_rng(3)
    n = 400
    data = _campaign(budget={}, control_fraction=0.2, test_cell_fraction=0.1)
    data["offers"][1]["budget"] = {}
    data["channels"][1]["capacity"] = None
    c = parse_campaign(data)
    customers = _customers(n, rng)
    p_accept = ResponseProbability(np.full((n, 2), 0.3))
    est = UpliftEstimate(rng.uniform(0.1, 0.3, (n, 2, 2)), p_accept)
    g1 = plan_campaign(c, customers, est).customers["group"]
    g2 = plan_campaign(c, customers, est).customers["group"]
    assert g1.equals(g2)
    other = parse_campaign({**data, "campaign_id": "another"})
    g3 = plan_campaign(other, customers, est).customers["group"]
    assert not g1.equals(g3)
    shares = g1.value_counts(normalize=True)
    assert 0.12 < shares["control"] < 0.28 and 0.04 < shares["test"] < 0.16


def test_consent_values_only_an_explicit_yes() -> None:
    c = parse_campaign(
        _campaign(
            budget={},
            offers=[{"id": "a", "kind": "retention", "value": 50.0}],
            channels=[{"name": "email", "cost_per_contact": 0.2}],
        )
    )
    values = [True, np.True_, 1, "Yes", " y ", "1", False, 0, "no", None, "", 2]
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(len(values))],
            "consent_email": pd.Series(values, dtype=object),
        }
    )
    plan = plan_campaign(c, customers, UpliftEstimate(np.full((len(values), 1), 0.2)))
    assert plan.customers["selected"].tolist() == [True] * 6 + [False] * 6
    # a table without the channel's consent column: nobody is contacted on it
    plan = plan_campaign(c, customers[["customer_id"]], UpliftEstimate(np.full((12, 1), 0.2)))
    assert plan.exclusions["no_consent"] == 12


def test_uplift_larger_than_the_treated_response_rate_is_refused() -> None:
    c = parse_campaign(_campaign())
    u = np.full((1, 2, 2), 0.3)
    with pytest.raises(ValueError, match="uplift exceeds"):
        contact_values(c, UpliftEstimate(u, ResponseProbability(np.full((1, 2, 2), 0.2))))


def test_example_campaign_plans_end_to_end_and_totals_add_up() -> None:
    c = load_campaign(ROOT / "experiments/campaigns/retention_example.yaml")
    rng = np.random.default_rng(11)
    n = 3000
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "lifecycle_stage": rng.choice(["new", "active", "lapsing", "lapsed", "loyal"], n),
            "rfm_segment": rng.choice(["champions", "loyal_customers", "hibernating"], n),
        }
    )
    for ch in c.channel_names:
        customers[f"consent_{ch}"] = rng.random(n) < 0.6
    shape = (n, len(c.offers), len(c.channels))
    u = rng.uniform(-0.02, 0.2, shape)
    est = UpliftEstimate(u, ResponseProbability(np.clip(u + 0.1, 0, 1)))
    plan = plan_campaign(c, customers, est, customer_value=rng.lognormal(4.5, 0.8, n))
    s = plan.summary
    assert s["selected"] + sum(plan.exclusions.values()) == n
    assert s["control"] + s["test_cell"] + s["rollout"] == s["selected"]
    assert int(plan.by_offer["contacted"].sum()) == s["contacted"]
    assert int(plan.by_channel["contacted"].sum()) == s["contacted"]
    assert plan.by_channel["expected_incremental_profit_contacted"].sum() == pytest.approx(
        s["expected_incremental_profit_contacted"]
    )
    assert plan.by_offer["expected_spend_contacted"].sum() == pytest.approx(
        s["expected_spend_contacted"]
    )
    assert s["selected"] > 0 and s["solver"]["gap"] < 1e-3


def test_an_empty_base_plans_nobody() -> None:
    c = parse_campaign(_campaign())
    customers = pd.DataFrame({"customer_id": pd.Series([], dtype=str)})
    est = UpliftEstimate(np.zeros((0, 2, 2)), ResponseProbability(np.zeros((0, 2, 2))))
    plan = plan_campaign(c, customers, est)
    assert plan.summary["selected"] == 0 and sum(plan.exclusions.values()) == 0


def test_reasons_feed_the_plan() -> None:
    """A quiet period per reason, and an offer only for those who declined on price."""
    c = parse_campaign(
        _campaign(
            budget={},
            offers=[
                {
                    "id": "full",
                    "kind": "retention",
                    "value": 50.0,
                    "eligibility": [
                        {"column": "last_negative_reason", "op": "ne", "value": "price"}
                    ],
                },
                {
                    "id": "discount",
                    "kind": "retention",
                    "value": 50.0,
                    "eligibility": [
                        {"column": "last_negative_reason", "op": "eq", "value": "price"}
                    ],
                },
            ],
            channels=[{"name": "email", "cost_per_contact": 0.2}],
            contact_policy={
                "quiet_days_after_negative": 10,
                "quiet_days_by_reason": {"Unsubscribed": 3650},
            },
        )
    )
    assert c.needs_history
    customers = pd.DataFrame({"customer_id": ["u", "p", "n", "old"], "consent_email": [1, 1, 1, 1]})
    hist = pd.DataFrame(
        {
            "customer_id": ["u", "p", "p", "old"],
            "ts": pd.to_datetime(["2025-01-01", "2026-06-01", "2026-11-01", "2026-11-25"]),
            "group": ["treatment"] * 4,
            "responded": [False] * 4,
            "reason": ["unsubscribed", "not relevant", " Price ", "no need"],
        }
    )
    history = contact_history(hist, customers["customer_id"], pd.Timestamp("2026-12-01"), 30)
    assert history.last_negative_reason.tolist() == ["unsubscribed", "price", "", "no need"]
    est = UpliftEstimate(np.full((4, 2), 0.2))
    plan = plan_campaign(c, customers, est, history=history).customers.set_index("customer_id")
    # unsubscribed two years ago: still quiet (3650 days); "old" declined 6 days ago: the generic
    # 10 days; p declined on price a month ago: only the discount; n: the full offer
    assert plan.loc["u", "exclusion_reason"] == "contact_policy"
    assert plan.loc["old", "exclusion_reason"] == "contact_policy"
    assert plan.loc["p", "offer"] == "discount" and plan.loc["n", "offer"] == "full"
