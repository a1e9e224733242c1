"""Property tests of the allocation: whatever the inputs, every rule and budget holds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.decisions import (
    EXCLUSION_REASONS,
    ContactHistory,
    HouseholdMaps,
    ResponseProbability,
    UpliftEstimate,
    parse_campaign,
    plan_campaign,
)

CHANNELS = ["email", "sms", "phone"]


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 25))
    n_off = draw(st.integers(1, 3))
    n_ch = draw(st.integers(1, 3))
    maybe = lambda s: draw(st.one_of(st.none(), s))  # noqa: E731
    offers = [
        {
            "id": f"o{j}",
            "kind": "retention",
            "value": draw(st.floats(1, 100)),
            "cost_per_acceptance": draw(st.sampled_from([0.0, 1.0, 5.0])),
            "budget": {"contacts": maybe(st.integers(0, 10)), "money": maybe(st.floats(0, 50))},
        }
        for j in range(n_off)
    ]
    channels = [
        {
            "name": CHANNELS[c],
            "cost_per_contact": draw(st.sampled_from([0.1, 0.5, 4.0])),
            "capacity": maybe(st.integers(0, 8)),
        }
        for c in range(n_ch)
    ]
    campaign = parse_campaign(
        {
            "campaign_id": draw(st.sampled_from(["c1", "c2", "spring"])),
            "objective": draw(st.sampled_from(["incremental_profit", "incremental_responses"])),
            "offers": offers,
            "channels": channels,
            "budget": {"contacts": maybe(st.integers(0, 20)), "money": maybe(st.floats(0, 80))},
            "contact_policy": {
                "max_contacts": maybe(st.integers(1, 3)),
                "window_days": 30,
                "quiet_days_after_negative": maybe(st.integers(0, 90)),
            },
            "household": {"one_contact_per_household": draw(st.booleans())},
            "control_fraction": draw(st.sampled_from([0.0, 0.1, 0.5])),
            "test_cell_fraction": draw(st.sampled_from([0.0, 0.05, 0.3])),
        }
    )
    ids = [f"k{i}" for i in range(n)]
    customers = pd.DataFrame({"customer_id": ids})
    for c in range(n_ch):
        customers[f"consent_{CHANNELS[c]}"] = rng.random(n) < 0.7
    u = rng.uniform(-0.1, 0.5, (n, n_off, n_ch))
    p = np.clip(u + rng.uniform(0, 0.3, u.shape), 0, 1)
    history = ContactHistory(
        contacts_in_window=rng.integers(0, 4, n),
        days_since_negative=np.where(rng.random(n) < 0.3, rng.uniform(0, 120, n), np.nan),
    )
    n_hh = max(1, n // 2)
    household = {i: f"h{rng.integers(0, n_hh)}" for i in ids}
    canonical = {i: ids[int(rng.integers(0, n))] for i in ids if rng.random() < 0.2}
    # a merge map points at a canonical record that maps to itself
    canonical = {k: v for k, v in canonical.items() if v not in canonical}
    return {
        "campaign": campaign,
        "customers": customers,
        "estimate": UpliftEstimate(u, ResponseProbability(p)),
        "history": history,
        "households": HouseholdMaps(household=household, canonical=canonical),
        "method": draw(st.sampled_from(["exact", "lagrangian", "greedy"])),
    }


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(problems())
def test_every_rule_and_budget_holds(pb: dict[str, Any]) -> None:
    campaign, customers = pb["campaign"], pb["customers"]
    plan = plan_campaign(
        campaign,
        customers,
        pb["estimate"],
        history=pb["history"],
        households=pb["households"],
        method=pb["method"],
    )
    t = plan.customers
    sel = t[t["selected"]]
    n = len(customers)

    # selections + exclusions = the base; reasons only from the list, "" only when selected
    assert len(sel) + sum(plan.exclusions.values()) == n
    assert set(t.loc[~t["selected"], "exclusion_reason"]) <= set(EXCLUSION_REASONS)
    assert (sel["exclusion_reason"] == "").all()
    assert int(plan.by_offer["selected"].sum()) == len(sel)
    assert int(plan.by_channel["selected"].sum()) == len(sel)

    # consent: every record of the person grants the chosen channel
    consent_of = {ch.name: ch.consent for ch in campaign.channels}
    for _, row in sel.iterrows():
        records = customers[t["person_id"].to_numpy() == row["person_id"]]
        assert records[consent_of[row["channel"]]].all()

    # at most one contact per person, and per household when the policy says so
    assert sel["person_id"].is_unique
    if campaign.household.one_contact_per_household:
        assert sel["household_id"].is_unique
    assert not (t["person_id"] != t["customer_id"]).to_numpy()[t["selected"].to_numpy()].any()

    # contact policy, counted over the person's records
    h = pb["history"]
    contacts = pd.Series(h.contacts_in_window).groupby(t["person_id"].to_numpy()).sum()
    quiet = pd.Series(h.days_since_negative).groupby(t["person_id"].to_numpy()).min()
    pol = campaign.contact_policy
    for pid in sel["person_id"]:
        if pol.max_contacts is not None:
            assert contacts[pid] + 1 <= pol.max_contacts
        if pol.quiet_days_after_negative is not None:
            assert not quiet[pid] < pol.quiet_days_after_negative

    # budgets and capacities over the whole selection (control included)
    tol = 1e-6
    spend = sel["expected_spend"]
    if campaign.budget.contacts is not None:
        assert len(sel) <= campaign.budget.contacts
    if campaign.budget.money is not None:
        assert spend.sum() <= campaign.budget.money + tol
    for offer in campaign.offers:
        mine = sel["offer"] == offer.id
        if offer.budget.contacts is not None:
            assert mine.sum() <= offer.budget.contacts
        if offer.budget.money is not None:
            assert spend[mine].sum() <= offer.budget.money + tol
    for channel in campaign.channels:
        if channel.capacity is not None:
            assert (sel["channel"] == channel.name).sum() <= channel.capacity

    # the solver's figures: objective <= bound, nothing unprofitable chosen
    solver = plan.summary["solver"]
    assert solver["objective"] <= solver["bound"] + 1e-6
    assert (sel["expected_incremental_responses"] > 0).all() or campaign.objective == (
        "incremental_profit"
    )
    if campaign.objective == "incremental_profit":
        assert (sel["expected_incremental_profit"] > 0).all()

    # the same campaign id gives the same groups
    again = plan_campaign(
        campaign,
        customers,
        pb["estimate"],
        history=pb["history"],
        households=pb["households"],
        method=pb["method"],
    )
    assert again.customers["group"].equals(t["group"])
    assert again.customers["selected"].equals(t["selected"])
