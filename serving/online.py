"""The online store: per-customer /score records written by the batch job, read per request.

A publication is every customer's record of one family (score, probability or value,
percentile, decile, segment, reasons) plus its metadata (registered model, alias, version,
snapshot date, size), written whole under a new publication id; then one ``SET`` of the family's
``current`` key switches every replica to it at once. A request reads ``current`` once and then
only that publication's keys, so it never mixes two; the previous publication is kept for
``keep_previous_s`` so requests that started on it finish.

Two implementations: ``MemoryStore`` (in process: the embedded default and tests) and
``RedisStore`` (a real Redis server shared by several replicas). With a store, a replica's
start-up no longer reads the snapshot or loads the model of a store-backed family: it connects.

Keys (prefix ``patron``, configurable): ``{p}:{family}:current`` → publication id;
``{p}:{family}:{pub}:meta`` → JSON metadata; ``{p}:{family}:{pub}:c:{customer_id}`` → the JSON
record. Values are the /score records: customer data, so the store is as private as the feature
snapshot (docs/serving.md).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: Records written per round trip while publishing.
PUBLISH_CHUNK = 10_000


class StoreUnavailable(RuntimeError):
    """The online store cannot be reached or holds no publication of a family."""


@dataclass(frozen=True)
class Publication:
    """One family's published records: where they are and what produced them."""

    family: str
    pub_id: str
    meta: Mapping[str, Any]


class OnlineStore(Protocol):
    def publish(
        self, family: str, meta: Mapping[str, Any], records: Iterable[tuple[str, bytes]]
    ) -> Publication: ...

    def current(self, family: str) -> Publication | None: ...

    def get(self, publication: Publication, customer_ids: Sequence[str]) -> list[bytes | None]: ...

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
        self._records: dict[tuple[str, str], dict[str, bytes]] = {}
        self._meta: dict[tuple[str, str], dict[str, Any]] = {}
        self._current: dict[str, str] = {}
        self.keep_previous_s = keep_previous_s

    def publish(
        self, family: str, meta: Mapping[str, Any], records: Iterable[tuple[str, bytes]]
    ) -> Publication:
        pub = new_pub_id()
        data = dict(records)
        with self._lock:
            self._records[(family, pub)] = data
            self._meta[(family, pub)] = {**meta, "customers": len(data)}
            previous = self._current.get(family)
            self._current[family] = pub  # the switch
            if previous is not None:  # in process, a reference held by a request is enough
                self._records.pop((family, previous), None)
        return Publication(family, pub, self._meta[(family, pub)])

    def current(self, family: str) -> Publication | None:
        with self._lock:
            pub = self._current.get(family)
            return None if pub is None else Publication(family, pub, self._meta[(family, pub)])

    def get(self, publication: Publication, customer_ids: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            data = self._records.get((publication.family, publication.pub_id), {})
        return [data.get(cid) for cid in customer_ids]

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
        self.prefix = prefix
        self.keep_previous_s = keep_previous_s
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._meta_cache: dict[tuple[str, str], Publication] = {}

    def _key(self, family: str, *parts: str) -> str:
        return ":".join((self.prefix, family, *parts))

    def ping(self) -> None:
        import redis

        try:
            self._redis.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"online store {self.url}: {exc}") from exc

    def publish(
        self, family: str, meta: Mapping[str, Any], records: Iterable[tuple[str, bytes]]
    ) -> Publication:
        pub = new_pub_id()
        n = 0
        for chunk in _chunks(records, PUBLISH_CHUNK):
            self._redis.mset({self._key(family, pub, "c", cid): raw for cid, raw in chunk})
            n += len(chunk)
        full_meta = {**meta, "customers": n}
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
            raise StoreUnavailable(f"online store {self.url}: {exc}") from exc

    def _current(self, family: str) -> Publication | None:
        pub = self._redis.get(self._key(family, "current"))
        if pub is None:
            return None
        pub_id = _text(pub)
        cached = self._meta_cache.get((family, pub_id))  # a publication never changes
        if cached is not None:
            return cached
        raw = self._redis.get(self._key(family, pub_id, "meta"))
        if raw is None:
            raise StoreUnavailable(f"publication {pub_id} of {family!r} has no metadata")
        publication = Publication(family, pub_id, json.loads(raw))
        if len(self._meta_cache) > 64:
            self._meta_cache.clear()
        self._meta_cache[(family, pub_id)] = publication
        return publication

    def get(self, publication: Publication, customer_ids: Sequence[str]) -> list[bytes | None]:
        if not customer_ids:
            return []
        import redis

        keys = [self._key(publication.family, publication.pub_id, "c", c) for c in customer_ids]
        try:
            values = self._redis.mget(keys)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"online store {self.url}: {exc}") from exc
        return [None if v is None else _raw(v) for v in values]


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
    """The batch job behind `patron publish`: score the family's base with its champion (the
    same values /score computes), write every record, then switch ``current`` to them."""
    from serving.batch import load_scorer, score_frame
    from serving.kinds import score_output

    if family not in settings.models:
        raise ValueError(f"--model: {family!r} is not among models {sorted(settings.models)}")
    one = settings.model_copy(
        update={"models": {family: settings.models[family]}, "online_store": None}
    )
    meta, python_model, base = load_scorer(one, state, family)
    frame = score_frame(meta, python_model, base, reasons=reasons, progress=progress)
    info = publication_meta(family, meta, base, score_output(meta, python_model))
    return store.publish(family, info, records_from_frame(frame, with_reasons=reasons))


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
    from serving.errors import check_ids

    check_ids(customer_ids, max_batch)
    publication = store.current(family)
    if publication is None:
        raise StoreUnavailable(f"no publication of {family!r} in the online store")
    raws = store.get(publication, customer_ids)
    meta = publication.meta
    head = {
        "model": family,
        "kind": meta["output"],
        "registered_model": meta["registered_model"],
        "alias": meta["alias"],
        "version": meta["version"],
        "as_of": meta["snapshot_as_of"],
    }
    return head, raws


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


def store_model_info(store: OnlineStore, family: str) -> dict[str, Any]:
    """The /models entry of a store-backed family, from its current publication."""
    publication = store.current(family)
    if publication is None:
        raise StoreUnavailable(f"no publication of {family!r} in the online store")
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
                f"online_store: no publication of {family!r} in {url}; run `patron publish "
                f"--serving <serving YAML> --model {family}` first"
            )
