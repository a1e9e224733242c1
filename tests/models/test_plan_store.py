"""The plan store: immutable plans, idempotent response intake, rejected rows kept, atomic files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.decisions import parse_campaign
from models.decisions import plan_store as store

CAMPAIGN = parse_campaign(
    {
        "campaign_id": "store-test",
        "offers": [{"id": "ret", "kind": "retention", "value": 40.0, "catalog_id": "RET_01"}],
        "channels": [{"name": "email", "cost_per_contact": 0.2}],
    }
)
AS_OF = pd.Timestamp("2024-01-01").date()


def customers() -> pd.DataFrame:
    """200 test contacts, 200 controls, 50 roll-out contacts and 50 not selected."""
    n = 500
    group = np.array(["test"] * 200 + ["control"] * 200 + ["rollout"] * 50 + [None] * 50)
    selected = group != None  # noqa: E711 (an array comparison)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(n)],
            "selected": selected,
            "group": group,
            "offer": ["ret" if s else None for s in selected],
            "channel": ["email" if s else None for s in selected],
            "expected_incremental_responses": np.where(selected, 0.1, np.nan),
            "expected_incremental_profit": np.where(selected, 3.8, np.nan),
        }
    )


def record(by_arm_contacts: int = 250) -> dict:
    inputs = {"dataset": "x", "model": "m@1"}
    return {
        "plan_id": store.plan_id_of(CAMPAIGN, AS_OF, inputs),
        "campaign": CAMPAIGN.model_dump(mode="json"),
        "as_of": str(AS_OF),
        "inputs": inputs,
        "summary": {"base": 500},
        "by_arm": [{"arm": "RET_01/email", "contacts": by_arm_contacts}],
    }


@pytest.fixture
def saved(tmp_path):
    root = tmp_path / "campaigns"
    return root, store.write_plan(root, customers(), record())


def no_temporary_files(folder) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def responses(ids, responded, reason=None, value=None) -> pd.DataFrame:
    frame = pd.DataFrame({"customer_id": ids, "responded": responded})
    if reason is not None:
        frame["reason"] = reason
    if value is not None:
        frame["value"] = value
    return frame


def test_a_plan_is_written_once_and_never_overwritten(saved):
    root, first = saved
    assert first.created and store.valid_plan_id(first.plan_id)
    assert {p.name for p in first.folder.iterdir()} == {store.PLAN_FILE, store.RECORD_FILE}
    again = store.write_plan(root, customers(), record())
    assert not again.created and again.plan_id == first.plan_id
    with pytest.raises(store.PlanConflict, match="immutable"):
        store.write_plan(root, customers(), record(by_arm_contacts=7))
    rec, table = store.load_plan(root, first.plan_id)
    assert rec["by_arm"][0]["contacts"] == 250 and len(table) == 500
    for bad in ("nope", "../campaigns", f"../{first.plan_id}"):
        with pytest.raises(store.PlanNotFound):
            store.load_plan(root, bad)


def test_responses_are_idempotent_by_contact_id(saved):
    root, plan = saved
    batch = responses(["C0000", "C0001", "C0200"], [True, False, False], ["", "price", None])
    first = store.add_responses(root, plan.plan_id, batch)
    assert (first.received, first.accepted, first.unchanged, first.rejected) == (3, 3, 0, [])
    assert first.stored == 3 and first.wave == 400
    path = plan.folder / store.RESPONSES_FILE
    before = path.read_bytes()
    again = store.add_responses(root, plan.plan_id, batch)  # a retry: a no-op
    assert (again.accepted, again.unchanged, again.stored) == (0, 3, 3)
    assert path.read_bytes() == before
    stored = store.stored_responses(plan.folder)
    assert stored.set_index("customer_id").loc["C0200", "group"] == "control"
    assert stored["responded"].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("changed", "field"),
    [
        (responses(["C0002", "C0001"], [True, True], [None, "price"]), "responded"),
        (responses(["C0002", "C0001"], [True, False], [None, "fit"]), "reason"),
        (responses(["C0002", "C0001"], [True, False], [None, "price"], [0, 12.5]), "value"),
        # given twice in one batch with different content
        (responses(["C0002", "C0002"], [True, False]), "responded"),
    ],
)
def test_a_different_response_for_a_known_contact_is_a_conflict_and_stores_nothing(
    saved, changed, field
):
    root, plan = saved
    store.add_responses(root, plan.plan_id, responses(["C0001"], [False], ["price"]))
    path = plan.folder / store.RESPONSES_FILE
    before = path.read_bytes()
    with pytest.raises(store.ResponseConflict) as err:
        store.add_responses(root, plan.plan_id, changed)
    assert (err.value.index, err.value.field) == (1, field)
    assert path.read_bytes() == before  # C0002, new and valid, is not stored either
    assert no_temporary_files(plan.folder)


def test_rejected_responses_are_kept_with_the_reason_once(saved):
    root, plan = saved
    batch = responses(["C0420", "NOT-IN-PLAN", "C0003", "C0004"], [True, True, "maybe", 1])
    out = store.add_responses(root, plan.plan_id, batch)
    assert out.accepted == 1 and out.stored == 1
    assert out.rejected == [
        {"index": 0, "customer_id": "C0420", "reason": store.NOT_IN_WAVE},  # a roll-out customer
        {"index": 1, "customer_id": "NOT-IN-PLAN", "reason": store.NOT_IN_WAVE},
        {"index": 2, "customer_id": "C0003", "reason": store.NOT_A_FLAG},
    ]
    store.add_responses(root, plan.plan_id, batch)  # again: no duplicate rows
    kept = pd.read_csv(plan.folder / store.REJECTED_FILE, dtype=str, keep_default_na=False)
    assert kept["customer_id"].tolist() == ["C0420", "NOT-IN-PLAN", "C0003"]
    assert kept["responded"].tolist()[2] == "maybe"  # as given, not a cleaned NaN
    assert store.rejected_count(plan.folder) == 3


def test_a_failed_write_leaves_the_stored_responses_as_they_were(saved, monkeypatch):
    root, plan = saved
    store.add_responses(root, plan.plan_id, responses(["C0001"], [True]))
    path = plan.folder / store.RESPONSES_FILE
    before = path.read_bytes()

    def broken(self, target, **kwargs):
        Path(target).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        store.add_responses(root, plan.plan_id, responses(["C0005"], [True]))
    assert path.read_bytes() == before and no_temporary_files(plan.folder)


def test_the_read_out_of_posted_responses_equals_the_read_out_of_the_file(saved):
    root, plan = saved
    rng = np.random.default_rng(3)
    table = customers()
    wave = store.wave_of(table)
    treated = (wave["group"] == "test").to_numpy()
    answers = responses(
        wave["customer_id"].tolist(), rng.random(len(wave)) < np.where(treated, 0.5, 0.2)
    )
    for chunk in np.array_split(np.arange(len(answers)), 3):  # three batches over HTTP
        store.add_responses(root, plan.plan_id, answers.iloc[chunk])
    rec, table = store.load_plan(root, plan.plan_id)
    posted = store.readout_of(rec, table, store.stored_responses(plan.folder), 0.9)
    kept, rejected = store.screen_responses(answers, table)  # patron campaign read's path
    filed = store.readout_of(rec, table, kept, 0.9)
    assert rejected.empty
    assert posted["arms"] == filed["arms"] and posted["gate"] == filed["gate"]
    (arm,) = posted["arms"]
    assert arm["arm"] == "RET_01/email" and arm["contacts"] == 200 and arm["control"] == 200
    assert arm["expected_incremental_response"] == pytest.approx(0.1)
    assert posted["wave_without_response"] == 0
    (decision,) = posted["gate"]
    assert decision["roll_out"] is True  # +30 pp x 40 - 0.2 per contact, 200 vs 200
    store.write_readout(plan.folder, posted)
    assert json.loads((plan.folder / store.READOUT_FILE).read_text()) == posted


def read_and_record(root, plan_id: str, confidence: float = 0.9) -> dict:
    """GET /campaigns/{plan_id}/readout's store path: read the stored responses, record it."""
    rec, table = store.load_plan(root, plan_id)
    folder = root / plan_id
    out = store.readout_of(rec, table, store.stored_responses(folder), confidence)
    store.write_readout(folder, out)
    return out


def test_the_rollout_is_recorded_once_from_the_recorded_readout(saved):
    root, plan = saved
    with pytest.raises(store.RolloutRefused) as err:
        store.record_rollout(root, plan.plan_id)
    assert err.value.field == "readout"
    assert str(err.value) == (
        f"no read-out recorded for plan {plan.plan_id}: GET /campaigns/{plan.plan_id}/readout first"
    )
    wave = store.wave_of(customers())
    treated = (wave["group"] == "test").to_numpy()
    said = np.random.default_rng(3).random(len(wave)) < np.where(treated, 0.5, 0.2)
    answers = responses(wave["customer_id"].tolist(), said)
    store.add_responses(root, plan.plan_id, answers.iloc[:-1])
    readout = read_and_record(root, plan.plan_id)
    # the digest is the responses' content, whichever way they came (batches or a wave's file)
    kept, _ = store.screen_responses(answers.iloc[:-1], customers())
    assert readout["responses_sha256"] == store.responses_digest(kept)
    # a response stored after the read-out: read again first
    store.add_responses(root, plan.plan_id, answers.iloc[-1:])
    with pytest.raises(store.RolloutRefused, match="readout again first") as err:
        store.record_rollout(root, plan.plan_id)
    assert err.value.field == "responses"
    assert not (plan.folder / store.ROLLOUT_FILE).exists()
    readout = read_and_record(root, plan.plan_id)
    with pytest.raises(store.RolloutRefused) as err:  # the caller decided at another level
        store.record_rollout(root, plan.plan_id, confidence=0.7)
    assert err.value.field == "confidence"

    withdrawn = pd.DataFrame({"email": [False]}, index=pd.Index(["C0401"]))
    seen: list[str] = []

    def consent(rec):
        seen.append(rec["plan_id"])
        ids = [f"C{i:04d}" for i in range(400, 450) if i != 401]
        return pd.concat([withdrawn, pd.DataFrame({"email": True}, index=ids)]), "test base"

    out, created = store.record_rollout(root, plan.plan_id, consent, confidence=0.9)
    assert created and seen == [plan.plan_id]
    assert out["readout"] == store.readout_identity(readout)
    assert out["consent"] == {"checked": True, "source": "test base"}
    assert out["totals"]["customers"] == 50 and out["totals"]["contacted"] == 49
    assert out["totals"]["held_for_consent"] == 1 and out["totals"]["arms_rolled_out"] == [
        "RET_01/email"
    ]
    recorded, rows = store.load_rollout(plan.folder)
    assert recorded == out and no_temporary_files(plan.folder)
    assert rows["customer_id"].tolist() == [f"C{i:04d}" for i in range(400, 450)]
    held = rows.set_index("customer_id").loc["C0401"]
    assert (held["decision"], held["reason"]) == ("held", "consent withdrawn since the plan")

    # the same read-out again (read again: the same responses, confidence and gate) answers the
    # recorded roll-out, without asking for consent again
    read_and_record(root, plan.plan_id)
    again, created = store.record_rollout(root, plan.plan_id, consent)
    assert (again, created, seen) == (out, False, [plan.plan_id])
    # another read-out: a conflict naming the one the roll-out was recorded from
    read_and_record(root, plan.plan_id, confidence=0.7)
    with pytest.raises(store.RolloutRefused) as err:
        store.record_rollout(root, plan.plan_id, consent)
    assert err.value.field == "readout" and "recorded once" in str(err.value)
    assert readout["read_at"] in str(err.value) and "confidence 0.9" in str(err.value)
    assert store.load_rollout(plan.folder)[0] == out  # unchanged


def test_each_arm_is_read_against_the_controls_of_its_own_segment(tmp_path):
    """Two arms without any effect, planned for segments that respond differently anyway: each
    arm's read compares its contacts with the control customers the plan gave the same arm,
    so neither shows the segments' difference as a gain or a loss."""
    campaign = parse_campaign(
        {
            "campaign_id": "segments",
            "offers": [
                {"id": "ret", "kind": "retention", "value": 40.0, "catalog_id": "RET_01"},
                {"id": "up", "kind": "up_sell", "value": 40.0, "catalog_id": "UP_T3"},
            ],
            "channels": [{"name": "email", "cost_per_contact": 0.0}],
        }
    )
    rng = np.random.default_rng(11)
    n = 8_000
    offer = np.where(np.arange(n) % 2 == 0, "ret", "up")
    group = np.where(rng.random(n) < 0.5, "control", "test")
    table = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "selected": True,
            "group": group,
            "offer": offer,
            "channel": "email",
        }
    )
    inputs = {"dataset": "x", "model": "m@1"}
    rec = {
        "plan_id": store.plan_id_of(campaign, AS_OF, inputs),
        "campaign": campaign.model_dump(mode="json"),
        "as_of": str(AS_OF),
        "inputs": inputs,
        "summary": {"base": n},
        "by_arm": [],
    }
    base_rate = np.where(offer == "up", 0.40, 0.10)  # the up-sell segment buys more anyway
    answers = responses(table["customer_id"].tolist(), rng.random(n) < base_rate)
    out = store.readout_of(rec, table, answers, 0.9)
    arms = {a["arm"]: a for a in out["arms"]}
    for label, offer_id in (("RET_01/email", "ret"), ("UP_T3/email", "up")):
        lo, hi = arms[label]["incremental_response_ci"]
        assert lo < 0 < hi, (label, lo, hi)
        assert arms[label]["control"] == int(((group == "control") & (offer == offer_id)).sum())
    assert not any(d["roll_out"] for d in out["gate"])


def test_a_re_priced_arm_of_a_saved_plan_is_re_tested_by_its_roll_out(tmp_path):
    """POST /campaigns/{id}/rollout's store path: the read-out re-prices an arm whose contacts
    declined on price; the roll-out holds its customers and saves their re-test at the new
    terms as a plan of its own — those held for consent left out — once, under one id."""
    campaign = parse_campaign(
        {
            "campaign_id": "store-reprice",
            "offers": [
                {
                    "id": "ret",
                    "kind": "retention",
                    "value": 40.0,
                    "catalog_id": "RET_01",
                    "cost_per_acceptance": 2.0,
                    "reprice": {"cost_per_acceptance": 6.0},
                }
            ],
            "channels": [{"name": "email", "cost_per_contact": 0.2}],
            "budget": {"contacts": 700},
        }
    )
    n_roll = 1000
    group = np.array(["test"] * 300 + ["control"] * 300 + ["rollout"] * n_roll)
    table = pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(len(group))],
            "selected": True,
            "group": group,
            "offer": "ret",
            "channel": "email",
            "expected_incremental_responses": 0.1,
            "expected_incremental_profit": 1.0,
            "expected_spend": 0.2,
        }
    )
    inputs = {"dataset": "x", "made_by": "POST /campaigns/plan"}
    rec = {
        "plan_id": store.plan_id_of(campaign, AS_OF, inputs),
        "campaign": campaign.model_dump(mode="json"),
        "as_of": str(AS_OF),
        "inputs": inputs,
        "summary": {"base": len(table)},
        "by_arm": [],
    }
    root = tmp_path / "campaigns"
    plan = store.write_plan(root, table, rec)
    wave = store.wave_of(table)
    rng = np.random.default_rng(5)
    said = rng.random(len(wave)) < 0.2  # no effect: the arm is dropped
    test = (wave["group"] == "test").to_numpy()
    why = np.where(rng.random(len(wave)) < 0.85, "price", "no need")
    store.add_responses(
        root,
        plan.plan_id,
        responses(wave["customer_id"].tolist(), said, np.where(test & ~said, why, None)),
    )
    readout = read_and_record(root, plan.plan_id)
    assert [d["roll_out"] for d in readout["gate"]] == [False]
    assert [d["action"] for d in readout["repricing"]] == ["re-price"]
    ids = table.loc[table["group"] == "rollout", "customer_id"]
    flags = pd.DataFrame({"email": True}, index=pd.Index(ids, dtype=object))
    flags.loc[ids.iloc[:10], "email"] = False  # withdrew: the re-test does not take them

    out, created = store.record_rollout(root, plan.plan_id, lambda r: (flags, "test base"))
    assert created and out["totals"]["contacted"] == 0
    from serving.schemas import RolloutResponse  # what POST /rollout answers from it

    assert RolloutResponse.model_validate({**out, "created": created}).retest is not None
    retest = out["retest"]
    assert retest["customers"] == n_roll and retest["excluded"]["no_consent"] == 10
    # the budget left: 700 contacts less the wave's 300 test contacts; the rest wait unplanned
    assert retest["test_cell"] + retest["waiting"] == 400
    assert retest["excluded"]["budget_or_capacity"] == n_roll - 10 - 400 - retest["control"]
    assert retest["test_cell"] >= 30 and retest["control"] >= 60
    r_rec, r_table = store.load_plan(root, retest["plan_id"])
    assert r_rec["inputs"]["parent_plan"] == plan.plan_id and r_rec["inputs"]["wave"] == "retest"
    assert r_rec["campaign"]["offers"][0]["cost_per_acceptance"] == 6.0
    assert set(r_table["customer_id"]) == set(ids)
    withdrew = r_table.set_index("customer_id").loc[ids.iloc[:10]]
    assert not withdrew["selected"].any()
    assert set(r_table.loc[r_table["selected"], "offer"]) == {"ret_repriced"}
    # a retry answers the recorded roll-out; the re-test plan is the same one
    again, created = store.record_rollout(root, plan.plan_id, lambda r: (flags, "test base"))
    assert not created and again["retest"] == retest
    # without a consent source no re-test is made
    other = tmp_path / "other"
    store.write_plan(other, table, rec)
    store.add_responses(other, plan.plan_id, store.stored_responses(root / plan.plan_id))
    read_and_record(other, plan.plan_id)
    none, _ = store.record_rollout(other, plan.plan_id)
    assert none["retest"]["plan_id"] is None and "consent" in none["retest"]["why"]
