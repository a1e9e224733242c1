"""The only feature module that reads and writes files: snapshots and training frames."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from features.catalog import Catalog
from features.definitions import (
    FIXED_CUSTOMER_COLUMNS,
    HOUSEHOLD,
    CurrentStateAttributes,
    FeatureSet,
    feature_set,
    feature_set_from_spec,
)
from features.engine import SqlRunner, churn_label_sql, features_sql, referenced_columns
from features.offers import customer_profile_sql, profile_frame
from features.prospects import is_prospect_set, prospects_sql
from features.sql import parquet_relation, sql_date, sql_literal
from features.store import StateDirs, atomic_path

SPEC_FILE = "feature_set.json"


def transactions_source(state: StateDirs, dataset: str) -> str:
    """The relation of a dataset's accepted transactions."""
    return Catalog(state, dataset).relation("transactions")


def data_date_range(con: SqlRunner, source: str) -> tuple[date, date]:
    """First and last transaction date of a source."""
    sql = f"SELECT min(CAST(ts AS DATE)), max(CAST(ts AS DATE)) FROM {source}"
    lo, hi = con.execute(sql).fetchall()[0]
    if lo is None:
        raise ValueError("the transactions table is empty")
    return lo, hi


def input_relations(state: StateDirs, dataset: str, fs: FeatureSet) -> dict[str, str]:
    """The optional relations a feature set reads (events, customers, households), by keyword;
    a customers table with history gives each customer's current version."""
    relations = _raw_relations(state, dataset, fs)
    if "customers" in relations:
        history = customers_history(relations["customers"])
        relations["customers"] = customers_as_of_sql(relations["customers"], history, None)
    return relations


def _raw_relations(state: StateDirs, dataset: str, fs: FeatureSet) -> dict[str, str]:
    catalog = Catalog(state, dataset)
    relations = {}
    for name in fs.inputs:
        if name == "transactions":
            continue
        try:
            relations[name] = catalog.relation(name)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"feature set {fs.name!r} reads {name}: {exc}") from None
    return relations


# --------------------------------------------------------------------------- as-of attributes

#: How a customers table carries history: validity dates, an update time, or none (today's state).
NO_HISTORY = "none"


def customers_history(relation: str, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """How a customers relation carries history: ``valid_from/valid_to`` (validity dates),
    ``valid_from`` (start dates only), ``updated_at`` (each row is the state from its update
    time on) or ``none`` (one row per customer: today's state)."""
    own = con is None
    con = duckdb.connect() if con is None else con
    try:
        columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
        present = [c for c in ("valid_from", "valid_to", "updated_at") if c in columns]
        counts = dict(zip(present, [0] * len(present), strict=True))
        if present:
            row = con.execute(
                f"SELECT {', '.join(f'count({c})' for c in present)} FROM {relation}"
            ).fetchone()
            counts = dict(zip(present, row or [0] * len(present), strict=True))
    finally:
        if own:
            con.close()
    if counts.get("valid_from"):
        return "valid_from/valid_to" if "valid_to" in counts else "valid_from"
    return "updated_at" if counts.get("updated_at") else NO_HISTORY


def customers_as_of_sql(relation: str, history: str, as_of: date | None) -> str:
    """The customers relation with one row per customer: the version valid at the end of day
    ``as_of`` (None: the current version). A version starting after ``as_of`` is invisible;
    ``valid_to`` is exclusive (a version ending on ``as_of`` no longer holds at its end)."""
    if history == NO_HISTORY:
        return relation
    start = "updated_at" if history == "updated_at" else "valid_from"
    where = []
    if as_of is not None:
        where.append(f"({start} IS NULL OR CAST({start} AS DATE) <= {sql_date(as_of)})")
    if history == "valid_from/valid_to":
        where.append(
            "valid_to IS NULL"
            if as_of is None
            else f"(valid_to IS NULL OR CAST(valid_to AS DATE) > {sql_date(as_of)})"
        )
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    return (
        "(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY customer_id "
        f"ORDER BY {start} DESC NULLS LAST) AS __version FROM {relation}{cond}) "
        "WHERE __version = 1)"
    )


def changeable_attributes(fs: FeatureSet) -> dict[str, list[str]]:
    """The attributes that can change over time each feature reads: customers columns other than
    the fixed ones (country, consent, segment-like fields) and household membership; derived
    features inherit those of the features they use. Features reading none are absent."""
    out: dict[str, list[str]] = {}
    for f in fs.features:
        if f.level == "customers":
            attrs = sorted(referenced_columns(f.sql) - FIXED_CUSTOMER_COLUMNS)
        elif f.level == "households":
            attrs = [HOUSEHOLD]
        elif f.level == "derived":
            used = referenced_columns(f.sql)
            attrs = sorted({a for name in used for a in out.get(name, [])})
        else:
            attrs = []
        if attrs:
            out[f.name] = attrs
    return out


@dataclass(frozen=True)
class AttributePlan:
    """How a feature set's customer attributes are read at historical cutoffs: the relations
    to use at each cutoff, the features to leave out, and the facts for the data manifest."""

    base: dict[str, str]
    history: str | None  # how the customers table carries history (None: not read)
    dropped: tuple[str, ...] = ()
    manifest: dict[str, Any] = field(default_factory=dict)

    def relations(self, as_of: date) -> dict[str, str]:
        """The input relations at cutoff ``as_of``: customers as of ``as_of`` when it has
        history."""
        out = dict(self.base)
        if "customers" in out and self.history:
            out["customers"] = customers_as_of_sql(out["customers"], self.history, as_of)
        return out


def attribute_plan(
    state: StateDirs,
    dataset: str,
    fs: FeatureSet,
    policy: CurrentStateAttributes | None = None,
) -> AttributePlan:
    """How to read ``fs``'s attributes at historical cutoffs: as of each cutoff when the customers
    table carries history; else attributes that can change (and household membership, whose map
    has no history) are dropped unless ``policy.allow`` names them."""
    return plan_attributes(fs, _raw_relations(state, dataset, fs), policy)


def plan_attributes(
    fs: FeatureSet,
    relations: dict[str, str],
    policy: CurrentStateAttributes | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> AttributePlan:
    """``attribute_plan`` over given relations (a DuckDB relation per input name; ``con`` is
    the connection they live in, when they are not files)."""
    allow = set((policy or CurrentStateAttributes()).allow)
    customers = relations.get("customers")
    history = None if customers is None else customers_history(customers, con)
    by_feature = changeable_attributes(fs)
    known = {a for attrs in by_feature.values() for a in attrs}
    unknown = sorted(allow - known)
    if unknown:
        raise ValueError(
            f"current_state_attributes.allow: {unknown} are not attributes that feature set "
            f"{fs.name!r} reads; it reads {sorted(known) or 'none that can change'}"
        )

    def how(attr: str) -> str:
        if attr != HOUSEHOLD and history not in (None, NO_HISTORY):
            return "as_of"
        return "current_state_allowed" if attr in allow else "dropped"

    attributes = {a: how(a) for a in sorted(known)}
    dropped = tuple(
        f for f, attrs in by_feature.items() if any(attributes[a] == "dropped" for a in attrs)
    )
    fixed: dict[str, list[str]] = {}
    for f in fs.features:
        if f.level == "customers":
            for c in referenced_columns(f.sql) & FIXED_CUSTOMER_COLUMNS - {"customer_id"}:
                fixed.setdefault("signup_date" if c == "signup_days_ago" else c, []).append(f.name)
    manifest = {
        "customers_history": history,
        "attributes": {
            **{a: {"how": "fixed", "features": feats} for a, feats in sorted(fixed.items())},
            **{
                a: {"how": h, "features": [f for f, attrs in by_feature.items() if a in attrs]}
                for a, h in attributes.items()
            },
        },
        "dropped_features": list(dropped),
    }
    return AttributePlan(relations, history, dropped, manifest)


def compute_features(
    con: duckdb.DuckDBPyConnection,
    source: str,
    as_of: date,
    fs: FeatureSet,
    **relations: str | None,
) -> pd.DataFrame:
    """Features of ``fs`` at ``as_of`` as a DataFrame (one row per customer)."""
    return con.execute(features_sql(source, as_of, fs, **relations)).df()


def check_horizon(con: SqlRunner, source: str, as_of: date, horizon_days: int) -> None:
    """Refuse a label horizon that runs past the end of the data."""
    _, last = data_date_range(con, source)
    if (last - as_of).days < horizon_days:
        raise ValueError(
            f"cutoff {as_of} + horizon {horizon_days} days runs past the last data date {last}"
        )


def compute_churn_labels(
    con: duckdb.DuckDBPyConnection, source: str, as_of: date, horizon_days: int, lookback_days: int
) -> pd.DataFrame:
    """Churn labels at ``as_of``; refuses a horizon that runs past the end of the data."""
    check_horizon(con, source, as_of, horizon_days)
    return con.execute(churn_label_sql(source, as_of, horizon_days, lookback_days)).df()


def training_frame(
    con: duckdb.DuckDBPyConnection,
    source: str,
    fs: FeatureSet,
    cutoffs: Sequence[date],
    horizon_days: int,
    lookback_days: int,
) -> pd.DataFrame:
    """Features joined to churn labels at each cutoff, stacked, with an ``as_of`` column."""
    frames = []
    for as_of in cutoffs:
        feats = compute_features(con, source, as_of, fs)
        labels = compute_churn_labels(con, source, as_of, horizon_days, lookback_days)
        frame = labels.merge(feats, on="customer_id", how="inner", validate="one_to_one")
        frame.insert(1, "as_of", pd.Timestamp(as_of))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_snapshot(
    con: duckdb.DuckDBPyConnection,
    state: StateDirs,
    dataset: str,
    fs: FeatureSet,
    as_of: date,
) -> Path:
    """Compute and write the feature snapshot at ``as_of`` out-of-core (DuckDB COPY), atomically;
    the folder is named by the set's key and holds its spec (``feature_set.json``)."""
    out = Catalog(state, dataset).snapshot_path(fs.key, as_of)
    with atomic_path(out) as tmp:
        sql = snapshot_sql(state, dataset, fs, as_of)
        con.execute(f"COPY ({sql}) TO {sql_literal(str(tmp))} (FORMAT parquet)")
    write_feature_set_spec(out, fs)
    copy_identity_map(state, dataset, out)
    return out


def snapshot_sql(state: StateDirs, dataset: str, fs: FeatureSet, as_of: date) -> str:
    """The SQL (DuckDB dialect) of a dataset's feature snapshot at ``as_of``: the ingested tables,
    customer attributes as of the cutoff when the customers table has history. A prospects set
    (``prospects_v1``) is computed over the prospects at ``as_of`` (``prospects_sql``: known by
    then, no order yet), the engine's sets over the buyers."""
    source = transactions_source(state, dataset)
    if is_prospect_set(fs):
        return prospects_snapshot_sql(state, dataset, fs, as_of)
    return features_sql(source, as_of, fs, **attribute_plan(state, dataset, fs).relations(as_of))


def prospects_snapshot_sql(state: StateDirs, dataset: str, fs: FeatureSet, as_of: date) -> str:
    """``features.prospects.prospects_sql`` over a dataset's ingested events and customers (either
    may be missing: its features are then NULL or their default), the customers table as of
    ``as_of`` when it carries history."""
    catalog = Catalog(state, dataset)
    events = catalog.relation_or_none("events")
    customers = catalog.relation_or_none("customers")
    if events is None and customers is None:
        raise ValueError(
            f"feature set {fs.name!r} of dataset {dataset!r}: prospects are known from an events "
            "or a customers table, and the dataset has neither"
        )
    if customers is not None:
        customers = customers_as_of_sql(customers, customers_history(customers), as_of)
    source = transactions_source(state, dataset)
    return prospects_sql(as_of, source, fs, events=events, customers=customers)


def write_feature_set_spec(snapshot: Path, fs: FeatureSet) -> None:
    """Record the feature set a snapshot was built with beside it (``feature_set.json``)."""
    with atomic_path(snapshot.parent / SPEC_FILE) as tmp:
        tmp.write_text(json.dumps(fs.spec(), indent=2, sort_keys=True))


def churn_labels_path(
    state: StateDirs, dataset: str, as_of: date, horizon_days: int, lookback_days: int
) -> Path:
    """Where the churn labels of a dataset at ``as_of`` are written (beside the snapshots)."""
    key = f"labels_churn_h{horizon_days}_l{lookback_days}"
    return Catalog(state, dataset).snapshot_path(key, as_of)


def write_churn_labels(
    con: duckdb.DuckDBPyConnection,
    state: StateDirs,
    dataset: str,
    as_of: date,
    horizon_days: int,
    lookback_days: int,
) -> Path:
    """Compute and write the churn labels at ``as_of`` (customer_id, label) out-of-core,
    atomically; a horizon past the end of the data is refused."""
    source = transactions_source(state, dataset)
    check_horizon(con, source, as_of, horizon_days)
    out = churn_labels_path(state, dataset, as_of, horizon_days, lookback_days)
    with atomic_path(out) as tmp:
        sql = churn_label_sql(source, as_of, horizon_days, lookback_days)
        con.execute(f"COPY ({sql}) TO {sql_literal(str(tmp))} (FORMAT parquet)")
    return out


def latest_snapshot(state: StateDirs, dataset: str, feature_set: str) -> tuple[date, Path]:
    """The most recent snapshot of a dataset's feature set (by key)."""
    return Catalog(state, dataset).latest_snapshot(feature_set)


def snapshot_feature_set(state: StateDirs, dataset: str, key: str) -> FeatureSet:
    """The feature set a snapshot folder was built with: its recorded spec, else the released
    set of that name."""
    spec_path = Catalog(state, dataset).snapshot_folder(key) / SPEC_FILE
    if spec_path.exists():
        return feature_set_from_spec(json.loads(spec_path.read_text()))
    return feature_set(key)


def customer_inputs(
    con: duckdb.DuckDBPyConnection,
    source: str,
    as_of: date,
    fs: FeatureSet,
    categories: list[str],
    products: str | None = None,
) -> pd.DataFrame:
    """What a next-best-offer model ranks from, per customer at ``as_of``: features of ``fs``,
    category shares and tiers, for every customer with a purchase by then."""
    feats = compute_features(con, source, as_of, fs)
    feats["customer_id"] = feats["customer_id"].astype(str)
    long = con.execute(customer_profile_sql(source, as_of, None, products)).df()
    profile = profile_frame(long, categories)
    out = feats.merge(profile, on="customer_id", how="inner", validate="one_to_one")
    out.insert(1, "as_of", pd.Timestamp(as_of))
    return out


def write_customer_links(state: StateDirs, dataset: str, cfg: object = None) -> dict[str, Path]:
    """Standardise the customers table, find duplicates and households; write both maps."""
    from features.linkage import LinkageConfig, link_customers

    catalog = Catalog(state, dataset)
    customers = catalog.relation("customers")
    current = customers_as_of_sql(customers, customers_history(customers), None)
    if current == customers:
        table = catalog.read("customers")
    else:  # a table with history: link today's version of each customer
        con = duckdb.connect()
        try:
            table = con.execute(f"SELECT * EXCLUDE (__version) FROM {current}").df()
        finally:
            con.close()
    merge_map, households = link_customers(table, cfg if isinstance(cfg, LinkageConfig) else None)
    out = {}
    for name, frame in (("merge_map", merge_map), ("households", households)):
        out[name] = catalog.path(name)
        with atomic_path(out[name]) as tmp:
            frame.to_parquet(tmp, index=False)
    return out


# --------------------------------------------------------------------------- single customer view

#: The customer-keyed tables whose rows are re-keyed to the master id (customers is combined).
REKEYED_TABLES = ("transactions", "events", "campaign_history")


def rekey_sql(relation: str, identity: str, has_source_id: bool = False) -> str:
    """The rows of a customer-keyed relation under their master id (an id the map does not
    hold keeps itself), in their order; each row's own id is kept in ``source_customer_id``
    (read from there when the relation was re-keyed before, so re-keying twice is re-keying
    once)."""
    from features.linkage import SOURCE_ID

    own = f"CAST(t.{SOURCE_ID} AS VARCHAR)" if has_source_id else "CAST(t.customer_id AS VARCHAR)"
    drop = f"__row, {SOURCE_ID}" if has_source_id else "__row"
    return f"""
WITH t AS (SELECT *, row_number() OVER () AS __row FROM {relation}),
m AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(master_id AS VARCHAR) AS master_id
    FROM {identity}
)
SELECT t.* EXCLUDE ({drop}) REPLACE (coalesce(m.master_id, {own}) AS customer_id),
       {own} AS {SOURCE_ID}
FROM t LEFT JOIN m ON {own} = m.customer_id
ORDER BY t.__row"""


def _read_merge_map_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise ValueError("no such file")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def resolve_identity(
    state: StateDirs, dataset: str, identity: Any, merge_map_path: Path | None = None
) -> dict[str, Any]:
    """Apply a dataset's ``identity`` option to its ingested tables: the merge map (derived by
    linking the customers table, which also writes ``merge_map`` and ``households`` as `patron
    customers link` does, or read from ``merge_map_path``) is written as ``identity_map``;
    transactions, events and campaign history are re-keyed to the master id (each row keeping
    ``source_customer_id``); the customers table becomes one row per master
    (``features.linkage.combine_customers``). Returns counts for the ingest report. Raises
    ValueError starting with the config key at fault."""
    from features.linkage import (
        IDENTITY_MAP,
        SOURCE_ID,
        applied_merge_map,
        combine_customers,
        identity_summary,
        link_customers,
    )

    catalog = Catalog(state, dataset)
    customers = catalog.read_or_none("customers")
    if customers is not None:
        history = customers_history(parquet_relation(catalog.path("customers")))
        if history != NO_HISTORY:
            raise ValueError(
                f"identity.resolve_duplicates: the customers table carries history ({history}); "
                "combining two records' histories is not supported — switch the option off"
            )
    written: dict[str, pd.DataFrame] = {}
    if merge_map_path is None:
        if customers is None:
            raise ValueError(
                "identity.merge_map: 'derived' links the customers table, and the dataset has "
                "none: ingest a customers table or name a merge map file"
            )
        raw, households = link_customers(customers, identity.linkage)
        written = {"merge_map": raw, "households": households}
        source = "derived"
    else:
        source = merge_map_path.name
    try:
        if merge_map_path is not None:
            raw = _read_merge_map_file(merge_map_path)
        applied = applied_merge_map(raw, "given")
    except ValueError as exc:
        raise ValueError(f"identity.merge_map: {source}: {exc}") from None
    written[IDENTITY_MAP] = applied
    for name, frame in written.items():
        with atomic_path(catalog.path(name)) as tmp:
            frame.to_parquet(tmp, index=False)

    con = duckdb.connect()
    try:
        identity_rel = parquet_relation(catalog.path(IDENTITY_MAP))
        tables = []
        for table in REKEYED_TABLES:
            if not catalog.has(table):
                continue
            rel = catalog.relation(table)
            cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()}
            with atomic_path(catalog.path(table)) as tmp:
                sql = rekey_sql(rel, identity_rel, SOURCE_ID in cols)
                con.execute(f"COPY ({sql}) TO {sql_literal(str(tmp))} (FORMAT parquet)")
            tables.append(table)
    finally:
        con.close()
    summary: dict[str, Any] = {"merge_map": source, **identity_summary(applied)}
    if customers is not None:
        combined = combine_customers(customers, applied)
        with atomic_path(catalog.path("customers")) as tmp:
            combined.to_parquet(tmp, index=False)
        tables.append("customers")
        summary["customers"] = {"records": len(customers), "persons": len(combined)}
    summary["tables"] = tables
    return summary


def clear_identity(state: StateDirs, dataset: str) -> None:
    """Remove a dataset's applied merge map (before an ingest: only a finished resolution
    writes it, so its presence says the tables are re-keyed)."""
    from features.linkage import IDENTITY_MAP

    Catalog(state, dataset).path(IDENTITY_MAP).unlink(missing_ok=True)


def copy_identity_map(state: StateDirs, dataset: str, snapshot: Path) -> None:
    """Keep the applied merge map beside a snapshot (``identity_map.parquet``), or remove a
    stale one when the dataset's tables are not re-keyed."""
    from features.linkage import IDENTITY_MAP

    src = Catalog(state, dataset).path(IDENTITY_MAP)
    dest = snapshot.parent / f"{IDENTITY_MAP}.parquet"
    if not src.exists():
        dest.unlink(missing_ok=True)
        return
    with atomic_path(dest) as tmp:
        tmp.write_bytes(src.read_bytes())
