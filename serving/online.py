"""The online store: per-customer /score records written by the batch job, read per request.

A publication is every customer's record of one family (a score model's /score record: score,
probability or value, percentile, decile, segment, reasons; a next-best-offer model's ranked
offers) and every customer's consent flags per channel, plus its metadata (registered model,
alias, version, snapshot date, size), written whole under a new publication id; then one ``SET``
of the family's ``current`` key switches every replica to it at once. A request reads ``current``
once and then only that publication's keys, so it never mixes two; the previous publication is
kept for ``keep_previous_s`` so requests that started on it finish.

Two implementations: ``MemoryStore`` (in process: the embedded default and tests) and
``RedisStore`` (a real Redis server shared by several replicas). With a store, a replica's
start-up no longer reads the snapshot or loads the model of a store-backed family: it connects.
On a server, a large request reads with ``acurrent`` / ``aget`` on the event loop (redis-py's
asyncio client): awaited, its records in steps of ``FETCH_SLICE`` keys, the loop serving other
requests between two; a small one reads synchronously on the loop (two sub-millisecond round
trips), so it never waits behind a large one's steps in the middle of its own (issue 14, item 5;
docs/serving.md).

Keys (prefix ``patron``, configurable): ``{p}:{family}:current`` → publication id;
``{p}:{family}:{pub}:meta`` → JSON metadata; ``{p}:{family}:{pub}:c:{customer_id}`` → the JSON
record (part ``c``: the /score record, or the offers record of a next-best-offer family);
``{p}:{family}:{pub}:k:{customer_id}`` → the customer's consent flags (part ``k``:
``{"email": true, "sms": false, "phone": false}``, only an explicit yes of the customers table is
true; POST /contactable reads them). Values are customer data, so the store is as private as
the feature snapshot (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from serving.errors import RequestError, check_ids

#: Records written per round trip while publishing.
PUBLISH_CHUNK = 10_000
#: Keys read per MGET when a request reads on the event loop (``aget``): decoding a reply costs
#: redis-py ~12 µs of Python per key, so a 1 000-customer read is ten steps of ~1.3 ms, and the
#: loop serves other requests between two (issue 14, item 5).
FETCH_SLICE = 100
#: Redis connections of a replica's event loop at most (requests beyond wait for one).
ASYNC_CONNECTIONS = 32
#: The part of a publication holding each customer's record (/score record, or ranked offers).
RECORDS = "c"
#: The part holding each customer's consent flags per channel.
CONSENT = "k"
#: Offers kept per customer and offer kind in a next-best-offer publication (the largest k).
OFFERS_MAX_K = 20
#: The ``kind`` values of /next-best-offer (``any``: every offer kind).
OFFER_KINDS = ("any", "cross_sell", "up_sell")


class StoreUnavailable(RuntimeError):
    """The online store cannot be reached or holds no publication of a family."""


@dataclass(frozen=True)
class Publication:
    """One family's published records: where they are and what produced them."""

    family: str
    pub_id: str
    meta: Mapping[str, Any]


#: Further parts of a publication beside its records: part name -> (customer_id, bytes) pairs.
Parts = Mapping[str, Iterable[tuple[str, bytes]]]


class OnlineStore(Protocol):
    def publish(
        self,
        family: str,
        meta: Mapping[str, Any],
        records: Iterable[tuple[str, bytes]],
        parts: Parts | None = None,
    ) -> Publication: ...

    def current(self, family: str) -> Publication | None: ...

    def get(
        self, publication: Publication, customer_ids: Sequence[str], part: str = RECORDS
    ) -> list[bytes | None]: ...

    async def acurrent(self, family: str) -> Publication | None:
        """``current`` for a request on the event loop: it never blocks the loop."""
        ...

    async def aget(
        self, publication: Publication, customer_ids: Sequence[str], part: str = RECORDS
    ) -> list[bytes | None]:
        """``get`` for a request on the event loop, in steps: other requests run between two."""
        ...

    def ping(self) -> None: ...


def new_pub_id() -> str:
    """Sortable by time, unique across replicas and jobs."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def encode_record(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


def decode_record(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(raw)
    return out


def _chunks(items: Iterable[tuple[str, bytes]], size: int) -> Iterator[list[tuple[str, bytes]]]:
    chunk: list[tuple[str, bytes]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class MemoryStore:
    """The in-process store (one process; the embedded default and tests)."""

    def __init__(self, keep_previous_s: float = 600.0) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], dict[str, dict[str, bytes]]] = {}
        self._meta: dict[tuple[str, str], dict[str, Any]] = {}
        self._current: dict[str, str] = {}
        self.keep_previous_s = keep_previous_s

    def publish(
        self,
        family: str,
        meta: Mapping[str, Any],
        records: Iterable[tuple[str, bytes]],
        parts: Parts | None = None,
    ) -> Publication:
        pub = new_pub_id()
        data = {RECORDS: dict(records), **{name: dict(p) for name, p in (parts or {}).items()}}
        with self._lock:
            self._records[(family, pub)] = data
            self._meta[(family, pub)] = {
                **meta,
                "customers": len(data[RECORDS]),
                "parts": sorted(data),
            }
            previous = self._current.get(family)
            self._current[family] = pub  # the switch
            if previous is not None:  # in process, a reference held by a request is enough
                self._records.pop((family, previous), None)
        return Publication(family, pub, self._meta[(family, pub)])

    def current(self, family: str) -> Publication | None:
        with self._lock:
            pub = self._current.get(family)
            return None if pub is None else Publication(family, pub, self._meta[(family, pub)])

    def get(
        self, publication: Publication, customer_ids: Sequence[str], part: str = RECORDS
    ) -> list[bytes | None]:
        with self._lock:
            data = self._records.get((publication.family, publication.pub_id), {}).get(part, {})
        return [data.get(cid) for cid in customer_ids]

    async def acurrent(self, family: str) -> Publication | None:
        return self.current(family)

    async def aget(
        self, publication: Publication, customer_ids: Sequence[str], part: str = RECORDS
    ) -> list[bytes | None]:
        return self.get(publication, customer_ids, part)

    def ping(self) -> None:
        return None


class RedisStore:
    """Records in a Redis server shared by every replica (``redis://host:port/db``)."""

    def __init__(
        self,
        url: str,
        prefix: str = "patron",
        keep_previous_s: float = 600.0,
        timeout_s: float = 2.0,
    ) -> None:
        import redis

        self.url = url
        self.shown_url = redacted_url(url)  # in messages, which reach the API's 503 answers
        self.prefix = prefix
        self.keep_previous_s = keep_previous_s
        self.timeout_s = timeout_s
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._meta_cache: dict[tuple[str, str], Publication] = {}
        # the asyncio client of the event loop that serves requests (made there, on first use)
        self._aredis: Any = None
        self._aloop: asyncio.AbstractEventLoop | None = None

    def _key(self, family: str, *parts: str) -> str:
        return ":".join((self.prefix, family, *parts))

    def ping(self) -> None:
        import redis

        try:
            self._redis.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"online store {self.shown_url}: {exc}") from exc

    def publish(
        self,
        family: str,
        meta: Mapping[str, Any],
        records: Iterable[tuple[str, bytes]],
        parts: Parts | None = None,
    ) -> Publication:
        pub = new_pub_id()
        n = 0
        for chunk in _chunks(records, PUBLISH_CHUNK):
            self._redis.mset({self._key(family, pub, RECORDS, cid): raw for cid, raw in chunk})
            n += len(chunk)
        for name, items in (parts or {}).items():
            for chunk in _chunks(items, PUBLISH_CHUNK):
                self._redis.mset({self._key(family, pub, name, cid): raw for cid, raw in chunk})
        full_meta = {**meta, "customers": n, "parts": sorted({RECORDS, *(parts or {})})}
        self._redis.set(self._key(family, pub, "meta"), json.dumps(full_meta))
        previous = self._redis.getset(self._key(family, "current"), pub)  # the switch
        if previous is not None:
            self._expire(family, _text(previous))
        return Publication(family, pub, full_meta)

    def _expire(self, family: str, pub: str) -> None:
        """Let the previous publication go after the grace period (in-flight requests)."""
        ttl = max(1, int(self.keep_previous_s))
        pattern = self._key(family, pub, "*")
        pipe = self._redis.pipeline(transaction=False)
        for n, key in enumerate(self._redis.scan_iter(match=pattern, count=10_000), start=1):
            pipe.expire(key, ttl)
            if n % PUBLISH_CHUNK == 0:
                pipe.execute()
        pipe.execute()

    def current(self, family: str) -> Publication | None:
        import redis

        try:
            return self._current(family)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"online store {self.shown_url}: {exc}") from exc

    def _current(self, family: str) -> Publication | None:
        pub = self._redis.get(self._key(family, "current"))
        if pub is None:
            return None
        pub_id = _text(pub)
        cached = self._meta_cache.get((family, pub_id))  # a publication never changes
        if cached is not None:
            return cached
        return self._cache_meta(family, pub_id, self._redis.get(self._key(family, pub_id, "meta")))

    def _cache_meta(self, family: str, pub_id: str, raw: Any) -> Publication:
        if raw is None:
            raise StoreUnavailable(f"publication {pub_id} of {family!r} has no metadata")
        publication = Publication(family, pub_id, json.loads(raw))
        if len(self._meta_cache) > 64:
            self._meta_cache.clear()
        self._meta_cache[(family, pub_id)] = publication
        return publication

    def get(
        self, publication: Publication, customer_ids: Sequence[str], part: str = RECORDS
    ) -> list[bytes | None]:
        if not customer_ids:
            return []
        import redis

        keys = [self._key(publication.family, publication.pub_id, part, c) for c in customer_ids]
        try:
            values = self._redis.mget(keys)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"online store {self.shown_url}: {exc}") from exc
        return [None if v is None else _raw(v) for v in values]

    # ---------------------------------------------------------------- on the event loop

    def _async_client(self) -> Any:
        """The asyncio client of the running loop (a client's connections belong to one loop:
        a server has one; tests that run several loops get one each)."""
        loop = asyncio.get_running_loop()
        if self._aloop is not loop:
            import redis.asyncio

            # a request waits for a free connection (up to the timeout) rather than failing:
            # the default pool raises past 100 connections, which a burst of queued requests
            # reaches; the reads are short, so a few connections serve hundreds of requests/s
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                max_connections=ASYNC_CONNECTIONS,
                timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
            )
            self._aredis = redis.asyncio.Redis.from_pool(pool)
            self._aloop = loop
        return self._aredis

    async def acurrent(self, family: str) -> Publication | None:
        import redis

        client = self._async_client()
        try:
            pub = await client.get(self._key(family, "current"))
            if pub is None:
                return None
            pub_id = _text(pub)
            cached = self._meta_cache.get((family, pub_id))  # a publication never changes
            if cached is not None:
                return cached
            raw = await client.get(self._key(family, pub_id, "meta"))
        except (redis.RedisError, OSError) as exc:  # OSError: TimeoutError too
            raise StoreUnavailable(f"online store {self.shown_url}: {exc}") from exc
        return self._cache_meta(family, pub_id, raw)

    async def aget(
        self,
        publication: Publication,
        customer_ids: Sequence[str],
        part: str = RECORDS,
        step: int | None = None,
    ) -> list[bytes | None]:
        """The raw values of ``customer_ids``, one MGET of ``step`` keys at a time: the loop
        waits for Redis without blocking, and runs other requests between two steps."""
        import redis

        client = self._async_client()
        step = step or FETCH_SLICE
        prefix = self._key(publication.family, publication.pub_id, part, "")
        out: list[bytes | None] = []
        try:
            for start in range(0, len(customer_ids), step):
                values = await client.mget([prefix + c for c in customer_ids[start : start + step]])
                out.extend(None if v is None else _raw(v) for v in values)
        except (redis.RedisError, OSError) as exc:  # OSError: TimeoutError too
            raise StoreUnavailable(f"online store {self.shown_url}: {exc}") from exc
        return out


def redacted_url(url: str) -> str:
    """A store URL without its credentials (``redis://:secret@host:6379/0`` ->
    ``redis://***@host:6379/0``): what error messages show (a 503's body reaches API clients)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    _, at, host = netloc.rpartition("@")
    return f"{scheme}{sep}***@{host}{slash}{path}" if sep and at else url


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_store(url: str, prefix: str = "patron", keep_previous_s: float = 600.0) -> OnlineStore:
    """``redis://…`` → ``RedisStore``; ``memory://`` → a ``MemoryStore`` (one process only)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url, prefix=prefix, keep_previous_s=keep_previous_s)
    if url == "memory://":
        return MemoryStore(keep_previous_s=keep_previous_s)
    raise ValueError(f"online_store.url: {url!r} is neither redis://… nor memory://")


# --------------------------------------------------------------------------- records


def records_from_frame(frame: Any, with_reasons: bool = True) -> Iterator[tuple[str, bytes]]:
    """(customer_id, JSON /score record) per row of a batch-scoring frame (serving.batch columns:
    ``segment_<field>``, ``reason_<i>_<field>``), the shape POST /score returns per customer."""
    import math

    segment_cols = [c for c in frame.columns if c.startswith("segment_")]
    reason_ids = sorted({int(c.split("_")[1]) for c in frame.columns if c.startswith("reason_")})
    columns = ["customer_id", "score", "probability", "value", "percentile", "decile"]
    money = [c for c in ("gross_profit", "npv") if c in frame.columns]

    def clean(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return v.item() if hasattr(v, "item") else v

    rows = frame[
        columns + money + segment_cols + [c for c in frame.columns if c.startswith("reason_")]
    ].to_dict("records")
    for row in rows:
        segment = {c.removeprefix("segment_"): clean(row[c]) for c in segment_cols}
        reasons = []
        if with_reasons:
            for i in reason_ids:
                feature = clean(row.get(f"reason_{i}_feature"))
                if feature is None:
                    continue
                reasons.append(
                    {
                        "feature": feature,
                        "value": clean(row.get(f"reason_{i}_value")),
                        "contribution": clean(row.get(f"reason_{i}_contribution")),
                    }
                )
        record = {
            "customer_id": str(row["customer_id"]),
            "score": clean(row["score"]),
            "probability": clean(row["probability"]),
            "value": clean(row["value"]),
            "gross_profit": clean(row.get("gross_profit")),
            "npv": clean(row.get("npv")),
            "percentile": clean(row["percentile"]),
            "decile": int(row["decile"]),
            "segment": segment if any(v is not None for v in segment.values()) else None,
            "reasons": reasons,
        }
        yield record["customer_id"], encode_record(record)


# --------------------------------------------------------------------------- answers


def publish_family(
    state: Any,
    settings: Any,
    family: str,
    store: OnlineStore,
    reasons: bool = True,
    progress: Any = None,
) -> Publication:
    """The batch job behind `patron publish`: every customer's record of the family's champion
    (a scorer's /score record, the same values /score computes; a next-best-offer model's
    ranked offers, what /next-best-offer answers) and consent flags, written whole, then
    ``current`` switched to them."""
    if family not in settings.models:
        raise ValueError(f"--model: {family!r} is not among models {sorted(settings.models)}")
    one = settings.model_copy(
        update={
            "models": {family: settings.models[family]},
            "online_store": None,
            "campaigns": {},
            "reload_interval_s": 0,
        }
    )
    if family_kind(one, state, family) == "nbo":
        return _publish_offers(state, one, family, store, progress)
    from serving.batch import load_scorer, score_frame
    from serving.kinds import score_output

    meta, python_model, base = load_scorer(one, state, family)
    frame = score_frame(meta, python_model, base, reasons=reasons, progress=progress)
    info = publication_meta(family, meta, base, score_output(meta, python_model))
    return store.publish(
        family,
        {**info, "consent_channels": list(base.consent)},
        records_from_frame(frame, with_reasons=reasons),
        {CONSENT: consent_records(base)},
    )


def family_kind(settings: Any, state: Any, family: str) -> str:
    """The kind of the family's served model (``score``, ``uplift``, ``nbo``): the settings'
    when given, else read from the loaded model."""
    spec = settings.models[family]
    if spec.kind != "auto":
        return str(spec.kind)
    from serving.kinds import detect_kind
    from serving.registry import Registry, tracking_uri_of

    registry = Registry(tracking_uri_of(settings, state))
    version = registry.version(spec.registered_model, spec.alias)[0]
    return detect_kind(registry.load(spec.registered_model, version)).name


def _publish_offers(
    state: Any, settings: Any, family: str, store: OnlineStore, progress: Any = None
) -> Publication:
    """Publish a next-best-offer family: each customer's ranked offers and consent flags."""
    from serving.state import build_state

    served = build_state(settings, state).models[family]
    offers = served.model.offers
    info = {
        **publication_meta(family, served.meta, served.base, "offers"),
        "consent_channels": list(served.base.consent),
        "max_k": OFFERS_MAX_K,
        "offer_kinds": sorted({str(k) for k in offers["kind"]}),
    }
    return store.publish(
        family,
        info,
        offer_records(served, progress=progress),
        {CONSENT: consent_records(served.base)},
    )


def consent_records(base: Any) -> Iterator[tuple[str, bytes]]:
    """(customer_id, JSON consent flags) per base customer: ``{"email": true, ...}`` from the
    served base's consent (``serving.base``: only an explicit yes is true)."""
    channels = list(base.consent)
    columns = [base.consent[ch].tolist() for ch in channels]
    for cid, *flags in zip(base.features.index.tolist(), *columns, strict=True):
        yield str(cid), encode_record(dict(zip(channels, map(bool, flags), strict=True)))


def offer_records(
    served: Any, chunk: int = 2_000, max_k: int = OFFERS_MAX_K, progress: Any = None
) -> Iterator[tuple[str, bytes]]:
    """(customer_id, JSON offers record) per base customer of a next-best-offer model.

    The record is the customer's eligible offers in the model's "any" order, each as
    ``[offer_id, kind, probability, expected_value]``, keeping the first ``max_k`` of every
    kind: /next-best-offer of a kind is the "any" ranking's offers of that kind (the model ranks
    each pair alone, ties broken by the offer table's order), so the first k of a kind are the
    model's own top k of that kind for every k up to ``max_k``. Customers without an eligible
    offer get ``[]``."""
    import numpy as np

    n = served.base.size
    every = max(1, len(served.model.offers))
    ids = served.base.features.index
    if progress is not None:
        progress(0, n)
    for start in range(0, n, chunk):
        positions = np.arange(start, min(start + chunk, n))
        ranked = served.rank(positions, every, "any")
        for cid, offers in zip(ids[positions].tolist(), ranked, strict=True):
            seen: dict[str, int] = {}
            kept = []
            for offer in offers:
                kind = offer["kind"]
                seen[kind] = seen.get(kind, 0) + 1
                if seen[kind] <= max_k:
                    kept.append(
                        [offer["offer_id"], kind, offer["probability"], offer["expected_value"]]
                    )
            yield str(cid), encode_record({"offers": kept})
        if progress is not None:
            progress(int(positions[-1]) + 1, n)


def publication_meta(family: str, meta: Any, base: Any, output: str) -> dict[str, Any]:
    """What /score and /models say of a published family (its registry facts and base)."""
    return {
        "family": family,
        "kind": meta.kind,
        "output": output,
        "registered_model": meta.registered_model,
        "alias": meta.alias,
        "version": meta.version,
        "run_id": meta.run_id,
        "trained_at": meta.trained_at,
        "metrics": dict(meta.metrics),
        "tags": dict(meta.tags),
        "dataset": base.dataset,
        "feature_set": base.feature_set,
        "snapshot_as_of": base.as_of.isoformat(),
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }


def fetch_from_store(
    store: OnlineStore, family: str, customer_ids: Sequence[str], max_batch: int
) -> tuple[dict[str, Any], list[bytes | None]]:
    """A /score request's answer head and each id's raw record (None: unknown): one read of
    ``current``, one of the records."""
    check_ids(customer_ids, max_batch)
    publication = current_publication(store, family)
    head = score_head(publication)
    return head, store.get(publication, customer_ids)


async def fetch_from_store_async(
    store: OnlineStore, family: str, customer_ids: Sequence[str], max_batch: int
) -> tuple[dict[str, Any], list[bytes | None]]:
    """``fetch_from_store`` on the event loop: the reads are awaited (they never block the loop)
    and a large request's records come in steps of ``FETCH_SLICE``, other requests served
    between two."""
    check_ids(customer_ids, max_batch)
    publication = await store.acurrent(family)
    if publication is None:
        raise StoreUnavailable(f"no publication of {family!r} in the online store")
    head = score_head(publication)
    return head, await store.aget(publication, customer_ids)


async def score_bytes_from_store(
    store: OnlineStore,
    family: str,
    customer_ids: Sequence[str],
    max_batch: int,
    with_reasons: bool = True,
    inline_max_ids: int = 0,
) -> bytes:
    """The /score answer of a store-backed family as the JSON bytes the service sends, made on
    the event loop: up to ``inline_max_ids`` ids read synchronously (two short round trips, no
    other request's step between them), more awaited in steps; then the stored records spliced
    as they are (they are the records' JSON); without reasons they are decoded, emptied and
    encoded again in slices (``serving.answers``). What ``ScoreResponse`` of
    ``score_from_store`` dumps."""
    from serving.answers import score_answer, sliced_records

    if len(customer_ids) <= inline_max_ids:  # two short reads: no step of a large one between
        head, raws = fetch_from_store(store, family, customer_ids, max_batch)
    else:
        head, raws = await fetch_from_store_async(store, family, customer_ids, max_batch)
    found = [raw for raw in raws if raw is not None]
    unknown = unknown_entries(customer_ids, raws)
    if with_reasons:
        return score_answer(head, [b",".join(found)], unknown)
    parts = await sliced_records(len(found), lambda a, b: store_records(found[a:b], False))
    return score_answer(head, parts, unknown)


def score_head(publication: Publication) -> dict[str, Any]:
    """A /score answer's fields before its records, from the publication's metadata."""
    meta = publication.meta
    if meta.get("kind") == "nbo":  # as the in-memory /score answers a next-best-offer model
        raise RequestError("model", f"model {publication.family!r} is a nbo model, not a scorer")
    return {
        "model": publication.family,
        "kind": meta["output"],
        "registered_model": meta["registered_model"],
        "alias": meta["alias"],
        "version": meta["version"],
        "as_of": meta["snapshot_as_of"],
    }


def store_records(raws: Sequence[bytes], with_reasons: bool = True) -> list[dict[str, Any]]:
    """Decoded /score records (reasons emptied without them)."""
    records = [decode_record(raw) for raw in raws]
    if not with_reasons:
        for record in records:
            record["reasons"] = []
    return records


def unknown_entries(
    customer_ids: Sequence[str], raws: Sequence[bytes | None]
) -> list[dict[str, Any]]:
    """The answer's ``unknown`` list: ids without a record, in request order."""
    return [
        {"customer_id": cid, "reason": "not in the feature snapshot"}
        for cid, raw in zip(customer_ids, raws, strict=True)
        if raw is None
    ]


def score_from_store(
    store: OnlineStore,
    family: str,
    customer_ids: Sequence[str],
    max_batch: int,
    with_reasons: bool = True,
) -> dict[str, Any]:
    """The /score answer of a store-backed family as plain data."""
    head, raws = fetch_from_store(store, family, customer_ids, max_batch)
    found = [raw for raw in raws if raw is not None]
    return {
        **head,
        "scores": store_records(found, with_reasons),
        "unknown": unknown_entries(customer_ids, raws),
    }


def current_publication(store: OnlineStore, family: str) -> Publication:
    """The family's current publication, or ``StoreUnavailable`` (a 503) when there is none."""
    publication = store.current(family)
    if publication is None:
        raise StoreUnavailable(f"no publication of {family!r} in the online store")
    return publication


def offers_from_store(
    store: OnlineStore,
    family: str,
    customer_ids: Sequence[str],
    k: int,
    kind: str,
    max_batch: int,
) -> dict[str, Any]:
    """The /next-best-offer answer of a store-backed family as plain data: per known customer
    (request order) its first ``k`` published offers of ``kind``, ranked 1..k; what the
    in-memory model's ``rank`` answers (tested)."""
    publication = current_publication(store, family)
    check_offers_request(publication, customer_ids, k, kind, max_batch)
    return offers_answer(publication, customer_ids, store.get(publication, customer_ids), k, kind)


async def fetch_offers_async(
    store: OnlineStore,
    family: str,
    customer_ids: Sequence[str],
    k: int,
    kind: str,
    max_batch: int,
) -> tuple[Publication, list[bytes | None]]:
    """A /next-best-offer request's publication and raw records, read on the event loop
    (awaited, in steps); ``offers_answer`` makes the answer."""
    publication = await store.acurrent(family)
    if publication is None:
        raise StoreUnavailable(f"no publication of {family!r} in the online store")
    check_offers_request(publication, customer_ids, k, kind, max_batch)
    return publication, await store.aget(publication, customer_ids)


def check_offers_request(
    publication: Publication, customer_ids: Sequence[str], k: int, kind: str, max_batch: int
) -> None:
    """A /next-best-offer request against a publication: a 404 for a scorer's, 400s else."""
    meta = publication.meta
    if meta.get("kind") != "nbo":
        raise RequestError(
            "model", f"model {publication.family!r} is not a next-best-offer model", 404
        )
    check_ids(customer_ids, max_batch)
    max_k = int(meta.get("max_k") or OFFERS_MAX_K)
    if not 1 <= k <= max_k:
        raise RequestError("k", f"k must be between 1 and {max_k} (published offers per kind)")
    if kind not in OFFER_KINDS:
        raise RequestError("kind", f"kind must be one of {list(OFFER_KINDS)}")


def offers_answer(
    publication: Publication,
    customer_ids: Sequence[str],
    raws: Sequence[bytes | None],
    k: int,
    kind: str,
) -> dict[str, Any]:
    """The /next-best-offer answer from each id's raw offers record (None: unknown)."""
    meta = publication.meta
    customers = []
    for cid, raw in zip(customer_ids, raws, strict=True):
        if raw is None:
            continue
        offers = [o for o in decode_record(raw)["offers"] if kind == "any" or o[1] == kind][:k]
        customers.append(
            {
                "customer_id": cid,
                "offers": [
                    {
                        "rank": rank,
                        "offer_id": offer_id,
                        "kind": offer_kind,
                        "probability": probability,
                        "expected_value": expected_value,
                    }
                    for rank, (offer_id, offer_kind, probability, expected_value) in enumerate(
                        offers, start=1
                    )
                ],
            }
        )
    return {
        "model": publication.family,
        "registered_model": meta["registered_model"],
        "version": meta["version"],
        "as_of": meta["snapshot_as_of"],
        "kind": kind,
        "customers": customers,
        "unknown": unknown_entries(customer_ids, raws),
    }


def consent_channels(publication: Publication) -> list[str]:
    """The channels a publication holds consent flags for; ``StoreUnavailable`` (a 503) when it
    was written before consent was published."""
    if CONSENT not in (publication.meta.get("parts") or ()):
        raise StoreUnavailable(
            f"publication {publication.pub_id} of {publication.family!r} holds no consent flags "
            f"(published before they were): run `patron publish --model {publication.family}` "
            "again"
        )
    return list(publication.meta.get("consent_channels") or ())


def consent_from_store(
    store: OnlineStore, family: str, customer_ids: Sequence[str], max_batch: int
) -> tuple[Publication, list[dict[str, bool] | None]]:
    """Each id's published consent flags (None: not in the publication's base)."""
    check_ids(customer_ids, max_batch)
    publication = current_publication(store, family)
    consent_channels(publication)
    raws = store.get(publication, customer_ids, CONSENT)
    return publication, [None if raw is None else decode_record(raw) for raw in raws]


def check_channel(channel: str, channels: Sequence[str]) -> None:
    """A 400 naming ``channel`` when the base holds no consent flags for it."""
    if channel not in channels:
        raise RequestError(
            "channel",
            f"the base holds no consent flags for this channel; channel must be one of "
            f"{list(channels)}",
        )


def granted_on(flags: Mapping[str, Any] | None, channel: str) -> bool | None:
    """One published consent record read for a channel: only a JSON ``true`` is consent (a
    false, a missing flag, ``"yes"`` or ``1`` is not); None: no record (not in the base)."""
    return None if flags is None else flags.get(channel) is True


def split_contactable(
    customer_ids: Sequence[str], granted: Sequence[bool | None]
) -> tuple[list[str], list[str], list[str]]:
    """The ids split by their consent on a channel, each in request order: contactable (True),
    not contactable (False), unknown (None: not in the base). The one rule of the in-memory
    and store answers."""
    yes: list[str] = []
    no: list[str] = []
    unknown: list[str] = []
    for cid, ok in zip(customer_ids, granted, strict=True):
        (unknown if ok is None else yes if ok else no).append(cid)
    return yes, no, unknown


def contactable_answer(
    head: Mapping[str, Any],
    channel: str,
    customer_ids: Sequence[str],
    granted: Sequence[bool | None],
) -> dict[str, Any]:
    """The POST /contactable answer (``serving.schemas.ContactableResponse``): the served
    base's facts (``head``: model, registered_model, alias, version, as_of) and the ids split
    by ``split_contactable``; nothing else of a customer."""
    yes, no, unknown = split_contactable(customer_ids, granted)
    return {
        **head,
        "channel": channel,
        "contactable": yes,
        "not_contactable": no,
        "unknown": unknown,
    }


def contactable_from_store(
    store: OnlineStore,
    family: str,
    customer_ids: Sequence[str],
    channel: str,
    max_batch: int,
) -> dict[str, Any]:
    """Which of the ids may be contacted on ``channel``, from the published consent flags.

    Only a published ``true`` for the channel is contactable: a false, a missing flag or a
    customer outside the publication's base never is (the rule of ``serving.targeting``:
    missing = no consent). Plain data (``no_consent``; ``unknown`` with reasons, as /score);
    POST /contactable answers ``contactable_async``'s."""
    publication, flags = consent_from_store(store, family, customer_ids, max_batch)
    check_channel(channel, list(publication.meta.get("consent_channels") or ()))
    yes, no, unknown = split_contactable(customer_ids, [granted_on(f, channel) for f in flags])
    return {
        "model": family,
        "channel": channel,
        "version": publication.meta["version"],
        "as_of": publication.meta["snapshot_as_of"],
        "contactable": yes,
        "no_consent": no,
        "unknown": [
            {"customer_id": cid, "reason": "not in the feature snapshot"} for cid in unknown
        ],
    }


#: Consent records decoded per step of a large POST /contactable (~1 µs each): the event loop
#: serves other requests between two.
DECODE_SLICE = 1000


async def contactable_async(
    store: OnlineStore,
    family: str,
    customer_ids: Sequence[str],
    channel: str,
    max_batch: int,
    inline_max_ids: int = 0,
) -> dict[str, Any]:
    """The POST /contactable answer of a store-backed family, made on the event loop as /score's
    (``score_bytes_from_store``): up to ``inline_max_ids`` ids read synchronously (two short
    round trips), more awaited in steps of ``FETCH_SLICE`` keys and decoded in slices."""
    check_ids(customer_ids, max_batch)
    small = len(customer_ids) <= inline_max_ids
    publication = current_publication(store, family) if small else await store.acurrent(family)
    if publication is None:
        raise StoreUnavailable(f"no publication of {family!r} in the online store")
    check_channel(channel, consent_channels(publication))
    if small:
        raws = store.get(publication, customer_ids, CONSENT)
    else:
        raws = await store.aget(publication, customer_ids, CONSENT)
    granted: list[bool | None] = []
    for start in range(0, len(raws), DECODE_SLICE):
        if start:
            await asyncio.sleep(0)
        granted.extend(
            None if raw is None else granted_on(decode_record(raw), channel)
            for raw in raws[start : start + DECODE_SLICE]
        )
    meta = publication.meta
    head = {
        "model": family,
        "registered_model": meta["registered_model"],
        "alias": meta["alias"],
        "version": meta["version"],
        "as_of": meta["snapshot_as_of"],
    }
    return contactable_answer(head, channel, customer_ids, granted)


def store_model_info(store: OnlineStore, family: str) -> dict[str, Any]:
    """The /models entry of a store-backed family, from its current publication."""
    publication = current_publication(store, family)
    meta = dict(publication.meta)
    return {
        **{
            k: meta.get(k)
            for k in (
                "kind",
                "output",
                "registered_model",
                "alias",
                "version",
                "run_id",
                "trained_at",
                "dataset",
                "feature_set",
                "snapshot_as_of",
                "customers",
            )
        },
        "family": family,
        "metrics": meta.get("metrics") or {},
        "tags": meta.get("tags") or {},
        "loaded_at": meta.get("published_at") or "",
        "monitoring": None,
        "shadow": None,
        "served_from": "online_store",
        "publication": publication.pub_id,
    }


def check_published(store: OnlineStore, families: Iterable[str], url: str) -> None:
    """At start: the store answers and holds a publication of every store-backed family."""
    store.ping()
    for family in families:
        if store.current(family) is None:
            raise StoreUnavailable(
                f"online_store: no publication of {family!r} in {redacted_url(url)}; run "
                f"`patron publish --serving <serving YAML> --model {family}` first"
            )
