"""The roll-out rule of a saved plan (``models.decisions.saved_rollout``), without files: each
customer of the plan's roll-out group only the arm the plan gave them, when that arm passed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.decisions import parse_campaign
from models.decisions.saved_rollout import (
    CONSENT_NOT_FOUND,
    CONSENT_WITHDRAWN,
    CONTACT,
    HELD,
    NOT_READ,
    ROW_COLUMNS,
    rollout_of_saved,
)

CAMPAIGN = parse_campaign(
    {
        "campaign_id": "rollout-rule",
        "offers": [
            {"id": "ret", "kind": "retention", "value": 40.0, "catalog_id": "RET_01"},
            {"id": "disc", "kind": "retention", "value": 30.0},
        ],
        "channels": [
            {"name": "email", "cost_per_contact": 0.2},
            {"name": "sms", "cost_per_contact": 0.1},
        ],
    }
)
RECORD = {"plan_id": "rollout-rule-2024-01-01-0000abcd", "campaign": CAMPAIGN.model_dump()}
PASSED = "rolled out: incremental profit per contact +2.000 (...)"
DROPPED = "dropped: incremental profit per contact -0.500 (...)"
READOUT = {
    "confidence": 0.9,
    "gate": [
        {"arm": "RET_01/email", "roll_out": True, "reason": PASSED, "confidence": 0.9},
        {"arm": "RET_01/sms", "roll_out": False, "reason": DROPPED, "confidence": 0.9},
        {"arm": "disc/sms", "roll_out": False, "reason": "held: 3 contacts", "confidence": 0.9},
    ],
}


def plan_rows(incremental: bool = True) -> pd.DataFrame:
    """C1 test, C2 control, C3/C8/C9 roll-out on the passed arm, C4 on the dropped arm, C5 on an
    arm the test cell never tried, C6/C7 not selected."""
    rows = [
        ("C1", True, "test", "ret", "email", 1.0),
        ("C2", True, "control", "ret", "email", 1.0),
        ("C3", True, "rollout", "ret", "email", 2.0),
        ("C4", True, "rollout", "ret", "sms", 3.0),
        ("C5", True, "rollout", "disc", "email", 4.0),
        ("C6", False, None, None, None, np.nan),
        ("C7", False, None, None, None, np.nan),
        ("C8", True, "rollout", "ret", "email", 5.0),
        ("C9", True, "rollout", "ret", "email", 6.0),
    ]
    frame = pd.DataFrame(
        rows,
        columns=["customer_id", "selected", "group", "offer", "channel", "profit"],
    )
    frame = frame.rename(columns={"profit": "expected_incremental_profit"})
    return frame if incremental else frame.drop(columns="expected_incremental_profit")


def test_a_passed_arm_is_contacted_a_dropped_or_unread_arm_held_and_only_the_rollout_group():
    out = rollout_of_saved(RECORD, plan_rows(), READOUT)
    rows = out.rows
    assert list(rows.columns) == list(ROW_COLUMNS)
    # only the roll-out group, in the plan's order; the test cell, control, unselected not listed
    assert rows["customer_id"].tolist() == ["C3", "C4", "C5", "C8", "C9"]
    assert rows["arm"].tolist() == [
        "RET_01/email",
        "RET_01/sms",
        "disc/email",
        "RET_01/email",
        "RET_01/email",
    ]
    # each keeps the plan's arm: a dropped arm's customer is held, never moved to the passed one
    assert rows[["offer", "channel"]].values.tolist() == [
        ["ret", "email"],
        ["ret", "sms"],
        ["disc", "email"],
        ["ret", "email"],
        ["ret", "email"],
    ]
    assert rows["decision"].tolist() == [CONTACT, HELD, HELD, CONTACT, CONTACT]
    assert rows["reason"].tolist() == [PASSED, DROPPED, NOT_READ, PASSED, PASSED]
    arms = {a["arm"]: a for a in out.by_arm}
    assert set(arms) == {"RET_01/email", "RET_01/sms", "disc/email", "disc/sms"}
    email = arms["RET_01/email"]
    assert (email["customers"], email["contacted"], email["held"]) == (3, 3, 0)
    assert email["roll_out"] is True and email["gate_reason"] == PASSED
    assert email["expected_incremental_profit_contacted"] == pytest.approx(13.0)
    assert arms["RET_01/sms"]["held"] == 1 and arms["RET_01/sms"]["roll_out"] is False
    unread = arms["disc/email"]
    assert (unread["roll_out"], unread["gate_reason"], unread["held"]) == (None, NOT_READ, 1)
    assert unread["expected_incremental_profit_contacted"] == 0.0
    # an arm the gate read that the roll-out group does not use is listed with no customers
    sms = arms["disc/sms"]
    assert (sms["offer"], sms["channel"], sms["customers"]) == ("disc", "sms", 0)
    assert out.totals == {
        "customers": 5,
        "contacted": 3,
        "held": 2,
        "held_for_consent": 0,
        "arms_rolled_out": ["RET_01/email"],
        "expected_incremental_profit_contacted": pytest.approx(13.0),
    }


def test_consent_withdrawn_now_holds_a_passed_arms_customer():
    consent = pd.DataFrame(
        {"email": [True, False, True], "sms": [True, True, False]},
        index=pd.Index(["C3", "C8", "C4"]),
    )  # C9 is not in the base any more; C5 neither (its arm is held anyway)
    out = rollout_of_saved(RECORD, plan_rows(), READOUT, consent)
    reason = dict(zip(out.rows["customer_id"], out.rows["reason"], strict=True))
    decision = dict(zip(out.rows["customer_id"], out.rows["decision"], strict=True))
    assert decision == {"C3": CONTACT, "C4": HELD, "C5": HELD, "C8": HELD, "C9": HELD}
    assert reason["C8"] == CONSENT_WITHDRAWN and reason["C9"] == CONSENT_NOT_FOUND
    assert reason["C4"] == DROPPED and reason["C5"] == NOT_READ  # the gate's reason stands
    email = next(a for a in out.by_arm if a["arm"] == "RET_01/email")
    assert (email["contacted"], email["held"], email["held_for_consent"]) == (1, 2, 2)
    assert email["expected_incremental_profit_contacted"] == pytest.approx(2.0)
    assert out.totals["held_for_consent"] == 2 and out.totals["contacted"] == 1


def test_no_arm_passed_holds_everyone_and_a_non_causal_plan_has_no_profit():
    closed = {"gate": [{**g, "roll_out": False} for g in READOUT["gate"]]}
    out = rollout_of_saved(RECORD, plan_rows(incremental=False), closed)
    assert set(out.rows["decision"]) == {HELD} and out.totals["contacted"] == 0
    assert out.totals["arms_rolled_out"] == []
    assert out.rows["expected_incremental_profit"].isna().all()
    assert out.totals["expected_incremental_profit_contacted"] is None
    assert all(a["expected_incremental_profit_contacted"] is None for a in out.by_arm)
    empty = rollout_of_saved(RECORD, plan_rows().iloc[:2], READOUT)  # no roll-out group
    assert empty.rows.empty and empty.totals["customers"] == 0
