"""Re-pricing a failed arm: re-priced when its declines say price, else dropped; the re-test's
rows (models/decisions/repricing.py, docs/campaign_loop.md §3); and the test cell's sizing
before any response (``plan_store.gate_power_by_arm``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from models.decisions import parse_campaign
from models.decisions.readout import GateDecision
from models.decisions.repricing import (
    DROP,
    REPRICE,
    break_even_acceptance_cost,
    reprice_decision,
    repricing_of,
    required_incremental_response,
    retest_campaign,
    retest_plan,
    retest_response_rate,
    retest_rows,
    within_budget,
)

BASE = {
    "campaign_id": "c1",
    "offers": [
        {
            "id": "upgrade",
            "catalog_id": "UP_T3",
            "kind": "up_sell",
            "value": 60.0,
            "cost_per_acceptance": 5.0,
            "reprice": {"cost_per_acceptance": 12.0},
        },
        {"id": "voucher", "catalog_id": "RET_01", "kind": "retention", "value": 40.0},
    ],
    "channels": [
        {"name": "email", "cost_per_contact": 0.2},
        {"name": "sms", "cost_per_contact": 0.1, "capacity": 3},
    ],
}


def _dropped(*arms: str) -> list[GateDecision]:
    return [GateDecision(a, False, "dropped: not positive with 90% confidence", 0.9) for a in arms]


def _held(arm: str) -> GateDecision:
    return GateDecision(arm, False, "held: 12 contacts and 40 controls (fewer than 30)", 0.9)


def _read(arm: str, contacts: int, declined: dict[str, float], **rates: float) -> dict:
    r_t, r_c = rates.get("r_t", 0.10), rates.get("r_c", 0.08)
    return {
        "arm": arm,
        "contacts": contacts,
        "control": 2 * contacts,
        "response_rate": r_t,
        "control_rate": r_c,
        "incremental_response": r_t - r_c,
        "declined": {k: (v, 0.0) for k, v in declined.items()},
    }


def test_reprice_terms_are_validated() -> None:
    def offer(**reprice: object) -> dict:
        return {**BASE, "offers": [{**BASE["offers"][0], "reprice": reprice}]}

    with pytest.raises(ValidationError, match="give the new `value` and/or"):
        parse_campaign(offer(on_reasons=["price"]))
    with pytest.raises(ValidationError, match="reprice gives the offer's own terms"):
        parse_campaign(offer(cost_per_acceptance=5.0))
    with pytest.raises(ValidationError, match="the offer's own id in the data"):
        parse_campaign(offer(cost_per_acceptance=9.0, catalog_id="UP_T3"))
    valued = {**BASE["offers"][0], "value": None, "value_source": "customer_value"}
    with pytest.raises(ValidationError, match="reprice.value only for value_source=offer"):
        parse_campaign({**BASE, "offers": [{**valued, "reprice": {"value": 50.0}}]})
    with pytest.raises(ValidationError, match="budjet"):
        parse_campaign(offer(cost_per_acceptance=9.0, budjet=1))
    new = parse_campaign(BASE).offers[0].repriced()
    assert (new.id, new.catalog_id, new.value, new.cost_per_acceptance) == (
        "upgrade_repriced",
        "UP_T3_REPRICED",
        60.0,
        12.0,
    )
    assert new.eligibility == parse_campaign(BASE).offers[0].eligibility and new.reprice is None


def test_the_break_even_figures() -> None:
    # (0.02 x 60 - 0.2) / 0.10 = 10: the acceptance cost at which the measured response pays
    assert break_even_acceptance_cost(0.02, 0.10, 60.0, 0.2) == pytest.approx(10.0)
    assert break_even_acceptance_cost(0.02, 0.0, 60.0, 0.2) is None
    assert break_even_acceptance_cost(0.02, 0.1, None, 0.2) is None
    # (0.2 + 12 x 0.08) / (60 - 12): the incremental response a 12-per-acceptance offer needs
    assert required_incremental_response(0.08, 60.0, 12.0, 0.2) == pytest.approx(1.16 / 48)
    assert required_incremental_response(0.08, 10.0, 12.0, 0.2) is None  # never pays


def test_declines_mostly_on_price_re_price_the_arm_and_others_drop_it() -> None:
    campaign = parse_campaign(BASE)
    offer, email = campaign.offers[0], campaign.channels[0]
    # 400 of the 500 who gave a reason declined on price
    price = reprice_decision(
        _read("UP_T3/email", 1000, {"price": 0.4, "no need": 0.1}), offer, email, 0.9
    )
    assert price.action == REPRICE and price.declined_with_reason == 500
    assert price.declined_on_reasons == 400 and price.share_lower is not None
    assert 0.5 < price.share_lower < 0.8
    assert price.required_incremental_response == pytest.approx(1.16 / 48)
    assert "re-tested" in price.reason and "not rolled out unread" in price.reason
    # mostly "no need": the offer did not fit
    fit = reprice_decision(
        _read("UP_T3/email", 1000, {"price": 0.2, "no need": 0.3}), offer, email, 0.9
    )
    assert fit.action == DROP and "did not fit" in fit.reason
    # 12 of 20 on price is 60 %, but not more than half with 90 % confidence
    thin = reprice_decision(
        _read("UP_T3/email", 100, {"price": 0.12, "no need": 0.08}), offer, email, 0.9
    )
    assert thin.share_on_reasons == pytest.approx(0.6) and thin.action == DROP
    none = reprice_decision(_read("UP_T3/email", 1000, {}), offer, email, 0.9)
    assert none.action == DROP and "cannot be told from fit" in none.reason
    # only failed arms of offers with reprice terms are decided
    reads = [
        _read("UP_T3/email", 1000, {"price": 0.4}),
        _read("UP_T3/sms", 1000, {"price": 0.4}),
        _read("RET_01/email", 1000, {"price": 0.4}),
    ]
    gate = [*_dropped("UP_T3/email", "RET_01/email"), _held("UP_T3/sms")]
    out = repricing_of(campaign, reads, gate, 0.9)
    assert [d.arm for d in out] == ["UP_T3/email"]  # a held arm is not decided either way


def _customers(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "consent_email": [i % 7 != 0 for i in range(n)],  # every seventh withdrew
            "consent_sms": True,
        }
    )


def test_the_re_test_takes_the_held_customers_of_a_re_priced_arm_only() -> None:
    campaign = parse_campaign(BASE)
    decisions = repricing_of(
        campaign,
        [_read("UP_T3/email", 1000, {"price": 0.4}), _read("UP_T3/sms", 1000, {"no need": 0.4})],
        _dropped("UP_T3/email", "UP_T3/sms"),
        0.9,
    )
    assert [d.action for d in decisions] == [REPRICE, DROP]
    retest = retest_campaign(campaign, decisions)
    assert retest.campaign_id == "c1-reprice" and retest.offer_ids == ["upgrade_repriced"]
    assert retest.channel_names == ["email"] and retest.budget.money is None
    customers = _customers(4000)
    arm_of = {
        c: ("UP_T3/email" if i % 2 else "UP_T3/sms") for i, c in enumerate(customers["customer_id"])
    }
    rows = retest_rows(customers, arm_of, decisions, retest, {"UP_T3/email": 0.1})
    # only the re-priced arm's customers; the dropped arm's stay out
    assert set(rows["customer_id"]) == {c for c, a in arm_of.items() if a == "UP_T3/email"}
    no = (
        ~customers.set_index("customer_id")["consent_email"].reindex(rows["customer_id"]).to_numpy()
    )
    assert (rows.loc[no, "exclusion_reason"] == "no_consent").all() and no.any()
    assert not rows.loc[no, "selected"].any()
    sel = rows[rows["selected"]]
    assert set(sel["offer"]) == {"upgrade_repriced"} and set(sel["channel"]) == {"email"}
    share = sel["group"].value_counts(normalize=True)
    assert abs(share["test"] - 0.05) < 0.02 and abs(share["control"] - 0.10) < 0.03
    # a test contact costs the contact and the new acceptance cost at the measured rate
    assert sel["expected_spend"].iloc[0] == pytest.approx(0.2 + 12.0 * 0.1)
    plan = retest_plan(rows, retest)
    assert plan.summary["selected"] + sum(plan.exclusions.values()) == plan.summary["base"]
    assert plan.summary["test_cell"] == int((sel["group"] == "test").sum())


def test_the_re_test_is_budgeted_at_the_response_its_new_terms_need_when_higher() -> None:
    """The acceptances of the re-test are priced at the rate measured at the old terms, or at
    the rate the new terms need to pay when that is higher: 8 % + 1.16 / 48 = 10.4 % > 10 %."""
    campaign = parse_campaign(BASE)
    reads = [_read("UP_T3/email", 1000, {"price": 0.4}), _read("UP_T3/sms", 1000, {"price": 0.4})]
    decisions = repricing_of(campaign, reads, _dropped("UP_T3/email"), 0.9)
    assert [d.arm for d in decisions] == ["UP_T3/email"]
    rate = retest_response_rate(reads, decisions)
    assert rate["UP_T3/email"] == pytest.approx(0.08 + 1.16 / 48)
    assert rate["UP_T3/sms"] == pytest.approx(0.10)  # not re-priced: as measured
    # a response measured above what the new terms need keeps the measured rate
    high = [_read("UP_T3/email", 1000, {"price": 0.4}, r_t=0.2, r_c=0.08)]
    assert retest_response_rate(high, decisions)["UP_T3/email"] == pytest.approx(0.2)


def test_the_re_test_fits_what_the_campaign_has_left() -> None:
    campaign = parse_campaign(BASE)
    decisions = repricing_of(
        campaign, [_read("UP_T3/email", 1000, {"price": 0.4})], _dropped("UP_T3/email"), 0.9
    )
    retest = retest_campaign(campaign, decisions)
    customers = _customers(2000)
    arm_of = dict.fromkeys(customers["customer_id"], "UP_T3/email")
    rows = retest_rows(customers, arm_of, decisions, retest, {"UP_T3/email": 0.1})
    test = int((rows["group"] == "test").sum())
    control = int((rows["group"] == "control").sum())
    cut = within_budget(rows, money=None, contacts=test + 5, capacity={"email": None})
    kept = cut[cut["selected"]]
    # the whole test cell first, then five of the waiting roll-out group; controls untouched
    assert (kept["group"] == "test").sum() == test and (kept["group"] == "rollout").sum() == 5
    assert (kept["group"] == "control").sum() == control
    assert (cut.loc[~cut["selected"], "exclusion_reason"] != "").all()
    poor = within_budget(rows, money=1.4 * 10, contacts=None, capacity={"email": None})
    assert int(poor["selected"].sum()) - control == 10  # 10 contacts at 1.40 each
    small = within_budget(rows, money=None, contacts=None, capacity={"email": 3})
    assert int((small["group"] == "test").sum()) == 3
    # the test cell kept under a cut is a random part of it, not the first customer ids
    kept_ids = small.loc[small["group"] == "test", "customer_id"]
    first = rows.loc[rows["group"] == "test", "customer_id"].sort_values().iloc[:3]
    assert set(kept_ids) != set(first)
    assert np.isnan(small.loc[~small["selected"], "expected_spend"]).all()


def _sized_plan(n_t: int, n_c: int, p: float, u: float):
    from models.decisions.allocate import Plan

    group = ["test"] * n_t + ["control"] * n_c + ["rollout"] * 500
    table = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(len(group))],
            "selected": True,
            "group": group,
            "offer": "voucher",
            "channel": "email",
            "expected_response": p,
            "expected_incremental_responses": u,
        }
    )
    return Plan(table, pd.DataFrame(), pd.DataFrame(), {}, {})


def _passed_share(n_t: int, n_c: int, p: float, r_c: float, reps: int, seed: int) -> float:
    """How often the gate passes the arm over ``reps`` simulated test cells."""
    from models.decisions.readout import ArmTerms, gate, read_wave

    rng = np.random.default_rng(seed)
    terms = {"RET_01/email": ArmTerms(40.0, 0.2, 2.0)}
    arm = ["RET_01/email"] * n_t + [None] * n_c
    passed = 0
    for _ in range(reps):
        y = np.concatenate([rng.random(n_t) < p, rng.random(n_c) < r_c]).astype(float)
        passed += gate(read_wave(arm, y, terms, level=0.9), 0.9)[0].roll_out
    return passed / reps


def test_the_test_cells_power_is_how_often_the_gate_passes_a_right_model() -> None:
    from models.decisions.plan_store import gate_power_by_arm

    campaign = parse_campaign(
        {
            **BASE,
            "offers": [{**BASE["offers"][1], "cost_per_acceptance": 2.0}],
            "channels": [BASE["channels"][0]],
        }
    )
    # P(accept | contacted) 0.25 with an uplift of 0.10: the controls respond at 0.15
    thin = gate_power_by_arm(_sized_plan(60, 120, 0.25, 0.10), campaign)[0]
    assert thin["arm"] == "RET_01/email" and (thin["test_contacts"], thin["controls"]) == (60, 120)
    assert thin["expected_profit_per_contact"] == pytest.approx(0.1 * 40 - 2 * 0.25 - 0.2)
    simulated = _passed_share(60, 120, 0.25, 0.15, 1500, 1)
    assert abs(simulated - thin["gate_power"]) < 0.05 and thin["gate_power"] < 0.7
    # at the contacts it asks for (twice as many controls, as planned), 80 %
    need = thin["test_contacts_for_goal"]
    assert need > 60
    at_need = _passed_share(need, 2 * need, 0.25, 0.15, 1500, 2)
    assert abs(at_need - 0.8) < 0.05
    sized = gate_power_by_arm(_sized_plan(need, 2 * need, 0.25, 0.10), campaign)[0]
    assert sized["gate_power"] == pytest.approx(0.8, abs=0.01)
    # no expected profit: no power figure, and why
    losing = gate_power_by_arm(_sized_plan(60, 120, 0.25, 0.01), campaign)[0]
    assert losing["gate_power"] is None and "no profit" in losing["why_none"]
