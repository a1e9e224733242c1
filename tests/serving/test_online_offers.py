"""The online store's offer ranks and consent flags (issue 14, item 3): `patron publish` of a
next-best-offer family writes every customer's ranked offers, every publication carries each
customer's consent flags, and a store-backed replica answers /next-best-offer (and who may be
contacted on a channel) from the store exactly as the in-memory models do.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from serving.errors import RequestError
from serving.online import (
    CONSENT,
    MemoryStore,
    RedisStore,
    StoreUnavailable,
    contactable_from_store,
    decode_record,
    encode_record,
    fetch_from_store,
    offers_from_store,
    publish_family,
)
from serving.settings import ServingSettings
from tests.serving.conftest import (
    ROOT,
    USER_KEY,
    Server,
    ensure_snapshot,
    register_copy,
    server_env,
    serving_settings,
    small_nbo_config,
)
from tests.serving.test_online import redis_url  # noqa: F401 - the module's Redis fixture

CHURN = "online-offers-churn-test"
NBO = "online-offers-nbo-test"
USER = {"Authorization": f"Bearer {USER_KEY}"}
KINDS = ("any", "cross_sell", "up_sell")


@pytest.fixture(scope="module")
def offers(served_pipeline):
    """A next-best-offer model trained on the session data, served beside churn, and the
    in-memory state of both (what a replica without a store answers)."""
    from serving.state import build_state
    from training.run import run_experiment

    state = served_pipeline["state"]
    register_copy(state, served_pipeline["logged"]["model_uri"], CHURN, ("champion",))
    cfg = small_nbo_config()
    logged = run_experiment(cfg, state).logged
    version = register_copy(state, logged["model_uri"], NBO, ("champion",))
    ensure_snapshot(state, "synthetic", cfg.feature_set)
    raw = serving_settings(served_pipeline, CHURN, reload_interval_s=0)
    raw["models"]["nbo"] = {
        "registered_model": NBO,
        "dataset": "synthetic",
        "feature_set": cfg.feature_set,
    }
    settings = ServingSettings.model_validate(raw)
    return {
        "pipeline": served_pipeline,
        "state": state,
        "settings": settings,
        "memory": build_state(settings, state),
        "version": version,
    }


def _with_store(offers, url: str, families=("churn", "nbo")) -> ServingSettings:
    doc = offers["settings"].model_dump(mode="json")
    doc["online_store"] = {"url": url, "families": list(families), "keep_previous_s": 30}
    return ServingSettings.model_validate(doc)


def _ids(offers, n: int, step: int = 37) -> list[str]:
    index = offers["memory"].models["nbo"].base.features.index
    return [str(c) for c in index[::step][:n]]


def _assert_offers_equal(store, offers, ids) -> None:
    from serving.handlers import rank_offers

    for kind in KINDS:
        for k in (1, 3, 20):
            expected = rank_offers(offers["memory"], "nbo", ids, k, kind, 10_000)
            assert offers_from_store(store, "nbo", ids, k, kind, 10_000) == expected, (kind, k)


def _assert_consent_equal(store, family, base, ids) -> None:
    positions = base.positions(ids)
    for channel, flags in base.consent.items():
        answer = contactable_from_store(store, family, [*ids, "NOPE"], channel, 10_000)
        granted = [cid for cid, pos in zip(ids, positions, strict=True) if flags[pos]]
        assert answer["contactable"] == granted, channel
        assert answer["no_consent"] == [c for c in ids if c not in granted]
        assert answer["unknown"] == [
            {"customer_id": "NOPE", "reason": "not in the feature snapshot"}
        ]


def test_published_offers_and_consent_answer_what_the_in_memory_models_answer(offers):
    store = MemoryStore()
    pub = publish_family(offers["state"], _with_store(offers, "memory://"), "nbo", store)
    base = offers["memory"].models["nbo"].base
    assert pub.meta["kind"] == "nbo" and pub.meta["version"] == offers["version"]
    assert pub.meta["customers"] == base.size and pub.meta["parts"] == ["c", CONSENT]
    ids = [*_ids(offers, 60), "NOPE"]
    _assert_offers_equal(store, offers, ids)
    # every base customer has a record; one without an eligible offer has an empty list
    records = [decode_record(r) for r in store.get(pub, list(base.features.index))]
    assert all(r is not None for r in records)
    assert max(len({o[0] for o in r["offers"]}) for r in records) <= 2 * 20
    # consent: exactly the served base's flags, and the synthetic base says no to some
    _assert_consent_equal(store, "nbo", base, _ids(offers, 200, step=11))
    assert all(0 < flags.sum() < base.size for flags in base.consent.values())


def test_a_customer_without_consent_is_never_contactable(offers):
    """Whatever the record says beside it, only an explicit true for the channel is consent."""
    store = MemoryStore()
    records = [(c, encode_record({"offers": []})) for c in ("A", "B", "C", "D", "E")]
    consent = {
        "A": {"email": True, "sms": False, "phone": False},
        "B": {"email": False, "sms": True, "phone": True},
        "C": {"sms": True},  # no email flag: no consent
        "D": {"email": "yes", "sms": 1, "phone": None},  # not a JSON true: no consent
    }  # E: no consent record at all
    meta = {
        "kind": "nbo",
        "registered_model": "m",
        "version": "1",
        "snapshot_as_of": "2024-12-31",
        "consent_channels": ["email", "sms", "phone"],
    }
    store.publish(
        "nbo", meta, records, {CONSENT: [(c, encode_record(f)) for c, f in consent.items()]}
    )
    ids = ["A", "B", "C", "D", "E"]
    email = contactable_from_store(store, "nbo", ids, "email", 100)
    assert email["contactable"] == ["A"] and email["no_consent"] == ["B", "C", "D"]
    assert [u["customer_id"] for u in email["unknown"]] == ["E"]
    assert contactable_from_store(store, "nbo", ids, "sms", 100)["contactable"] == ["B", "C"]
    assert contactable_from_store(store, "nbo", ids, "phone", 100)["contactable"] == ["B"]
    with pytest.raises(RequestError) as err:
        contactable_from_store(store, "nbo", ids, "pigeon", 100)
    assert (err.value.field, err.value.status) == ("channel", 400)
    # a publication written before consent was published says so (a 503, never a guess)
    store.publish("old", meta, records)
    with pytest.raises(StoreUnavailable, match="no consent flags"):
        contactable_from_store(store, "old", ids, "email", 100)


def test_a_scorers_publication_carries_consent_and_routes_refuse_the_other_kind(offers):
    store = MemoryStore()
    settings = _with_store(offers, "memory://")
    publish_family(offers["state"], settings, "churn", store, reasons=False)
    publish_family(offers["state"], settings, "nbo", store)
    base = offers["memory"].models["churn"].base
    _assert_consent_equal(store, "churn", base, _ids(offers, 100, step=13))
    ids = _ids(offers, 3)
    with pytest.raises(RequestError) as err:  # as in memory: /score of a nbo model is a 400
        fetch_from_store(store, "nbo", ids, 100)
    assert (err.value.field, err.value.status) == ("model", 400)
    with pytest.raises(RequestError) as err:  # and /next-best-offer of a scorer a 404
        offers_from_store(store, "churn", ids, 3, "any", 100)
    assert (err.value.field, err.value.status) == ("model", 404)
    for bad, field in (({"k": 21}, "k"), ({"kind": "retention"}, "kind")):
        args = {"k": 3, "kind": "any", **bad}
        with pytest.raises(RequestError) as err:
            offers_from_store(store, "nbo", ids, args["k"], args["kind"], 100)
        assert err.value.field == field and err.value.status == 400


def test_offers_and_consent_through_a_real_redis(offers, redis_url):  # noqa: F811
    settings = _with_store(offers, redis_url)
    store = RedisStore(redis_url, prefix="offers", keep_previous_s=30)
    first = publish_family(offers["state"], settings, "nbo", store)
    ids = [*_ids(offers, 40), "NOPE"]
    _assert_offers_equal(store, offers, ids)
    _assert_consent_equal(store, "nbo", offers["memory"].models["nbo"].base, _ids(offers, 50))
    # a new publication switches both parts at once; the old consent keys expire with it
    second = publish_family(offers["state"], settings, "nbo", store)
    assert store.current("nbo").pub_id == second.pub_id != first.pub_id
    ttl = store._redis.ttl(f"offers:nbo:{first.pub_id}:{CONSENT}:{ids[0]}")
    assert 0 < ttl <= 30
    assert store._redis.ttl(f"offers:nbo:{second.pub_id}:{CONSENT}:{ids[0]}") == -1


def test_a_large_offers_request_read_in_steps_answers_the_same(offers, redis_url, monkeypatch):  # noqa: F811
    """/next-best-offer of many ids reads the store on the event loop in steps (as /score): the
    answer is the one the synchronous read makes, for every kind."""
    import asyncio

    from serving.online import fetch_offers_async, offers_answer

    store = RedisStore(redis_url, prefix="offers-large", keep_previous_s=30)
    publish_family(offers["state"], _with_store(offers, redis_url), "nbo", store)
    ids = [*_ids(offers, 200, step=3), "NOPE"]
    monkeypatch.setattr("serving.online.FETCH_SLICE", 23)

    async def read_all() -> list:
        return [await fetch_offers_async(store, "nbo", ids, 3, kind, 10_000) for kind in KINDS]

    for kind, (publication, raws) in zip(KINDS, asyncio.run(read_all()), strict=True):
        expected = offers_from_store(store, "nbo", ids, 3, kind, 10_000)
        assert offers_answer(publication, ids, raws, 3, kind) == expected, kind
        assert len(expected["customers"]) == 200


_LEAN = """
import json, sys
from serving.online import MemoryStore, encode_record, offers_from_store, contactable_from_store
import serving.service
from serving.settings import ServingSettings
from serving.state import build_state
from features.store import StateDirs
settings = ServingSettings.model_validate(json.loads(sys.argv[1]))
build_state(settings, StateDirs.resolve(settings.home))
store = MemoryStore()
meta = {"kind": "nbo", "registered_model": "m", "version": "1", "snapshot_as_of": "2024-12-31",
        "consent_channels": ["email"]}
store.publish("nbo", meta, [("A", encode_record({"offers": [["X", "up_sell", 0.5, 1.0]]}))],
              {"k": [("A", encode_record({"email": True}))]})
assert offers_from_store(store, "nbo", ["A"], 3, "any", 10)["customers"][0]["offers"]
assert contactable_from_store(store, "nbo", ["A"], "email", 10)["contactable"] == ["A"]
heavy = ("sklearn", "scipy", "duckdb", "pandas", "mlflow", "xgboost")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_a_store_backed_replica_answers_offers_and_consent_without_heavy_imports(tmp_path):
    """The service, an all-store state and the offer and consent reads import none of
    scikit-learn, SciPy, DuckDB, pandas, MLflow or XGBoost (the replica's lean start)."""
    import json
    import os

    doc = {
        "home": str(tmp_path),
        "models": {"nbo": {"registered_model": "m", "dataset": "synthetic"}},
        "online_store": {"url": "memory://", "families": ["nbo"]},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRON_", "MLFLOW_"))}
    done = subprocess.run(
        [sys.executable, "-c", _LEAN, json.dumps(doc)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.server
def test_a_replica_answers_next_best_offer_from_redis(offers, redis_url, tmp_path):  # noqa: F811
    """A replica serving both families from one Redis answers /next-best-offer (named, and by
    default) as the in-memory model does, and 409 for /target of a store family."""
    from serving.handlers import rank_offers
    from serving.schemas import OffersResponse

    state = offers["state"]
    settings = _with_store(offers, redis_url)
    store = RedisStore(redis_url)
    publish_family(state, settings, "churn", store, reasons=False)
    publish_family(state, settings, "nbo", store)
    srv = Server(server_env(settings.model_dump(mode="json"), state.home), tmp_path / "r.log")
    try:
        srv.wait_ready()
        ids = [*_ids(offers, 25), "NOPE"]
        large = [*_ids(offers, 60, step=7), "NOPE"]  # > INLINE_MAX_IDS: read in steps
        for body in (
            {"customer_ids": ids},
            {"customer_ids": ids, "model": "nbo", "k": 5, "kind": "cross_sell"},
            {"customer_ids": large, "model": "nbo", "k": 2, "kind": "up_sell"},
        ):
            ids = body["customer_ids"]
            got = httpx.post(f"{srv.url}/next-best-offer", json=body, headers=USER, timeout=30)
            assert got.status_code == 200, got.text
            expected = rank_offers(
                offers["memory"], "nbo", ids, body.get("k", 3), body.get("kind", "any"), 10_000
            )
            assert got.json() == OffersResponse.model_validate(expected).model_dump(mode="json")
        refused = httpx.post(
            f"{srv.url}/target",
            json={"campaign_id": "c1", "channel": "email", "model": "nbo", "offer_id": "X"},
            headers=USER,
            timeout=30,
        )
        assert refused.status_code == 409 and refused.json()["error"]["field"] == "model"
        wrong = httpx.post(
            f"{srv.url}/next-best-offer",
            json={"customer_ids": ids[:2], "model": "churn"},
            headers=USER,
            timeout=30,
        )
        assert wrong.status_code == 404 and wrong.json()["error"]["field"] == "model"
        assert "Traceback" not in srv.log_text()
    finally:
        srv.stop()
