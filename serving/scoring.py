"""Scoring without a server: registry models, the snapshot held in memory, one immutable state.

``build_state`` loads every served model by alias and the latest feature snapshot of its dataset,
scores the whole snapshot once (the base distribution behind percentiles, deciles and targeting),
and returns a frozen ``ServingState``. The service swaps that one reference on reload, so a request
that started on the old state finishes on it. The HTTP layer and ``serving.batch`` both call the
functions here, which is what makes the batch file and the API agree.

Model kinds plug in through ``KINDS``: each kind knows how to recognise a loaded MLflow python
model and how to build its served form over a customer base.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.sql import sql_literal
from features.store import StateDirs
from serving.settings import ServedModel, ServingSettings
from serving.targeting import CHANNELS, consent_flags, id_hashes

log = logging.getLogger("patron.serving")

N_REASONS = 3
SEGMENT_COLUMNS = ("rfm_code", "rfm_segment", "abc_class", "lifecycle_stage", "lapsed_recently")


class RequestError(Exception):
    """A client error: the HTTP layer answers ``status`` with the message and the field named."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


# --------------------------------------------------------------------------- the customer base


@dataclass(frozen=True)
class CustomerBase:
    """One dataset's feature snapshot in memory, with segments, consent per channel and offers."""

    dataset: str
    feature_set: str
    as_of: date
    snapshot_path: Path
    fingerprint: tuple[Any, ...]
    features: pd.DataFrame  # indexed by customer_id (str), every snapshot column
    segments: pd.DataFrame | None  # aligned with ``features``; SEGMENT_COLUMNS
    consent: Mapping[str, np.ndarray]  # channel -> bool per customer, aligned with ``features``
    id_hash: np.ndarray  # uint64 per customer, aligned with ``features``
    offers: pd.DataFrame | None  # indexed by offer_id
    monitor: dict[str, Any] | None  # monitor.json beside the snapshot, when present
    transactions_relation: str | None = None  # DuckDB relation of the accepted transactions
    products_relation: str | None = None  # product -> tier relation (ingested products table)

    @property
    def size(self) -> int:
        return len(self.features)

    @property
    def segment_arrays(self) -> Mapping[str, np.ndarray] | None:
        """The segment columns as numpy arrays (cheap to index per request)."""
        if self.segments is None:
            return None
        cached = self.__dict__.get("_segment_arrays")
        if cached is None:
            cached = {c: self.segments[c].to_numpy(dtype=object) for c in SEGMENT_COLUMNS}
            object.__setattr__(self, "_segment_arrays", cached)
        return cached

    def positions(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Row of each id in the snapshot (-1 when unknown)."""
        return self.features.index.get_indexer(pd.Index(customer_ids, dtype=object))


def _files_fingerprint(paths: Iterable[Path]) -> tuple[Any, ...]:
    out: list[Any] = []
    for p in paths:
        st = p.stat() if p.exists() else None
        out.append((str(p), st.st_mtime_ns if st else None, st.st_size if st else None))
    return tuple(out)


def _base_files(state: StateDirs, dataset: str, feature_set: str) -> tuple[date, Path, list[Path]]:
    from features.build import latest_snapshot

    as_of, path = latest_snapshot(state, dataset, feature_set)
    data = state.data(dataset)
    others = [
        data / "customers.parquet",
        data / "offers.parquet",
        data / "transactions.parquet",
        data / "products.parquet",
        path.parent / "monitor.json",
    ]
    return as_of, path, [path, *others]


def base_fingerprint(state: StateDirs, dataset: str, feature_set: str) -> tuple[Any, ...]:
    """What identifies a base's inputs: latest snapshot and the tables beside it (mtime, size)."""
    _, _, files = _base_files(state, dataset, feature_set)
    return _files_fingerprint(files)


def compute_segments(
    features: pd.DataFrame, as_of: date, transactions_relation: str | None
) -> pd.DataFrame | None:
    """RFM code and segment, ABC class, lifecycle stage and the 7-day lapse flag per customer."""
    from features.segments import ClusterConfig, SegmentsConfig, segment_customers

    cfg = SegmentsConfig(clusters=ClusterConfig(enabled=False))
    frame = features.reset_index()
    try:
        seg = segment_customers(frame, transactions_relation, cfg=cfg, as_of=as_of)
    except KeyError as exc:  # the feature set lacks RFM inputs (e.g. a labelled snapshot)
        log.info("no segments for this snapshot: missing column %s", exc)
        return None
    seg = seg.set_index(seg["customer_id"].astype(str))
    out = seg.reindex(features.index)[list(SEGMENT_COLUMNS)]
    out["lapsed_recently"] = out["lapsed_recently"].fillna(False).astype(bool)
    return out


def load_base(state: StateDirs, dataset: str, feature_set: str) -> CustomerBase:
    """Read the latest snapshot, the customers' consent, offers and monitoring of a dataset."""
    from features.build import transactions_source

    as_of, path, files = _base_files(state, dataset, feature_set)
    fingerprint = _files_fingerprint(files)
    frame = pd.read_parquet(path)
    frame["customer_id"] = frame["customer_id"].astype(str)
    features = frame.set_index("customer_id", drop=True)
    # an object index hashes once; pandas' arrow-backed "str" index rebuilt its lookup table on
    # every get_indexer call (measured: 174 ms per 1-id lookup on 500 k customers, 0.02 ms here)
    features.index = pd.Index(
        features.index.to_numpy(dtype=object), dtype=object, name="customer_id"
    )
    if features.index.has_duplicates:
        raise ValueError(f"snapshot {path} holds duplicated customer ids")
    data = state.data(dataset)
    customers = None
    if (data / "customers.parquet").exists():
        customers = pd.read_parquet(data / "customers.parquet")
        customers = customers[
            [c for c in customers.columns if c == "customer_id" or c.startswith("consent_")]
        ]
    consent = {ch: consent_flags(features.index, customers, ch) for ch in CHANNELS}
    offers = None
    if (data / "offers.parquet").exists():
        offers = pd.read_parquet(data / "offers.parquet")
        offers["offer_id"] = offers["offer_id"].astype(str)
        offers = offers.drop_duplicates("offer_id", keep="last").set_index("offer_id")
    try:
        relation: str | None = transactions_source(state, dataset)
    except FileNotFoundError:
        relation = None
    segments = compute_segments(features, as_of, relation)
    products = None
    if (data / "products.parquet").exists():
        from features.offers import products_relation_sql
        from features.sql import parquet_relation

        products = products_relation_sql(parquet_relation(data / "products.parquet"))
    monitor_path = path.parent / "monitor.json"
    monitor = json.loads(monitor_path.read_text()) if monitor_path.exists() else None
    return CustomerBase(
        dataset=dataset,
        feature_set=feature_set,
        as_of=as_of,
        snapshot_path=path,
        fingerprint=fingerprint,
        features=features,
        segments=segments,
        consent=consent,
        id_hash=id_hashes(features.index),
        offers=offers,
        monitor=monitor,
        transactions_relation=relation,
        products_relation=products,
    )


# --------------------------------------------------------------------------- model metadata


@dataclass(frozen=True)
class ModelMeta:
    """Registry facts of one served model version."""

    family: str
    kind: str
    registered_model: str
    alias: str
    version: str
    run_id: str
    trained_at: str | None
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    loaded_at: str


def _run_facts(client: Any, run_id: str) -> tuple[str | None, dict[str, float], dict[str, str]]:
    """Training time, test metrics and a few tags of the run that logged a model."""
    try:
        run = client.get_run(run_id)
    except Exception:  # a model registered from outside a run
        return None, {}, {}
    started = run.info.start_time
    trained_at = (
        datetime.fromtimestamp(started / 1000, tz=UTC).isoformat(timespec="seconds")
        if started
        else None
    )
    metrics = {
        k: float(v)
        for k, v in sorted(run.data.metrics.items())
        if k.startswith("test_") and math.isfinite(float(v))
    }
    tags = {k: v for k, v in run.data.tags.items() if k in ("grade", "test_cutoff", "git_sha")}
    return trained_at, metrics, tags


# --------------------------------------------------------------------------- score models


def _last_step(pipeline: Any) -> tuple[Any, Any]:
    """(preprocessor or None, final estimator) of a fitted model."""
    from sklearn.pipeline import Pipeline

    if isinstance(pipeline, Pipeline):
        pre = pipeline[:-1] if len(pipeline.steps) > 1 else None
        return pre, pipeline.steps[-1][1]
    return None, pipeline


def single_thread_xgboost(obj: Any, _seen: set[int] | None = None, _depth: int = 0) -> int:
    """Set every XGBoost model inside ``obj`` to one thread; returns how many were found.

    Requests score a handful of rows from many threads at once: OpenMP threads per call only
    fight each other there (measured: a 1-row predict went from ~1 ms to 10-30 ms on 2 busy cores).
    """
    import xgboost as xgb

    seen = _seen if _seen is not None else set()
    if id(obj) in seen or _depth > 8:
        return 0
    seen.add(id(obj))
    if isinstance(obj, xgb.XGBModel):
        obj.set_params(n_jobs=1)
        try:
            obj.get_booster().set_param("nthread", 1)
        except Exception:  # not fitted
            return 0
        return 1
    found = 0
    if isinstance(obj, (list, tuple)):
        children: Iterable[Any] = obj
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in (
        "sklearn",
        "models",
        "xgboost",
        "mlflow",
    ):
        children = vars(obj).values()
    else:
        return 0
    for child in children:
        found += single_thread_xgboost(child, seen, _depth + 1)
    return found


@dataclass(frozen=True)
class Explainer:
    """Per-row reason codes of a model over its base rows (XGBoost's own SHAP values).

    ``top`` holds, when precomputed at load, each row's reasons: the column order of the k
    largest |contribution| and those contributions (what ``reasons`` would compute live).
    """

    names: list[str]
    inputs: np.ndarray  # model inputs after preprocessing, float64, aligned with the base
    booster: Any
    top: tuple[np.ndarray, np.ndarray] | None = None

    def contributions(self, positions: np.ndarray, nthread: int = 1) -> np.ndarray:
        """SHAP contributions (no bias column) of the given base rows."""
        import xgboost as xgb

        # nthread=1 per request: building a DMatrix with the default pool cost ~6 ms per row
        matrix = xgb.DMatrix(
            self.inputs[positions], feature_names=self.names, missing=np.nan, nthread=nthread
        )
        return self.booster.predict(matrix, pred_contribs=True)[:, :-1]

    @staticmethod
    def _largest(contribs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, contribs.shape[1])
        order = np.argsort(-np.abs(contribs), axis=1, kind="stable")[:, :k]
        return order.astype(np.int32), np.take_along_axis(contribs, order, axis=1)

    def precompute(self, k: int = N_REASONS, chunk: int = 50_000) -> Explainer:
        """This explainer with every base row's reasons computed (all cores, in chunks)."""
        threads = os.cpu_count() or 1
        self.booster.set_param("nthread", threads)
        try:
            parts = [
                self._largest(self.contributions(np.arange(a, min(a + chunk, n)), threads), k)
                for n in (len(self.inputs),)
                for a in range(0, n, chunk)
            ]
        finally:
            self.booster.set_param("nthread", 1)
        if not parts:
            return self
        order = np.concatenate([p[0] for p in parts])
        top = np.concatenate([p[1] for p in parts])
        return dataclasses.replace(self, top=(order, top))

    def reasons(self, positions: np.ndarray, k: int = N_REASONS) -> list[list[dict[str, Any]]]:
        """The k contributions largest in absolute value per row: feature, value, contribution."""
        if len(positions) == 0:
            return []
        if self.top is not None and self.top[0].shape[1] >= k:
            order, top = self.top[0][positions, :k], self.top[1][positions, :k]
        else:
            order, top = self._largest(self.contributions(positions), k)
        k = order.shape[1]
        values = np.take_along_axis(self.inputs[positions], order, axis=1)
        names = np.asarray(self.names, dtype=object)[order]
        return [
            [
                {
                    "feature": names[i, j],
                    "value": None if math.isnan(values[i, j]) else float(values[i, j]),
                    "contribution": float(top[i, j]),
                }
                for j in range(k)
            ]
            for i in range(len(positions))
        ]


def build_explainer(model: Any, features: pd.DataFrame) -> Explainer | None:
    """An XGBoost SHAP explainer over the base, or None when the model is not a tree booster."""
    import xgboost as xgb

    pre, final = _last_step(getattr(model, "pipeline", None))
    if not isinstance(final, xgb.XGBModel):
        return None
    raw = features[model.feature_names]
    x = pre.transform(raw) if pre is not None else raw
    names = list(x.columns) if isinstance(x, pd.DataFrame) else list(final.feature_names_in_)
    inputs = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    return Explainer(names=names, inputs=inputs, booster=final.get_booster())


def rank_stats(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted base scores, and per customer its percentile and decile in the base.

    percentile = 100 x share of the base scoring at or below the customer; decile 1 holds the
    highest scores: decile = 1 + floor(10 x share scoring strictly above), at most 10. Ties share
    both, so they do not depend on row order.
    """
    s = np.asarray(scores, dtype=float)
    n = len(s)
    ordered = np.sort(s)
    if n == 0:
        return ordered, np.array([]), np.array([], dtype=np.int64)
    at_or_below = np.searchsorted(ordered, s, side="right")
    percentile = 100.0 * at_or_below / n
    decile = np.minimum(10, 1 + (10 * (n - at_or_below)) // n).astype(np.int64)
    return ordered, percentile, decile


@dataclass(frozen=True)
class ScoreModel:
    """A probability or value model (models.pyfunc.ScoringModel) with its base scored once."""

    meta: ModelMeta
    base: CustomerBase
    model: Any
    output: str  # "probability" | "value"
    scores: np.ndarray
    sorted_scores: np.ndarray
    percentile: np.ndarray
    decile: np.ndarray
    explainer: Explainer | None

    def frame(self, positions: np.ndarray) -> pd.DataFrame:
        """The model's input columns for base rows."""
        return self.base.features.iloc[positions][self.model.feature_names]

    def reasons(self, positions: np.ndarray) -> list[list[dict[str, Any]]]:
        """Top reason codes per row ([] per row when the model cannot be explained)."""
        if self.explainer is None:
            return [[] for _ in range(len(positions))]
        return self.explainer.reasons(positions)

    def campaign_scores(self, offer_id: str | None = None) -> tuple[np.ndarray, str]:
        """Per base customer what a campaign ranks on: P(response), or the uplift of a contact."""
        if self.output == "value":
            raise RequestError(
                "model", f"model {self.meta.family!r} predicts a value, not a response probability"
            )
        return self.scores, self.output


def build_score_model(
    meta: ModelMeta,
    python_model: Any,
    base: CustomerBase,
    ctx: LoadContext | None = None,
) -> ScoreModel:
    """Score the whole base with a ScoringModel; reasons too when the base is small enough."""
    missing = [c for c in python_model.feature_names if c not in base.features.columns]
    if missing:
        raise ValueError(
            f"{meta.registered_model} v{meta.version} needs features {missing} that the snapshot "
            f"{base.snapshot_path.name} of {base.feature_set} lacks"
        )
    single_thread_xgboost(python_model)
    x = base.features[python_model.feature_names]
    scores = np.asarray(python_model.score(x), dtype=float) if len(x) else np.array([])
    ordered, percentile, decile = rank_stats(scores)
    if meta.kind == "uplift":
        output = "uplift"
    elif hasattr(python_model.estimator, "predict_proba"):
        output = "probability"
    else:
        output = "value"
    try:
        explainer = build_explainer(python_model, base.features)
        limit = ctx.settings.precompute_reasons_max if ctx and ctx.precompute_reasons else 0
        if explainer is not None and base.size <= limit:
            explainer = explainer.precompute()
    except Exception as exc:  # reasons are optional; scores are not
        log.warning("no reason codes for %s: %s", meta.registered_model, type(exc).__name__)
        explainer = None
    return ScoreModel(
        meta=meta,
        base=base,
        model=python_model,
        output=output,
        scores=scores,
        sorted_scores=ordered,
        percentile=percentile,
        decile=decile,
        explainer=explainer,
    )


# --------------------------------------------------------------------------- model kinds


@dataclass(frozen=True)
class LoadContext:
    """What a model kind may need beyond the model and the base."""

    settings: ServingSettings
    state: StateDirs
    spec: ServedModel | None = None
    precompute_reasons: bool = True


@dataclass(frozen=True)
class ModelKind:
    """How to recognise a loaded python model of a kind and build its served form."""

    name: str
    detect: Callable[[Any], bool]
    build: Callable[[ModelMeta, Any, CustomerBase, LoadContext], Any]


def _is_scoring_model(python_model: Any) -> bool:
    from models.pyfunc import ScoringModel

    return isinstance(python_model, ScoringModel)


def _is_uplift_model(python_model: Any) -> bool:
    return _is_scoring_model(python_model) and getattr(python_model, "family", "") == "uplift"


def _is_offer_model(python_model: Any) -> bool:
    try:
        from models.nbo import NBOModel
    except ImportError:  # pragma: no cover - the NBO module is part of the project
        return False
    return isinstance(python_model, NBOModel)


@dataclass(frozen=True)
class OfferModel:
    """A next-best-offer model (models.nbo.NBOModel) with the inputs of every base customer."""

    meta: ModelMeta
    base: CustomerBase
    model: Any
    inputs: pd.DataFrame  # NBOModel.input_columns, aligned with the base rows
    _per_offer: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    output: str = "offers"

    def rank(self, positions: np.ndarray, k: int, kind: str) -> list[list[dict[str, Any]]]:
        """The k best eligible offers per base row (in the order given; [] when none)."""
        ranked = self.model.rank(self.inputs.iloc[positions], k=k, kind=kind)
        by_customer: dict[str, list[dict[str, Any]]] = {}
        for row in ranked.itertuples(index=False):
            by_customer.setdefault(str(row.customer_id), []).append(
                {
                    "rank": int(row.rank),
                    "offer_id": str(row.offer_id),
                    "kind": str(row.kind),
                    "probability": _finite(row.probability),
                    "expected_value": _finite(row.expected_value),
                }
            )
        ids = self.base.features.index[positions]
        return [by_customer.get(str(c), []) for c in ids]

    def campaign_scores(self, offer_id: str | None = None) -> tuple[np.ndarray, str]:
        """P(takes the offer) per base customer; NaN where the offer is not eligible."""
        if offer_id is None:
            raise RequestError("offer_id", "a next-best-offer model ranks one offer: name it")
        with self._lock:
            cached = self._per_offer.get(offer_id)
        if cached is None:
            try:
                cached = np.asarray(self.model.score_offer(self.inputs, offer_id), dtype=float)
            except KeyError as exc:
                raise RequestError(
                    "offer_id", f"offer {offer_id!r} is not ranked by this model", 404
                ) from exc
            with self._lock:
                self._per_offer[offer_id] = cached
        return cached, "probability"


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def offer_inputs(python_model: Any, base: CustomerBase, ctx: LoadContext) -> pd.DataFrame:
    """What NBOModel.rank needs per base customer, built from what the model recorded.

    The model's ``info`` names its feature set (``feature_set_spec``: name, RFM settings,
    fingerprint) and the product -> tier file it was trained with (``products``); without them
    (older models) the snapshot's feature set and the ingested products table. Rows follow the
    base.
    """
    from features.build import customer_inputs, snapshot_feature_set
    from features.definitions import feature_set_from_spec
    from features.offers import products_relation_sql
    from features.sources import connect
    from features.sql import parquet_relation

    info = getattr(python_model, "info", {}) or {}
    spec = info.get("feature_set_spec")
    fs = (
        feature_set_from_spec(spec)
        if spec
        else snapshot_feature_set(ctx.state, base.dataset, base.feature_set)
    )
    products = base.products_relation
    recorded = (info.get("products") or {}).get("path")
    if recorded:
        path = Path(recorded)
        if not path.exists():
            raise FileNotFoundError(f"the model's product -> tier file {path} is gone")
        reader = (
            parquet_relation(path)
            if path.suffix == ".parquet"
            else f"read_csv({sql_literal(str(path))}, header = true, all_varchar = true)"
        )
        products = products_relation_sql(reader)
    if base.transactions_relation is None:
        raise FileNotFoundError(f"no ingested transactions for {base.dataset}")
    con = connect(ctx.state)
    try:
        frame = customer_inputs(
            con, base.transactions_relation, base.as_of, fs, python_model.categories, products
        )
    finally:
        con.close()
    frame = frame.assign(customer_id=frame["customer_id"].astype(str)).set_index("customer_id")
    frame = frame.reindex(base.features.index).reset_index(names="customer_id")
    if "as_of" in frame.columns:
        frame["as_of"] = pd.Timestamp(base.as_of)
    return python_model.inputs(frame)


def build_offer_model(
    meta: ModelMeta, python_model: Any, base: CustomerBase, ctx: LoadContext
) -> OfferModel:
    """Prepare the inputs of every base customer for a next-best-offer model."""
    single_thread_xgboost(python_model)
    return OfferModel(
        meta=meta, base=base, model=python_model, inputs=offer_inputs(python_model, base, ctx)
    )


#: Kinds the service can serve, tried in this order when a served model's kind is "auto".
KINDS: dict[str, ModelKind] = {
    "uplift": ModelKind("uplift", _is_uplift_model, build_score_model),
    "nbo": ModelKind("nbo", _is_offer_model, build_offer_model),
    "score": ModelKind("score", _is_scoring_model, build_score_model),
}


def register_kind(kind: ModelKind) -> None:
    """Add (or replace) a model kind."""
    KINDS[kind.name] = kind


def detect_kind(python_model: Any, wanted: str = "auto") -> ModelKind:
    """The kind of a loaded python model (checked against ``wanted`` unless auto)."""
    candidates = [KINDS[wanted]] if wanted != "auto" and wanted in KINDS else list(KINDS.values())
    if wanted != "auto" and wanted not in KINDS:
        raise ValueError(f"model kind {wanted!r} is not available; known: {sorted(KINDS)}")
    for kind in candidates:
        if kind.detect(python_model):
            return kind
    raise TypeError(f"{type(python_model).__name__} is not a model kind Patron serves ({wanted})")


# --------------------------------------------------------------------------- the registry


class Registry:
    """The few MLflow registry calls the service makes."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def version(self, name: str, alias: str) -> tuple[str, str]:
        """(version, run_id) an alias points at now."""
        mv = self.client.get_model_version_by_alias(name, alias)
        return str(mv.version), str(mv.run_id)

    def load(self, name: str, version: str) -> Any:
        """The python model of a registered version (by number, so an alias move cannot race)."""
        import mlflow

        with mlflow_uris(self.tracking_uri):
            return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()


_MLFLOW_URIS = threading.Lock()


@contextmanager
def mlflow_uris(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``uri`` for a block only.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` (and the registry's its
    variable), which would outlive the call and redirect every later MLflow use of the process;
    this puts back exactly what was there.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    with _MLFLOW_URIS:
        saved_env = {k: os.environ.get(k) for k in names}
        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            tracking_utils.set_tracking_uri(saved[0])
            registry_utils._registry_uri = saved[1]
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def tracking_uri_of(settings: ServingSettings, state: StateDirs) -> str:
    """The settings' tracking URI, else $MLFLOW_TRACKING_URI, else the state folder's SQLite."""
    return settings.tracking_uri or state.tracking_uri


# --------------------------------------------------------------------------- the whole state


@dataclass(frozen=True)
class ServingState:
    """Everything a request reads, built whole and never mutated."""

    models: Mapping[str, Any]  # family -> ScoreModel / other kinds
    shadows: Mapping[str, Any]  # family -> the shadow alias's model (never returned)
    bases: Mapping[tuple[str, str], CustomerBase]
    loaded_at: str
    keys: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # what each part came from

    def model(self, family: str, field_name: str = "model") -> Any:
        """A served model by family name, or a 400 naming the field."""
        served = self.models.get(family)
        if served is None:
            raise RequestError(
                field_name, f"unknown model {family!r}; served: {sorted(self.models)}", 404
            )
        return served


def _load_one(
    family: str,
    spec: ServedModel,
    alias: str,
    registry: Registry,
    base: CustomerBase,
    version: tuple[str, str],
    ctx: LoadContext,
) -> Any:
    python_model = registry.load(spec.registered_model, version[0])
    kind = detect_kind(python_model, spec.kind)
    trained_at, metrics, tags = _run_facts(registry.client, version[1])
    meta = ModelMeta(
        family=family,
        kind=kind.name,
        registered_model=spec.registered_model,
        alias=alias,
        version=version[0],
        run_id=version[1],
        trained_at=trained_at,
        metrics=metrics,
        tags=tags,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return kind.build(meta, python_model, base, ctx)


def _shadow_version(spec: ServedModel, registry: Registry) -> tuple[str, str] | None:
    if not spec.shadow_alias:
        return None
    try:
        return registry.version(spec.registered_model, spec.shadow_alias)
    except Exception:  # no such alias (yet): nothing to shadow
        return None


def state_keys(
    settings: ServingSettings, state: StateDirs, registry: Registry
) -> dict[str, tuple[Any, ...]]:
    """What the state would be built from now: alias versions and snapshot fingerprints."""
    keys: dict[str, tuple[Any, ...]] = {}
    for family, spec in settings.models.items():
        fp = base_fingerprint(state, spec.dataset, spec.feature_set)
        keys[family] = (registry.version(spec.registered_model, spec.alias), fp)
        shadow = _shadow_version(spec, registry)
        if shadow is not None:
            keys[f"{family}@shadow"] = (shadow, fp)
    return keys


def build_state(
    settings: ServingSettings,
    state: StateDirs,
    previous: ServingState | None = None,
    registry: Registry | None = None,
) -> ServingState:
    """Load every served model and its base; parts whose inputs did not change are reused."""
    registry = registry or Registry(tracking_uri_of(settings, state))
    keys = state_keys(settings, state, registry)
    old_keys = previous.keys if previous is not None else {}
    bases: dict[tuple[str, str], CustomerBase] = {}

    def base_for(spec: ServedModel, fp: tuple[Any, ...]) -> CustomerBase:
        key = (spec.dataset, spec.feature_set)
        if key in bases:
            return bases[key]
        reuse = previous.bases.get(key) if previous is not None else None
        bases[key] = (
            reuse
            if reuse is not None and reuse.fingerprint == fp
            else load_base(state, spec.dataset, spec.feature_set)
        )
        return bases[key]

    models: dict[str, Any] = {}
    shadows: dict[str, Any] = {}
    for family, spec in settings.models.items():
        version, fp = keys[family]
        base = base_for(spec, fp)
        if (
            previous is not None
            and family in previous.models
            and old_keys.get(family) == keys[family]
        ):
            models[family] = previous.models[family]
        else:
            ctx = LoadContext(settings, state, spec)
            models[family] = _load_one(family, spec, spec.alias, registry, base, version, ctx)
        shadow_key = keys.get(f"{family}@shadow")
        if shadow_key is not None and shadow_key[0][0] != version[0]:
            if (
                previous is not None
                and family in previous.shadows
                and old_keys.get(f"{family}@shadow") == shadow_key
            ):
                shadows[family] = previous.shadows[family]
            else:
                # the shadow's reasons are never returned: no need to precompute them
                quiet = LoadContext(settings, state, spec, precompute_reasons=False)
                shadows[family] = _load_one(
                    family, spec, spec.shadow_alias or "", registry, base, shadow_key[0], quiet
                )
    return ServingState(
        models=models,
        shadows=shadows,
        bases=bases,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        keys=keys,
    )


# --------------------------------------------------------------------------- request logic


def check_ids(
    customer_ids: Sequence[str], max_batch: int, field_name: str = "customer_ids"
) -> None:
    """Reject empty, oversized or duplicated id lists (the error names positions, never ids)."""
    if len(customer_ids) == 0:
        raise RequestError(field_name, "at least one customer id is needed")
    if len(customer_ids) > max_batch:
        raise RequestError(
            field_name, f"{len(customer_ids)} ids exceed the maximum of {max_batch} per request"
        )
    seen: dict[str, int] = {}
    dups: list[int] = []
    for i, cid in enumerate(customer_ids):
        if cid in seen:
            dups.append(i)
        else:
            seen[cid] = i
    if dups:
        shown = ", ".join(str(i) for i in dups[:10])
        more = f" (and {len(dups) - 10} more)" if len(dups) > 10 else ""
        raise RequestError(field_name, f"duplicated ids at positions {shown}{more}")


def _segment_records(base: CustomerBase, positions: np.ndarray) -> list[dict[str, Any] | None]:
    if base.segment_arrays is None:
        return [None] * len(positions)
    cols = base.segment_arrays
    return [
        {
            "rfm_code": str(code),
            "rfm_segment": str(seg),
            "abc_class": str(abc),
            "lifecycle_stage": str(stage),
            "win_back_priority": bool(lapsed),
        }
        for code, seg, abc, stage, lapsed in zip(
            *(cols[c][positions] for c in SEGMENT_COLUMNS),
            strict=True,
        )
    ]


def score_records(
    served: ScoreModel, positions: np.ndarray, with_reasons: bool = True
) -> list[dict[str, Any]]:
    """One record per base row: score, percentile, decile, segment and reasons."""
    scores = served.scores[positions]
    pct = served.percentile[positions]
    dec = served.decile[positions]
    ids = served.base.features.index[positions]
    segments = _segment_records(served.base, positions)
    reasons = served.reasons(positions) if with_reasons else [[] for _ in range(len(positions))]
    prob, value = served.output == "probability", served.output == "value"
    return [
        {
            "customer_id": cid,
            "score": float(s),
            "probability": float(s) if prob else None,
            "value": float(s) if value else None,
            "percentile": float(p),
            "decile": int(d),
            "segment": seg,
            "reasons": rs,
        }
        for cid, s, p, d, seg, rs in zip(ids, scores, pct, dec, segments, reasons, strict=True)
    ]


def score_customers(
    state: ServingState,
    family: str,
    customer_ids: Sequence[str],
    max_batch: int,
    with_reasons: bool = True,
) -> dict[str, Any]:
    """The /score answer as plain data (serving.schemas.ScoreResponse validates it)."""
    served = state.model(family)
    if not isinstance(served, ScoreModel):
        raise RequestError("model", f"model {family!r} is a {served.meta.kind} model, not a scorer")
    check_ids(customer_ids, max_batch)
    positions = served.base.positions(customer_ids)
    known = positions[positions >= 0]
    unknown = [cid for cid, pos in zip(customer_ids, positions, strict=True) if pos < 0]
    return {
        "model": family,
        "kind": served.output,
        "registered_model": served.meta.registered_model,
        "alias": served.meta.alias,
        "version": served.meta.version,
        "as_of": served.base.as_of.isoformat(),
        "scores": score_records(served, known, with_reasons),
        "unknown": [{"customer_id": c, "reason": "not in the feature snapshot"} for c in unknown],
    }


def model_info(
    state: ServingState, shadow_stats: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The /models answer as plain data."""
    out = []
    for family, served in state.models.items():
        meta: ModelMeta = served.meta
        base: CustomerBase = served.base
        shadow = state.shadows.get(family)
        out.append(
            {
                "family": family,
                "kind": meta.kind,
                "output": getattr(served, "output", meta.kind),
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
                "customers": base.size,
                "loaded_at": meta.loaded_at,
                "monitoring": monitor_summary(base.monitor),
                "shadow": None
                if shadow is None
                else {
                    "alias": shadow.meta.alias,
                    "version": shadow.meta.version,
                    **shadow_stats.get(family, {}),
                },
            }
        )
    return out


def monitor_summary(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The aggregate lines of a monitor.json (no per-customer data is in it anyway)."""
    if not report:
        return None
    keys = (
        "registered_model",
        "model_version",
        "reference_as_of",
        "current_as_of",
        "created_at",
        "score",
        "breached",
        "mlflow_run_id",
    )
    return {k: report.get(k) for k in keys if k in report}


# --------------------------------------------------------------------------- shadow aggregates


class ShadowStats:
    """Running aggregates of champion vs shadow scores on served traffic; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, float]] = {}
        self._last_log = time.monotonic()

    def add(
        self, family: str, served: ScoreModel, shadow: ScoreModel, positions: np.ndarray
    ) -> None:
        """Fold one request's customers into the aggregates of a family."""
        if len(positions) == 0:
            return
        diff = shadow.scores[positions] - served.scores[positions]
        same_decile = shadow.decile[positions] == served.decile[positions]
        with self._lock:
            s = self._stats.setdefault(
                family,
                {
                    "requests": 0,
                    "customers": 0,
                    "sum_diff": 0.0,
                    "sum_abs_diff": 0.0,
                    "max_abs_diff": 0.0,
                    "same_decile": 0,
                    "versions": f"{served.meta.version}->{shadow.meta.version}",
                },
            )
            s["requests"] += 1
            s["customers"] += len(positions)
            s["sum_diff"] += float(diff.sum())
            s["sum_abs_diff"] += float(np.abs(diff).sum())
            s["max_abs_diff"] = max(s["max_abs_diff"], float(np.abs(diff).max()))
            s["same_decile"] += int(same_decile.sum())

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per family: requests, customers, mean and max |difference|, decile agreement."""
        with self._lock:
            out = {}
            for family, s in self._stats.items():
                n = max(int(s["customers"]), 1)
                out[family] = {
                    "requests": int(s["requests"]),
                    "customers": int(s["customers"]),
                    "mean_diff": s["sum_diff"] / n,
                    "mean_abs_diff": s["sum_abs_diff"] / n,
                    "max_abs_diff": s["max_abs_diff"],
                    "decile_agreement": s["same_decile"] / n,
                }
            return out

    def maybe_log(self, every_s: float) -> None:
        """Log the aggregates (never a customer) at most once per ``every_s`` seconds."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_log < every_s:
                return
            self._last_log = now
        for family, s in self.summary().items():
            log.info(
                "shadow %s: %d requests, %d customers, mean |diff| %.4f, max |diff| %.4f, "
                "decile agreement %.3f",
                family,
                s["requests"],
                s["customers"],
                s["mean_abs_diff"],
                s["max_abs_diff"],
                s["decile_agreement"],
            )


# --------------------------------------------------------------------------- campaigns


def _offer_row(base: CustomerBase, offer_id: str) -> pd.Series:
    if base.offers is None or offer_id not in base.offers.index:
        known = [] if base.offers is None else sorted(base.offers.index)[:20]
        raise RequestError("offer_id", f"unknown offer {offer_id!r}; known: {known}", 404)
    return base.offers.loc[offer_id]


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _nbo_model(state: ServingState) -> str | None:
    names = [
        f for f, m in state.models.items() if getattr(m, "meta", None) and m.meta.kind == "nbo"
    ]
    return names[0] if names else None


def target_customers(
    state: ServingState,
    *,
    campaign_id: str,
    channel: str,
    model: str | None = None,
    offer_id: str | None = None,
    audience: Mapping[str, Any] | None = None,
    budget: Mapping[str, Any] | None = None,
    cost_per_contact: float | None = None,
    value_per_conversion: float | None = None,
    control_fraction: float = 0.1,
    test_cell_fraction: float = 0.0,
    win_back_first: bool = False,
    include_customers: bool = True,
) -> dict[str, Any]:
    """The /target answer as plain data: profit-ranked customers within budget, with groups."""
    from serving.targeting import CampaignRules, select_customers

    audience = dict(audience or {})
    budget = dict(budget or {})
    if control_fraction + test_cell_fraction > 1.0:
        raise RequestError("test_cell_fraction", "control_fraction + test_cell_fraction exceed 1")
    if model is None:
        model = _nbo_model(state) if offer_id is not None else None
        if model is None:
            raise RequestError(
                "model",
                "no next-best-offer model is served to score the offer: name a model",
                404,
            )
    served = state.model(model)
    base: CustomerBase = served.base
    offer = _offer_row(base, offer_id) if offer_id is not None else None
    scorer = getattr(served, "campaign_scores", None)
    if scorer is None:
        raise RequestError("model", f"model {model!r} cannot rank a campaign audience")
    scores, score_kind = scorer(offer_id)
    value = value_per_conversion
    if value is None and offer is not None:
        value = _number(offer.get("value"))
    if value is None:
        value = 1.0  # no money given: profit counted in responses
    cost = cost_per_contact
    if cost is None and offer is not None:
        cost = _number(offer.get("cost"))
    if cost is None:
        cost = 0.0
    segments = base.segments
    for key in ("segments", "abc_classes", "lifecycle_stages"):
        if audience.get(key) and segments is None:
            raise RequestError(f"audience.{key}", "segments are not available for this snapshot")
    n = base.size
    candidates = pd.DataFrame(
        {
            "customer_id": base.features.index.to_numpy(),
            "score": scores,
            "consent": base.consent[channel],
            "rfm_segment": segments["rfm_segment"].to_numpy()
            if segments is not None
            else np.full(n, None, dtype=object),
            "abc_class": segments["abc_class"].to_numpy()
            if segments is not None
            else np.full(n, None, dtype=object),
            "lifecycle_stage": segments["lifecycle_stage"].to_numpy()
            if segments is not None
            else np.full(n, None, dtype=object),
            "lapsed_recently": segments["lapsed_recently"].to_numpy(dtype=bool)
            if segments is not None
            else np.zeros(n, dtype=bool),
            "id_hash": base.id_hash,
        }
    )

    def allowed(key: str) -> frozenset[str] | None:
        values = audience.get(key)
        return frozenset(values) if values else None

    rules = CampaignRules(
        campaign_id=campaign_id,
        value_per_conversion=float(value),
        cost_per_contact=float(cost),
        segments=allowed("segments"),
        abc_classes=allowed("abc_classes"),
        lifecycle_stages=allowed("lifecycle_stages"),
        min_score=audience.get("min_score"),
        max_contacts=budget.get("max_contacts"),
        max_cost=budget.get("max_cost"),
        control_fraction=control_fraction,
        test_cell_fraction=test_cell_fraction,
        win_back_first=win_back_first,
    )
    selection = select_customers(candidates, rules)
    customers = selection.customers
    records = (
        [
            {
                "rank": int(r),
                "customer_id": c,
                "group": g,
                "score": float(s),
                "expected_profit": float(p),
                "win_back_priority": bool(w),
                "lifecycle_stage": st,
                "rfm_segment": seg,
            }
            for r, c, g, s, p, w, st, seg in zip(
                customers["rank"],
                customers["customer_id"],
                customers["group"],
                customers["score"],
                customers["expected_profit"],
                customers["win_back_priority"],
                customers["lifecycle_stage"],
                customers["rfm_segment"],
                strict=True,
            )
        ]
        if include_customers
        else []
    )
    return {
        "campaign_id": campaign_id,
        "model": model,
        "registered_model": served.meta.registered_model,
        "version": served.meta.version,
        "score_kind": score_kind,
        "offer_id": offer_id,
        "channel": channel,
        "as_of": base.as_of.isoformat(),
        "value_per_conversion": float(value),
        "cost_per_contact": float(cost),
        "summary": selection.summary,
        "customers": records,
    }


# --------------------------------------------------------------------------- next-best offer


def rank_offers(
    state: ServingState,
    model: str | None,
    customer_ids: Sequence[str],
    k: int,
    kind: str,
    max_batch: int,
) -> dict[str, Any]:
    """The /next-best-offer answer as plain data, from a served model of kind ``nbo``."""
    if model is None:
        model = _nbo_model(state)
        if model is None:
            raise RequestError("model", "no next-best-offer model is served", 404)
    served = state.model(model)
    if getattr(served, "meta", None) is None or served.meta.kind != "nbo":
        raise RequestError("model", f"model {model!r} is not a next-best-offer model", 404)
    check_ids(customer_ids, max_batch)
    base: CustomerBase = served.base
    positions = base.positions(customer_ids)
    known = positions[positions >= 0]
    unknown = [cid for cid, pos in zip(customer_ids, positions, strict=True) if pos < 0]
    ranked = served.rank(known, k, kind)
    return {
        "model": model,
        "registered_model": served.meta.registered_model,
        "version": served.meta.version,
        "as_of": base.as_of.isoformat(),
        "kind": kind,
        "customers": [
            {"customer_id": cid, "offers": offers}
            for cid, offers in zip(base.features.index[known], ranked, strict=True)
        ],
        "unknown": [{"customer_id": c, "reason": "not in the feature snapshot"} for c in unknown],
    }
