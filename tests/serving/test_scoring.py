"""Scoring, targeting, reload, batch and security without a server (the service's own functions)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import numpy as np
import pandas as pd
import pytest

from features.definitions import context_feature_names
from models.decisions.value import BASIS_NON_CAUSAL, BASIS_UPLIFT
from serving.batch import (
    COLUMNS,
    SEGMENT_FIELDS,
    _reason_frame_columns,
    file_columns,
    score_base,
    score_frame,
)
from serving.errors import RequestError
from serving.handlers import (
    check_ids,
    rank_offers,
    score_customers,
    score_records,
    target_customers,
)
from serving.kinds import N_REASONS, rank_stats
from serving.settings import AuthSettings, ServingSettings
from serving.state import build_state, state_keys
from tests.serving.conftest import (
    NON_CAUSAL,
    ensure_snapshot,
    register_copy,
    serving_settings,
    small_nbo_config,
)

NAME = "serving-inprocess-test"


@pytest.fixture(scope="module")
def setup(served_pipeline):
    state = served_pipeline["state"]
    version = register_copy(state, served_pipeline["logged"]["model_uri"], NAME, ("champion",))
    settings = ServingSettings.model_validate(
        serving_settings(served_pipeline, NAME, reload_interval_s=0)
    )
    return served_pipeline, settings, build_state(settings, state), version


# --------------------------------------------------------------------------- pure helpers


def test_percentile_and_decile_of_a_small_base():
    ordered, pct, dec = rank_stats(np.array([0.1, 0.2, 0.2, 0.9]))
    assert ordered.tolist() == [0.1, 0.2, 0.2, 0.9]
    assert pct.tolist() == [25.0, 75.0, 75.0, 100.0]
    # strictly above: 3, 1, 1, 0 of 4 -> deciles 1 + floor(10 * share)
    assert dec.tolist() == [8, 3, 3, 1]


def test_deciles_split_a_continuous_base_in_tenths():
    _, _, dec = rank_stats(np.random.default_rng(0).uniform(size=10_000))
    counts = np.bincount(dec, minlength=11)[1:]
    assert counts.tolist() == [1000] * 10


@pytest.mark.parametrize(
    ("ids", "message"),
    [([], "at least one"), (["a"] * 3, "positions 1, 2"), ([f"c{i}" for i in range(6)], "exceed")],
)
def test_bad_id_lists_name_the_field_but_never_an_id(ids, message):
    with pytest.raises(RequestError) as err:
        check_ids(ids, max_batch=5)
    assert err.value.field == "customer_ids"
    assert message in err.value.message
    assert not any(i in err.value.message for i in set(ids) if len(i) > 1)


# --------------------------------------------------------------------------- scores


def test_scores_equal_the_live_model_with_its_shap_reasons(setup):
    pipeline, _, state, version = setup
    served = state.models["churn"]
    ids = list(served.base.features.index[[5, 0, 17, 123]])
    body = score_customers(state, "churn", [*ids, "NO-SUCH"], max_batch=100)
    assert body["version"] == version
    assert [s["customer_id"] for s in body["scores"]] == ids
    assert body["unknown"] == [{"customer_id": "NO-SUCH", "reason": "not in the feature snapshot"}]
    model = served.model
    frame = served.base.features.loc[ids]
    live = model.score(frame)
    np.testing.assert_allclose([s["score"] for s in body["scores"]], live, rtol=0, atol=1e-12)
    contribs = model.contributions(frame)
    # context features (the snapshot date's month) are never a customer's reason
    contribs[list(set(contribs.columns) & context_feature_names())] = 0.0
    for rec, (_, row) in zip(body["scores"], contribs.iterrows(), strict=True):
        top = row.abs().sort_values(ascending=False, kind="stable").index[:3].tolist()
        assert [r["feature"] for r in rec["reasons"]] == top
        for r in rec["reasons"]:
            assert r["contribution"] == pytest.approx(row[r["feature"]], abs=1e-6)
            assert r["value"] == pytest.approx(float(frame.loc[rec["customer_id"], r["feature"]]))
        assert rec["probability"] == rec["score"] and rec["value"] is None


def test_percentiles_and_segments_describe_the_current_base(setup):
    _, _, state, _ = setup
    served = state.models["churn"]
    ids = list(served.base.features.index)
    body = score_customers(state, "churn", ids[:2000], max_batch=10_000, with_reasons=False)
    scores = served.scores
    for rec in body["scores"][:50]:
        assert rec["percentile"] == pytest.approx(100 * np.mean(scores <= rec["score"]))
        assert rec["reasons"] == []
    seg = served.base.segments
    assert seg is not None
    flags = {r["customer_id"]: r["segment"]["win_back_priority"] for r in body["scores"]}
    assert flags == seg["lapsed_recently"].loc[list(flags)].to_dict()
    stages = {r["segment"]["lifecycle_stage"] for r in body["scores"]}
    assert stages <= {"new", "active", "loyal", "won back", "lapsing", "lapsed"}
    # recently lapsed = no order for 181..187 days (the lifecycle's lapsed_days + 7)
    days = served.base.features["days_since_last_order"]
    assert (seg["lapsed_recently"] == ((days > 180) & (days <= 187))).all()


def test_unknown_model_is_a_404_naming_the_field(setup):
    _, _, state, _ = setup
    with pytest.raises(RequestError) as err:
        score_customers(state, "propensity", ["x"], max_batch=10)
    assert (err.value.field, err.value.status) == ("model", 404)


# --------------------------------------------------------------------------- targeting


def test_target_never_selects_customers_without_consent(setup):
    pipeline, _, state, _ = setup
    customers = pd.read_parquet(pipeline["state"].data("synthetic") / "customers.parquet")
    consent = customers.set_index(customers["customer_id"].astype(str))["consent_sms"]
    body = target_customers(
        state,
        campaign_id="t1",
        channel="sms",
        model="churn",
        offer_id="RET_01",
        budget={"max_contacts": 300},
        control_fraction=0.1,
        test_cell_fraction=0.05,
        ranking=NON_CAUSAL,
    )
    chosen = [c["customer_id"] for c in body["customers"]]
    assert chosen and consent.reindex(chosen).fillna(False).astype(bool).all()
    base_ids = state.models["churn"].base.features.index
    no_consent = int((~consent.reindex(base_ids).fillna(False).astype(bool)).sum())
    assert body["summary"]["excluded"]["no_consent"] == no_consent
    assert body["summary"]["contacted"] == 300
    assert body["value_per_conversion"] == pytest.approx(140.09)  # the offer's value
    again = target_customers(
        state,
        campaign_id="t1",
        channel="sms",
        model="churn",
        offer_id="RET_01",
        budget={"max_contacts": 300},
        control_fraction=0.1,
        test_cell_fraction=0.05,
        ranking=NON_CAUSAL,
    )
    assert again["customers"] == body["customers"]


@pytest.mark.parametrize(
    ("kwargs", "field", "status"),
    [
        ({"model": "churn", "offer_id": "NOPE"}, "offer_id", 404),
        ({"offer_id": "RET_01"}, "model", 404),  # no next-best-offer model to score the offer
        ({"model": "nope", "value_per_conversion": 1.0}, "model", 404),
        (
            {"model": "churn", "control_fraction": 0.6, "test_cell_fraction": 0.5},
            "test_cell_fraction",
            400,
        ),
        # a churn probability is no response probability: explicit non-causal ranking only
        ({"model": "churn"}, "model", 400),
        ({"model": "churn", "ranking": {"basis": "uplift"}}, "model", 400),
        ({"model": "churn", "ranking": {"basis": "non_causal_score"}}, "ranking.reason", 400),
        (
            {"model": "churn", "ranking": {"basis": "non_causal_score", "reason": ""}},
            "ranking.reason",
            400,
        ),
    ],
)
def test_target_errors_name_the_field(setup, kwargs, field, status):
    _, _, state, _ = setup
    with pytest.raises(RequestError) as err:
        target_customers(state, campaign_id="x", channel="email", **kwargs)
    assert (err.value.field, err.value.status) == (field, status)


def test_target_without_money_ranks_by_expected_responses(setup):
    _, _, state, _ = setup
    body = target_customers(
        state,
        campaign_id="x",
        channel="email",
        model="churn",
        budget={"max_contacts": 50},
        ranking=NON_CAUSAL,
    )
    assert (body["value_per_conversion"], body["cost_per_contact"]) == (1.0, 0.0)
    contacted = [c for c in body["customers"] if c["group"] != "control"]
    assert len(contacted) == 50
    # value at risk, labelled non-causal; the churn probabilities are never summed as responses
    assert body["summary"]["expected_profit"] == pytest.approx(sum(c["score"] for c in contacted))
    assert body["summary"]["expected_responses"] is None
    assert (body["score_kind"], body["basis"]) == ("churn_probability", BASIS_NON_CAUSAL)
    assert NON_CAUSAL["reason"] in body["warning"]


def test_a_churn_model_ranks_by_value_at_risk_minus_cost(setup):
    _, _, state, _ = setup
    body = target_customers(
        state,
        campaign_id="x",
        channel="email",
        model="churn",
        value_per_conversion=80.0,
        cost_per_contact=2.0,
        budget={"max_contacts": 40},
        ranking=NON_CAUSAL,
    )
    p = pd.Series(state.models["churn"].scores, index=state.models["churn"].base.features.index)
    for c in body["customers"]:
        assert c["score"] == pytest.approx(p.loc[c["customer_id"]])
        assert c["expected_profit"] == pytest.approx(80.0 * c["score"] - 2.0)
    profits = [c["expected_profit"] for c in body["customers"]]
    assert profits == sorted(profits, reverse=True) and min(profits) > 0
    assert body["summary"]["expected_responses"] is None


# --------------------------------------------------------------------------- reload


def test_reload_reuses_what_did_not_change_and_loads_a_moved_alias(setup):
    pipeline, settings, state, version = setup
    registry_state = pipeline["state"]
    same = build_state(settings, registry_state, previous=state)
    assert same.models["churn"] is state.models["churn"]
    assert same.bases == state.bases
    new_version = register_copy(
        registry_state, pipeline["logged"]["model_uri"], NAME, ("champion",)
    )
    try:
        moved = build_state(settings, registry_state, previous=state)
        assert moved.models["churn"].meta.version == new_version != version
        assert moved.models["churn"] is not state.models["churn"]
        assert moved.models["churn"].base is state.models["churn"].base  # snapshot unchanged
        assert state.models["churn"].meta.version == version  # the old state is untouched
    finally:
        from mlflow.tracking import MlflowClient

        uri = registry_state.tracking_uri
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.set_registered_model_alias(NAME, "champion", version)
    from serving.registry import Registry

    keys = state_keys(settings, registry_state, Registry(registry_state.tracking_uri))
    assert keys == state.keys


# --------------------------------------------------------------------------- batch


def records_as_columns(records: list[dict]) -> pd.DataFrame:
    """/score records flattened one by one: the reference the vectorised batch file must equal
    (the batch job's former per-record form)."""
    rows = []
    for rec in records:
        row = {k: v for k, v in rec.items() if k not in ("segment", "reasons")}
        seg = rec["segment"] or {}
        for key in SEGMENT_FIELDS:
            row[f"segment_{key}"] = seg.get(key)
        for i in range(N_REASONS):
            reason = rec["reasons"][i] if i < len(rec["reasons"]) else {}
            for key in ("feature", "value", "contribution"):
                row[f"reason_{i + 1}_{key}"] = reason.get(key)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    floats = ["score", "probability", "value", "gross_profit", "npv", "percentile"]
    floats += [c for c in COLUMNS if c.endswith(("_value", "_contribution"))]
    return frame.astype(dict.fromkeys(floats, "float64"))


def test_batch_file_holds_what_the_api_returns(setup, tmp_path):
    pipeline, settings, state, _ = setup
    out = score_base(pipeline["state"], settings, tmp_path / "scores.parquet")
    frame = pd.read_parquet(out)
    served = state.models["churn"]
    # the whole file equals the API's records of every customer, column by column
    reference = records_as_columns(score_records(served, np.arange(served.base.size)))
    reference.insert(0, "model", "churn")
    reference["registered_model"] = served.meta.registered_model
    reference["version"] = served.meta.version
    reference["as_of"] = served.base.as_of.isoformat()
    reference.to_parquet(tmp_path / "reference.parquet", index=False)
    assert list(frame.columns) == file_columns(reasons=True)
    pd.testing.assert_frame_equal(frame, pd.read_parquet(tmp_path / "reference.parquet"))
    assert len(frame) == served.base.size and frame["customer_id"].is_unique
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left
    ids = list(frame["customer_id"].sample(25, random_state=1))
    body = score_customers(state, "churn", ids, max_batch=100)
    rows = frame.set_index("customer_id").loc[ids]
    for rec in body["scores"]:
        row = rows.loc[rec["customer_id"]]
        assert row["score"] == rec["score"] and row["decile"] == rec["decile"]
        assert row["percentile"] == rec["percentile"]
        assert row["segment_rfm_segment"] == rec["segment"]["rfm_segment"]
        assert bool(row["segment_win_back_priority"]) == rec["segment"]["win_back_priority"]
        for i, reason in enumerate(rec["reasons"], start=1):
            assert row[f"reason_{i}_feature"] == reason["feature"]
            assert row[f"reason_{i}_contribution"] == reason["contribution"]
    assert (frame["version"] == served.meta.version).all()


def test_scores_only_file_has_no_reason_columns_and_progress_counts_the_base(setup, tmp_path):
    pipeline, settings, state, _ = setup
    served = state.models["churn"]
    calls: list[tuple[int, int]] = []
    out = score_base(
        pipeline["state"],
        settings,
        tmp_path / "s.parquet",
        reasons=False,
        progress=lambda *a: calls.append(a),
    )
    frame = pd.read_parquet(out)
    assert list(frame.columns) == file_columns(reasons=False)
    assert not [c for c in frame.columns if c.startswith("reason_")]
    n = served.base.size
    assert frame["score"].tolist() == served.scores.tolist()
    assert frame["decile"].tolist() == served.decile.tolist()
    assert calls[0] == (0, n) and calls[-1] == (n, n)
    done = [c[0] for c in calls]
    assert done == sorted(done) and {c[1] for c in calls} == {n}


def test_chunked_batch_reasons_equal_the_live_per_request_ones(setup):
    # a few hundred rows in chunks of 64 with 2 threads against the records /score computes live
    # (one thread, the whole request at once, no precomputed reasons)
    _, _, state, _ = setup
    served = state.models["churn"]
    n = 200
    base = dataclasses.replace(
        served.base,
        features=served.base.features.iloc[:n],
        segments=served.base.segments.iloc[:n] if served.base.segments is not None else None,
    )
    frame = score_frame(served.meta, served.model, base, reasons=True, chunk=64, threads=2)
    assert frame["score"].tolist() == served.scores[:n].tolist()
    live = dataclasses.replace(served.explainer, top=None).reasons(np.arange(n))
    for i, reasons in enumerate(live):
        row = frame.iloc[i]
        assert len(reasons) == N_REASONS
        for j, reason in enumerate(reasons, start=1):
            assert row[f"reason_{j}_feature"] == reason["feature"]
            assert row[f"reason_{j}_contribution"] == reason["contribution"]
            value = row[f"reason_{j}_value"]
            assert (np.isnan(value) and reason["value"] is None) or value == reason["value"]


def test_reason_columns_are_null_without_reason_codes():
    cols = _reason_frame_columns(None, 2)
    assert list(cols) == [c for c in COLUMNS if c.startswith("reason_")]
    assert all(v is None for v in cols["reason_1_feature"])
    assert np.isnan(cols["reason_3_contribution"]).all()


# --------------------------------------------------------------------------- security


def test_keys_roles_and_refusal_to_start_without_keys():
    auth = AuthSettings.from_env({"PATRON_API_KEYS": "u1, u2", "PATRON_ADMIN_KEYS": "a1"})
    assert [auth.role(k) for k in ("u1", "u2", "a1", "x", None, "")] == [
        "user",
        "user",
        "admin",
        "none",
        "none",
        "none",
    ]
    with pytest.raises(RuntimeError, match="PATRON_ALLOW_ANONYMOUS"):
        AuthSettings.from_env({}).check_startable()
    anonymous = AuthSettings.from_env({"PATRON_ALLOW_ANONYMOUS": "1"})
    anonymous.check_startable()
    assert anonymous.role(None) == "admin"
    keyed = AuthSettings.from_env({"PATRON_ALLOW_ANONYMOUS": "1", "PATRON_API_KEYS": "k"})
    assert keyed.role(None) == "none"  # keys configured: anonymous access is off


def test_middleware_answers_401_403_and_tags_request_ids():
    import asyncio

    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from serving.security import ApiKeyMiddleware

    async def ok(request):
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route(p, ok, methods=["GET", "POST"]) for p in ("/score", "/admin/reload", "/healthz")
        ]
    )
    auth = AuthSettings.from_env({"PATRON_API_KEYS": "u", "PATRON_ADMIN_KEYS": "a"})
    wrapped = ApiKeyMiddleware(app, auth)

    async def run():
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            out = [
                await client.post("/score"),
                await client.post("/score", headers={"Authorization": "Bearer wrong"}),
                await client.post("/score", headers={"Authorization": "Bearer u"}),
                await client.post("/score", headers={"X-API-Key": "u", "X-Request-ID": "abc-1"}),
                await client.post("/admin/reload", headers={"X-API-Key": "u"}),
                await client.post("/admin/reload", headers={"X-API-Key": "a"}),
                await client.get("/healthz"),
                await client.post("/score", headers={"X-API-Key": "u", "X-Request-ID": "b\tad"}),
            ]
        return out

    r = asyncio.run(run())
    assert [x.status_code for x in r] == [401, 401, 200, 200, 403, 200, 200, 200]
    assert r[0].json() == {
        "error": {
            "field": None,
            "message": "a valid API key is needed",
            "request_id": r[0].headers["x-request-id"],
        }
    }
    assert r[0].headers["www-authenticate"] == "Bearer"
    assert r[3].headers["x-request-id"] == "abc-1"
    assert r[7].headers["x-request-id"] != "b\tad" and len(r[7].headers["x-request-id"]) == 32


def test_logged_exceptions_lose_their_input_values():
    from pydantic import BaseModel

    from serving.security import REQUEST_ID, RedactingFilter

    class Body(BaseModel):
        customer_ids: list[str]

    stream = io.StringIO()
    logger = logging.getLogger("patron.test.redaction")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.addFilter(RedactingFilter())
    logger.propagate = False
    token = REQUEST_ID.set("req-42")
    try:
        try:
            Body.model_validate({"customer_ids": ["SECRET-CUSTOMER-7", 12345]})
        except Exception:
            logger.error("Exception on /score [POST]", exc_info=True)
        try:
            raise KeyError("SECRET-CUSTOMER-8")
        except KeyError:
            logger.exception("lookup failed")
    finally:
        REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "SECRET-CUSTOMER" not in text and "12345" not in text
    assert "customer_ids.1 (string_type)" in text
    assert "KeyError" in text and text.count("request_id=req-42") == 2


def test_reasons_precomputed_at_load_equal_the_live_ones(setup):
    _, _, state, _ = setup
    explainer = state.models["churn"].explainer
    assert explainer is not None and explainer.top is not None
    live = dataclasses.replace(explainer, top=None)
    last = len(explainer.inputs) - 1
    positions = np.array([3, 1, last, 40, 7])
    assert explainer.reasons(positions) == live.reasons(positions)


# --------------------------------------------------------------------------- next-best offer


@pytest.fixture(scope="module")
def offers_setup(served_pipeline, setup):
    """A next-best-offer model trained on the session data and served beside churn (``setup``
    registered the churn model)."""
    from training.run import run_experiment

    state = served_pipeline["state"]
    cfg = small_nbo_config()
    logged = run_experiment(cfg, state).logged
    name = "serving-nbo-test"
    register_copy(state, logged["model_uri"], name, ("champion",))
    raw = serving_settings(served_pipeline, NAME, reload_interval_s=0)
    raw["models"]["nbo"] = {
        "registered_model": name,
        "dataset": "synthetic",
        "feature_set": cfg.feature_set,
    }
    settings = ServingSettings.model_validate(raw)
    # the NBO model reads its own feature set's snapshot (churn's is churn_v1+context_v1)
    ensure_snapshot(state, "synthetic", cfg.feature_set)
    return cfg, build_state(settings, state), state


def nbo_inputs(cfg, state, model, as_of):
    """The NBO model's inputs at ``as_of`` as training builds them (not serving's code)."""
    from features.build import customer_inputs, transactions_source
    from features.definitions import feature_set_from_spec
    from features.sources import connect, load_dataset
    from training.families.base import RunContext
    from training.families.nbo import products_relation

    dataset = load_dataset(cfg.dataset)
    products, _ = products_relation(cfg, RunContext(state, dataset))
    fs = feature_set_from_spec(model.info["feature_set_spec"])
    con = connect(state)
    try:
        source = transactions_source(state, dataset.name)
        frame = customer_inputs(con, source, as_of, fs, model.categories, products)
    finally:
        con.close()
    return model.inputs(frame)


def test_next_best_offers_are_the_nbo_models_own_ranking(offers_setup):
    cfg, served_state, state = offers_setup
    served = served_state.models["nbo"]
    assert served.meta.kind == "nbo"
    ids = list(served.base.features.index[[0, 5, 42]])
    body = rank_offers(served_state, None, [*ids, "NOPE"], 3, "any", 100)
    assert body["model"] == "nbo" and body["unknown"] == [
        {"customer_id": "NOPE", "reason": "not in the feature snapshot"}
    ]
    inputs = nbo_inputs(cfg, state, served.model, served.base.as_of)
    inputs = inputs[inputs["customer_id"].astype(str).isin(ids)]
    expected = served.model.rank(inputs, k=3, kind="any")
    for rec in body["customers"]:
        mine = [(o["offer_id"], o["probability"]) for o in rec["offers"]]
        theirs = expected[expected["customer_id"].astype(str) == rec["customer_id"]]
        assert mine == list(zip(theirs["offer_id"], theirs["probability"], strict=True))
        assert 1 <= len(mine) <= 3
    cross = rank_offers(served_state, "nbo", ids, 2, "cross_sell", 100)
    assert all(o["kind"] == "cross_sell" for c in cross["customers"] for o in c["offers"])
    with pytest.raises(RequestError) as err:
        rank_offers(served_state, "churn", ids, 3, "any", 100)
    assert (err.value.field, err.value.status) == ("model", 404)


_NO_TRAINING = """
import json, sys
sys.modules["training"] = None  # import training -> ImportError
sys.modules["experiments"] = None
from features.store import StateDirs
from serving.settings import ServingSettings
from serving.state import build_state
settings = ServingSettings.model_validate(json.loads(sys.argv[1]))
served = build_state(settings, StateDirs.resolve(settings.home))
print(json.dumps({f: m.meta.kind for f, m in served.models.items()}))
"""


def test_serving_loads_score_and_offer_models_without_training(offers_setup, served_pipeline):
    import json
    import os
    import subprocess
    import sys

    from tests.serving.conftest import ROOT

    _, served_state, state = offers_setup
    raw = serving_settings(served_pipeline, NAME, reload_interval_s=0)
    raw["tracking_uri"] = state.tracking_uri
    raw["models"]["nbo"] = {"registered_model": "serving-nbo-test", "dataset": "synthetic"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRON_", "MLFLOW_"))}
    done = subprocess.run(
        [sys.executable, "-c", _NO_TRAINING, json.dumps(raw)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"churn": "score", "nbo": "nbo"}


def test_an_offer_campaign_ranks_on_the_offers_probability(offers_setup):
    _, served_state, _ = offers_setup
    body = target_customers(
        served_state,
        campaign_id="xs3",
        channel="email",
        offer_id="XS_cat_03",
        budget={"max_contacts": 100},
        ranking=NON_CAUSAL,
    )
    assert body["model"] == "nbo" and body["score_kind"] == "response_probability"
    # P(takes the offer | contacted) counts responses, labelled non-incremental
    assert body["basis"] == BASIS_NON_CAUSAL
    contacted = [c["score"] for c in body["customers"] if c["group"] != "control"]
    assert body["summary"]["expected_responses"] == pytest.approx(sum(contacted))
    with pytest.raises(RequestError) as err:  # a response probability is no uplift either
        target_customers(served_state, campaign_id="xs3", channel="email", offer_id="XS_cat_03")
    assert (err.value.field, err.value.status) == ("model", 400)
    assert "response probability" in err.value.message
    served = served_state.models["nbo"]
    p = pd.Series(served.campaign_scores("XS_cat_03")[0], index=served.base.features.index)
    consent = served.base.consent["email"]
    # counted under the first rule failed: consent comes before eligibility
    assert body["summary"]["excluded"]["not_eligible"] == int((p.isna() & consent).sum()) > 0
    chosen = [c["customer_id"] for c in body["customers"]]
    assert p.loc[chosen].notna().all()
    for c in body["customers"]:
        assert c["score"] == pytest.approx(p.loc[c["customer_id"]])


# --------------------------------------------------------------------------- uplift


def test_an_uplift_model_targets_on_uplift_times_value(setup):
    from models.pyfunc import ScoringModel
    from models.uplift import make_learner
    from serving.kinds import LoadContext, build_score_model, detect_kind
    from serving.registry import ModelMeta
    from serving.state import ServingState

    _, settings, state, _ = setup
    base = state.models["churn"].base
    names = list(state.models["churn"].model.feature_names)
    x = base.features[names]
    rng = np.random.default_rng(3)
    treated = rng.uniform(size=len(x)) < 0.5
    recent = (x["days_since_last_order"] < 90).to_numpy()
    # the contact helps recent customers only: a known sign of the effect
    y = rng.uniform(size=len(x)) < 0.1 + 0.3 * (treated & recent)
    wrapper = ScoringModel(
        make_learner("t", {"n_estimators": 30}).fit(x, y.astype(int), treatment=treated),
        names,
        "uplift",
    )
    kind = detect_kind(wrapper)
    assert kind.name == "uplift"
    meta = ModelMeta("uplift", "uplift", "u", "champion", "1", "r", None, {}, {}, "now")
    served = build_score_model(meta, wrapper, base, LoadContext(settings, None))
    assert served.output == "uplift"
    uplift_state = ServingState(models={"uplift": served}, shadows={}, bases={}, loaded_at="now")
    body = target_customers(
        uplift_state,
        campaign_id="u1",
        channel="email",
        model="uplift",
        value_per_conversion=50.0,
        cost_per_contact=10.0,
    )
    assert (body["score_kind"], body["basis"], body["warning"]) == ("uplift", BASIS_UPLIFT, None)
    contacted = [c["score"] for c in body["customers"] if c["group"] != "control"]
    assert body["summary"]["expected_responses"] == pytest.approx(sum(contacted))
    with pytest.raises(RequestError) as err:  # an uplift is no non-causal score
        target_customers(
            uplift_state, campaign_id="u1", channel="email", model="uplift", ranking=NON_CAUSAL
        )
    assert (err.value.field, err.value.status) == ("ranking.basis", 400)
    chosen = pd.Series({c["customer_id"]: c["score"] for c in body["customers"]})
    assert len(chosen) > 50 and (chosen * 50.0 - 10.0 > 0).all()  # uplift above 0.2
    assert recent[base.positions(list(chosen.index))].mean() > 0.8 > recent.mean()
    scored = score_customers(uplift_state, "uplift", list(chosen.index[:3]), 10)
    assert scored["kind"] == "uplift"
    assert all(s["probability"] is None and s["value"] is None for s in scored["scores"])


def test_models_info_carries_the_monitoring_summary(setup, tmp_path):
    import json
    import shutil

    from features.store import StateDirs
    from serving.base import load_base
    from serving.handlers import model_info

    pipeline, _, state, _ = setup
    src = pipeline["state"]
    copy = StateDirs.resolve(tmp_path / "home")
    snap = state.models["churn"].base.snapshot_path
    target = copy.snapshots("synthetic", "churn_v1")
    target.mkdir(parents=True)
    shutil.copy(snap, target / snap.name)
    shutil.copytree(src.data("synthetic"), copy.data("synthetic"))
    report = {
        "registered_model": NAME,
        "model_version": "1",
        "reference_as_of": "2024-09-30",
        "current_as_of": "2024-12-31",
        "created_at": "2026-11-24T00:00:00+00:00",
        "score": {"psi": 0.04, "flag": "stable"},
        "breached": {"features": []},
        "features": [{"feature": "x", "psi": 0.01}],
    }
    (target / "monitor.json").write_text(json.dumps(report))
    base = load_base(copy, "synthetic", "churn_v1")
    assert base.monitor == report
    served = dataclasses.replace(state.models["churn"], base=base)
    info = model_info(dataclasses.replace(state, models={"churn": served}), {})
    monitoring = info[0]["monitoring"]
    assert monitoring["score"] == {"psi": 0.04, "flag": "stable"}
    assert "features" not in monitoring  # the summary, not the per-feature table


# --------------------------------------------------------------------------- /score's JSON bytes


@pytest.mark.parametrize("reasons", [True, False])
@pytest.mark.parametrize(("size", "threaded"), [(100, False), (7, False), (7, True)])
def test_sliced_score_answers_are_the_response_models_own_json(setup, reasons, size, threaded):
    """/score writes its JSON in slices (serving.answers) instead of validating and dumping a
    ScoreResponse: byte for byte what the model would have written, in any slicing."""
    import asyncio

    from serving.answers import score_answer, sliced_records
    from serving.handlers import plan_score
    from serving.schemas import ScoreResponse

    _, _, state, _ = setup
    served = state.models["churn"]
    ids = [*served.base.features.index[::7][:250], "NOPE-1", "NOPE-2"]
    expected = ScoreResponse.model_validate(
        score_customers(state, "churn", ids, 10_000, reasons)
    ).model_dump_json()
    plan = plan_score(state, "churn", ids, 10_000)
    parts = asyncio.run(
        sliced_records(
            len(plan.known),
            lambda a, b: score_records(served, plan.known[a:b], reasons),
            threaded=threaded,
            size=size,
        )
    )
    assert score_answer(plan.head, parts, plan.unknown).decode() == expected
    # the records encoded at load (what /score joins when the base's reasons are precomputed)
    assert served.encoded is not None
    joined = [served.encoded.join(plan.known[a : a + size], reasons) for a in range(0, 250, size)]
    assert score_answer(plan.head, joined, plan.unknown).decode() == expected


@pytest.mark.parametrize("reasons", [True, False])
def test_store_answers_are_the_response_models_own_json(setup, reasons):
    """The online store's records, sliced and encoded, are what ScoreResponse would write."""
    import asyncio

    from serving.answers import score_answer, sliced_records
    from serving.online import (
        MemoryStore,
        encode_record,
        fetch_from_store,
        score_from_store,
        store_records,
        unknown_entries,
    )
    from serving.schemas import ScoreResponse

    _, _, state, _ = setup
    served = state.models["churn"]
    rows = np.arange(300)
    store = MemoryStore()
    meta = {
        "output": served.output,
        "registered_model": served.meta.registered_model,
        "alias": served.meta.alias,
        "version": served.meta.version,
        "snapshot_as_of": served.base.as_of.isoformat(),
    }
    records = score_records(served, rows)
    store.publish("churn", meta, [(r["customer_id"], encode_record(r)) for r in records])
    ids = ["NOPE", *[r["customer_id"] for r in records[::3]]]
    expected = ScoreResponse.model_validate(
        score_from_store(store, "churn", ids, 10_000, reasons)
    ).model_dump_json()
    head, raws = fetch_from_store(store, "churn", ids, 10_000)
    found = [raw for raw in raws if raw is not None]
    parts = asyncio.run(
        sliced_records(len(found), lambda a, b: store_records(found[a:b], reasons), size=9)
    )
    assert score_answer(head, parts, unknown_entries(ids, raws)).decode() == expected
    # with reasons, /score splices the stored JSON records: the same JSON, as the store wrote it
    if reasons:
        spliced = score_answer(head, [b",".join(found)], unknown_entries(ids, raws))
        assert json.loads(spliced) == json.loads(expected)
