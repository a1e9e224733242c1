"""The online store (issue 14, items 3-4): `patron publish` writes every customer's /score record,
replicas read them per request from one shared Redis on loopback, and a champion swap is one
switch of a key with no failed request.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from serving.online import (
    MemoryStore,
    RedisStore,
    decode_record,
    publish_family,
    score_from_store,
)
from serving.settings import ServingSettings
from tests.serving.conftest import (
    USER_KEY,
    Server,
    free_port,
    register_copy,
    server_env,
    serving_settings,
    small_beside_large,
)

NAME = "serving-online-test"
USER = {"Authorization": f"Bearer {USER_KEY}"}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real Redis server on a loopback port for this module (the CI installs redis-server)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        store = RedisStore(url)
        deadline = time.monotonic() + 20
        while True:
            try:
                store.ping()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def online(served_pipeline):
    state = served_pipeline["state"]
    version = register_copy(state, served_pipeline["logged"]["model_uri"], NAME, ("champion",))
    return served_pipeline, version


def _settings(pipeline, url: str) -> ServingSettings:
    doc = serving_settings(pipeline, NAME, reload_interval_s=0)
    doc["online_store"] = {"url": url, "families": ["churn"], "keep_previous_s": 30}
    return ServingSettings.model_validate(doc)


def _ids(pipeline, n: int) -> list[str]:
    from tests.serving.test_http import snapshot_ids

    return snapshot_ids(pipeline, n)


def test_published_records_answer_exactly_what_the_in_memory_model_answers(online):
    from serving.handlers import score_customers
    from serving.state import build_state

    pipeline, version = online
    settings = _settings(pipeline, "memory://")
    store = MemoryStore()
    pub = publish_family(pipeline["state"], settings, "churn", store)
    assert pub.meta["version"] == version and pub.meta["customers"] > 1000
    ids = [*_ids(pipeline, 30), "NO-SUCH-CUSTOMER"]
    in_memory = score_customers(
        build_state(settings.model_copy(update={"online_store": None}), pipeline["state"]),
        "churn",
        ids,
        10_000,
    )
    assert score_from_store(store, "churn", ids, 10_000) == in_memory
    no_reasons = score_from_store(store, "churn", ids[:3], 10_000, with_reasons=False)
    assert all(s["reasons"] == [] for s in no_reasons["scores"])


def test_a_publication_switches_at_once_and_the_previous_one_expires(online, redis_url):
    pipeline, _ = online
    settings = _settings(pipeline, redis_url)
    store = RedisStore(redis_url, keep_previous_s=30)
    first = publish_family(pipeline["state"], settings, "churn", store, reasons=False)
    ids = _ids(pipeline, 5)
    assert store.current("churn") == first
    second = publish_family(pipeline["state"], settings, "churn", store, reasons=False)
    assert store.current("churn").pub_id == second.pub_id != first.pub_id
    # a request that read the first publication still finds its records, for the grace period
    assert all(raw is not None for raw in store.get(first, ids))
    ttl = store._redis.ttl(f"patron:churn:{first.pub_id}:c:{ids[0]}")
    assert 0 < ttl <= 30
    assert store._redis.ttl(f"patron:churn:{second.pub_id}:c:{ids[0]}") == -1  # no expiry
    assert decode_record(store.get(second, ids[:1])[0])["customer_id"] == ids[0]


def _hammer(
    url: str, ids: list[str], stop: threading.Event, out: list, own: list | None = None
) -> None:
    """POST /score until stopped: (status, version or error) to ``out``, the status to ``own``."""
    with httpx.Client(base_url=url, headers=USER, timeout=30) as http:
        while not stop.is_set():
            try:
                r = http.post("/score", json={"customer_ids": ids})
                out.append((r.status_code, r.json().get("version", "") if r.is_success else r.text))
            except httpx.HTTPError as exc:
                out.append((0, type(exc).__name__))
                continue
            if own is not None:
                own.append(r.status_code)


def _scores_counted(url: str) -> float:
    """The 200 answers to POST /score a server's /metrics reports."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "patron_http_requests_total"
        and s.labels.get("route") == "/score"
        and s.labels.get("status") == "200"
    )


@pytest.mark.server
def test_two_replicas_share_one_redis_and_a_swap_fails_no_request(online, redis_url, tmp_path):
    from mlflow.tracking import MlflowClient

    pipeline, version = online
    state = pipeline["state"]
    settings = _settings(pipeline, redis_url)
    store = RedisStore(redis_url)
    publish_family(state, settings, "churn", store)
    doc = settings.model_dump(mode="json")
    ids = _ids(pipeline, 20)
    replicas = [Server(server_env(doc, state.home), tmp_path / "r0.log")]
    try:
        replicas[0].wait_ready()
        for _ in range(3):  # counted by replica 0 before replica 1 starts on the same machine
            httpx.post(
                f"{replicas[0].url}/score", json={"customer_ids": ids}, headers=USER, timeout=30
            )
        replicas.append(Server(server_env(doc, state.home), tmp_path / "r1.log"))
        replicas[1].wait_ready()
        answers = [
            httpx.post(f"{s.url}/score", json={"customer_ids": ids}, headers=USER, timeout=30)
            for s in replicas
        ]
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].json() == answers[1].json()
        assert answers[0].json()["version"] == version
        info = httpx.get(f"{replicas[0].url}/models", headers=USER, timeout=30).json()["models"]
        assert [m["served_from"] for m in info] == ["online_store"]

        # the swap: a new champion, published while both replicas answer
        new = register_copy(state, pipeline["logged"]["model_uri"], NAME, ("challenger",))
        client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
        client.set_registered_model_alias(NAME, "champion", new)
        stop, results = threading.Event(), []
        heard: dict[str, list[int]] = {s.url: [] for s in replicas}
        workers = [
            threading.Thread(target=_hammer, args=(s.url, ids[:5], stop, results, heard[s.url]))
            for s in replicas
            for _ in range(2)
        ]
        for w in workers:
            w.start()
        time.sleep(0.5)
        publish_family(state, settings, "churn", store)
        time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join(timeout=60)
        statuses = [code for code, _ in results]
        assert len(results) > 20 and statuses.count(200) == len(statuses), set(results)
        versions = [v for _, v in results]
        assert version in versions and versions[-1] == new
        after = [
            httpx.post(f"{s.url}/score", json={"customer_ids": ids}, headers=USER, timeout=30)
            for s in replicas
        ]
        assert {a.json()["version"] for a in after} == {new}
        # each replica's /metrics still holds what it served (BentoML empties the metrics
        # folder of its home at start: the replicas must not share one)
        for i, srv in enumerate(replicas):  # replica 0: its first three, answers, the swap, after
            served = (3 if i == 0 else 0) + 2 + heard[srv.url].count(200)
            assert _scores_counted(srv.url) == served, (i, served)
    finally:
        for srv in replicas:
            srv.stop()


# --------------------------------------------------------------------------- large requests


@pytest.fixture(scope="module")
def large(online, redis_url):
    """The churn family published with reasons in the real Redis (its own key prefix), 1 000
    of its customers and the store that reads them."""
    pipeline, _ = online
    store = RedisStore(redis_url, prefix="large", keep_previous_s=30)
    publish_family(pipeline["state"], _settings(pipeline, redis_url), "churn", store)
    ids = _ids(pipeline, 1000)
    assert len(ids) == 1000
    return store, ids


def _records_part(answer: bytes) -> bytes:
    """The bytes of an answer's ``scores`` list items."""
    return answer.split(b',"scores":[', 1)[1].rsplit(b'],"unknown":', 1)[0]


def _answer_before(store, ids: list[str], reasons: bool) -> bytes:
    """What /score of a store family sent before the reads moved to the event loop (the
    service's own assembly at 7ba4536: a synchronous read, then the same splice or slices)."""
    import asyncio

    from serving.answers import score_answer, sliced_records
    from serving.online import fetch_from_store, store_records, unknown_entries

    head, raws = fetch_from_store(store, "churn", ids, 10_000)
    found = [raw for raw in raws if raw is not None]
    if reasons:
        return score_answer(head, [b",".join(found)], unknown_entries(ids, raws))
    parts = asyncio.run(sliced_records(len(found), lambda a, b: store_records(found[a:b], False)))
    return score_answer(head, parts, unknown_entries(ids, raws))


@pytest.mark.parametrize("reasons", [True, False])
def test_a_large_store_answer_is_the_per_customer_answers_joined(large, reasons, monkeypatch):
    """A 1 000-customer /score from Redis, read in steps on the event loop, is byte for byte what
    the service sent before, and the concatenation of the 1-customer answers."""
    import asyncio
    import json

    from serving.online import score_bytes_from_store
    from serving.schemas import ScoreResponse

    store, ids = large
    asked = [*ids[:500], "NO-SUCH-1", *ids[500:], "NO-SUCH-2"]
    monkeypatch.setattr("serving.online.FETCH_SLICE", 37)  # steps that do not divide 1 002

    async def answers() -> tuple[bytes, list[bytes]]:
        big = await score_bytes_from_store(store, "churn", asked, 10_000, reasons)
        singles = [
            await score_bytes_from_store(store, "churn", [cid], 10_000, reasons) for cid in asked
        ]
        # the service reads small requests synchronously (inline_max_ids): the same bytes
        inline = [
            await score_bytes_from_store(store, "churn", [cid], 10_000, reasons, 32)
            for cid in asked[::50]
        ]
        assert inline == singles[::50]
        return big, singles

    big, singles = asyncio.run(answers())
    assert big == _answer_before(store, asked, reasons)
    assert _records_part(big) == b",".join(p for p in map(_records_part, singles) if p)
    whole = json.loads(big)
    parts = [json.loads(s) for s in singles]
    assert whole["scores"] == [r for p in parts for r in p["scores"]]
    assert (
        whole["unknown"]
        == [u for p in parts for u in p["unknown"]]
        == [
            {"customer_id": c, "reason": "not in the feature snapshot"}
            for c in ("NO-SUCH-1", "NO-SUCH-2")
        ]
    )
    assert [r["customer_id"] for r in whole["scores"]] == ids
    assert all(bool(r["reasons"]) == reasons for r in whole["scores"])
    assert {k: v for k, v in whole.items() if k not in ("scores", "unknown")} == {
        k: v for k, v in parts[0].items() if k not in ("scores", "unknown")
    }
    assert ScoreResponse.model_validate(whole).model_dump_json().encode() == big


def test_small_store_requests_beside_large_ones_answer_their_own_customers(large):
    """On one event loop, 200 1-customer reads interleaved with four 1 000-customer ones read in
    steps (the server's situation): every answer is the one the same request gets alone."""
    import asyncio

    from serving.online import score_bytes_from_store

    store, ids = large
    small = ids[::5]

    async def run() -> None:
        alone_big = await score_bytes_from_store(store, "churn", ids, 10_000)
        alone = {c: await score_bytes_from_store(store, "churn", [c], 10_000) for c in small}

        async def one(i: int, cid: str) -> bytes:
            await asyncio.sleep(0.0005 * i)  # spread over the large requests' reads
            # awaited reads, and (every other one) the synchronous read the service makes
            return await score_bytes_from_store(store, "churn", [cid], 10_000, True, 32 * (i % 2))

        bigs = [score_bytes_from_store(store, "churn", ids, 10_000) for _ in range(4)]
        smalls = [one(i, c) for i, c in enumerate(small)]
        got = await asyncio.gather(*bigs, *smalls)
        assert got[:4] == [alone_big] * 4
        assert got[4:] == [alone[c] for c in small]

    asyncio.run(run())


@pytest.mark.server
def test_a_replica_answers_small_requests_while_large_ones_run(online, large, redis_url, tmp_path):
    """A store-backed replica under 1 000-customer requests from two clients answers every
    1-customer request from four others, each with its own customer's record."""
    from serving.online import score_from_store

    pipeline, _ = online
    store, ids = large
    doc = _settings(pipeline, redis_url).model_dump(mode="json")
    doc["online_store"]["prefix"] = "large"
    srv = Server(server_env(doc, pipeline["state"].home), tmp_path / "r.log")
    expected_big = score_from_store(store, "churn", ids, 10_000)
    small = ids[::10]
    records = score_from_store(store, "churn", small, 10_000)["scores"]
    expected = dict(zip(small, records, strict=True))
    try:
        big_out, small_out = small_beside_large(
            srv,
            ids,
            small,
            lambda r: r.json() == expected_big,
            lambda r: r.json()["scores"] if r.is_success else r.text,
        )
        assert big_out == [True] * 12
        assert len(small_out) == 3 * len(small)
        assert all(status == 200 for _, status, _ in small_out), small_out
        assert all(scores == [expected[cid]] for cid, _, scores in small_out)
        assert "Traceback" not in srv.log_text()
    finally:
        srv.stop()


def test_the_store_client_parses_replies_in_c() -> None:
    """hiredis (a dependency through ``redis[hiredis]``): redis-py parses a large MGET reply in
    C — without it a 1,000-customer read costs twice the replica's CPU (docs/serving.md)."""
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE, "hiredis is not importable: install the project's dependencies"
