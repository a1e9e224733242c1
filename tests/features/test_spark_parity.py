"""Spark computes the same features and labels as DuckDB from one declaration (local Spark), and a
dataset whose config says ``engine: {kind: spark}`` is ingested, featured and labelled on Spark
with the same files as on DuckDB, without collecting the data to the driver."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from features.definitions import RELEASED_SETS, feature_set
from features.engine import churn_label_sql, features_sql
from tests.features.test_point_in_time import AS_OF, random_tables

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs a Java runtime", allow_module_level=True)

from features.spark import (  # noqa: E402  (after the skip: pyspark is optional)
    compute_churn_labels_spark,
    compute_features_spark,
    local_spark_session,
)

pytestmark = pytest.mark.slow
ALL_SETS = "+".join(RELEASED_SETS)  # every feature of every released set in one query


@pytest.fixture(scope="module")
def spark():
    # tiny data: fewer tasks and no adaptive re-planning (a job per stage), same results
    conf = {"spark.sql.shuffle.partitions": "2", "spark.sql.adaptive.enabled": "false"}
    session = local_spark_session("local[2]", "patron-parity", conf)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def tables_path(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("parity")
    tables = random_tables(seed=7, n_customers=80)
    # DuckDB writes the parquet both engines read (TIMESTAMP without time zone, DATE)
    con = duckdb.connect()
    paths = {}
    for name, frame in tables.items():
        con.register(f"{name}_df", frame)
        paths[name] = folder / f"{name}.parquet"
        con.execute(f"COPY (SELECT * FROM {name}_df) TO '{paths[name]}' (FORMAT parquet)")
    return paths


def _duckdb(paths: dict[str, Path], as_of: date, set_name: str) -> pd.DataFrame:
    rel = {k: f"read_parquet('{p}')" for k, p in paths.items()}
    sql = features_sql(
        rel["transactions"],
        as_of,
        feature_set(set_name),
        events=rel["events"],
        customers=rel["customers"],
        households=rel["households"],
        campaign_history=rel["campaign_history"],
        offers=rel["offers"],
    )
    return duckdb.connect().execute(sql).df()


def _assert_same(duck: pd.DataFrame, spark: pd.DataFrame, set_name: str) -> None:
    assert list(spark.columns) == list(duck.columns)
    assert spark["customer_id"].tolist() == duck["customer_id"].tolist()
    fs = feature_set(set_name)
    for f in fs.features:
        if f.dtype == "string":
            a = duck[f.name].astype(object).where(duck[f.name].notna(), None).tolist()
            b = spark[f.name].astype(object).where(spark[f.name].notna(), None).tolist()
            assert a == b, f.name
            continue
        a = duck[f.name].to_numpy(dtype=np.float64, na_value=np.nan)
        b = spark[f.name].to_numpy(dtype=np.float64, na_value=np.nan)
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{f.name}: NULLs differ"
        ok = np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
        assert ok.all(), f"{f.name}: {int((~ok).sum())} differ, e.g. {a[~ok][:3]} vs {b[~ok][:3]}"


def test_every_released_feature_matches(spark, tables_path):
    as_of = AS_OF
    duck = _duckdb(tables_path, as_of, ALL_SETS)
    got = compute_features_spark(
        spark,
        str(tables_path["transactions"]),
        as_of,
        feature_set(ALL_SETS),
        events_path=str(tables_path["events"]),
        customers_path=str(tables_path["customers"]),
        households_path=str(tables_path["households"]),
        campaign_history_path=str(tables_path["campaign_history"]),
        offers_path=str(tables_path["offers"]),
    ).toPandas()
    assert len(duck) > 30
    _assert_same(duck, got, ALL_SETS)
    # the comparison is not vacuous: the features vary and have NULLs where declared so
    std = duck["interpurchase_days_std"]
    assert std.isna().any() and std.gt(0).any()
    assert duck["orders_share_weekend"].between(0, 1).all()


def test_churn_v1_alone_matches(spark, tables_path):
    as_of = AS_OF - timedelta(days=200)  # a second cutoff, and the set without the extra columns
    duck = _duckdb(tables_path, as_of, "churn_v1")
    got = compute_features_spark(
        spark, str(tables_path["transactions"]), as_of, feature_set("churn_v1")
    ).toPandas()
    _assert_same(duck, got, "churn_v1")


def test_labels_match(spark, tables_path):
    as_of, horizon, lookback = AS_OF - timedelta(days=90), 60, 365
    src = f"read_parquet('{tables_path['transactions']}')"
    duck = duckdb.connect().execute(churn_label_sql(src, as_of, horizon, lookback)).df()
    got = compute_churn_labels_spark(
        spark, str(tables_path["transactions"]), as_of, horizon, lookback
    ).toPandas()
    assert got["customer_id"].tolist() == duck["customer_id"].tolist()
    assert got["label"].astype(int).tolist() == duck["label"].astype(int).tolist()
    assert 0 < duck["label"].mean() < 1


# --------------------------------------------------------------------------- Spark by configuration

FEATURES = "churn_v1+crm_customer_v1"  # orders and customer attributes (as of each cutoff)
HORIZON, LOOKBACK = 60, 365


def _raw_files(folder: Path) -> None:
    """Raw CSV files as a shop exports them, with rows ingestion must quarantine."""
    tables = random_tables(seed=11, n_customers=15)
    tx = tables["transactions"].copy()
    tx["ts"] = tx["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
    bad = pd.DataFrame(
        [
            ("c001", "2024-01-05 10:00:00", "bad1", "p1", "cat1", 1.0, "N/A", False, "web"),
            ("c002", "31/12/2023 25:61", "bad2", "p1", "cat1", 1.0, "9.5", False, "web"),
            (None, "2024-01-05 10:00:00", "bad3", "p1", "cat1", 1.0, "9.5", False, "web"),
            ("c003", "2024-01-05 10:00:00", None, "p1", "cat1", 1.0, "9.5", False, "web"),
            ("c004", "2024-01-05 10:00:00", "bad5", "p1", "cat1", 1.0, "9.5", "maybe", "web"),
        ],
        columns=tx.columns,
    )
    pd.concat([tx.astype(object), bad], ignore_index=True).to_csv(
        folder / "orders.csv", index=False
    )
    customers = tables["customers"].copy()
    # an excluded test customer, a repeated customer (the first row is kept), a bad date
    extra = pd.DataFrame(
        {
            "customer_id": ["c001", "c002", "c005"],
            "signup_date": ["2020-01-01", "2020-01-01", "someday"],
            "country": ["XX", "GB", "GB"],
        }
    )
    customers = pd.concat([customers.astype(object), extra], ignore_index=True)
    customers.to_csv(folder / "customers.csv", index=False)


def _dataset(folder: Path, kind: str) -> Path:
    engine = {"kind": kind, "master": "local[2]", "shuffle_partitions": 2}
    cfg = {
        "name": "shop",
        "engine": engine,
        "tables": {
            "transactions": {
                "ts_format": "%Y-%m-%d %H:%M:%S",
                "sources": [{"path": "orders.csv"}],
            },
            "customers": {
                "sources": [
                    {
                        "path": "customers.csv",
                        "exclude": [{"when": "country = 'XX'", "reason": "test customer"}],
                    }
                ]
            },
        },
    }
    path = folder / f"shop_{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(config: Path, home: Path, as_of: date) -> tuple[Any, list[Path]]:
    from features.cli import write_features_at
    from features.sources import ingest, load_dataset
    from features.store import StateDirs

    cfg = load_dataset(config)
    state = StateDirs.resolve(home)
    report = ingest(cfg, state)
    _, paths = write_features_at(cfg, feature_set(FEATURES), as_of, state, (HORIZON, LOOKBACK))
    return report, paths


def _same_parquet(a: Path, b: Path, keys: list[str]) -> int:
    """The same schema (names and Parquet types) and the same rows (floats to 1e-9)."""
    assert a.is_file() and b.is_file()
    assert pq.read_schema(a).names == pq.read_schema(b).names
    assert [str(t) for t in pq.read_schema(a).types] == [str(t) for t in pq.read_schema(b).types]
    x = pd.read_parquet(a).sort_values(keys, ignore_index=True)
    y = pd.read_parquet(b).sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-9, atol=1e-12)
    return len(x)


def test_spark_by_config_matches_duckdb_without_collecting(spark, tmp_path, monkeypatch):
    frame_class = type(spark.range(1))  # the classic DataFrame (pyspark.sql's is abstract)

    _raw_files(tmp_path)
    as_of = AS_OF - timedelta(days=120)
    duck_report, duck_paths = _run(_dataset(tmp_path, "duckdb"), tmp_path / "duck", as_of)

    # the Spark run may bring counts to the driver, never the data
    collected: list[int] = []
    real_collect = frame_class.collect

    def counting_collect(self):  # noqa: ANN001, ANN202
        rows = real_collect(self)
        collected.append(len(rows))
        return rows

    def refuse(self, *args, **kwargs):  # noqa: ANN001, ANN202
        raise AssertionError("the Spark engine brought a table to the driver")

    monkeypatch.setattr(frame_class, "collect", counting_collect)
    monkeypatch.setattr(frame_class, "toPandas", refuse)
    monkeypatch.setattr(frame_class, "toLocalIterator", refuse)
    # small file splits: the raw orders are read as several partitions (row positions are
    # counted across them) and every stage before the single writing task runs in parallel
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")
    assert spark.read.csv(str(tmp_path / "orders.csv")).rdd.getNumPartitions() > 1
    try:
        spark_report, spark_paths = _run(_dataset(tmp_path, "spark"), tmp_path / "spark", as_of)
    finally:
        monkeypatch.undo()
        spark.conf.unset("spark.sql.files.maxPartitionBytes")

    # ingestion: same counts and reasons, same accepted tables, same quarantined rows
    for name, d in duck_report.tables.items():
        s = spark_report.tables[name]
        assert (s.read, s.accepted, s.quarantined_by_reason) == (
            d.read,
            d.accepted,
            d.quarantined_by_reason,
        ), name
        _same_parquet(
            Path(d.accepted_path),
            Path(s.accepted_path),
            list(pd.read_parquet(d.accepted_path).columns),
        )
        if d.quarantined:
            _same_parquet(Path(d.quarantine_path), Path(s.quarantine_path), ["source_row"])
    tx = duck_report.tables["transactions"]
    assert set(tx.quarantined_by_reason) == {
        "amount: not a valid double",
        "ts: not a valid timestamp",
        "no customer",
        "order_id: missing",
        "is_return: not a valid boolean",
    }
    assert duck_report.tables["customers"].quarantined_by_reason == {
        "customer_id: duplicate key": 1,
        "signup_date: not a valid date": 1,
        "test customer": 1,
    }
    q_duck = pd.read_parquet(tx.quarantine_path)
    q_spark = pd.read_parquet(spark_report.tables["transactions"].quarantine_path)
    assert q_spark["source_row"].tolist() == q_duck["source_row"].tolist()  # the file's rows
    assert q_spark["raw"].map(json.loads).tolist() == q_duck["raw"].map(json.loads).tolist()

    # features and labels: the same files, row for row
    snapshot_rows = _same_parquet(duck_paths[0], spark_paths[0], ["customer_id"])
    label_rows = _same_parquet(duck_paths[1], spark_paths[1], ["customer_id"])
    assert snapshot_rows > 10 and label_rows > 5
    labels = pd.read_parquet(spark_paths[1])
    assert 0 < labels["label"].mean() < 1
    assert spark_paths[0].name == f"as_of={as_of}.parquet"
    assert (spark_paths[0].parent / "feature_set.json").exists()
    assert max(collected) < 10 < snapshot_rows  # counts and min/max dates only

    # a re-run replaces the files in place, leaving no temporary folder behind
    from features.cli import write_features_at
    from features.sources import load_dataset
    from features.store import StateDirs

    cfg, state = load_dataset(_dataset(tmp_path, "spark")), StateDirs.resolve(tmp_path / "spark")
    assert write_features_at(cfg, feature_set(FEATURES), as_of, state)[1] == spark_paths[:1]
    _same_parquet(duck_paths[0], spark_paths[0], ["customer_id"])
    assert not list((tmp_path / "spark").rglob("*.spark"))
