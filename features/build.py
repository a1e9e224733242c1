"""The only feature module that reads and writes files: snapshots and training frames."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from features.catalog import Catalog
from features.definitions import FeatureSet, feature_set, feature_set_from_spec
from features.engine import churn_label_sql, features_sql
from features.offers import customer_profile_sql, profile_frame
from features.sql import sql_literal
from features.store import StateDirs, atomic_path

SPEC_FILE = "feature_set.json"


def transactions_source(state: StateDirs, dataset: str) -> str:
    """The relation of a dataset's accepted transactions."""
    return Catalog(state, dataset).relation("transactions")


def data_date_range(con: duckdb.DuckDBPyConnection, source: str) -> tuple[date, date]:
    """First and last transaction date of a source."""
    sql = f"SELECT min(CAST(ts AS DATE)), max(CAST(ts AS DATE)) FROM {source}"
    lo, hi = con.execute(sql).fetchall()[0]
    if lo is None:
        raise ValueError("the transactions table is empty")
    return lo, hi


def input_relations(state: StateDirs, dataset: str, fs: FeatureSet) -> dict[str, str]:
    """The optional relations a feature set reads (events, customers, households), by keyword."""
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


def compute_features(
    con: duckdb.DuckDBPyConnection,
    source: str,
    as_of: date,
    fs: FeatureSet,
    **relations: str | None,
) -> pd.DataFrame:
    """Features of ``fs`` at ``as_of`` as a DataFrame (one row per customer)."""
    return con.execute(features_sql(source, as_of, fs, **relations)).df()


def compute_churn_labels(
    con: duckdb.DuckDBPyConnection, source: str, as_of: date, horizon_days: int, lookback_days: int
) -> pd.DataFrame:
    """Churn labels at ``as_of``; refuses a horizon that runs past the end of the data."""
    _, last = data_date_range(con, source)
    if (last - as_of).days < horizon_days:
        raise ValueError(
            f"cutoff {as_of} + horizon {horizon_days} days runs past the last data date {last}"
        )
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
    source = transactions_source(state, dataset)
    sql = features_sql(source, as_of, fs, **input_relations(state, dataset, fs))
    catalog = Catalog(state, dataset)
    out = catalog.snapshot_path(fs.key, as_of)
    with atomic_path(out) as tmp:
        con.execute(f"COPY ({sql}) TO {sql_literal(str(tmp))} (FORMAT parquet)")
    with atomic_path(out.parent / SPEC_FILE) as tmp:
        tmp.write_text(json.dumps(fs.spec(), indent=2, sort_keys=True))
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
    merge_map, households = link_customers(
        catalog.read("customers"), cfg if isinstance(cfg, LinkageConfig) else None
    )
    out = {}
    for name, frame in (("merge_map", merge_map), ("households", households)):
        out[name] = catalog.path(name)
        with atomic_path(out[name]) as tmp:
            frame.to_parquet(tmp, index=False)
    return out
