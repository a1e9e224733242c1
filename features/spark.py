"""The Spark engine: DuckDB's ingestion, feature and label SQL, transpiled by sqlglot, on Spark.

There is no second definition here. Ingestion binds each dataset mapping with DuckDB against the
file's columns only (the same one-line config errors), then Spark reads every row and runs the
classifying SQL of ``features.sources`` (types, required fields, exclusions, repeated keys) and its
report; features and labels run the SQL ``features.engine`` compiles. Results are written by Spark
(``DataFrame.write.parquet``) into a temporary folder and moved into place, one Parquet file per
table or snapshot as the DuckDB engine writes it: nothing is collected to the driver but counts.

The state folder is read and written by path: on a cluster it must be on storage the driver and
every executor see at the same path. pyspark is an optional extra (``pip install patron[spark]``),
imported only inside functions.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from features.definitions import FeatureSet
from features.engine import EngineConfig, churn_label_sql, features_sql, to_spark_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from features.sources import DatasetConfig, SourceRead, TableReport
    from features.store import StateDirs

log = logging.getLogger(__name__)

#: Session settings the parity relies on: UTC dates, ANSI arithmetic, timestamps without time
#: zone (DuckDB's TIMESTAMP: the Parquet both engines write and read is the same), small shuffles.
SPARK_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
#: Settings a running session must hold (SQL settings: they can be set on a session Patron reuses).
SESSION_SQL_CONF = (
    "spark.sql.session.timeZone",
    "spark.sql.ansi.enabled",
    "spark.sql.timestampType",
)

Paths = str | Sequence[str]


# --------------------------------------------------------------------------- sessions


def spark_unavailable() -> str | None:
    """Why Spark cannot run here (no pyspark, no Java runtime), or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'patron[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and Path(java_home, "bin", "java").exists()):
        return "no Java runtime (java is not on PATH and JAVA_HOME is not set)"
    return None


def require_spark(where: str) -> None:
    """One line naming the config key when the config asks for Spark and it cannot run here."""
    reason = spark_unavailable()
    if reason is not None:
        raise ValueError(f"{where}: engine.kind: spark cannot run: {reason}")


@contextmanager
def spark_session(engine: EngineConfig) -> Iterator[SparkSession]:
    """The Spark session of an engine config: an active session of this process is reused (a
    notebook's, a test's) with Patron's SQL settings; otherwise one is started at the config's
    master with its resources and stopped at the end."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        for key in SESSION_SQL_CONF:
            active.conf.set(key, SPARK_CONF[key])
        yield active
        return
    session = local_spark_session(engine.master, engine.app_name, engine.spark_conf())
    session.sparkContext.setLogLevel("ERROR")  # Spark's warnings would bury Patron's lines
    try:
        yield session
    finally:
        session.stop()


def local_spark_session(
    master: str = "local[2]", app_name: str = "patron-features", conf: dict[str, str] | None = None
) -> SparkSession:
    """A Spark session at ``master`` with Patron's settings and ``conf`` (the caller stops it)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


# --------------------------------------------------------------------------- SQL and writing


def register_parquet(spark: SparkSession, view: str, path: Paths) -> str:
    """Register parquet file(s) as a temporary view; return the view name."""
    paths = [path] if isinstance(path, str) else list(path)
    spark.read.parquet(*paths).createOrReplaceTempView(view)
    return view


def run_sql(spark: SparkSession, duckdb_sql: str) -> DataFrame:
    """DuckDB-dialect SQL as a (lazy) Spark DataFrame; each Parquet file it reads
    (``read_parquet('...')``) is a temporary view registered once per session, so Spark reads
    its schema once, not in every query."""
    return spark.sql(to_spark_sql(parquet_views(spark, duckdb_sql)))


def parquet_views(spark: SparkSession, duckdb_sql: str) -> str:
    """The query with every ``read_parquet('<path>')`` replaced by a temporary view of that file
    (registered when missing; a file rewritten since is registered again)."""
    import sqlglot

    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")

    def view_of(node: exp.Expression) -> exp.Expression:
        if not (isinstance(node, exp.Table) and isinstance(node.this, exp.ReadParquet)):
            return node
        args = node.this.expressions
        if len(args) != 1 or not isinstance(args[0], exp.Literal):
            return node
        path = Path(args[0].this)
        stat = path.stat() if path.exists() else None
        key = f"{path}:{stat.st_mtime_ns}:{stat.st_size}" if stat else str(path)
        view = f"__parquet_{uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:16]}"
        if not spark.catalog.tableExists(view):
            spark.read.parquet(str(path)).createOrReplaceTempView(view)
        alias = node.args.get("alias")
        return exp.Table(this=exp.to_identifier(view), alias=alias)

    return tree.transform(view_of).sql(dialect="duckdb")


def split_order(duckdb_sql: str) -> tuple[str, list[str]]:
    """A query without its final ``ORDER BY`` of plain columns, and those columns: a file
    written in one piece sorts its rows in the writing task, without a range exchange (whose
    sampling costs a job of its own)."""
    import sqlglot

    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    order = tree.args.get("order")
    if order is None or not all(
        isinstance(o, exp.Ordered) and isinstance(o.this, exp.Column) and not o.args.get("desc")
        for o in order.expressions
    ):
        return duckdb_sql, []
    columns = [o.this.name for o in order.expressions]
    tree.set("order", None)
    return tree.sql(dialect="duckdb"), columns


def write_sql(spark: SparkSession, duckdb_sql: str, path: Path) -> Path:
    """The rows of a DuckDB-dialect query, run by Spark, as the Parquet file at ``path``."""
    query, order = split_order(duckdb_sql)
    return write_parquet(run_sql(spark, query), path, order)


class SparkRunner:
    """``features.engine.SqlRunner`` on Spark: DuckDB SQL transpiled and run; ``fetchone`` /
    ``fetchall`` bring the few rows of a count or a group-by to the driver, nothing more."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self._frame: DataFrame | None = None

    def execute(self, query: str, parameters: Any = None) -> SparkRunner:
        self._frame = self.spark.sql(to_spark_sql(parquet_views(self.spark, query), parameters))
        return self

    def _result(self) -> DataFrame:
        if self._frame is None:
            raise RuntimeError("execute a query first")
        return self._frame

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._result().take(1)
        return tuple(rows[0]) if rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._result().collect()]


def write_parquet(
    frame: DataFrame, path: Path, order_by: Sequence[str] = (), drop: Sequence[str] = ()
) -> Path:
    """Write a DataFrame by Spark as the one Parquet file at ``path`` (rows in ``order_by``
    order; ``drop``: columns that order the rows but are not written), atomically: one task
    writes into a temporary folder beside it, the file is then moved into place (a re-run
    replaces it). One file, as the DuckDB engine writes it and every reader of the state expects;
    the stages before the last exchange stay parallel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.spark"
    one = frame.repartition(1)
    if order_by:
        one = one.sortWithinPartitions(*order_by)
    if drop:
        one = one.drop(*drop)
    try:
        one.write.mode("overwrite").parquet(str(tmp))
        parts = sorted(tmp.glob("part-*.parquet"))
        if len(parts) != 1:
            raise RuntimeError(f"Spark wrote {len(parts)} part files into {tmp}, expected 1")
        os.replace(parts[0], path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def spark_copy(spark: SparkSession) -> Callable[[str, Path], None]:
    """``features.sources.ParquetCopy`` on Spark: the query transpiled, written by Spark."""

    def copy(sql: str, path: Path) -> None:
        write_sql(spark, sql, path)

    return copy


# --------------------------------------------------------------------------- features and labels


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
) -> DataFrame:
    """Features of ``fs`` at ``as_of`` from canonical parquet tables, as a lazy Spark DataFrame."""
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
) -> DataFrame:
    """Churn labels at ``as_of`` (same SQL as DuckDB), as a lazy Spark DataFrame."""
    source = register_parquet(spark, "patron_transactions", transactions_path)
    return run_sql(spark, churn_label_sql(source, as_of, horizon_days, lookback_days))


def data_dates_spark(spark: SparkSession, state: StateDirs, dataset: str) -> tuple[date, date]:
    """First and last transaction date of a dataset's ingested transactions (one row back)."""
    from features.build import data_date_range, transactions_source

    return data_date_range(SparkRunner(spark), transactions_source(state, dataset))


def write_snapshot_spark(
    spark: SparkSession, state: StateDirs, dataset: str, fs: FeatureSet, as_of: date
) -> Path:
    """``features.build.write_snapshot`` run by Spark: the same SQL, the same file and spec."""
    from features.build import snapshot_sql, write_feature_set_spec
    from features.catalog import Catalog

    out = Catalog(state, dataset).snapshot_path(fs.key, as_of)
    write_sql(spark, snapshot_sql(state, dataset, fs, as_of), out)
    write_feature_set_spec(out, fs)
    return out


def write_churn_labels_spark(
    spark: SparkSession,
    state: StateDirs,
    dataset: str,
    as_of: date,
    horizon_days: int,
    lookback_days: int,
) -> Path:
    """``features.build.write_churn_labels`` run by Spark: the same SQL, the same file."""
    from features.build import check_horizon, churn_labels_path, transactions_source

    source = transactions_source(state, dataset)
    check_horizon(SparkRunner(spark), source, as_of, horizon_days)
    out = churn_labels_path(state, dataset, as_of, horizon_days, lookback_days)
    return write_sql(spark, churn_label_sql(source, as_of, horizon_days, lookback_days), out)


# --------------------------------------------------------------------------- ingestion

#: DuckDB ``read_csv`` options and the Spark CSV options they become (others are refused).
_CSV_OPTIONS = {
    "delim": "sep",
    "sep": "sep",
    "delimiter": "sep",
    "header": "header",
    "quote": "quote",
    "escape": "escape",
    "encoding": "encoding",
    "nullstr": "nullValue",
}
_IGNORED_CSV_OPTIONS = ("all_varchar", "auto_detect", "compression")
#: The column of a raw view holding each row's 1-based position in its file.
POSITION = "__pos"


@dataclass(frozen=True)
class SparkSource:
    """A raw source file as Spark reads it: the view name and its columns."""

    view: str
    columns: list[str]


def _csv_options(cfg: DatasetConfig, source: SourceRead) -> dict[str, str]:
    """Spark CSV options for a source: every value as text, RFC 4180 quoting (as DuckDB)."""
    from features.sources import DatasetError

    opts = {"header": "true", "inferSchema": "false", "escape": '"', "mode": "PERMISSIVE"}
    for key, value in source.src.read_options.items():
        if key in _IGNORED_CSV_OPTIONS:
            continue
        if key not in _CSV_OPTIONS:
            raise DatasetError(
                cfg,
                f"{source.key}.read_options.{key}",
                f"a DuckDB read_csv option engine.kind spark does not map (it maps "
                f"{', '.join(sorted(set(_CSV_OPTIONS)))}); use engine.kind duckdb",
            )
        opts[_CSV_OPTIONS[key]] = str(value).lower() if isinstance(value, bool) else str(value)
    return opts


def read_source(spark: SparkSession, cfg: DatasetConfig, source: SourceRead) -> DataFrame:
    """A raw source file as a Spark DataFrame (CSV: every column as text; Parquet: its types)."""
    from features.sources import DatasetError

    if not isinstance(source.src.format, str):
        raise DatasetError(
            cfg,
            f"{source.key}.format",
            f"kind {source.src.format.kind} is read by engine.kind duckdb only",
        )
    file = source.file or Path(source.manifest["path"])
    name = file.name.lower()
    kind = source.src.format if source.src.format != "auto" else None
    kind = kind or ("parquet" if name.endswith(".parquet") else "csv")
    if kind == "parquet":
        return spark.read.parquet(str(file))
    if not name.endswith(".gz") and file.read_bytes()[:2] == b"\x1f\x8b":
        raise DatasetError(
            cfg,
            f"{source.key}.path",
            f"{source.label} is gzip-compressed; Spark knows it by its name: call it *.gz",
        )
    from pyspark.sql.types import StringType, StructField, StructType

    # the columns DuckDB read from the header (no header job; the same names in both engines)
    schema = StructType([StructField(c, StringType()) for c in source.raw_cols])
    return spark.read.options(**_csv_options(cfg, source)).schema(schema).csv(str(file))


def with_positions(spark: SparkSession, frame: DataFrame) -> DataFrame:
    """The rows of a file scan with their 1-based position in the file (``__pos``), computed
    without moving rows: a partition's rows are numbered within it, after the row counts of the
    partitions before it (one count per partition is brought to the driver)."""
    from pyspark.sql import functions as F

    ids = frame.withColumn("__mid", F.monotonically_increasing_id())
    if frame.rdd.getNumPartitions() == 1:  # a small file: one partition, no count needed
        return ids.withColumn(POSITION, F.col("__mid") + 1).drop("__mid")
    part = F.shiftright(F.col("__mid"), 33)
    counts: dict[int, int] = dict(ids.groupBy(part.alias("p")).count().collect())  # per partition
    offsets, total = [], 0
    for p in range(int(max(counts, default=-1)) + 1):
        offsets.append(total)
        total += int(counts.get(p, 0))
    if not offsets:
        return ids.withColumn(POSITION, F.lit(0).cast("bigint")).drop("__mid")
    offsets_col = F.array(*[F.lit(o).cast("bigint") for o in offsets])
    offset = F.element_at(offsets_col, (part + 1).cast("int"))
    index = F.col("__mid").bitwiseAND(F.lit((1 << 33) - 1))
    return ids.withColumn(POSITION, (offset + index + 1).cast("bigint")).drop("__mid")


def _rewrite_for_raw_view(columns: list[str]) -> Callable[[exp.Expression], exp.Expression]:
    """The two DuckDB-isms of the classifying SQL: the row number over the file (``row_number()
    OVER ()``) is the view's ``__pos``; the raw row as JSON (``to_json(r)``) is a struct of
    the file's columns (not ``__pos``)."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if (
            isinstance(node, exp.Window)
            and isinstance(node.this, exp.RowNumber)
            and not node.args.get("partition_by")
            and not node.args.get("order")
        ):
            return exp.column(POSITION, table="r")
        if (
            isinstance(node, exp.Anonymous)
            and str(node.this).lower() == "to_json"
            and len(node.expressions) == 1
            and isinstance(node.expressions[0], exp.Column)
            and node.expressions[0].name == "r"
        ):
            fields = [exp.column(c, table="r", quoted=True) for c in columns]
            keep_nulls = exp.Anonymous(  # DuckDB writes a NULL field as null; so does this
                this="MAP",
                expressions=[exp.Literal.string("ignoreNullFields"), exp.Literal.string("false")],
            )
            struct = exp.Anonymous(this="STRUCT", expressions=fields)
            return exp.Anonymous(this="TO_JSON", expressions=[struct, keep_nulls])
        return node

    return rewrite


def classify_source_sql(duckdb_sql: str, columns: list[str]) -> str:
    """A source's classifying SELECT (``features.sources``, DuckDB dialect) as Spark SQL over
    its raw view."""
    import sqlglot

    from features.engine import duckdb_functions_to_spark

    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    tree = tree.transform(_rewrite_for_raw_view(columns)).transform(duckdb_functions_to_spark)
    return tree.sql(dialect="spark")


def classify_spark(
    spark: SparkSession,
    con: Any,
    cfg: DatasetConfig,
    table_name: str,
    state: StateDirs,
    workdir: Path,
) -> tuple[list[str], list[SourceRead]]:
    """``features.sources.classify`` run by Spark: the mapping is bound by DuckDB against each
    file's columns (``con``; nothing but the header is read), then Spark classifies every row;
    the classified rows are kept in the work folder as the view ``__classified``."""
    from functools import reduce

    from pyspark.sql import functions as F

    from features.contracts import TABLES
    from features.sources import (
        DatasetError,
        duplicate_reason_sql,
        plan_table,
        source_sql,
    )

    table, tsrc = TABLES[table_name], cfg.tables[table_name]
    plan = plan_table(con, cfg, table_name, state, workdir)
    frames = []
    for source in plan.sources:
        raw = read_source(spark, cfg, source)
        if list(raw.columns) != source.raw_cols:  # a Parquet file read differently
            raise DatasetError(
                cfg,
                source.key,
                f"Spark reads the columns of {source.label} as {raw.columns[:8]}, DuckDB as "
                f"{source.raw_cols[:8]}; use engine.kind duckdb",
            )
        view = f"__raw_{table_name}_{source.index}"
        with_positions(spark, raw).createOrReplaceTempView(view)
        sql = source_sql(table, tsrc, source, view)
        frames.append(spark.sql(classify_source_sql(sql, source.raw_cols)))
    classified = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    if plan.key_cols:
        reason = to_spark_sql(f"SELECT {duplicate_reason_sql(plan.key_cols)} FROM t")
        reason = reason.removeprefix("SELECT ").removesuffix(" FROM t")
        classified = classified.withColumn("__reason", F.expr(reason))
    # classified once: the counts, the accepted and the quarantined rows read the same rows
    kept = workdir / f"{table_name}.classified"
    classified.write.mode("overwrite").parquet(str(kept))
    spark.read.schema(classified.schema).parquet(str(kept)).createOrReplaceTempView("__classified")
    return plan.columns, plan.sources


def ingest_table_spark(
    spark: SparkSession,
    con: Any,
    cfg: DatasetConfig,
    table_name: str,
    state: StateDirs,
    workdir: Path,
) -> TableReport:
    """``features.sources.ingest_table`` run by Spark: same rows accepted and quarantined (with
    the same reasons), same files, same report."""
    from features.sources import report_table

    all_cols, sources = classify_spark(spark, con, cfg, table_name, state, workdir)
    try:
        return report_table(
            SparkRunner(spark), spark_copy(spark), cfg, table_name, state, all_cols, sources
        )
    finally:
        spark.catalog.dropTempView("__classified")


def ingest_tables_spark(
    cfg: DatasetConfig, state: StateDirs, progress: Callable[[str], None] | None = None
) -> dict[str, TableReport]:
    """Every table of a dataset ingested on Spark (``features.sources.ingest`` dispatches here
    when the dataset's ``engine.kind`` is spark)."""
    from features.sources import connect, work_folder

    require_spark(cfg.where())
    log.info("ingesting %s on %s", cfg.name, cfg.engine.describe())
    con = connect(state)
    try:
        with spark_session(cfg.engine) as spark, work_folder(state) as workdir:
            reports = {}
            for name in cfg.tables:
                if progress:
                    progress(name)
                reports[name] = ingest_table_spark(spark, con, cfg, name, state, workdir)
            return reports
    finally:
        con.close()
