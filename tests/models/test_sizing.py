"""The test cell's sizing (models/decisions/sizing.py): the read's noise, the gate's power and
the test contacts a goal needs, checked against each other and against simulated reads."""

from __future__ import annotations

import numpy as np
import pytest

from models.decisions.readout import ArmTerms, gate, read_wave
from models.decisions.sizing import contacts_for_power, gate_power, read_variances


def test_the_contacts_asked_for_give_the_goal_and_none_when_no_number_would() -> None:
    var_t, var_c = read_variances(0.12, 0.10, 40.0, 2.0)
    assert var_t == pytest.approx(38.0**2 * 0.12 * 0.88)
    assert var_c == pytest.approx(40.0**2 * 0.10 * 0.90)
    n = contacts_for_power(0.5, var_t, var_c, 4000, 0.9, 0.8)
    assert n is not None and n > 0
    assert gate_power(0.5, var_t, var_c, n, 4000, 0.9) == pytest.approx(0.8)
    # more contacts, more power; no profit or too few controls: no number of contacts
    assert gate_power(0.5, var_t, var_c, 2 * n, 4000, 0.9) > 0.8
    assert contacts_for_power(0.0, var_t, var_c, 4000, 0.9, 0.8) is None
    assert contacts_for_power(0.5, var_t, var_c, 50, 0.9, 0.8) is None
    assert gate_power(0.5, var_t, var_c, 0, 4000, 0.9) == 0.0


def test_the_power_is_how_often_the_gate_passes_simulated_reads() -> None:
    """1,000 simulated reads at the size asked for: the gate passes about the goal's share."""
    p, r_c, v, a, c = 0.14, 0.10, 40.0, 2.0, 0.2
    profit = (p - r_c) * v - a * p - c
    var_t, var_c = read_variances(p, r_c, v, a)
    n_c = 3000
    n_t = contacts_for_power(profit, var_t, var_c, n_c, 0.9, 0.7)
    assert n_t is not None
    n_t = int(np.ceil(n_t))
    rng = np.random.default_rng(7)
    terms = {"A/email": ArmTerms(v, c, a)}
    arm = ["A/email"] * n_t + [None] * n_c
    passed = 0
    for _ in range(1000):
        y = np.concatenate([rng.random(n_t) < p, rng.random(n_c) < r_c]).astype(float)
        passed += gate(read_wave(arm, y, terms, level=0.9), 0.9)[0].roll_out
    assert abs(passed / 1000 - 0.7) < 0.05


def _sizing_campaign(**sizing: object) -> dict:
    c: dict = {
        "campaign_id": "sized",
        "offers": [
            {"id": "thin", "kind": "retention", "value": 40.0, "cost_per_acceptance": 2.0},
            {"id": "clear", "kind": "cross_sell", "value": 40.0},
        ],
        "channels": [{"name": "email", "cost_per_contact": 0.2}],
    }
    if sizing:
        c["test_cell_sizing"] = sizing
    return c


def test_a_sized_plan_gives_a_thin_arm_the_test_cell_its_read_needs() -> None:
    """Half the customers are best served by a thin offer (+0.72 per contact expected), half by
    a clear one: sized, the thin arm's test cell grows to the share that gives the gate 80 %
    power (``plan_store.gate_power_by_arm`` then reads about 0.8 off the plan), the clear one
    keeps the campaign's 5 %, and the same customers are selected either way."""
    import pandas as pd

    from models.decisions import ResponseProbability, UpliftEstimate, parse_campaign, plan_campaign
    from models.decisions.plan_store import gate_power_by_arm

    n = 40_000
    half = np.arange(n) < n // 2
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "consent_email": True})
    # (customers, offers, channels): the thin offer for the first half, the clear for the rest
    uplift = np.zeros((n, 2, 1))
    uplift[half, 0, 0], uplift[~half, 1, 0] = 0.029, 0.10
    p = np.full((n, 2, 1), 0.12)
    p[~half, 1, 0] = 0.20
    estimate = UpliftEstimate(uplift, ResponseProbability(p))
    plain = plan_campaign(parse_campaign(_sizing_campaign()), customers, estimate)
    campaign = parse_campaign(_sizing_campaign(power=0.8, max_fraction=0.4))
    sized = plan_campaign(campaign, customers, estimate)
    assert (plain.customers["selected"] == sized.customers["selected"]).all()
    assert (plain.customers["offer"] == sized.customers["offer"]).all()

    def test_share(plan, offer: str) -> float:
        part = plan.customers[plan.customers["offer"] == offer]
        return float((part["group"] == "test").mean())

    assert abs(test_share(plain, "thin") - 0.05) < 0.01
    assert abs(test_share(sized, "clear") - 0.05) < 0.01
    assert 0.1 < test_share(sized, "thin") < 0.4
    # the control group is the same customers: only the roll-out group gave up its share
    for plan in (plain, sized):
        part = plan.customers[plan.customers["offer"] == "thin"]
        assert abs(float((part["group"] == "control").mean()) - 0.1) < 0.01
    power = {r["arm"]: r["gate_power"] for r in gate_power_by_arm(sized, campaign)}
    assert power["thin/email"] == pytest.approx(0.8, abs=0.05)
    unsized = {r["arm"]: r["gate_power"] for r in gate_power_by_arm(plain, campaign)}
    assert unsized["thin/email"] < 0.7


def test_a_sizing_that_cannot_fit_or_would_shrink_the_cell_is_refused_naming_the_field() -> None:
    from pydantic import ValidationError

    from models.decisions import parse_campaign

    with pytest.raises(ValidationError, match=r"test_cell_sizing\.max_fraction"):
        parse_campaign(_sizing_campaign(max_fraction=0.95))  # + the 10 % control group
    with pytest.raises(ValidationError, match=r"test_cell_sizing\.max_fraction"):
        parse_campaign(_sizing_campaign(max_fraction=0.01))  # below the 5 % test cell
    with pytest.raises(ValidationError, match="powr"):
        parse_campaign(_sizing_campaign(powr=0.8))
