"""POST /contactable (issue 14, item 3): which of these customers may be contacted on a channel.

One server on a loopback port serves the session's churn model twice over one base: `churn` in
memory and `stored` from a real Redis (published by `patron publish`'s function). The base is a
copy of the session's data whose customers table says consent the hard way: "yes" / "no"
strings, a null, a customer with no row. The route answers from the served base's consent (only
an explicit yes), agrees with /target's consent filter on the same base, and the store answers
what memory answers (small requests and large ones read in steps); the store down is a 503.
"""

from __future__ import annotations

import contextlib
import shutil

import httpx
import pandas as pd
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from features.store import StateDirs
from serving.online import RedisStore, publish_family
from serving.settings import ServingSettings
from tests.serving.conftest import (
    NON_CAUSAL,
    USER_KEY,
    Server,
    register_copy,
    server_env,
    serving_settings,
)
from tests.serving.test_online import redis_url  # noqa: F401 - the module's Redis fixture

pytestmark = pytest.mark.server

NAME = "serving-contactable-test"
USER = {"Authorization": f"Bearer {USER_KEY}"}
CHANNELS = ("email", "sms", "phone")
HEAD = ("model", "registered_model", "alias", "version", "as_of", "channel")


def _own_home(pipeline, home) -> tuple[StateDirs, dict[str, str]]:
    """A copy of the session's synthetic data and snapshot whose customers table gives email
    consent as strings: "yes", "no", a null, and no row at all for one customer."""
    state, feature_set = pipeline["state"], pipeline["cfg"].feature_set
    own = StateDirs.resolve(home)
    shutil.copytree(state.data("synthetic"), own.data("synthetic"))
    shutil.copytree(
        state.snapshots("synthetic", feature_set), own.snapshots("synthetic", feature_set)
    )
    snapshot = sorted(own.snapshots("synthetic", feature_set).glob("as_of=*.parquet"))[-1]
    ids = pd.read_parquet(snapshot, columns=["customer_id"])["customer_id"].astype(str)
    picked = dict(zip(("yes", "no", "null", "absent"), ids.iloc[:4], strict=True))
    path = own.data("synthetic") / "customers.parquet"
    customers = pd.read_parquet(path)
    cid = customers["customer_id"].astype(str)
    email = customers["consent_email"].map({True: "yes", False: "no"}).astype(object)
    email[cid == picked["yes"]] = "yes"
    email[cid == picked["no"]] = "no"
    email[cid == picked["null"]] = None
    customers["consent_email"] = email
    customers[cid != picked["absent"]].to_parquet(path, index=False)
    return own, picked


@pytest.fixture(scope="module")
def server(served_pipeline, redis_url, tmp_path_factory):  # noqa: F811
    state = served_pipeline["state"]
    version = register_copy(state, served_pipeline["logged"]["model_uri"], NAME, ("champion",))
    home = tmp_path_factory.mktemp("contactable") / "home"
    own, picked = _own_home(served_pipeline, home)
    doc = serving_settings(served_pipeline, NAME, reload_interval_s=0)
    doc["home"] = str(own.home)
    doc["tracking_uri"] = state.tracking_uri  # the session's registry, our own base
    doc["models"]["stored"] = dict(doc["models"]["churn"])
    doc["online_store"] = {"url": redis_url, "families": ["stored"], "keep_previous_s": 30}
    settings = ServingSettings.model_validate(doc)
    store = RedisStore(redis_url)
    publish_family(own, settings, "stored", store, reasons=False)
    srv = Server(server_env(settings.model_dump(mode="json"), own.home), home.parent / "srv.log")
    try:
        srv.wait_ready()
        yield {"srv": srv, "own": own, "picked": picked, "version": version, "store": store}
    finally:
        srv.stop()


def _post(srv: Server, path: str, body: object, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, headers=headers or USER, timeout=60)


def _base_ids(own: StateDirs, feature_set: str) -> list[str]:
    snapshot = sorted(own.snapshots("synthetic", feature_set).glob("as_of=*.parquet"))[-1]
    return pd.read_parquet(snapshot, columns=["customer_id"])["customer_id"].astype(str).tolist()


def _granted(own: StateDirs, channel: str) -> set[str]:
    """The customers table read independently: only an explicit yes (True or "yes")."""
    table = pd.read_parquet(own.data("synthetic") / "customers.parquet")
    values = table[f"consent_{channel}"].astype(object)
    yes = values.map(lambda v: str(v).lower() in ("true", "yes")).astype(bool)
    return set(table.loc[yes, "customer_id"].astype(str))


def test_yes_no_null_and_absent_and_unknown_ids(server, served_pipeline):
    srv, picked = server["srv"], server["picked"]
    ids = [picked["null"], "NOPE", picked["yes"], picked["absent"], picked["no"]]
    r = _post(srv, "/contactable", {"customer_ids": ids, "channel": "email", "model": "churn"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {*HEAD, "contactable", "not_contactable", "unknown"}
    assert body["contactable"] == [picked["yes"]]
    # a null and a customer the customers table does not hold are both "no", in request order
    assert body["not_contactable"] == [picked["null"], picked["absent"], picked["no"]]
    assert body["unknown"] == ["NOPE"]
    assert (body["model"], body["channel"]) == ("churn", "email")
    assert (body["registered_model"], body["alias"]) == (NAME, "champion")
    assert body["version"] == server["version"] and body["as_of"]
    # the whole base against the customers table read independently, every channel
    base = _base_ids(server["own"], served_pipeline["cfg"].feature_set)
    for channel in CHANNELS:
        r = _post(srv, "/contactable", {"customer_ids": base, "channel": channel, "model": "churn"})
        assert r.status_code == 200, r.text
        granted = _granted(server["own"], channel)
        assert r.json()["contactable"] == [c for c in base if c in granted], channel
        assert r.json()["not_contactable"] == [c for c in base if c not in granted], channel
        assert r.json()["unknown"] == []
        assert 0 < len(granted) < len(base)


def test_errors_name_the_field_in_the_one_shape(server):
    srv = server["srv"]
    ok = {"customer_ids": ["C1"], "channel": "email", "model": "churn"}
    cases = [
        ({**ok, "channel": "pigeon"}, 400, "channel"),
        ({**ok, "chanel": "email"}, 400, "chanel"),
        ({**ok, "customer_ids": ["C1", "C1"]}, 400, "customer_ids"),
        ({**ok, "customer_ids": []}, 400, "customer_ids"),
        ({**ok, "model": "nope"}, 404, "model"),
        # two families are served: without `model` the request must name the base to read
        ({"customer_ids": ["C1"], "channel": "email"}, 400, "model"),
    ]
    for body, status, field in cases:
        r = _post(srv, "/contactable", body)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert error["field"] == field and error["request_id"] == r.headers["x-request-id"], body
    pigeon = _post(srv, "/contactable", cases[0][0]).json()["error"]["message"]
    assert all(ch in pigeon for ch in CHANNELS), pigeon
    refused = httpx.post(f"{srv.url}/contactable", json=ok, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["field"] is None
    wrong = _post(srv, "/contactable", ok, headers={"X-API-Key": "not-a-key"})
    assert wrong.status_code == 401
    assert _post(srv, "/contactable", ok, headers={"X-API-Key": USER_KEY}).status_code == 200
    metrics = httpx.get(f"{srv.url}/metrics", timeout=10).text  # counted under its route
    counted = {
        (s.labels["route"], s.labels["status"])
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "patron_http_requests_total"
    }
    assert {("/contactable", "200"), ("/contactable", "400"), ("/contactable", "404")} <= counted
    assert "NOPE" not in srv.log_text() and "Traceback" not in srv.log_text()


def test_the_route_and_targets_consent_filter_never_disagree(server, served_pipeline):
    """/target over the whole base, every customer with consent eligible (cost 0, no filter):
    it excludes for no consent exactly the route's not_contactable, and selects only
    contactable customers."""
    srv = server["srv"]
    base = _base_ids(server["own"], served_pipeline["cfg"].feature_set)
    for channel in CHANNELS:
        asked = _post(
            srv, "/contactable", {"customer_ids": base, "channel": channel, "model": "churn"}
        )
        answer = asked.json()
        target = _post(
            srv,
            "/target",
            {
                "campaign_id": f"consent-{channel}",
                "channel": channel,
                "model": "churn",
                "ranking": NON_CAUSAL,
                "cost_per_contact": 0.0,
                "control_fraction": 0.0,
                "test_cell_fraction": 0.0,
            },
        )
        assert target.status_code == 200, target.text
        summary = target.json()["summary"]
        selected = {c["customer_id"] for c in target.json()["customers"]}
        assert summary["excluded"]["no_consent"] == len(answer["not_contactable"]), channel
        assert selected <= set(answer["contactable"]), channel
        assert summary["base"] - summary["excluded"]["no_consent"] == len(answer["contactable"])
        assert len(selected) == summary["selected"] > 0


def test_the_store_answers_what_memory_answers_and_503_when_it_is_down(server, served_pipeline):
    srv, picked = server["srv"], server["picked"]
    base = _base_ids(server["own"], served_pipeline["cfg"].feature_set)
    small = [picked["null"], "NOPE", picked["yes"], picked["absent"], picked["no"]]
    large = [*base[::7], "NOPE"]  # > INLINE_MAX_IDS: read from Redis in steps
    for ids in (small, large):
        for channel in CHANNELS:
            body = {"customer_ids": ids, "channel": channel}
            memory = _post(srv, "/contactable", {**body, "model": "churn"})
            stored = _post(srv, "/contactable", {**body, "model": "stored"})
            assert memory.status_code == stored.status_code == 200, stored.text
            assert stored.json()["model"] == "stored"
            assert {**stored.json(), "model": "churn"} == memory.json(), (len(ids), channel)
    assert _post(
        srv, "/contactable", {"customer_ids": small, "channel": "email", "model": "stored"}
    ).json()["contactable"] == [picked["yes"]]
    with contextlib.suppress(redis.ConnectionError):  # the store goes down
        server["store"]._redis.shutdown(nosave=True)
    for ids in (small, large):
        r = _post(srv, "/contactable", {"customer_ids": ids, "channel": "sms", "model": "stored"})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["field"] == "model"
    # the family in memory still answers
    assert (
        _post(
            srv, "/contactable", {"customer_ids": small, "channel": "sms", "model": "churn"}
        ).status_code
        == 200
    )
    assert "Traceback" not in srv.log_text()


def test_a_store_error_never_shows_the_stores_password():
    """A 503's message reaches API clients: the store URL in it is without its credentials."""
    import asyncio

    from serving.online import Publication, StoreUnavailable, redacted_url
    from tests.serving.conftest import free_port

    assert redacted_url("redis://:s3cret@10.0.0.5:6379/0") == "redis://***@10.0.0.5:6379/0"
    assert redacted_url("rediss://u:s3cret@h/1") == "rediss://***@h/1"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    store = RedisStore(f"redis://:s3cret@127.0.0.1:{free_port()}/0", timeout_s=0.5)
    publication = Publication("stored", "p1", {})
    for read in (
        store.ping,
        lambda: store.current("stored"),
        lambda: store.get(publication, ["A"]),
        lambda: asyncio.run(store.acurrent("stored")),
        lambda: asyncio.run(store.aget(publication, ["A"])),
    ):
        with pytest.raises(StoreUnavailable) as err:
            read()
        assert "s3cret" not in str(err.value) and "***@127.0.0.1" in str(err.value)
