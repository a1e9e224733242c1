"""The only feature module that reads and writes files: snapshots and training frames."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from features.definitions import FeatureSet
from features.engine import churn_label_sql, features_sql
from features.sources import _lit
from features.store import StateDirs, atomic_path


def transactions_source(state: StateDirs, dataset: str) -> str:
    """The relation of a dataset's accepted transactions."""
    path = state.data(dataset) / "transactions.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"no ingested transactions for dataset {dataset!r} at {path}; run `patron ingest` first"
        )
    return f"read_parquet({_lit(str(path))})"


def data_date_range(con: duckdb.DuckDBPyConnection, source: str) -> tuple[date, date]:
    """First and last transaction date of a source."""
    sql = f"SELECT min(CAST(ts AS DATE)), max(CAST(ts AS DATE)) FROM {source}"
    lo, hi = con.execute(sql).fetchall()[0]
    if lo is None:
        raise ValueError("the transactions table is empty")
    return lo, hi


def input_relations(state: StateDirs, dataset: str, fs: FeatureSet) -> dict[str, str]:
    """The optional relations a feature set reads (events, customers, households), by keyword."""
    files = {
        "events": state.data(dataset) / "events.parquet",
        "customers": state.data(dataset) / "customers.parquet",
        "households": state.data(dataset) / "households.parquet",
    }
    hints = {
        "events": "ingest an events table",
        "customers": "ingest a customers table",
        "households": "run `patron customers link`",
    }
    relations = {}
    for name in fs.inputs:
        if name == "transactions":
            continue
        path = files[name]
        if not path.exists():
            raise FileNotFoundError(
                f"feature set {fs.name!r} reads {name} but {path} does not exist: {hints[name]}"
            )
        relations[name] = f"read_parquet({_lit(str(path))})"
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
    """Compute and write the feature snapshot at ``as_of`` out-of-core (DuckDB COPY), atomically."""
    source = transactions_source(state, dataset)
    sql = features_sql(source, as_of, fs, **input_relations(state, dataset, fs))
    out = state.snapshots(dataset, fs.name) / f"as_of={as_of.isoformat()}.parquet"
    with atomic_path(out) as tmp:
        con.execute(
            f"COPY ({sql}) TO {_lit(str(tmp))} (FORMAT parquet)"
        )
    return out


def latest_snapshot(state: StateDirs, dataset: str, feature_set: str) -> tuple[date, Path]:
    """The most recent snapshot of a dataset's feature set."""
    folder = state.snapshots(dataset, feature_set)
    found = sorted(folder.glob("as_of=*.parquet"))
    if not found:
        raise FileNotFoundError(f"no feature snapshot in {folder}; run `patron features` first")
    path = found[-1]
    return date.fromisoformat(path.stem.split("=", 1)[1]), path


def write_customer_links(state: StateDirs, dataset: str, cfg: object = None) -> dict[str, Path]:
    """Standardise the customers table, find duplicates and households; write both maps."""
    from features.linkage import LinkageConfig, link_customers

    path = state.data(dataset) / "customers.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no ingested customers table for {dataset!r} at {path}")
    merge_map, households = link_customers(
        pd.read_parquet(path), cfg if isinstance(cfg, LinkageConfig) else None
    )
    out = {}
    for name, frame in (("merge_map", merge_map), ("households", households)):
        out[name] = state.data(dataset) / f"{name}.parquet"
        with atomic_path(out[name]) as tmp:
            frame.to_parquet(tmp, index=False)
    return out
