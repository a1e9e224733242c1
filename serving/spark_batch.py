"""Batch scoring on Spark: the file ``patron score`` writes, computed on the executors.

**When.** The scored dataset's YAML says which engine processes its data (``engine: {kind: spark,
master: ...}``, the key ingestion and features already follow: docs/features.md), and ``patron
score`` follows it too (``serving.batch.score_to_file``). Configuration rather than a ``--engine``
flag: users point Patron at data by config, a base big enough for Spark's features is big enough for
Spark's scoring, the cluster is named in one place, and one run cannot silently disagree with it.
Tests and benchmarks pass an ``EngineConfig`` to the plain function.

**What runs where.**

* Driver: the registry look-up and model load, the service's checks (feature-set fingerprint,
  feature columns) against the snapshot's schema, its row count from the Parquet footer, and the job
  plan. No row of the base is collected to the driver.
* Executors, pass 1, one task per partition (about ``ROWS_PER_TASK`` rows): the snapshot's model
  columns scored with ``mapInArrow``; each Python worker unpickles the model once (a broadcast) and
  runs ``serving.batch.score_rows`` on chunks of ``REASON_CHUNK`` rows (``SCORE_CHUNK`` scores
  only): ``python_model.score`` and the top reasons of ``Explainer.top_reasons``, the in-process
  job's code, with ``spark.task.cpus`` threads. The rows go to a temporary Parquet folder.
* Pass 2, over the whole base. Percentile and decile are ``serving.kinds.rank_stats``'s definition
  (the count of scores at or below each score, over the base): a count per distinct score, a
  running sum over the distinct scores (Spark sorts them in one task), joined back by score; exact,
  ties included. Segments: the order-day gaps by ``features.segments.order_gaps_sql`` (DuckDB's
  SQL, transpiled), then ``serving.base.compute_segments`` itself in one task over the segment
  inputs only (customer id and at most ten columns): RFM quintiles and Pareto classes are ranks
  and running shares over the base, and running that very function keeps them exact instead of a
  second definition to drift. It is the step that does not spread over executors (memory about
  10 values per customer).
* The file: rows sorted back into snapshot order in one task, written by Spark into a temporary
  folder and moved into place (``features.spark.write_parquet``: atomic; a re-run replaces the
  file; temporaries are removed on success and on failure).

**Why mapInArrow**, not ``mapInPandas`` nor ``mlflow.pyfunc.spark_udf``: ``spark_udf`` calls the
pyfunc's ``predict``, which returns scores only; reasons need the wrapped booster (a second pass
anyway). ``mapInPandas`` is the same executor model, but PySpark converts the batches itself, and
with pandas 3 it differs from the in-process reader (measured with pyspark 4.3 + pandas 3.1: a
BIGINT column with nulls arrives as ``Int64`` with ``pd.NA``; ``pd.read_parquet`` gives ``float64``
with NaN). With ``mapInArrow`` each batch becomes pandas through pyarrow's ``to_pandas``, as
``pd.read_parquet`` does, so the model sees the in-process job's dtypes, and the output batches are
built with the Arrow types the file keeps.

**Differences from the in-process file** (tests/serving/test_spark_scoring.py checks the rest
equal: rows and order, scores, ranks, segments, reasons): the Parquet schema is the same except
that a column with no value at all (segments of a snapshot that has none, reasons of a model that
has none) is a typed null column (string, bool, double), where pandas writes Arrow's null type;
and a chunk whose explanation raises gets null reasons alone, where the in-process job then drops
reasons for the whole file. Progress counts partitions (tasks), not customers.

**Where Python runs.** On a ``local[N]`` master the Python workers run this interpreter (unless
``PYSPARK_PYTHON`` says otherwise); on a cluster, executors need Patron installed in the interpreter
``PYSPARK_PYTHON`` / ``spark.pyspark.python`` names, and the state folder at the same path.
pyspark is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.engine import EngineConfig
from features.store import StateDirs
from serving.base import CustomerBase, compute_segments
from serving.batch import (
    MODEL_COLUMNS,
    REASON_CHUNK,
    SCORE_CHUNK,
    SEGMENT_FIELDS,
    Progress,
    check_scorer,
    file_columns,
    load_scoring_model,
    one_model,
    reason_columns,
    score_rows,
    segment_columns,
)
from serving.kinds import xgboost_threads
from serving.registry import ModelMeta
from serving.settings import ServedModel, ServingSettings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("patron.serving")

ROW = "__row"  # each row's place in the snapshot (monotonically_increasing_id of the scan)
ROWS_PER_TASK = 50_000  # rows per scoring task: several tasks per core, progress worth showing
GAP_COLUMNS = ("last_gap_days", "longest_gap_days", "days_since_won_back")
#: Spark type of each file column that is not text (the others: string).
_TYPES = {
    "score": "double",
    "probability": "double",
    "value": "double",
    "gross_profit": "double",
    "npv": "double",
    "percentile": "double",
    "decile": "bigint",
    "segment_win_back_priority": "boolean",
    ROW: "bigint",
}
Fields = list[tuple[str, str]]  # (column, Spark type) of a batch a task yields


def column_type(name: str) -> str:
    """The Spark type of a batch-file column (as the in-process file stores it)."""
    if name.startswith("reason_") and not name.endswith("_feature"):
        return "double"
    return _TYPES.get(name, "string")


# --------------------------------------------------------------------------- driver side


def snapshot_schema_base(state: StateDirs, dataset: str, feature_set: str) -> CustomerBase:
    """The latest snapshot as a base of no rows: its columns and types, its as-of and the spec
    recorded beside it, for the service's checks; only the Parquet footer is read."""
    import pyarrow.parquet as pq

    from features.build import SPEC_FILE, latest_snapshot

    as_of, path = latest_snapshot(state, dataset, feature_set)
    features = pq.read_schema(path).empty_table().to_pandas().set_index("customer_id")
    features.index = pd.Index([], dtype=object, name="customer_id")
    spec_path = path.parent / SPEC_FILE
    return CustomerBase(
        dataset=dataset,
        feature_set=feature_set,
        as_of=as_of,
        snapshot_path=path,
        fingerprint=(),
        features=features,
        segments=None,
        consent={},
        id_hash=np.empty(0, dtype=np.uint64),
        offers=None,
        monitor=None,
        feature_set_spec=json.loads(spec_path.read_text()) if spec_path.exists() else None,
    )


def _segments_config() -> Any:
    """The segment settings ``serving.base.compute_segments`` uses."""
    from features.segments import ClusterConfig, SegmentsConfig

    return SegmentsConfig(clusters=ClusterConfig(enabled=False))


def segment_inputs(base: CustomerBase) -> list[str] | None:
    """The snapshot columns the segments read (None: the snapshot has no segments, as
    ``compute_segments`` decides on its columns: a labelled snapshot lacks the RFM inputs)."""
    cfg = _segments_config()
    wanted = {
        "days_since_last_order",
        "days_since_first_order",
        "orders_count_total",
        "spend_sum_total",
        "returns_share",
        "rfm_points",
        cfg.recency_column,
        cfg.frequency_column,
        cfg.monetary_column,
        cfg.lifecycle.loyal_orders_column,
        *GAP_COLUMNS,
    }
    columns = [c for c in base.features.columns if c in wanted]
    if compute_segments(base.features, base.as_of, None) is None:
        return None
    # the same function on those columns alone: a segment scheme reading a column left out
    # here would fail now, on no rows, rather than differ from the in-process file
    if compute_segments(base.features[columns], base.as_of, None) is None:
        raise RuntimeError("serving.spark_batch.segment_inputs misses a column the segments read")
    return columns


def _start(engine: EngineConfig, where: str) -> tuple[contextlib.ExitStack, SparkSession]:
    """The engine's session and an exit stack that stops it if it was started here; a session
    that does not start is one line naming ``engine.master``."""
    from features.spark import spark_session
    from serving.lifecycle import one_line

    stack = contextlib.ExitStack()
    try:
        spark = stack.enter_context(spark_session(engine))
    except Exception as exc:  # gateway, master or resource errors: no customer data in them
        raise ValueError(
            f"{where}: engine.master: cannot start Spark at {engine.master!r}: {one_line(exc)}"
        ) from None
    return stack, spark


def _python_workers_here(spark: SparkSession) -> None:
    """On a local master, Python workers run this interpreter (its packages are Patron's),
    unless $PYSPARK_PYTHON names one; PySpark would otherwise start ``python3`` from PATH."""
    sc = spark.sparkContext
    if (sc.master or "").startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        sc.pythonExec = sys.executable


def _largest_stage(tracker: Any, group: str) -> tuple[int, int] | None:
    """(tasks done, tasks) of the largest stage of the group's jobs: its partitions."""
    best: tuple[int, int] | None = None
    for job in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job)
        for stage_id in info.stageIds if info is not None else ():
            stage = tracker.getStageInfo(stage_id)
            if stage is not None and (best is None or stage.numTasks > best[1]):
                best = (stage.numCompletedTasks, stage.numTasks)
    return best


@contextlib.contextmanager
def _job_progress(spark: SparkSession, progress: Progress | None) -> Iterator[None]:
    """The block's Spark jobs in a job group of their own; ``progress(done, total)`` follows
    the tasks of its largest stage from a polling thread (Spark's status tracker)."""
    sc = spark.sparkContext
    keys = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")
    before = {key: sc.getLocalProperty(key) for key in keys}  # a notebook's own job group
    group = f"patron-score-{uuid.uuid4().hex[:12]}"
    sc.setJobGroup(group, "patron batch scoring", False)
    stop = threading.Event()

    def poll() -> None:
        assert progress is not None
        tracker, last = sc.statusTracker(), None
        while not stop.wait(0.5):
            now = _largest_stage(tracker, group)
            if now is not None and now != last:
                progress(*now)
                last = now

    thread = threading.Thread(target=poll, daemon=True) if progress is not None else None
    if thread is not None:
        thread.start()
    try:
        yield
        if progress is not None:
            done = _largest_stage(sc.statusTracker(), group)
            if done is not None:
                progress(done[1], done[1])
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        for key, value in before.items():
            sc.setLocalProperty(key, value)  # type: ignore[arg-type]  # None (null) removes it


# --------------------------------------------------------------------------- executor side

_LOADED: dict[str, Any] = {}  # per Python worker: the model of the broadcast it was sent


def _worker_model(payload: Any, token: str) -> Any:
    """The broadcast model, unpickled once per Python worker (workers are reused by tasks)."""
    model = _LOADED.get(token)
    if model is None:
        from pyspark import cloudpickle

        model = cloudpickle.loads(payload.value)
        _LOADED.clear()
        _LOADED[token] = model
    return model


def _arrow_batch(columns: dict[str, Any], fields: Fields) -> pa.RecordBatch:
    """A record batch of ``fields`` (NaN and None stored as null, as pandas' to_parquet does)."""
    import pyarrow as pa

    types = {"string": pa.string(), "double": pa.float64(), "bigint": pa.int64()}
    types["boolean"] = pa.bool_()
    arrays = []
    for name, kind in fields:
        values = np.asarray(columns[name], dtype=object if kind == "string" else None)
        arrays.append(pa.array(values, type=types[kind], from_pandas=True))
    return pa.RecordBatch.from_arrays(arrays, names=[name for name, _ in fields])


def _chunks(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pd.DataFrame]:
    """The partition's rows as pandas frames of about ``rows`` rows, converted by pyarrow as
    ``pd.read_parquet`` converts the snapshot for the in-process job."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        if batch.num_rows:
            pending.append(batch)
            size += batch.num_rows
        if size >= rows:
            yield pa.Table.from_batches(pending).to_pandas()
            pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending).to_pandas()


def _score_task(
    payload: Any,
    token: str,
    meta: ModelMeta,
    reasons: bool,
    threads: int,
    fields: Fields,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function each scoring task runs over its partition's batches."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        python_model = _worker_model(payload, token)
        xgboost_threads(python_model, threads)
        for rows in _chunks(batches, REASON_CHUNK if reasons else SCORE_CHUNK):
            columns = score_rows(meta, python_model, rows, reasons, threads)
            columns.update({ROW: rows[ROW], "customer_id": rows["customer_id"]})
            yield _arrow_batch(columns, fields)

    return run


def _segment_task(as_of: date, fields: Fields) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The function of the one task that segments the whole base: its segment inputs in
    snapshot order, through ``compute_segments`` as the in-process base computes them."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for frame in _chunks(batches, sys.maxsize):  # one frame: the whole base
            ids = frame.pop("customer_id").to_numpy(dtype=object)
            features = frame.drop(columns=[ROW])
            features.index = pd.Index(ids, dtype=object, name="customer_id")
            if features.index.has_duplicates:
                raise ValueError("the snapshot holds duplicated customer ids")
            segments = compute_segments(features, as_of, None)
            columns = {"customer_id": ids, **segment_columns(segments, len(ids))}
            yield _arrow_batch(columns, fields)

    return run


# --------------------------------------------------------------------------- the job


def _ddl(fields: Fields) -> str:
    return ", ".join(f"`{name}` {kind}" for name, kind in fields)


def _scored(
    spark: SparkSession, base: CustomerBase, meta: ModelMeta, python_model: Any, reasons: bool
) -> tuple[DataFrame, Any, int]:
    """Pass 1 as a lazy frame: every snapshot row's row-wise columns, scored on the executors;
    the model's broadcast (to destroy after the pass) and the row count (the Parquet footer)."""
    import pyarrow.parquet as pq
    from pyspark import cloudpickle
    from pyspark.sql import functions as F

    snapshot = spark.read.parquet(str(base.snapshot_path))
    features = list(dict.fromkeys(c for c in python_model.feature_names if c != "customer_id"))
    rows = snapshot.select(
        F.monotonically_increasing_id().alias(ROW),
        snapshot["customer_id"].cast("string").alias("customer_id"),
        *[snapshot[c] for c in features],
    )
    n = pq.ParquetFile(base.snapshot_path).metadata.num_rows
    parts = max(2 * spark.sparkContext.defaultParallelism, math.ceil(n / ROWS_PER_TASK))
    value = ["score", "probability", "value", "gross_profit", "npv"]
    names = [ROW, "customer_id", *value, *(reason_columns() if reasons else [])]
    fields = [(c, column_type(c)) for c in names]
    payload = spark.sparkContext.broadcast(cloudpickle.dumps(python_model))
    threads = int(spark.conf.get("spark.task.cpus", "1") or 1)
    task = _score_task(payload, uuid.uuid4().hex, meta, reasons, threads, fields)
    return rows.repartition(parts).mapInArrow(task, _ddl(fields)), payload, n


def _ranks(scored: DataFrame, n: int) -> DataFrame:
    """score -> percentile, decile as ``rank_stats`` defines them over the ``n`` scores."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    running = Window.orderBy("score").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    counts = scored.groupBy("score").count()
    at_or_below = counts.select("score", F.sum("count").over(running).alias("at_or_below"))
    return at_or_below.select(
        "score",
        (F.lit(100.0) * F.col("at_or_below").cast("double") / F.lit(float(n))).alias("percentile"),
        F.expr(f"least(10, 1 + (10 * ({n} - at_or_below)) div {n})").cast("bigint").alias("decile"),
    )


def _segments(spark: SparkSession, state: StateDirs, base: CustomerBase, inputs: list[str]) -> Any:
    """customer_id -> segment_* columns over the whole base (one task; see the module doc)."""
    from pyspark.sql import functions as F

    from features.build import transactions_source
    from features.segments import order_gaps_sql
    from features.spark import run_sql, split_order

    snapshot = spark.read.parquet(str(base.snapshot_path))
    rows = snapshot.select(
        F.monotonically_increasing_id().alias(ROW),
        snapshot["customer_id"].cast("string").alias("customer_id"),
        *[snapshot[c] for c in inputs],
    )
    try:
        source: str | None = transactions_source(state, base.dataset)
    except FileNotFoundError:  # as the in-process base: nobody is "won back"
        source = None
    if source is not None:
        lapsed = _segments_config().lifecycle.lapsed_days
        query, _ = split_order(order_gaps_sql(source, base.as_of, lapsed))
        gaps = run_sql(spark, query)
        gaps = gaps.select(
            gaps["customer_id"].cast("string").alias("customer_id"),
            *[gaps[c] for c in GAP_COLUMNS],
        )
        rows = rows.drop(*[c for c in GAP_COLUMNS if c in inputs])
        rows = rows.join(gaps, on="customer_id", how="left")
    segment_cols = [f"segment_{k}" for k in SEGMENT_FIELDS]
    fields = [(c, column_type(c)) for c in ["customer_id", *segment_cols]]
    one = rows.repartition(1).sortWithinPartitions(ROW)
    return one.mapInArrow(_segment_task(base.as_of, fields), _ddl(fields))


def score_base_spark(
    state: StateDirs,
    spec: ServingSettings | ServedModel,
    out_path: str | Path,
    engine: EngineConfig,
    family: str | None = None,
    reasons: bool = True,
    progress: Progress | None = None,
    stage: Callable[[str], None] | None = None,
    where: str = "patron score",
) -> Path:
    """``serving.batch.score_base`` on Spark: the same file, computed on the executors.

    ``progress(done, total)`` counts the finished partitions of each stage ``stage(line)``
    announces; ``where`` names the config in error lines (the dataset YAML).
    """
    from features.spark import require_spark, write_parquet

    require_spark(where)  # no pyspark or no Java: one line naming engine.kind, before any work
    from pyspark.sql import functions as F

    settings = one_model(spec, family)
    family = next(iter(settings.models))
    meta, python_model, feature_set = load_scoring_model(settings, state, family)
    base = snapshot_schema_base(state, settings.models[family].dataset, feature_set)
    check_scorer(family, meta, python_model, base)
    inputs = segment_inputs(base)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.spark-work"
    announce = stage or (lambda line: None)
    announce(f"starting {engine.describe()}")
    stack, spark = _start(engine, where)
    with stack:
        _python_workers_here(spark)
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        announce(f"scoring {family} on {engine.describe()}: partitions")
        frame, payload, n = _scored(spark, base, meta, python_model, reasons)
        try:
            with _job_progress(spark, progress):
                frame.write.parquet(str(work / "scored"))
        finally:
            payload.destroy()
        announce("percentiles, deciles and segments over the base, one file: partitions")
        scored = spark.read.parquet(str(work / "scored"))  # one row per snapshot row: n
        final = scored.join(_ranks(scored, n), on="score", how="left")
        if inputs is not None:
            final = final.join(_segments(spark, state, base, inputs), on="customer_id", how="left")
        else:
            for c in (f"segment_{k}" for k in SEGMENT_FIELDS):
                final = final.withColumn(c, F.lit(None).cast(column_type(c)))
        facts = {
            MODEL_COLUMNS[0]: family,
            "registered_model": meta.registered_model,
            "version": meta.version,
            "as_of": base.as_of.isoformat(),
        }
        columns = [
            F.lit(facts[c]).cast("string").alias(c) if c in facts else F.col(c)
            for c in file_columns(reasons)
        ]
        with _job_progress(spark, progress):
            write_parquet(final.select(*columns, ROW), out, order_by=[ROW], drop=[ROW])
    log.info("batch scores of %s written on %s: %d rows", family, engine.describe(), n)
    return out
