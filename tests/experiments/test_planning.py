"""A campaign planned from an arm model (experiments.planning, `patron campaign plan`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.planning import arm_estimate, fit_arms, plan_with_arms
from models.decisions import BASIS_UPLIFT, load_campaign, parse_campaign
from patron.cli import mount

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "experiments" / "campaigns" / "arms_demo.yaml"
WAVES = ["ARMS_2023_09", "ARMS_2024_01", "ARMS_2024_05"]
PARAMS = {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.1}


@pytest.fixture(scope="module")
def model(arms_state):
    return fit_arms(arms_state, "synthetic_arms", WAVES, params=PARAMS)


def test_arms_are_the_logs_offer_channel_pairs(model) -> None:
    assert model.arms == [(o, c) for o in ("RET_01", "UP_T3") for c in ("email", "phone", "sms")]
    assert model.contacts > 1000


def test_plan_honours_consent_and_adds_up(arms_state, model) -> None:
    campaign = load_campaign(CAMPAIGN)
    plan, as_of = plan_with_arms(arms_state, "synthetic_arms", campaign, model)
    c = plan.customers
    assert plan.summary["basis"] == BASIS_UPLIFT
    assert plan.summary["selected"] + sum(plan.exclusions.values()) == plan.summary["base"]
    chosen = c[c["selected"]]
    assert set(chosen["offer"]) <= {"retention_voucher", "premium_upgrade"}
    assert chosen["channel"].nunique() >= 2  # several channels are worth it somewhere
    # nobody is contacted on a channel they did not consent to
    customers = (
        pd.read_csv(arms_state.synthetic("synthetic_arms") / "customers.csv", dtype=str)
        .drop_duplicates("customer_id", keep="last")
        .set_index("customer_id")
    )
    for channel, rows in chosen.groupby("channel"):
        consent = customers.loc[rows["customer_id"], f"consent_{channel}"].str.lower()
        assert (consent == "true").all(), channel
    assert plan.summary["expected_spend_selected"] <= campaign.budget.money + 1e-6
    phone = (chosen["channel"] == "phone").sum()
    assert phone <= next(ch.capacity for ch in campaign.channels if ch.name == "phone")
    assert str(as_of) == "2024-12-31"


def test_a_pair_the_campaigns_never_tested_is_refused(arms_state, model) -> None:
    data = load_campaign(CAMPAIGN).model_dump(exclude_none=True)
    data["channels"].append({"name": "direct_mail", "cost_per_contact": 1.5})
    campaign = parse_campaign(data)
    features = pd.DataFrame(np.zeros((2, len(model.features))), columns=model.features)
    with pytest.raises(ValueError, match=r"offers\[0\] \('RET_01'\) on channels\[3\]"):
        arm_estimate(model, features, campaign)


def test_cli_plans_prints_totals_and_writes_the_plan(arms_state, tmp_path) -> None:
    out = tmp_path / "plan.parquet"
    args = ["campaign", "plan", "--campaign", str(CAMPAIGN), "--dataset", "synthetic_arms"]
    for wave in WAVES:
        args += ["--learn-from", wave]
    args += ["--out", str(out), "--home", str(arms_state.home)]
    result = CliRunner().invoke(mount(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "per offer" in result.output and "per channel" in result.output
    assert "= base" in result.output
    written = pd.read_parquet(out)
    assert written["selected"].sum() > 0
