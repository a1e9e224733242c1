"""Spark computes the same features and labels as DuckDB from one declaration (local Spark)."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

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
    session = local_spark_session("local[2]", "patron-parity")
    session.conf.set("spark.sql.shuffle.partitions", "2")  # tiny data: fewer tasks, same results
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
    )
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
    )
    _assert_same(duck, got, "churn_v1")


def test_labels_match(spark, tables_path):
    as_of, horizon, lookback = AS_OF - timedelta(days=90), 60, 365
    src = f"read_parquet('{tables_path['transactions']}')"
    duck = duckdb.connect().execute(churn_label_sql(src, as_of, horizon, lookback)).df()
    got = compute_churn_labels_spark(
        spark, str(tables_path["transactions"]), as_of, horizon, lookback
    )
    assert got["customer_id"].tolist() == duck["customer_id"].tolist()
    assert got["label"].astype(int).tolist() == duck["label"].astype(int).tolist()
    assert 0 < duck["label"].mean() < 1
