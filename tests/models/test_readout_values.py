"""A wave whose offer is valued per customer (``value_source: customer_value``, e.g. a kept
customer worth their CLV): the plan keeps each selected customer's value, and the read-out values
every response with it (issues 12 and 13)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.decisions import UpliftEstimate, parse_campaign, plan_campaign
from models.decisions import plan_store as store
from models.decisions.readout import ArmTerms, read_wave


def test_each_response_is_worth_its_customers_value_hand_computed() -> None:
    # 4 contacts (values 10, 20, 30, 40; the first and third respond), 4 controls (values 10,
    # 50, 20, 20; the first two respond); 1.0 per acceptance, 0.5 per contact
    arm = ["keep"] * 4 + [None] * 4
    y = np.array([1, 0, 1, 0, 1, 1, 0, 0], dtype=float)
    v = np.array([10, 20, 30, 40, 10, 50, 20, 20], dtype=float)
    terms = {"keep": ArmTerms(None, cost_per_contact=0.5, cost_per_acceptance=1.0)}
    (r,) = read_wave(arm, y, terms, customer_value=v)
    gain_t = np.array([9.0, 0.0, 29.0, 0.0])  # (value - acceptance cost) x responded
    gain_c = np.array([10.0, 50.0, 0.0, 0.0])
    assert r.profit_per_contact == pytest.approx(gain_t.mean() - gain_c.mean() - 0.5)
    se = np.sqrt(gain_t.var(ddof=1) / 4 + gain_c.var(ddof=1) / 4)
    assert r.profit_se == pytest.approx(se)
    assert r.incremental_response == pytest.approx(0.5 - 0.5)  # responses stay unweighted
    with pytest.raises(ValueError, match="pass customer_value"):
        read_wave(arm, y, terms)
    with pytest.raises(ValueError, match="customer_value: a finite value"):
        read_wave(arm, y, terms, customer_value=np.r_[v[:-1], np.nan])


def test_one_value_for_everyone_reads_as_the_fixed_value() -> None:
    rng = np.random.default_rng(5)
    arm = ["keep"] * 3000 + [None] * 3000
    y = (rng.random(6000) < np.r_[np.full(3000, 0.3), np.full(3000, 0.2)]).astype(float)
    (fixed,) = read_wave(arm, y, {"keep": ArmTerms(40.0, 0.2, 2.0)})
    (each,) = read_wave(
        arm, y, {"keep": ArmTerms(None, 0.2, 2.0)}, customer_value=np.full(6000, 40.0)
    )
    assert each.profit_per_contact == pytest.approx(fixed.profit_per_contact)
    assert each.profit_se == pytest.approx(fixed.profit_se, rel=1e-3)  # ddof 1 against 0


CAMPAIGN = parse_campaign(
    {
        "campaign_id": "valued-wave",
        "offers": [{"id": "keep", "kind": "retention", "value_source": "customer_value"}],
        "channels": [{"name": "email", "cost_per_contact": 0.2}],
        "test_cell_fraction": 0.3,
        "control_fraction": 0.3,
    }
)


def test_a_customer_valued_plan_keeps_the_values_and_its_wave_is_read_with_them(tmp_path) -> None:
    """The plan records each selected customer's value; the read-out of its wave weighs each
    response by it: customers worth 100 responding more when contacted pass the gate, the same
    responses from customers worth 1 would not pay the contact."""
    n = 4000
    ids = [f"C{i:05d}" for i in range(n)]
    customers = pd.DataFrame({"customer_id": ids, "consent_email": True})
    value = np.where(np.arange(n) % 2 == 0, 100.0, 1.0)
    estimate = UpliftEstimate(np.full((n, 1), 0.05))
    plan = plan_campaign(CAMPAIGN, customers, estimate, customer_value=value)
    table = plan.customers
    chosen = table[table["selected"]]
    assert np.allclose(chosen["customer_value"], value[chosen.index])  # kept for all selected
    assert table.loc[~table["selected"], "customer_value"].isna().all()
    # only customers worth 100 pay for an e-mail at 5 % uplift
    assert set(chosen["customer_value"]) == {100.0}

    inputs = {"dataset": "x", "model": "m@1"}
    record = {
        "plan_id": store.plan_id_of(CAMPAIGN, pd.Timestamp("2024-01-01").date(), inputs),
        "campaign": CAMPAIGN.model_dump(mode="json"),
        "as_of": "2024-01-01",
        "inputs": inputs,
    }
    wave = store.wave_of(table)
    rng = np.random.default_rng(1)
    treated = (wave["group"] == "test").to_numpy()
    answers = pd.DataFrame(
        {
            "customer_id": wave["customer_id"].to_numpy(),
            "responded": rng.random(len(wave)) < np.where(treated, 0.25, 0.15),
        }
    )
    out = store.readout_of(record, table, answers, 0.9)
    (arm,) = out["arms"]
    test_rows = wave[treated]
    yt = answers["responded"].to_numpy()[treated]
    yc = answers["responded"].to_numpy()[~treated]
    vt = test_rows["customer_value"].to_numpy()
    vc = wave.loc[~treated, "customer_value"].to_numpy()
    assert arm["profit_per_contact"] == pytest.approx((vt * yt).mean() - (vc * yc).mean() - 0.2)
    assert out["gate"][0]["roll_out"] is True
    # a plan made before plans kept the value cannot be read: said, not guessed
    with pytest.raises(ValueError, match="kept no customer_value"):
        store.readout_of(record, table.drop(columns="customer_value"), answers, 0.9)
