"""The Spark engine: the feature and label SQL of DuckDB, transpiled with sqlglot.

There is no second definition here: parquet inputs are registered as temporary views and the SQL
that ``features.engine`` compiles for DuckDB runs after :func:`features.engine.to_spark_sql`.
pyspark is an optional extra (``pip install patron[spark]``), imported only inside functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.definitions import FeatureSet
from features.engine import churn_label_sql, features_sql, to_spark_sql

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Session settings the parity relies on: UTC dates, ANSI arithmetic, small shuffles on one machine.
SPARK_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}

Paths = str | Sequence[str]


def local_spark_session(
    master: str = "local[2]", app_name: str = "patron-features"
) -> SparkSession:
    """A local Spark session with Patron's settings (the caller stops it)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def register_parquet(spark: SparkSession, view: str, path: Paths) -> str:
    """Register parquet file(s) as a temporary view; return the view name."""
    paths = [path] if isinstance(path, str) else list(path)
    spark.read.parquet(*paths).createOrReplaceTempView(view)
    return view


def run_sql(spark: SparkSession, duckdb_sql: str) -> pd.DataFrame:
    """Run DuckDB-dialect SQL on Spark (transpiled) and return a pandas DataFrame."""
    return spark.sql(to_spark_sql(duckdb_sql)).toPandas()


def compute_features_spark(
    spark: SparkSession,
    transactions_path: Paths,
    as_of: date,
    fs: FeatureSet,
    *,
    events_path: Paths | None = None,
    customers_path: Paths | None = None,
    households_path: Paths | None = None,
    campaign_history_path: Paths | None = None,
    offers_path: Paths | None = None,
) -> pd.DataFrame:
    """Features of ``fs`` at ``as_of`` computed by Spark from canonical parquet tables."""
    views: dict[str, Any] = {}
    for name, path in (
        ("events", events_path),
        ("customers", customers_path),
        ("households", households_path),
        ("campaign_history", campaign_history_path),
        ("offers", offers_path),
    ):
        views[name] = None if path is None else register_parquet(spark, f"patron_{name}", path)
    source = register_parquet(spark, "patron_transactions", transactions_path)
    return run_sql(spark, features_sql(source, as_of, fs, **views))


def compute_churn_labels_spark(
    spark: SparkSession,
    transactions_path: Paths,
    as_of: date,
    horizon_days: int,
    lookback_days: int,
) -> pd.DataFrame:
    """Churn labels at ``as_of`` computed by Spark (same SQL as DuckDB)."""
    source = register_parquet(spark, "patron_transactions", transactions_path)
    return run_sql(spark, churn_label_sql(source, as_of, horizon_days, lookback_days))
