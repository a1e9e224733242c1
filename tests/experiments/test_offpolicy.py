"""Policies valued off-policy on the multi-arm synthetic campaigns (experiments.offpolicy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.offpolicy import (
    ID,
    Arm,
    arm_frames,
    arm_index,
    design_log,
    fit_arm_model,
    policy_report,
    read_arm_truth,
)

CAMPAIGNS = ["ARMS_2023_09", "ARMS_2024_01", "ARMS_2024_05"]
ARMS = [
    Arm(offer, channel, value, cost)
    for offer, value in (("RET_01", 40.0), ("UP_T3", 60.0))
    for channel, cost in (("email", 0.2), ("sms", 0.1), ("phone", 4.0))
]


@pytest.fixture(scope="module")
def report(arms_state):
    frames = arm_frames(arms_state, "synthetic_arms", CAMPAIGNS, ARMS, "churn_v1")
    params = {"n_estimators": 40, "max_depth": 2, "learning_rate": 0.1}
    model = fit_arm_model(frames.fit, frames.features, frames.categorical, "s", params)
    ev = frames.evaluate
    assert frames.truth_folder is not None
    truth = read_arm_truth(frames.truth_folder, frames.eval_campaign, ev[ID], ARMS)
    log = design_log(ev["arm"].to_numpy(), ev["label"].to_numpy(), len(ARMS))
    return frames, policy_report(model, ev[frames.features], log, ARMS, truth)


def test_the_model_never_sees_the_evaluation_campaign(report) -> None:
    frames, _ = report
    assert frames.eval_campaign == "ARMS_2024_05"
    assert set(frames.fit["campaign_id"]) == {"ARMS_2023_09", "ARMS_2024_01"}
    assert (frames.evaluate["campaign_id"] == "ARMS_2024_05").all()


def test_policy_table_is_consistent_with_the_truth(report) -> None:
    _, rep = report
    by = {r.policy: r for r in rep.rows}
    assert by["treat none"].true_value == 0.0 and by["treat none"].ips[0] == 0.0
    # the oracle maximises every customer's true profit: no policy beats it
    oracle = by["oracle"].true_value
    assert all(r.true_value <= oracle + 1e-6 for r in rep.rows)
    # the random arm is the mean of the single arms
    singles = [r.true_value for r in rep.rows if r.policy.startswith("all: ")]
    assert by["random arm"].true_value == pytest.approx(np.mean(singles))
    for r in rep.rows:
        assert r.ips[1] <= r.ips[0] <= r.ips[2] and r.dr[1] <= r.dr[0] <= r.dr[2]
    assert by["learned"].contacts == float((rep.learned_choice >= 0).sum())


def test_an_unknown_arm_in_the_log_is_named() -> None:
    contacts = pd.DataFrame(
        {
            "treatment": [1, 0, 1],
            "offer_id": ["RET_01", None, "XS_9"],
            "channel": ["sms", None, "fax"],
        }
    )
    with pytest.raises(ValueError, match="XS_9"):
        arm_index(contacts, ARMS)
    ok = contacts.iloc[:2]
    assert arm_index(ok, ARMS).tolist() == [1, -1]
