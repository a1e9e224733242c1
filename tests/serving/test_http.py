"""The BentoML service over real HTTP on a loopback port (one server for the module).

Scores, keys, 4xx naming the field, consent in /target, /models, the batch file against the API,
a bounded schemathesis run, clean logs, shadow scoring, and a champion swap under load.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from models.decisions.value import BASIS_NON_CAUSAL
from serving.settings import ServingSettings
from tests.serving.conftest import (
    ADMIN_KEY,
    NON_CAUSAL,
    USER_KEY,
    Server,
    register_copy,
    server_env,
    serving_settings,
)

pytestmark = pytest.mark.server

NAME = "serving-http-test"
USER = {"Authorization": f"Bearer {USER_KEY}"}
ADMIN = {"X-API-Key": ADMIN_KEY}
SENTINEL = "ZQX-SENTINEL-7731"  # an id that must never reach the server log


@pytest.fixture(scope="module")
def server(served_pipeline, tmp_path_factory):
    state = served_pipeline["state"]
    version = register_copy(
        state, served_pipeline["logged"]["model_uri"], NAME, ("champion", "challenger")
    )
    settings = serving_settings(
        served_pipeline,
        NAME,
        reload_interval_s=1.0,
        shadow_log_every_s=0.5,
        model={"shadow_alias": "challenger"},
    )
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    srv = Server(server_env(settings, state.home), log_path)
    try:
        srv.wait_ready()
        yield srv, served_pipeline, version
    finally:
        srv.stop()
    assert srv.proc.returncode is not None


def post(srv: Server, path: str, body: object, headers: dict | None = None, **kw) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, headers=headers or USER, timeout=60, **kw)


def snapshot_ids(pipeline, n: int) -> list[str]:
    from features.build import latest_snapshot

    _, path = latest_snapshot(pipeline["state"], "synthetic", pipeline["cfg"].feature_set)
    return (
        pd.read_parquet(path, columns=["customer_id"])["customer_id"].astype(str).head(n).tolist()
    )


# --------------------------------------------------------------------------- contract with the CLI


def test_the_cli_serving_env_is_valid_settings(served_pipeline):
    from patron.cli import served_experiment
    from serving.cli import serving_env

    served = served_experiment(served_pipeline["cfg"].config_path)
    env = serving_env(served, served_pipeline["state"])
    settings = ServingSettings.model_validate(json.loads(env["PATRON_SERVING"]))
    assert settings.models["churn"].alias == "champion"


# --------------------------------------------------------------------------- scores


def test_scores_known_and_lists_unknown_ids(server):
    srv, pipeline, version = server
    ids = snapshot_ids(pipeline, 3)
    response = post(srv, "/score", {"customer_ids": [*ids, "NOPE"], "model": "churn"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["customer_id"] for s in body["scores"]] == ids
    for s in body["scores"]:
        assert 0.0 <= s["probability"] <= 1.0 and s["probability"] == s["score"]
        assert 0.0 < s["percentile"] <= 100.0 and 1 <= s["decile"] <= 10
        assert len(s["reasons"]) == 3 and s["segment"]["rfm_segment"]
    assert body["unknown"] == [{"customer_id": "NOPE", "reason": "not in the feature snapshot"}]
    assert body["version"] == version and body["alias"] == "champion"
    assert response.headers["x-request-id"]


def test_requests_need_a_valid_key_and_admin_actions_an_admin_key(server):
    srv, _, _ = server
    body = {"customer_ids": ["C1"]}
    assert httpx.post(f"{srv.url}/score", json=body, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-a-key"}
    assert post(srv, "/score", body, headers=wrong).status_code == 401
    assert post(srv, "/score", body, headers={"X-API-Key": USER_KEY}).status_code == 200
    assert httpx.get(f"{srv.url}/models", timeout=10).status_code == 401
    assert post(srv, "/admin/reload", None).status_code == 403
    for path in ("/healthz", "/readyz", "/livez", "/metrics", "/docs.json"):
        assert httpx.get(f"{srv.url}{path}", timeout=10).status_code == 200, path


#: A valid /target body for the served churn model: it ranks by churn only explicitly.
CHURN_TARGET = {"campaign_id": "c", "channel": "sms", "model": "churn", "ranking": NON_CAUSAL}

BAD = [
    ("/score", {"customer_ids": []}, 400, "customer_ids"),
    ("/score", {"customer_ids": "C1"}, 400, "customer_ids"),
    ("/score", {"customer_ids": [1.5, None]}, 400, "customer_ids"),
    ("/score", {}, 400, "customer_ids"),
    ("/score", {"customer_ids": ["C1"], "model": "no-such-model"}, 404, "model"),
    ("/score", {"customer_ids": ["C1", SENTINEL, SENTINEL]}, 400, "customer_ids"),
    ("/score", {"customer_ids": [SENTINEL, 7]}, 400, "customer_ids"),
    ("/score", {"customer_ids": ["C1"], "reasons": 0}, 400, "reasons"),
    ("/score", {"customer_ids": [f"X{i}" for i in range(10_001)]}, 400, "customer_ids"),
    ("/next-best-offer", {"customer_ids": ["C1"]}, 404, "model"),
    ("/next-best-offer", {"customer_ids": ["C1"], "k": 0}, 400, "k"),
    ("/next-best-offer", {"customer_ids": ["C1"], "kind": "sideways"}, 400, "kind"),
    ("/target", {**CHURN_TARGET, "channel": "fax"}, 400, "channel"),
    ("/target", {**CHURN_TARGET, "campaign_id": "c d"}, 400, "campaign_id"),
    ("/target", {**CHURN_TARGET, "model": "x"}, 404, "model"),
    ("/target", {**CHURN_TARGET, "offer_id": "NO"}, 404, "offer_id"),
    ("/target", {"campaign_id": "c", "channel": "sms", "offer_id": "RET_01"}, 404, "model"),
    ("/target", {**CHURN_TARGET, "control_fraction": 0.9}, 400, "control_fraction"),
    ("/target", {**CHURN_TARGET, "budget": {"max_contacts": -1}}, 400, "max_contacts"),
    ("/target", {**CHURN_TARGET, "audience": {"segments": ["Nope"]}}, 400, "segments"),
    ("/target", {**CHURN_TARGET, "audience": {"colour": "red"}}, 400, "colour"),
    ("/target", {**CHURN_TARGET, "cost_per_contact": "1"}, 400, "cost_per_contact"),
    # a churn probability is no response probability: it ranks only when the request says so
    ("/target", {"campaign_id": "c", "channel": "sms", "model": "churn"}, 400, "model"),
    ("/target", {**CHURN_TARGET, "ranking": {"basis": "uplift"}}, 400, "model"),
    ("/target", {**CHURN_TARGET, "ranking": {"basis": "non_causal_score"}}, 400, "ranking"),
    ("/target", {**CHURN_TARGET, "ranking": {**NON_CAUSAL, "reason": " "}}, 400, "ranking"),
    ("/target", {**CHURN_TARGET, "ranking": {**NON_CAUSAL, "why": "x"}}, 400, "ranking.why"),
]


@pytest.mark.parametrize(("path", "payload", "status", "field"), BAD)
def test_bad_requests_get_4xx_naming_the_field(server, path, payload, status, field):
    srv, _, _ = server
    response = post(srv, path, payload)
    assert response.status_code == status, response.text
    assert field in response.text


def test_nan_is_refused_naming_the_field(server):
    srv, _, _ = server
    raw = json.dumps({**CHURN_TARGET, "audience": {"min_score": 0.5}}).replace("0.5", "NaN")
    response = httpx.post(
        f"{srv.url}/target",
        content=raw,
        headers={**USER, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400 and "min_score" in response.text


def test_unmatched_routes_and_methods_answer_in_the_error_shape(server):
    """The framework's own answers (no route matched: a path id holding a newline, an unknown
    path; a method the route lacks) come back as JSON in the one error shape, as documented."""
    srv, _, _ = server
    answers = [
        httpx.get(f"{srv.url}/campaigns/a%0Ab/customers", headers=USER, timeout=30),
        httpx.get(f"{srv.url}/no-such-route", headers=USER, timeout=30),
        httpx.put(f"{srv.url}/score", headers=USER, json={}, timeout=30),
    ]
    assert [a.status_code for a in answers] == [404, 404, 405]
    for answer in answers:
        assert answer.headers["content-type"].startswith("application/json"), answer.text
        error = answer.json()["error"]
        assert error["field"] is None and error["message"] and error["request_id"]
        assert error["request_id"] == answer.headers["x-request-id"]


# --------------------------------------------------------------------------- campaigns


def test_target_honours_consent_and_keeps_groups_stable(server):
    srv, pipeline, _ = server
    spec = {
        "campaign_id": "spring-retention",
        "channel": "phone",
        "model": "churn",
        "offer_id": "RET_01",
        "audience": {"lifecycle_stages": ["lapsing", "lapsed", "active", "loyal"]},
        "budget": {"max_contacts": 200, "max_cost": 10_000.0},
        "control_fraction": 0.2,
        "test_cell_fraction": 0.1,
        "ranking": NON_CAUSAL,
    }
    first = post(srv, "/target", spec)
    assert first.status_code == 200, first.text
    body = first.json()
    # ranked by value at risk, labelled so: no churn probability is summed as responses
    assert (body["score_kind"], body["basis"]) == ("churn_probability", BASIS_NON_CAUSAL)
    assert body["summary"]["expected_responses"] is None
    assert NON_CAUSAL["reason"] in body["warning"]
    customers = pd.read_parquet(pipeline["state"].data("synthetic") / "customers.parquet")
    consent = customers.set_index(customers["customer_id"].astype(str))["consent_phone"]
    chosen = [c["customer_id"] for c in body["customers"]]
    assert consent.reindex(chosen).fillna(False).astype(bool).all()
    summary = body["summary"]
    assert summary["contacted"] == 200 and summary["spend"] == pytest.approx(400.0)
    assert summary["control"] > 0 and summary["test_cell"] > 0
    assert sum(summary["excluded"].values()) + summary["selected"] == summary["base"]
    assert summary["excluded"]["no_consent"] > 0
    again = post(srv, "/target", {**spec, "budget": {"max_contacts": 400}}).json()
    groups = {c["customer_id"]: c["group"] for c in again["customers"]}
    assert all(groups[c["customer_id"]] == c["group"] for c in body["customers"])
    summary_only = post(srv, "/target", {**spec, "include_customers": False}).json()
    assert summary_only["customers"] == [] and summary_only["summary"] == summary


def test_target_refuses_a_churn_probability_as_a_response_probability(server):
    """Without an explicit non-causal ranking a churn model is a 400 naming `model` that says
    what to do; a non-causal ranking without a reason is a 400 naming `ranking`."""
    srv, _, _ = server
    plain = {"campaign_id": "c", "channel": "email", "model": "churn", "offer_id": "RET_01"}
    response = post(srv, "/target", plain)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "model" and error["request_id"] == response.headers["x-request-id"]
    for needle in ("churn probability", "uplift model", "POST /campaigns/plan", "non_causal_score"):
        assert needle in error["message"], error
    response = post(srv, "/target", {**plain, "ranking": {"basis": "non_causal_score"}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "ranking" and "reason" in error["message"]
    allowed = post(srv, "/target", {**plain, "ranking": NON_CAUSAL, "include_customers": False})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["basis"] == BASIS_NON_CAUSAL


def test_models_lists_versions_dates_metrics_and_snapshot(server):
    srv, pipeline, version = server
    response = httpx.get(f"{srv.url}/models", headers=USER, timeout=30)
    assert response.status_code == 200, response.text
    (info,) = response.json()["models"]
    assert (info["family"], info["registered_model"], info["version"]) == ("churn", NAME, version)
    assert info["alias"] == "champion" and info["trained_at"]
    assert info["metrics"]["test_roc_auc"] == pytest.approx(pipeline["result"].metrics["roc_auc"])
    assert info["snapshot_as_of"] == "2024-12-31" and info["customers"] > 0
    assert info["shadow"] is None  # challenger and champion are the same version


def test_batch_file_equals_the_api(server, tmp_path):
    from serving.batch import score_base

    srv, pipeline, _ = server
    settings = ServingSettings.model_validate(serving_settings(pipeline, NAME))
    frame = pd.read_parquet(score_base(pipeline["state"], settings, tmp_path / "s.parquet"))
    ids = frame["customer_id"].sample(40, random_state=7).tolist()
    body = post(srv, "/score", {"customer_ids": ids}).json()
    rows = frame.set_index("customer_id").loc[ids]
    for rec in body["scores"]:
        row = rows.loc[rec["customer_id"]]
        assert (row["score"], row["percentile"], row["decile"]) == (
            rec["score"],
            rec["percentile"],
            rec["decile"],
        )
        assert row["segment_lifecycle_stage"] == rec["segment"]["lifecycle_stage"]
        got = [(row[f"reason_{i}_feature"], row[f"reason_{i}_contribution"]) for i in (1, 2, 3)]
        assert got == [(r["feature"], r["contribution"]) for r in rec["reasons"]]


# --------------------------------------------------------------------------- fuzzing, logs


def test_a_method_not_allowed_names_every_method_the_path_serves(server):
    """/campaigns/{id}/rollout is served by a GET and a POST route: a 405 there says both (the
    framework named only the first route's), in the error shape."""
    srv, _, _ = server
    got = httpx.request("OPTIONS", f"{srv.url}/campaigns/p1/rollout", headers=USER, timeout=60)
    assert got.status_code == 405
    allowed = {m.strip() for m in got.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    assert got.json()["error"]["message"] == "Method Not Allowed"
    only_get = httpx.request("PUT", f"{srv.url}/campaigns/p1/readout", headers=USER, timeout=60)
    assert only_get.status_code == 405 and "POST" not in only_get.headers["allow"]


def test_schemathesis_finds_no_server_error(server, tmp_path):
    srv, _, _ = server
    st = Path(sys.executable).with_name("schemathesis")
    if not st.exists() and shutil.which("schemathesis") is None:
        pytest.skip("schemathesis is not installed (dev extra)")
    report = tmp_path / "report.xml"
    # /target may answer a schema-valid body 400: a money budget needs a cost per contact, which
    # can come from the offer's data, so OpenAPI cannot state the rule
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        '[[operations]]\ninclude-path = "/target"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]\n'
        # a schema-valid plan can name a model that is not served, or break a campaign's own
        # cross-field rules: a 400 naming the field
        '[[operations]]\ninclude-path = "/campaigns/plan"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]\n'
    )
    cmd = [
        str(st if st.exists() else shutil.which("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{srv.url}/docs.json",
        # every check, response_schema_conformance included: the service publishes a corrected
        # /docs.json (serving.openapi) whose error schema matches BentoML's own 400 body
        "--checks",
        "all",
        "--max-time",
        "30",  # a bounded smoke run in the suite; longer fuzzing belongs outside it
        "--workers",
        "2",
        "--seed",
        "20251124",
        "-H",
        f"Authorization: Bearer {USER_KEY}",
        "--exclude-path",
        "/admin/reload",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert "Server error" not in out and "ST101" not in out, out[-4000:]
    assert done.returncode == 0, out[-4000:]
    assert "[500]" not in srv.log_text()


def test_logs_hold_no_customer_ids_or_input_values(server):
    srv, _, _ = server
    post(srv, "/score", {"customer_ids": [SENTINEL, 7]})
    post(srv, "/score", {"customer_ids": [SENTINEL]})
    time.sleep(0.5)
    text = srv.log_text()
    assert "Exception on /score" in text  # the validation failure was logged ...
    assert SENTINEL not in text and "input_value" not in text  # ... without the input
    assert "request_id=" in text


# --------------------------------------------------------------------------- registry


def _hammer(srv: Server, ids: list[str], stop: threading.Event, out: list[tuple[int, str]]):
    with httpx.Client(headers=USER, timeout=60) as client:
        while not stop.is_set():
            try:
                r = client.post(f"{srv.url}/score", json={"customer_ids": ids})
                out.append((r.status_code, r.json().get("version", "") if r.is_success else ""))
            except httpx.HTTPError as exc:
                out.append((0, type(exc).__name__))


def test_shadow_is_never_returned_and_a_champion_swap_fails_no_request(server):
    from mlflow.tracking import MlflowClient

    srv, pipeline, version = server
    state = pipeline["state"]
    ids = snapshot_ids(pipeline, 20)
    before = post(srv, "/score", {"customer_ids": ids}).json()
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    new = register_copy(state, pipeline["logged"]["model_uri"], NAME, ("challenger",))
    r = post(srv, "/admin/reload", None, headers=ADMIN, params={"force": "true"})
    assert r.status_code == 200 and r.json()["swapped"] is True
    assert r.json()["versions"] == {"churn": version}
    shadowed = post(srv, "/score", {"customer_ids": ids}).json()
    assert shadowed == before  # the challenger's scores are never returned
    info = httpx.get(f"{srv.url}/models", headers=USER, timeout=30).json()["models"][0]
    assert info["shadow"]["version"] == new and info["shadow"]["customers"] >= 20
    assert info["shadow"]["mean_abs_diff"] == 0.0  # same artefacts under both aliases

    stop, results = threading.Event(), []
    workers = [
        threading.Thread(target=_hammer, args=(srv, ids[:5], stop, results)) for _ in range(4)
    ]
    for w in workers:
        w.start()
    time.sleep(0.5)
    client.set_registered_model_alias(NAME, "champion", new)
    swap = post(srv, "/admin/reload", None, headers=ADMIN)
    time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    assert swap.status_code == 200
    statuses = [s for s, _ in results]
    assert len(results) > 20 and statuses.count(200) == len(statuses), set(results)
    versions = [v for _, v in results]
    assert versions[-1] == new and version in versions
    after = post(srv, "/score", {"customer_ids": ids}).json()
    assert after["version"] == new


def test_polling_follows_the_alias_without_an_admin_call(server):
    from mlflow.tracking import MlflowClient

    srv, pipeline, version = server
    uri = pipeline["state"].tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_registered_model_alias(NAME, "champion", version)
    deadline = time.monotonic() + 20
    served = None
    while time.monotonic() < deadline:
        served = httpx.get(f"{srv.url}/models", headers=USER, timeout=30).json()["models"][0]
        if served["version"] == version:
            break
        time.sleep(0.5)
    assert served is not None and served["version"] == version


# --------------------------------------------------------------------------- reloads and metrics


def _models(srv: Server) -> dict:
    return httpx.get(f"{srv.url}/models", headers=USER, timeout=30).json()


def test_a_forced_reload_rebuilds_every_model(server):
    srv, _, _ = server
    post(srv, "/admin/reload", None, headers=ADMIN)  # settle whatever earlier tests moved
    before = _models(srv)["models"][0]["loaded_at"]
    time.sleep(1.1)  # loaded_at has one-second resolution
    same = post(srv, "/admin/reload", None, headers=ADMIN)
    assert same.status_code == 200 and same.json()["swapped"] is False
    assert _models(srv)["models"][0]["loaded_at"] == before  # nothing moved: nothing rebuilt
    forced = post(srv, "/admin/reload", None, headers=ADMIN, params={"force": "true"})
    assert forced.status_code == 200 and forced.json()["swapped"] is True
    assert _models(srv)["models"][0]["loaded_at"] > before  # the model itself was reloaded


def test_a_failed_reload_keeps_serving_and_says_so_on_readyz_and_models(server, tmp_path):
    from mlflow.tracking import MlflowClient

    srv, pipeline, _ = server
    uri = pipeline["state"].tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    served = str(client.get_model_version_by_alias(NAME, "champion").version)
    ids = snapshot_ids(pipeline, 3)
    # a version whose files do not exist: what a half-written or deleted artefact store gives
    broken = client.create_model_version(NAME, str(tmp_path / "deleted-model"))
    client.set_registered_model_alias(NAME, "champion", broken.version)
    try:
        r = post(srv, "/admin/reload", None, headers=ADMIN)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["field"] == "reload" and "still serving" in error["message"]
        assert error["request_id"] == r.headers["x-request-id"]
        assert httpx.get(f"{srv.url}/readyz", timeout=10).status_code == 503
        status = _models(srv)["reload"]
        assert status["ok"] is False and status["error"] and status["failures"] >= 1
        scored = post(srv, "/score", {"customer_ids": ids})  # the old models still answer
        assert scored.status_code == 200 and scored.json()["version"] == served
    finally:
        client.set_registered_model_alias(NAME, "champion", served)
    r = post(srv, "/admin/reload", None, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert httpx.get(f"{srv.url}/readyz", timeout=10).status_code == 200
    assert _models(srv)["reload"]["ok"] is True


def test_metrics_keep_one_series_per_route_whatever_the_paths(server):
    from prometheus_client.parser import text_string_to_metric_families

    from serving.metrics import ROUTES

    def requests_series(text: str) -> dict[tuple[str, str, str], float]:
        (family,) = [
            f for f in text_string_to_metric_families(text) if f.name == "patron_http_requests"
        ]
        return {
            (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for s in family.samples
            if s.name == "patron_http_requests_total"
        }

    srv, pipeline, _ = server
    with httpx.Client(base_url=srv.url, timeout=10) as http:
        http.post("/score", json={"customer_ids": snapshot_ids(pipeline, 1)}, headers=USER)
        before = requests_series(http.get("/metrics").text)
        for i in range(200):  # scanners and typos: unknown paths, mostly without a key
            http.get(f"/probe-{i:03d}/x", headers=USER if i % 4 == 0 else None)
        text = http.get("/metrics").text
    assert "probe-" not in text
    after = requests_series(text)
    routes = {route for route, _, _ in after}
    assert routes <= set(ROUTES) | {"other", "/static_content"}, routes
    assert ("/score", "POST", "200") in before
    # 200 requests to 200 paths: counted under "other", in at most one new series per status
    # (whatever the module's other tests asked before: the series are bounded by the code)
    new = set(after) - set(before)
    assert {route for route, _, _ in new} <= {"other", "/metrics"}, new
    assert len(new) <= 3, new
    other = sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == "other")
    assert other == 200


def test_every_documented_route_is_a_metrics_route(server):
    from serving.metrics import ROUTES

    srv, _, _ = server
    paths = set(httpx.get(f"{srv.url}/docs.json", timeout=30).json()["paths"])
    assert paths <= set(ROUTES), paths - set(ROUTES)
