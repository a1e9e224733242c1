"""Served model kinds: how a loaded MLflow python model is recognised and scored over a base.

``KINDS`` maps a kind name to a ``ModelKind``: ``detect`` recognises a loaded python model and
``build`` turns it into its served form over a customer base (``ScoreModel``: the whole base scored
once, with percentiles, deciles and reason codes; ``OfferModel``: every customer's inputs of a
next-best-offer model). A new kind is one ``register_kind`` call.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.sql import sql_literal
from features.store import StateDirs
from serving.answers import EncodedRecords, encode_records
from serving.base import CustomerBase
from serving.errors import RequestError
from serving.registry import ModelMeta, recorded_feature_set
from serving.settings import ServedModel, ServingSettings

log = logging.getLogger("patron.serving")

N_REASONS = 3

# --------------------------------------------------------------------------- score models


def _last_step(pipeline: Any) -> tuple[Any, Any]:
    """(preprocessor or None, final estimator) of a fitted model."""
    from sklearn.pipeline import Pipeline

    if isinstance(pipeline, Pipeline):
        pre = pipeline[:-1] if len(pipeline.steps) > 1 else None
        return pre, pipeline.steps[-1][1]
    return None, pipeline


def single_thread_xgboost(obj: Any) -> int:
    """Set every XGBoost model inside ``obj`` to one thread; returns how many were found.

    Requests score a handful of rows from many threads at once: OpenMP threads per call only
    fight each other there (measured: a 1-row predict went from ~1 ms to 10-30 ms on 2 busy cores).
    """
    return xgboost_threads(obj, 1)


def xgboost_threads(obj: Any, threads: int, _seen: set[int] | None = None, _depth: int = 0) -> int:
    """Set every XGBoost model inside ``obj`` to ``threads`` threads; returns how many were found.

    One thread for requests (``single_thread_xgboost``); every core for a batch job, which makes
    few large calls.
    """
    import xgboost as xgb

    seen = _seen if _seen is not None else set()
    if id(obj) in seen or _depth > 8:
        return 0
    seen.add(id(obj))
    if isinstance(obj, xgb.XGBModel):
        obj.set_params(n_jobs=threads)
        try:
            obj.get_booster().set_param("nthread", str(threads))
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
        found += xgboost_threads(child, threads, seen, _depth + 1)
    return found


@dataclass(frozen=True)
class ReasonArrays:
    """Each row's top reasons as arrays of shape (rows, k), in decreasing |contribution|."""

    features: np.ndarray  # object: the input column's name
    values: np.ndarray  # float64: the customer's value of that input (NaN: missing)
    contributions: np.ndarray  # float64: its SHAP contribution (log-odds for classifiers)


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
    # columns never given as a customer's reason: context features (the season of the snapshot
    # date) are the same for every customer
    hidden: np.ndarray | None = None

    def contributions(self, positions: np.ndarray, nthread: int = 1) -> np.ndarray:
        """SHAP contributions (no bias column) of the given base rows."""
        import xgboost as xgb

        # nthread=1 per request: building a DMatrix with the default pool cost ~6 ms per row
        matrix = xgb.DMatrix(
            self.inputs[positions], feature_names=self.names, missing=np.nan, nthread=nthread
        )
        contribs = self.booster.predict(matrix, pred_contribs=True)[:, :-1]
        if self.hidden is not None and self.hidden.any():
            contribs[:, self.hidden] = 0.0
        return contribs

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

    def top_reasons(
        self, positions: np.ndarray, k: int = N_REASONS, nthread: int = 1
    ) -> ReasonArrays:
        """The k contributions largest in absolute value per row, as arrays (rows x k).

        The one computation behind both forms of reason codes: ``reasons`` (the records /score
        returns) and the reason columns of the batch file.
        """
        positions = np.asarray(positions, dtype=np.intp)
        if self.top is not None and self.top[0].shape[1] >= k:
            order, top = self.top[0][positions, :k], self.top[1][positions, :k]
        elif len(positions) == 0:
            width = min(k, len(self.names))
            order, top = np.zeros((0, width), np.int32), np.zeros((0, width), np.float32)
        else:
            order, top = self._largest(self.contributions(positions, nthread), k)
        return ReasonArrays(
            features=np.asarray(self.names, dtype=object)[order],
            values=np.take_along_axis(self.inputs[positions], order, axis=1),
            contributions=top.astype(np.float64),
        )

    def reasons(self, positions: np.ndarray, k: int = N_REASONS) -> list[list[dict[str, Any]]]:
        """The k contributions largest in absolute value per row: feature, value, contribution."""
        if len(positions) == 0:
            return []
        top = self.top_reasons(positions, k)
        # as Python lists first: indexing numpy arrays element by element is ~10x slower
        names = top.features.tolist()
        values = top.values.astype(float).tolist()
        contribs = top.contributions.astype(float).tolist()
        return [
            [
                {"feature": f, "value": None if math.isnan(v) else v, "contribution": c}
                for f, v, c in zip(row_f, row_v, row_c, strict=True)
            ]
            for row_f, row_v, row_c in zip(names, values, contribs, strict=True)
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
    from features.definitions import context_feature_names  # scikit-learn: loaded with a model

    hidden = np.array([n in context_feature_names() for n in names], dtype=bool)
    return Explainer(names=names, inputs=inputs, booster=final.get_booster(), hidden=hidden)


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
    # every base row's /score record as JSON, when its reasons are precomputed (or it has none)
    encoded: EncodedRecords | None = None

    def frame(self, positions: np.ndarray) -> pd.DataFrame:
        """The model's input columns for base rows."""
        return self.base.features.iloc[positions][self.model.feature_names]

    def reasons(self, positions: np.ndarray) -> list[list[dict[str, Any]]]:
        """Top reason codes per row ([] per row when the model cannot be explained)."""
        if self.explainer is None:
            return [[] for _ in range(len(positions))]
        return self.explainer.reasons(positions)

    @property
    def label_meaning(self) -> str:
        """What a 1 of the model's label means, as recorded with it (``recorded_label_meaning``)."""
        return recorded_label_meaning(self.model)

    @property
    def value_terms(self) -> tuple[float, float] | None:
        """(margin, discount factor) turning a value model's predicted revenue into gross profit
        and its present value, as the model recorded them; None for other models."""
        if self.output != "value":
            return None
        from models.value import served_value_terms

        return served_value_terms(getattr(self.model, "info", None))

    def campaign_scores(self, offer_id: str | None = None) -> tuple[np.ndarray, str]:
        """Per base customer what a campaign ranks on: P(response), or the uplift of a contact."""
        if self.output == "value":
            raise RequestError(
                "model", f"model {self.meta.family!r} predicts a value, not a response probability"
            )
        return self.scores, self.output


def recorded_label_meaning(python_model: Any) -> str:
    """What a 1 of a loaded model's label means: ``info["label_meaning"]`` as training recorded
    it (``Family.label_meaning``), else its family's fixed meaning, else ``other``
    (``serving.targeting.label_meaning``: never from a name)."""
    from serving.targeting import label_meaning

    info = getattr(python_model, "info", None)
    recorded = info.get("label_meaning") if isinstance(info, Mapping) else None
    return label_meaning(str(getattr(python_model, "family", "") or ""), recorded)


def campaign_score_kind(served: Any, output: str, name: str, field_name: str) -> str:
    """What a served model's campaign score is (``serving.targeting.score_kind`` of its output and
    its label meaning): the one rule of /target and /campaigns/plan. A score no campaign can
    rank by (a label meaning ``other``) is a 400 naming ``field_name``."""
    from serving.targeting import score_kind

    try:  # a recorded meaning outside LABEL_MEANINGS raises in the property: a 400 too
        return score_kind(output, getattr(served, "label_meaning", "other"))
    except ValueError as exc:
        family = str(getattr(getattr(served, "model", None), "family", "") or "")
        what = f"a {family} model" if family else "a model"
        raise RequestError(
            field_name, f"model {name!r} is {what} that ranks no campaign: {exc}"
        ) from None


def check_score_inputs(meta: ModelMeta, python_model: Any, base: CustomerBase) -> None:
    """Refuse a snapshot that lacks one of the model's feature columns (naming them)."""
    missing = [c for c in python_model.feature_names if c not in base.features.columns]
    if missing:
        raise ValueError(
            f"{meta.registered_model} v{meta.version} needs features {missing} that the snapshot "
            f"{base.snapshot_path.name} of {base.feature_set} lacks"
        )


def score_output(meta: ModelMeta, python_model: Any) -> str:
    """What a ScoringModel's score is: ``uplift``, ``probability`` or ``value``."""
    if meta.kind == "uplift":
        return "uplift"
    if hasattr(python_model.estimator, "predict_proba"):
        return "probability"
    return "value"


def build_score_model(
    meta: ModelMeta,
    python_model: Any,
    base: CustomerBase,
    ctx: LoadContext | None = None,
) -> ScoreModel:
    """Score the whole base with a ScoringModel; reasons too when the base is small enough."""
    check_score_inputs(meta, python_model, base)
    single_thread_xgboost(python_model)
    x = base.features[python_model.feature_names]
    scores = np.asarray(python_model.score(x), dtype=float) if len(x) else np.array([])
    ordered, percentile, decile = rank_stats(scores)
    output = score_output(meta, python_model)
    try:
        explainer = build_explainer(python_model, base.features)
        limit = ctx.settings.precompute_reasons_max if ctx and ctx.precompute_reasons else 0
        if explainer is not None and base.size <= limit:
            explainer = explainer.precompute()
    except Exception as exc:  # reasons are optional; scores are not
        log.warning("no reason codes for %s: %s", meta.registered_model, type(exc).__name__)
        explainer = None
    served = ScoreModel(
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
    precomputed = explainer is None or explainer.top is not None
    if precomputed and (ctx is None or ctx.precompute_reasons):
        served = dataclasses.replace(served, encoded=encode_base(served))
    return served


def encode_base(served: ScoreModel, chunk: int = 10_000) -> EncodedRecords:
    """Every base row's /score record, encoded once (serving.answers.EncodedRecords)."""
    from serving.handlers import score_records

    n = served.base.size
    return encode_records(
        score_records(served, np.arange(a, min(a + chunk, n))) for a in range(0, n, chunk)
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

    @property
    def label_meaning(self) -> str:
        """P(takes the offer | offered) is a response probability."""
        return "response"

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
    spec = recorded_feature_set(python_model)
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
