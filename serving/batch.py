"""Batch scoring: the whole snapshot scored into one parquet file, the values /score returns.

A campaign system that would rather pull a file than call the API gets, per customer, exactly the
fields /score returns (flattened: ``segment_*`` and ``reason_<i>_*`` columns), written atomically.

The job is vectorised end to end. It loads only the model it scores and that model's base (no
serving state: no shadow model, no campaigns, no reasons precomputed, the base scored once),
scores the base in chunks with every core, ranks it once (``rank_stats``, as the service does) and
builds every column as an array. Reason columns come from ``Explainer.top_reasons``, the same
computation behind the records of /score, one chunk of rows at a time: a chunk's SHAP matrix is
all the memory reasons need.

Scores only (``reasons=False``): the ``reason_<i>_*`` columns are absent from the file. Absent
means "not computed"; null reason columns mean the model has no reason codes (not a tree booster),
as /score answers ``reasons: []`` for it.

Progress: ``progress(scored, total)`` is called with the running count of customers whose rows
are complete: ``(0, total)`` once the base is loaded, then after every chunk, last
``(total, total)``.

Where: ``score_to_file`` (``patron score``) follows the scored dataset's YAML: a dataset with
``engine: {kind: spark, ...}`` is scored on Spark's executors by ``serving.spark_batch`` (the same
file, the same per-chunk code: ``score_rows``), any other in this process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.store import StateDirs, atomic_path
from serving.base import CustomerBase, load_base
from serving.kinds import (
    N_REASONS,
    ReasonArrays,
    build_explainer,
    build_score_model,
    check_score_inputs,
    detect_kind,
    rank_stats,
    score_output,
    single_thread_xgboost,
    xgboost_threads,
)
from serving.registry import ModelMeta, Registry, tracking_uri_of
from serving.settings import ServedModel, ServingSettings
from serving.state import check_feature_set, model_meta, served_feature_set

if TYPE_CHECKING:
    from features.engine import EngineConfig

log = logging.getLogger("patron.serving")

#: ``progress(scored, total)``: running count of customers scored, and the base size.
Progress = Callable[[int, int], None]

REASON_CHUNK = 20_000  # rows explained per call: bounds the memory of the SHAP matrix
SCORE_CHUNK = 250_000  # rows scored per call without reasons (few calls: little overhead)
SEGMENT_FIELDS = ("rfm_code", "rfm_segment", "abc_class", "lifecycle_stage", "win_back_priority")
REASON_FIELDS = ("feature", "value", "contribution")
MODEL_COLUMNS = ("model", "registered_model", "version", "as_of")


def reason_columns(k: int = N_REASONS) -> list[str]:
    """``reason_<i>_<field>`` for i = 1..k."""
    return [f"reason_{i + 1}_{key}" for i in range(k) for key in REASON_FIELDS]


def customer_columns(reasons: bool = True) -> list[str]:
    """The per-customer columns of the batch file, in order (the file adds MODEL_COLUMNS)."""
    return [
        "customer_id",
        "score",
        "probability",
        "value",
        "gross_profit",
        "npv",
        "percentile",
        "decile",
        *(f"segment_{k}" for k in SEGMENT_FIELDS),
        *(reason_columns() if reasons else []),
    ]


#: The per-customer columns of a file with reasons.
COLUMNS = customer_columns(reasons=True)


def file_columns(reasons: bool = True) -> list[str]:
    """Every column of the batch file, in order."""
    return [MODEL_COLUMNS[0], *customer_columns(reasons), *MODEL_COLUMNS[1:]]


def one_model(spec: ServingSettings | ServedModel, family: str | None) -> ServingSettings:
    """Settings holding only the model to score."""
    if isinstance(spec, ServedModel):
        return ServingSettings(models={family or "model": spec}, reload_interval_s=0)
    if family is None:
        if len(spec.models) != 1:
            raise ValueError(f"name the model to score among {sorted(spec.models)}")
        family = next(iter(spec.models))
    if family not in spec.models:
        raise ValueError(f"model {family!r} is not configured; known: {sorted(spec.models)}")
    return spec.model_copy(update={"models": {family: spec.models[family]}})


def load_scoring_model(
    settings: ServingSettings, state: StateDirs, family: str
) -> tuple[ModelMeta, Any, str]:
    """(registry facts, python model, feature-set key of its snapshot) of one served scoring
    model, by alias as the service loads it; nothing of the base is read."""
    spec = settings.models[family]
    registry = Registry(tracking_uri_of(settings, state))
    version = registry.version(spec.registered_model, spec.alias)
    feature_set = served_feature_set(spec, registry, version[0])
    python_model = registry.load(spec.registered_model, version[0])
    kind = detect_kind(python_model, spec.kind)
    if kind.build is not build_score_model:
        raise ValueError(f"model {family!r} is a {kind.name} model, not a scorer")
    meta = model_meta(family, kind.name, spec, spec.alias, version, registry)
    return meta, python_model, feature_set


def check_scorer(family: str, meta: ModelMeta, python_model: Any, base: CustomerBase) -> None:
    """The service's checks of a model against its base: feature-set fingerprint, columns."""
    check_feature_set(family, meta, python_model, base)
    check_score_inputs(meta, python_model, base)


def load_scorer(
    settings: ServingSettings, state: StateDirs, family: str
) -> tuple[ModelMeta, Any, CustomerBase]:
    """(registry facts, python model, base) of one served scoring model, checked as the service
    checks them (alias, feature-set fingerprint, feature columns) but not scored."""
    meta, python_model, feature_set = load_scoring_model(settings, state, family)
    base = load_base(state, settings.models[family].dataset, feature_set)
    check_scorer(family, meta, python_model, base)
    return meta, python_model, base


def segment_columns(segments: pd.DataFrame | None, n: int) -> dict[str, Any]:
    """segment_<field> columns as /score's records hold them (str fields, a bool flag), from a
    base's segments (``serving.base.compute_segments``; None: no segments, null columns)."""
    if segments is None:
        return {f"segment_{k}": np.full(n, None, dtype=object) for k in SEGMENT_FIELDS}
    out: dict[str, Any] = {}
    for key in SEGMENT_FIELDS[:-1]:  # the text fields, named as the base's columns
        column = segments[key]
        if isinstance(column.dtype, pd.StringDtype) and not column.hasnans:
            out[f"segment_{key}"] = column.array  # already text: no copy, no conversion
            continue
        values = column.to_numpy(dtype=object)
        if not _all_str(values):  # as str() of each value, like the records of /score
            values = np.array([str(v) for v in values], dtype=object)
        out[f"segment_{key}"] = values
    out["segment_win_back_priority"] = segments["lapsed_recently"].to_numpy(dtype=bool)
    return out


def _all_str(values: np.ndarray) -> bool:
    from pandas.api.types import infer_dtype

    return len(values) == 0 or infer_dtype(values, skipna=False) == "string"


def _reason_frame_columns(parts: list[ReasonArrays] | None, n: int) -> dict[str, Any]:
    """reason_<i>_<field> columns from chunks of top reasons (None: no reason codes)."""
    out: dict[str, Any] = {}
    if parts:
        features = np.concatenate([p.features for p in parts])
        values = np.concatenate([p.values for p in parts])
        contribs = np.concatenate([p.contributions for p in parts])
    else:
        features = np.empty((n, 0), dtype=object)
        values = contribs = np.empty((n, 0))
    for i in range(N_REASONS):
        have = i < features.shape[1]
        out[f"reason_{i + 1}_feature"] = features[:, i] if have else np.full(n, None, dtype=object)
        out[f"reason_{i + 1}_value"] = values[:, i] if have else np.full(n, np.nan)
        out[f"reason_{i + 1}_contribution"] = contribs[:, i] if have else np.full(n, np.nan)
    return out


def score_frame(
    meta: ModelMeta,
    python_model: Any,
    base: CustomerBase,
    reasons: bool = True,
    progress: Progress | None = None,
    chunk: int | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Every base customer's /score fields as flat columns (``customer_columns(reasons)``).

    Scores (and reasons) are computed ``chunk`` rows at a time with ``threads`` threads (default:
    every core), then ranked over the whole base.
    """
    n = base.size
    threads = threads or os.cpu_count() or 1
    step = max(1, chunk or (REASON_CHUNK if reasons else SCORE_CHUNK))
    features = python_model.feature_names
    scores = np.empty(n, dtype=np.float64)
    parts: list[ReasonArrays] | None = [] if reasons else None
    if progress is not None:
        progress(0, n)
    xgboost_threads(python_model, threads)
    try:
        for start in range(0, n, step):
            rows = base.features.iloc[start : min(start + step, n)]
            scores[start : start + len(rows)] = python_model.score(rows[features])
            if parts is not None:
                parts = _explain_chunk(meta, python_model, rows, parts, threads)
            if progress is not None:
                progress(start + len(rows), n)
    finally:
        single_thread_xgboost(python_model)  # back to the service's setting
    _, percentile, decile = rank_stats(scores)
    columns: dict[str, Any] = {
        "customer_id": base.features.index.to_numpy(dtype=object),
        **value_columns(meta, python_model, scores),
        "percentile": percentile.astype(np.float64),
        "decile": decile.astype(np.int64),
        **segment_columns(base.segments, n),
    }
    if reasons:
        columns.update(_reason_frame_columns(parts, n))
    return pd.DataFrame(columns, columns=customer_columns(reasons))


def value_columns(meta: ModelMeta, python_model: Any, scores: np.ndarray) -> dict[str, Any]:
    """score, probability, value, gross_profit and npv of each score, as /score returns them
    (NaN where the model's output is not that quantity)."""
    output = score_output(meta, python_model)
    nan = np.full(len(scores), np.nan)
    terms = None
    if output == "value":
        from models.value import served_value_terms

        terms = served_value_terms(getattr(python_model, "info", None))
    return {
        "score": scores,
        "probability": scores if output == "probability" else nan,
        "value": scores if output == "value" else nan,
        "gross_profit": nan if terms is None else scores * terms[0],
        "npv": nan if terms is None else scores * terms[0] * terms[1],
    }


def score_rows(
    meta: ModelMeta, python_model: Any, rows: pd.DataFrame, reasons: bool, threads: int = 1
) -> dict[str, Any]:
    """The columns of one chunk of base rows that depend on those rows alone: the value columns
    and, with ``reasons``, the reason columns (what a Spark task computes per chunk; percentile,
    decile and segments are over the whole base)."""
    scores = np.asarray(python_model.score(rows[python_model.feature_names]), dtype=np.float64)
    out = value_columns(meta, python_model, scores)
    if reasons:
        out.update(
            _reason_frame_columns(_explain_chunk(meta, python_model, rows, [], threads), len(rows))
        )
    return out


def _explain_chunk(
    meta: ModelMeta,
    python_model: Any,
    rows: pd.DataFrame,
    parts: list[ReasonArrays],
    threads: int,
) -> list[ReasonArrays] | None:
    """``parts`` with the chunk's top reasons appended; None when the model cannot explain
    (as the service then answers no reasons for any customer)."""
    try:
        explainer = build_explainer(python_model, rows)
        if explainer is None:
            return None
        parts.append(explainer.top_reasons(np.arange(len(rows)), N_REASONS, nthread=threads))
    except Exception as exc:  # reasons are optional; scores are not
        log.warning("no reason codes for %s: %s", meta.registered_model, type(exc).__name__)
        return None
    return parts


def score_base(
    state: StateDirs,
    spec: ServingSettings | ServedModel,
    out_path: str | Path,
    family: str | None = None,
    reasons: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Score every customer of the model's latest snapshot into ``out_path`` (parquet, atomic).

    ``reasons=False`` writes scores only (no ``reason_*`` columns); ``progress(scored, total)``
    follows the count of customers scored.
    """
    settings = one_model(spec, family)
    family = next(iter(settings.models))
    meta, python_model, base = load_scorer(settings, state, family)
    frame = score_frame(meta, python_model, base, reasons=reasons, progress=progress)
    frame.insert(0, "model", family)
    frame["registered_model"] = meta.registered_model
    frame["version"] = meta.version
    frame["as_of"] = base.as_of.isoformat()
    out = Path(out_path)
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    return out


def dataset_engine(dataset: str, search_dir: Path | None = None) -> tuple[EngineConfig, str]:
    """The engine the served dataset's YAML names (``engine:``, as for ingestion and features)
    and that YAML as messages name it; DuckDB in process when no YAML of that name exists
    (a dataset ingested from a file elsewhere). A YAML that does not validate is one line."""
    from features.engine import EngineConfig
    from features.sources import load_dataset

    try:
        cfg = load_dataset(dataset, search_dir)
    except FileNotFoundError:
        return EngineConfig(), f"dataset {dataset}"
    return cfg.engine, cfg.where()


def score_to_file(
    family: str,
    out_path: str | Path,
    state: StateDirs | None = None,
    settings: ServingSettings | None = None,
    reasons: bool = True,
    progress: Progress | None = None,
    engine: EngineConfig | None = None,
    stage: Callable[[str], None] | None = None,
) -> Path:
    """``patron score --model <family> --out <file>``: settings default to $PATRON_SERVING.

    The scored dataset's engine decides where (``dataset_engine``; ``engine`` overrides it):
    DuckDB scores in this process (``score_base``; ``progress`` counts customers), Spark on its
    executors (``serving.spark_batch.score_base_spark``; ``progress`` counts the partitions of
    each stage ``stage(line)`` announces). Both write the same file.
    """
    settings = settings or ServingSettings.from_env()
    state = state or StateDirs.resolve(settings.home)
    where = "patron score"
    if engine is None:
        dataset = one_model(settings, family).models[family].dataset
        engine, where = dataset_engine(dataset)
    if engine.kind == "spark":
        from serving.spark_batch import score_base_spark

        return score_base_spark(
            state, settings, out_path, engine, family, reasons, progress, stage, where
        )
    return score_base(state, settings, out_path, family=family, reasons=reasons, progress=progress)
