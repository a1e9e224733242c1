"""POST /campaigns/plan and GET /offers over the real server on loopback; the campaign loop
over HTTP (a saved plan, its responses, its read-out and gate) on the same server.

An uplift model trained on the session's synthetic data (experiments/uplift/synthetic.yaml) is
served beside the session's churn model; a configured campaign plans with it. Checked: the plan
adds up to the base, no selected customer lacks consent for the chosen channel, budgets and
capacities hold; a typo in an inline campaign, an unknown model and a churn model used as an
uplift are 400s naming the field; the explicit non-causal path is labelled non-incremental.
The loop: a saved plan's id is stable, responses are idempotent by contact id (a changed one is
a 409 naming the field, nothing of that batch stored), rejected ones are kept with the reason,
and the read-out equals ``patron campaign read``'s on the same responses.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from serving.decisions import CampaignConfigError, load_campaigns
from tests.serving.conftest import (
    ROOT,
    USER_KEY,
    Server,
    ensure_snapshot,
    register_copy,
    server_env,
    serving_settings,
)

CHURN = "serving-plan-churn"
UPLIFT = "serving-plan-uplift"
USER = {"Authorization": f"Bearer {USER_KEY}"}

CAMPAIGN: dict[str, Any] = {
    "campaign_id": "plan-test-1",
    "offers": [
        {
            "id": "retention_email",
            "kind": "retention",
            "value": 40.0,
            "model": "uplift",
            "budget": {"contacts": 300},
        },
        {"id": "retention_call", "kind": "retention", "value": 60.0, "model": "uplift"},
    ],
    "channels": [
        {"name": "email", "cost_per_contact": 0.2},
        {"name": "sms", "cost_per_contact": 0.1, "uplift_multiplier": 0.6},
        {"name": "phone", "cost_per_contact": 4.0, "capacity": 40, "uplift_multiplier": 2.0},
    ],
    "budget": {"contacts": 600, "money": 400.0},
    "contact_policy": {"max_contacts": 3, "window_days": 90},
}


# --------------------------------------------------------------------------- without a server


def test_a_broken_campaign_file_fails_in_one_line_naming_its_key(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(CAMPAIGN))
    bad.write_text(yaml.safe_dump({**CAMPAIGN, "budjet": {"contacts": 1}}))
    assert list(load_campaigns({"good": str(good)})) == ["good"]
    for files, needle in (
        ({"good": str(good), "broken": str(bad)}, "budjet: unknown field"),
        ({"gone": str(tmp_path / "missing.yaml")}, "FileNotFoundError"),
    ):
        with pytest.raises(CampaignConfigError) as err:
            load_campaigns(files)
        message = str(err.value)
        assert "\n" not in message and needle in message, message
        assert message.startswith(f"campaigns.{next(reversed(files))}: ")


def test_the_planner_reads_the_same_consent_as_target(served_pipeline):
    """The planner's consent columns are the base's own flags (what /target uses)."""
    from models.decisions.campaign import parse_campaign
    from serving.base import load_base
    from serving.decisions import planner_customers

    state, cfg = served_pipeline["state"], served_pipeline["cfg"]
    base = load_base(state, served_pipeline["dataset"].name, cfg.feature_set)
    campaign = parse_campaign(CAMPAIGN)
    frame = planner_customers(base, campaign, state, "campaign")
    assert frame["customer_id"].tolist() == list(base.features.index)
    for channel in ("email", "sms", "phone"):
        np.testing.assert_array_equal(frame[f"consent_{channel}"], base.consent[channel])
    assert 0 < frame["consent_email"].mean() < 1


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def server(served_pipeline, tmp_path_factory):
    from training.config import load_experiment
    from training.run import run_experiment

    state = served_pipeline["state"]
    cfg = load_experiment(ROOT / "experiments" / "uplift" / "synthetic.yaml")
    uplift = run_experiment(cfg, state)
    ensure_snapshot(state, served_pipeline["dataset"].name, cfg.feature_set)
    register_copy(state, served_pipeline["logged"]["model_uri"], CHURN, ("champion",))
    register_copy(state, uplift.logged["model_uri"], UPLIFT, ("champion",))
    folder = tmp_path_factory.mktemp("plan")
    campaign_path = folder / "retention.yaml"
    campaign_path.write_text(yaml.safe_dump(CAMPAIGN))
    settings = serving_settings(served_pipeline, CHURN, reload_interval_s=0)
    settings["models"]["uplift"] = {
        "registered_model": UPLIFT,
        "dataset": served_pipeline["dataset"].name,
    }
    settings["campaigns"] = {"retention": str(campaign_path)}
    srv = Server(server_env(settings, state.home), folder / "server.log")
    try:
        srv.wait_ready()
        yield srv, served_pipeline
    finally:
        srv.stop()


def post(srv: Server, body: object) -> httpx.Response:
    return httpx.post(f"{srv.url}/campaigns/plan", json=body, headers=USER, timeout=120)


def refused(response: httpx.Response, field: str, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text[:3000]
    body = response.json()
    assert body["error"]["field"] == field, body
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return body


def explicit_yes(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "y", "1")
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return False
    return bool(value == 1)


def consent_table(pipeline) -> pd.DataFrame:
    """Consent per customer and channel from the ingested customers table, read here on its
    own: every current row of the customer must say an explicit yes."""
    from serving.base import current_customers

    path = pipeline["state"].data(pipeline["dataset"].name) / "customers.parquet"
    table = current_customers(path)
    out = {}
    for channel in ("email", "sms", "phone"):
        flags = table[f"consent_{channel}"].map(explicit_yes).astype(bool)
        out[channel] = flags.groupby(table["customer_id"].astype(str)).all()
    return pd.DataFrame(out)


@pytest.mark.server
def test_a_configured_campaign_plans_within_consent_and_budgets(server):
    srv, pipeline = server
    offers = httpx.get(f"{srv.url}/offers", headers=USER, timeout=30)
    assert offers.status_code == 200, offers.text[:3000]
    listed = offers.json()["campaigns"]
    assert [c["name"] for c in listed] == ["retention"]
    assert {o["offer_id"]: o["model_served"] for o in listed[0]["offers"]} == {
        "retention_email": True,
        "retention_call": True,
    }

    response = post(srv, {"campaign_name": "retention", "max_rows": 10_000})
    assert response.status_code == 200, response.text[:3000]
    plan = response.json()
    summary, check = plan["summary"], plan["check"]
    assert plan["source"] == "configured:retention" and summary["incremental"] is True
    assert [i["estimate"] for i in plan["inputs"]] == ["uplift", "uplift"]
    # adds up: selected + every exclusion reason = the base, and the listed rows are the base
    assert check["adds_up"] and check["base"] == summary["base"] == len(plan["customers"])
    assert summary["selected"] + sum(plan["excluded"].values()) == summary["base"]
    assert 0 < summary["selected"] <= 600
    rows = pd.DataFrame(plan["customers"])
    selected = rows[rows["selected"]]
    assert len(selected) == summary["selected"]
    assert (rows.loc[~rows["selected"], "exclusion_reason"].notna()).all()
    assert selected["exclusion_reason"].isna().all()
    assert set(selected["group"]) <= {"control", "test", "rollout"}
    assert (selected["expected_incremental_profit"] > 0).all()
    assert (selected["basis"] == "incremental (uplift)").all()
    # totals per offer and channel add up to the selection
    assert sum(t["selected"] for t in plan["by_offer"]) == summary["selected"]
    assert sum(t["selected"] for t in plan["by_channel"]) == summary["selected"]
    # consent, read independently of the service
    consent = consent_table(pipeline)
    for row in selected.itertuples():
        assert bool(consent.loc[row.customer_id, row.channel]), (row.customer_id, row.channel)
    # budgets and capacities, over everyone selected (control included)
    assert (selected["offer"] == "retention_email").sum() <= 300
    assert (selected["channel"] == "phone").sum() <= 40
    assert selected["expected_spend"].sum() <= 400.0 + 1e-6
    for limit in summary["constraints"].values():
        assert limit["used_by_selected"] <= limit["limit"] + 1e-6

    # bounded listing: a customer filter and a page
    ids = [*selected["customer_id"].head(2), "NOPE"]
    page = post(srv, {"campaign_name": "retention", "customer_ids": ids, "max_rows": 1})
    assert page.status_code == 200, page.text[:3000]
    body = page.json()
    assert body["page"] == {"offset": 0, "returned": 1, "total_rows": 2, "next_offset": 1}
    assert body["unknown"] == [{"customer_id": "NOPE", "reason": "not in the base planned"}]
    assert body["check"] == check  # the plan is the same whatever is listed


@pytest.mark.server
def test_bad_campaigns_are_400s_naming_the_field(server):
    srv, _ = server
    body = refused(
        post(srv, {"campaign": {**CAMPAIGN, "budjet": {"contacts": 1}}}), "campaign.budjet"
    )
    assert body["detail"][0]["type"] == "extra_forbidden"
    assert body["error"]["message"] == "unknown field"
    typo = {**CAMPAIGN, "offers": [{**CAMPAIGN["offers"][0], "valu": 3.0}]}
    refused(post(srv, {"campaign": typo}), "campaign.offers.0.valu")
    unknown = {**CAMPAIGN, "offers": [{**CAMPAIGN["offers"][0], "model": "no_such_model"}]}
    body = refused(post(srv, {"campaign": unknown}), "campaign.offers.0.model")
    assert "not served" in body["error"]["message"]
    refused(post(srv, {"campaign_name": "nope"}), "campaign_name", 404)


@pytest.mark.server
def test_a_churn_model_is_no_uplift_and_ranks_only_when_labelled(server):
    srv, _ = server
    churn_offer = {"id": "retention_email", "kind": "retention", "value": 40.0, "model": "churn"}
    as_uplift = {**CAMPAIGN, "offers": [churn_offer]}
    body = refused(post(srv, {"campaign": as_uplift}), "campaign.offers.0.model")
    message = body["error"]["message"]
    assert "not an uplift" in message and "non_causal_score" in message

    labelled = {
        **as_uplift,
        "ranking": {"basis": "non_causal_score", "reason": "no uplift model for this offer yet"},
    }
    response = post(srv, {"campaign": labelled, "selected_only": True, "max_rows": 50})
    assert response.status_code == 200, response.text[:3000]
    plan = response.json()
    summary = plan["summary"]
    assert summary["incremental"] is False and "non-causal" in summary["basis"]
    assert "no uplift model for this offer yet" in summary["warning"]
    assert summary["expected_incremental_profit_contacted"] is None
    assert summary["non_causal_ranking_value_contacted"] is not None
    assert plan["inputs"][0]["estimate"] == "churn_probability"
    assert plan["check"]["adds_up"] and plan["customers"]
    for row in plan["customers"]:
        assert row["expected_incremental_profit"] is None and row["basis"] == summary["basis"]
        assert row["non_causal_ranking_value"] is not None
    assert all(t["expected_incremental_profit_contacted"] is None for t in plan["by_offer"])


# --------------------------------------------------------------------------- /target beside it


def target(srv: Server, body: object) -> httpx.Response:
    return httpx.post(f"{srv.url}/target", json=body, headers=USER, timeout=120)


@pytest.mark.server
def test_target_ranks_by_the_uplift_model_and_refuses_the_churn_model(server):
    """/target agrees with the planner: an uplift model's figures are incremental; the churn
    model of the same base is a 400 naming `model` unless ranked explicitly as non-causal."""
    from models.decisions.value import BASIS_NON_CAUSAL, BASIS_UPLIFT
    from tests.serving.conftest import NON_CAUSAL

    srv, _ = server
    spec = {
        "campaign_id": "target-uplift-1",
        "channel": "email",
        "model": "uplift",
        "value_per_conversion": 40.0,
        "cost_per_contact": 0.2,
        "budget": {"max_contacts": 300},
    }
    response = target(srv, spec)
    assert response.status_code == 200, response.text[:3000]
    body = response.json()
    assert (body["score_kind"], body["basis"], body["warning"]) == ("uplift", BASIS_UPLIFT, None)
    contacted = [c for c in body["customers"] if c["group"] != "control"]
    assert 0 < len(contacted) <= 300
    responses = body["summary"]["expected_responses"]
    assert isinstance(responses, float)
    assert responses == pytest.approx(sum(c["score"] for c in contacted))
    for c in body["customers"]:
        assert c["expected_profit"] == pytest.approx(40.0 * c["score"] - 0.2)

    refused(target(srv, {**spec, "ranking": NON_CAUSAL}), "ranking.basis")
    churn = {**spec, "model": "churn"}
    body = refused(target(srv, churn), "model")
    message = body["error"]["message"]
    assert "churn probability" in message and "/campaigns/plan" in message
    labelled = target(srv, {**churn, "ranking": NON_CAUSAL})
    assert labelled.status_code == 200, labelled.text[:3000]
    labelled_body = labelled.json()
    assert labelled_body["score_kind"] == "churn_probability"
    assert labelled_body["basis"] == BASIS_NON_CAUSAL
    assert labelled_body["summary"]["expected_responses"] is None


# --------------------------------------------------------------------------- the loop over HTTP

SENTINEL = "ZQX-PLAN-SENTINEL-5521"  # a customer id that must never reach the server log


def responses_url(srv: Server, plan_id: str, kind: str = "responses") -> str:
    return f"{srv.url}/campaigns/{plan_id}/{kind}"


def post_responses(srv: Server, plan_id: str, rows: object) -> httpx.Response:
    body = {"responses": rows} if isinstance(rows, list) else rows
    return httpx.post(responses_url(srv, plan_id), json=body, headers=USER, timeout=60)


@pytest.mark.server
def test_the_campaign_loop_over_http(server):
    from experiments.plans import read_plan
    from models.decisions import plan_store

    srv, pipeline = server
    state = pipeline["state"]
    saved = post(srv, {"campaign_name": "retention", "save": True, "max_rows": 0})
    assert saved.status_code == 200, saved.text[:3000]
    plan_id = saved.json()["plan_id"]
    assert saved.json()["plan_created"] is True and saved.json()["customers"] == []
    again = post(srv, {"campaign_name": "retention", "save": True, "max_rows": 0}).json()
    assert (again["plan_id"], again["plan_created"]) == (plan_id, False)
    assert post(srv, {"campaign_name": "retention", "max_rows": 0}).json()["plan_id"] is None
    record, table = plan_store.load_plan(plan_store.plans_root(state.home), plan_id)
    assert record["inputs"]["made_by"] == "POST /campaigns/plan"
    assert [m["version"] for m in record["inputs"]["models"]] == [
        i["version"] for i in saved.json()["inputs"]
    ]

    # the saved plan's rows, as saved (the test cell to contact, paged), not re-planned
    rows_url = responses_url(srv, plan_id, "customers")
    listed = httpx.get(rows_url, params={"group": "test"}, headers=USER, timeout=60)
    assert listed.status_code == 200, listed.text[:3000]
    cell = listed.json()
    assert cell["by_arm"] == record["by_arm"] and cell["inputs"] == record["inputs"]
    test_ids = table.loc[table["group"] == "test", "customer_id"].tolist()
    assert [r["customer_id"] for r in cell["customers"]] == test_ids
    assert {(r["group"], r["selected"]) for r in cell["customers"]} == {("test", True)}
    paged = httpx.get(rows_url, params={"offset": 1, "max_rows": 2}, headers=USER, timeout=60)
    assert paged.json()["page"] == {
        "offset": 1,
        "returned": 2,
        "total_rows": len(table),
        "next_offset": 3,
    }
    refused(httpx.get(rows_url, params={"group": "tset"}, headers=USER, timeout=30), "group")
    refused(httpx.get(rows_url, params={"max_rows": "-1"}, headers=USER, timeout=30), "max_rows")
    refused(httpx.get(rows_url, params={"ofset": "1"}, headers=USER, timeout=30), "ofset")

    # the wave's responses, in two batches; a retry of the first is a no-op
    wave = plan_store.wave_of(table)
    rng = np.random.default_rng(7)
    treated = (wave["group"] == "test").to_numpy()
    said = rng.random(len(wave)) < np.where(treated, 0.5, 0.2)
    rows = [
        {"customer_id": c, "responded": bool(y), **({} if y else {"reason": "price"})}
        for c, y in zip(wave["customer_id"], said, strict=True)
    ]
    half = len(rows) // 2
    first = post_responses(srv, plan_id, rows[:half])
    assert first.status_code == 200, first.text[:3000]
    assert (first.json()["accepted"], first.json()["rejected"]) == (half, [])
    retry = post_responses(srv, plan_id, rows[:half]).json()
    assert (retry["accepted"], retry["unchanged"], retry["stored"]) == (0, half, half)
    # customers outside the wave are kept with the reason, and listed
    outside = table.loc[table["group"] == "rollout", "customer_id"].iloc[0]
    extra = [
        {"customer_id": outside, "responded": True},
        {"customer_id": SENTINEL, "responded": True},
    ]
    second = post_responses(srv, plan_id, rows[half:] + extra)
    assert second.status_code == 200, second.text[:3000]
    body = second.json()
    assert body["accepted"] == len(rows) - half and body["stored"] == len(rows) == body["wave"]
    assert [(r["index"], r["customer_id"]) for r in body["rejected"]] == [
        (len(rows) - half, outside),
        (len(rows) - half + 1, SENTINEL),
    ]
    folder = plan_store.plans_root(state.home) / plan_id
    kept = pd.read_csv(folder / plan_store.REJECTED_FILE, dtype=str)
    assert set(kept["customer_id"]) == {outside, SENTINEL}

    # a changed response is a 409 naming the field; nothing of that batch is stored
    flipped = {**rows[0], "responded": not rows[0]["responded"]}
    new = {"customer_id": outside, "responded": False}
    conflict = refused(post_responses(srv, plan_id, [new, flipped]), "responses.1.responded", 409)
    assert "already has a stored response" in conflict["error"]["message"]
    assert rows[0]["customer_id"] not in json.dumps(conflict)  # positions, never ids
    assert len(plan_store.stored_responses(folder)) == len(rows)
    # bad input: 4xx in the one error shape
    refused(post_responses(srv, plan_id, [{**rows[0], "respondid": True}]), "responses.0.respondid")
    refused(
        post_responses(srv, plan_id, [{"customer_id": "C1", "responded": "yes"}]),
        "responses.0.responded",
    )
    refused(post_responses(srv, plan_id, {"responses": rows[:1], "zz": 1}), "zz")
    refused(post_responses(srv, plan_id, []), "responses")
    refused(post_responses(srv, "nope-2024-01-01-00000000", rows[:1]), "plan_id", 404)
    refused(post_responses(srv, "a/b", rows[:1]), "plan_id", 404)
    missing = httpx.get(responses_url(srv, "a/b", "customers"), headers=USER, timeout=30)
    refused(missing, "plan_id", 404)
    unkeyed = httpx.post(responses_url(srv, plan_id), json={"responses": rows[:1]}, timeout=30)
    assert unkeyed.status_code == 401

    # the read-out and the gate: what `patron campaign read` gives on the same responses
    url = responses_url(srv, plan_id, "readout")
    readout = httpx.get(url, headers=USER, timeout=60)
    assert readout.status_code == 200, readout.text[:3000]
    out = readout.json()
    assert out["read"] == len(rows) and out["rejected"] == 2 and out["wave_without_response"] == 0
    tested = {
        f"{o}/{c}" for o, c in wave.loc[treated, ["offer", "channel"]].itertuples(index=False)
    }
    assert {a["arm"] for a in out["arms"]} == {g["arm"] for g in out["gate"]} == tested
    assert out["confidence"] == 0.9 and out["expected_by_arm"] == record["by_arm"]
    assert any(a["declined"] for a in out["arms"])  # "price" among contacts and controls
    recorded = json.loads((folder / plan_store.READOUT_FILE).read_text())
    assert recorded["gate"] == out["gate"]  # what `patron campaign rollout` goes on from
    at_70 = httpx.get(url, params={"confidence": "0.7"}, headers=USER, timeout=60).json()
    assert at_70["confidence"] == 0.7
    refused(httpx.get(url, params={"confidence": "2"}, headers=USER, timeout=30), "confidence")
    refused(httpx.get(url, params={"confidnce": "0.9"}, headers=USER, timeout=30), "confidnce")
    frame = pd.DataFrame(rows)
    cli = read_plan(state, plan_id, frame, 0.9)
    assert cli["arms"] == out["arms"] and cli["gate"] == out["gate"]
    assert cli["repricing"] == out["repricing"]
    log = srv.log_text()
    assert SENTINEL not in log and rows[0]["customer_id"] not in log
    assert f"responses plan={plan_id} received=" in log


ROLLOUT_CAMPAIGN = {
    **CAMPAIGN,
    "campaign_id": "rollout-test-1",
    "test_cell_fraction": 0.4,  # a test cell large enough for one arm to pass the gate
    "control_fraction": 0.2,
}


@pytest.mark.server
def test_the_rollout_of_a_saved_plan_over_http(server, tmp_path):
    """POST /campaigns/{plan_id}/rollout on the recorded read-out: the roll-out group only, each
    customer on the plan's arm, contacted where the arm passed and held where it did not;
    recorded once (409 before a read-out, after new responses, from another read-out); paged
    by GET; no customer id in the log. Consent withdrawn now (a base served in process, the
    service's own consent rule) holds the customer."""
    import dataclasses
    import shutil
    from types import SimpleNamespace

    from features.store import StateDirs
    from models.decisions import plan_store
    from models.decisions.saved_rollout import CONSENT_WITHDRAWN
    from serving.base import load_base
    from serving.decisions import plan_rollout, served_consent
    from serving.errors import RequestError

    srv, pipeline = server
    state = pipeline["state"]
    saved = post(srv, {"campaign": ROLLOUT_CAMPAIGN, "save": True, "max_rows": 0})
    assert saved.status_code == 200, saved.text[:3000]
    plan_id = saved.json()["plan_id"]
    url = responses_url(srv, plan_id, "rollout")
    before = refused(httpx.post(url, headers=USER, timeout=60), "readout", 409)
    assert before["error"]["message"] == (
        f"no read-out recorded for plan {plan_id}: GET /campaigns/{plan_id}/readout first"
    )
    refused(httpx.get(url, headers=USER, timeout=30), "plan_id", 404)

    # responses: every test contact of the largest arm responded, no one else did
    record, table = plan_store.load_plan(plan_store.plans_root(state.home), plan_id)
    wave = plan_store.wave_of(table)
    test = wave[wave["group"] == "test"]
    offer, channel = test.groupby(["offer", "channel"]).size().idxmax()
    size = int(((test["offer"] == offer) & (test["channel"] == channel)).sum())
    assert size >= 30 and (wave["group"] == "control").sum() >= 30, size
    data_id = {o["id"]: o.get("catalog_id") or o["id"] for o in ROLLOUT_CAMPAIGN["offers"]}
    winner = f"{data_id[offer]}/{channel}"
    said = (wave["group"] == "test") & (wave["offer"] == offer) & (wave["channel"] == channel)
    rows = [
        {"customer_id": c, "responded": bool(y)}
        for c, y in zip(wave["customer_id"], said, strict=True)
    ]
    assert post_responses(srv, plan_id, rows[:-3]).status_code == 200
    readout_url = responses_url(srv, plan_id, "readout")
    assert httpx.get(readout_url, headers=USER, timeout=60).status_code == 200
    assert post_responses(srv, plan_id, rows[-3:]).status_code == 200  # after the read-out
    stale = refused(httpx.post(url, headers=USER, timeout=60), "responses", 409)
    assert "again first" in stale["error"]["message"]
    readout = httpx.get(readout_url, headers=USER, timeout=60).json()
    gate = {g["arm"]: g for g in readout["gate"]}
    assert gate[winner]["roll_out"] is True, gate[winner]
    assert len(gate) > 1 and not any(g["roll_out"] for a, g in gate.items() if a != winner)
    folder = plan_store.plans_root(state.home) / plan_id
    copy_home = tmp_path / "home"  # the plan as read, before its roll-out: for consent below
    shutil.copytree(folder, plan_store.plans_root(copy_home) / plan_id)

    # bad inputs: 4xx in the error shape, nothing recorded
    refused(httpx.post(url, params={"forse": "1"}, headers=USER, timeout=30), "forse")
    refused(httpx.post(url, json={"force": True}, headers=USER, timeout=30), "force")
    refused(httpx.post(url, params={"confidence": "2"}, headers=USER, timeout=30), "confidence")
    wrong = refused(
        httpx.post(url, params={"confidence": "0.7"}, headers=USER, timeout=30), "confidence", 409
    )
    assert "readout?confidence=0.7 first" in wrong["error"]["message"]
    refused(
        httpx.post(responses_url(srv, "nope-2024-01-01-00000000", "rollout"), headers=USER),
        "plan_id",
        404,
    )
    assert httpx.post(url, timeout=30).status_code == 401
    assert not (folder / plan_store.ROLLOUT_FILE).exists()

    first = httpx.post(url, params={"confidence": "0.9"}, headers=USER, timeout=60)
    assert first.status_code == 200, first.text[:3000]
    out = first.json()
    assert out["created"] is True and out["plan_id"] == plan_id
    assert out["readout"]["confidence"] == 0.9 and out["readout"]["read"] == len(rows)
    assert out["readout"]["responses_sha256"] == readout["responses_sha256"]
    assert out["consent"]["checked"] is True and "served base" in out["consent"]["source"]
    rollout_group = table[table["selected"] & (table["group"] == "rollout")]
    totals = out["totals"]
    assert totals["customers"] == len(rollout_group) and totals["arms_rolled_out"] == [winner]
    is_winner = (rollout_group["offer"] == offer) & (rollout_group["channel"] == channel)
    assert totals["contacted"] == is_winner.sum() > 0 and totals["held_for_consent"] == 0
    assert totals["held"] == (~is_winner).sum() > 0
    arms = {a["arm"]: a for a in out["by_arm"]}
    assert arms[winner]["contacted"] == arms[winner]["customers"] == is_winner.sum()
    assert arms[winner]["expected_incremental_profit_contacted"] == pytest.approx(
        rollout_group.loc[is_winner, "expected_incremental_profit"].sum()
    )

    # the rows: the roll-out group as planned (never the test cell, control or unselected),
    # each on the plan's arm; contacted on the passed arm, held with the gate's reason elsewhere
    listed = httpx.get(url, params={"max_rows": 10_000}, headers=USER, timeout=60)
    assert listed.status_code == 200, listed.text[:3000]
    page = listed.json()
    assert {k: page[k] for k in out if k != "created"} == {
        k: v for k, v in out.items() if k != "created"
    }
    got = pd.DataFrame(page["customers"])
    assert got["customer_id"].tolist() == rollout_group["customer_id"].tolist()
    assert got[["offer", "channel"]].values.tolist() == (
        rollout_group[["offer", "channel"]].values.tolist()
    )
    contact = got["decision"] == "contact"
    assert (contact == is_winner.to_numpy()).all()
    assert (got.loc[contact, "reason"] == gate[winner]["reason"]).all()
    for row in got[~contact].itertuples():
        expected = gate[row.arm]["reason"] if row.arm in gate else "arm not read in the test cell"
        assert row.reason == expected, row.arm
    paged = httpx.get(url, params={"offset": 1, "max_rows": 2}, headers=USER, timeout=30)
    assert paged.json()["page"] == {
        "offset": 1,
        "returned": 2,
        "total_rows": len(got),
        "next_offset": 3 if len(got) > 3 else None,
    }
    contacts = httpx.get(url, params={"decision": "contact"}, headers=USER, timeout=30).json()
    assert [r["customer_id"] for r in contacts["customers"]] == (
        got.loc[contact, "customer_id"].tolist()
    )
    refused(httpx.get(url, params={"ofset": "1"}, headers=USER, timeout=30), "ofset")
    refused(httpx.get(url, params={"decision": "maybe"}, headers=USER, timeout=30), "decision")
    refused(httpx.get(url, params={"max_rows": "-1"}, headers=USER, timeout=30), "max_rows")

    # idempotent: the same read-out (read again: same responses, confidence, gate) answers the
    # recorded roll-out; another read-out is a 409 naming the recorded one
    assert httpx.get(readout_url, headers=USER, timeout=60).status_code == 200
    again = httpx.post(url, headers=USER, timeout=60).json()
    assert again == {**out, "created": False}
    httpx.get(readout_url, params={"confidence": "0.7"}, headers=USER, timeout=60)
    other = refused(httpx.post(url, headers=USER, timeout=60), "readout", 409)
    message = other["error"]["message"]
    assert "recorded once" in message and out["readout"]["read_at"] in message
    assert "\n" not in message
    assert plan_store.load_rollout(folder)[0] == {k: v for k, v in out.items() if k != "created"}

    log = srv.log_text()
    assert f"rollout plan={plan_id} created=True customers={len(got)}" in log
    assert not [c for c in table["customer_id"] if c in log]  # counts only, never an id

    # consent withdrawn since the plan: the service's consent rule over a served base in which
    # one contacted customer withdrew the channel's consent holds them (the copy as read)
    base = load_base(state, pipeline["dataset"].name, pipeline["cfg"].feature_set)
    gone = got.loc[contact].iloc[0]
    flags = {ch: np.array(v, copy=True) for ch, v in base.consent.items()}
    flags[gone["channel"]][base.positions([gone["customer_id"]])[0]] = False
    withdrawn = dataclasses.replace(base, consent=flags)
    served = SimpleNamespace(
        models={}, bases={(base.dataset, base.feature_set): withdrawn}, loaded_at="now"
    )
    dirs = StateDirs(copy_home)
    local = plan_rollout(served, dirs, plan_id, None)
    assert local["totals"]["held_for_consent"] == 1
    assert local["totals"]["contacted"] == totals["contacted"] - 1
    held = plan_store.load_rollout(plan_store.plans_root(copy_home) / plan_id)[1]
    held = held.set_index("customer_id")
    assert (held.loc[gone["customer_id"], "decision"], held.loc[gone["customer_id"], "reason"]) == (
        "held",
        CONSENT_WITHDRAWN,
    )
    others = got.set_index("customer_id").drop(index=gone["customer_id"])
    assert (held.drop(index=gone["customer_id"])["decision"] == others["decision"]).all()
    nothing = SimpleNamespace(models={}, bases={}, loaded_at="now")
    with pytest.raises(RequestError) as err:  # no consent source: no roll-out
        served_consent(nothing, dirs, record)
    assert err.value.status == 409 and "cannot be checked" in err.value.message
