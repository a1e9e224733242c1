"""Next-best-offer: offers, eligible (customer, offer) pairs with labels at stacked cutoffs, one
calibrated XGBoost classifier against the popularity baseline, ranking metrics out of time.

Settings chosen on evidence (``nbo.seasonal: auto``, ``nbo.rank_by: auto``) are chosen on the
validation pairs (the last training cutoff), never on the test pairs (``select_settings``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.build import customer_inputs, data_date_range
from features.definitions import FeatureSet, feature_set
from features.offers import (
    derive_offers_sql,
    offer_labels_sql,
    offers_relation_sql,
    products_relation_sql,
    validate_offers,
)
from features.sources import _sha256, connect
from features.sql import parquet_relation, sql_date, sql_literal
from models.calibration import CalibrationChoice, calibrate
from models.estimators import DEFAULT_XGB_PARAMS
from models.explain import global_importance
from models.nbo import NBOClassifier, NBOModel, PopularityBaseline, attach_offers, ranking_metrics
from training.config import CutoffExperiment
from training.evaluate import binary_metrics, grade, plot_calibration, plot_importance, pyplot
from training.evidence import MetricOf
from training.families.base import (
    Family,
    Frame,
    RunContext,
    Trained,
    calibration_doc,
    split_counts,
    trained_from,
    typical_row,
)
from training.families.binary import cutoff_manifest
from training.frames import fit_valid_split
from training.promote import PromotionPolicy

ID, AS_OF, SPLIT, LABEL = "customer_id", "as_of", "split", "taken"
BASELINE_NAME = "popularity"
OfferKind = Literal["cross_sell", "up_sell"]
OFFER_KINDS: tuple[OfferKind, ...] = ("cross_sell", "up_sell")
IMPORTANCE_ROWS = 5_000


class NBOSpec(BaseModel):
    """Next-best-offer options (docs/nbo.md)."""

    model_config = ConfigDict(extra="forbid")
    k: list[int] = Field(default_factory=lambda: [1, 3, 5])
    kinds: list[OfferKind] = Field(default_factory=lambda: list(OFFER_KINDS))
    offers: Literal["table", "derive"] = Field(
        "table",
        description="table: the dataset's ingested offers; derive: one cross-sell offer per "
        "transaction category (offer group), from the lines up to the last training cutoff",
    )
    margin_rate: float = Field(
        0.35, gt=0, le=1, description="derive: offer value = this x median order-line amount"
    )
    min_offer_lines: int = Field(
        100, ge=1, description="derive: groups with fewer lines are not offered"
    )
    exclude_categories: list[str] = Field(
        default_factory=list, description="categories never offered (e.g. a catch-all OTHER)"
    )
    products: str | None = Field(
        None,
        description="product -> tier file (product_id, tier) for up-sell, when the dataset has "
        "no ingested products table; {home} and ${VAR} expand, relative to the dataset YAML",
    )
    upsell_steps: int = Field(1, ge=1, description="up-sell: how many tiers above the current")
    bought_within_days: int | None = Field(
        None,
        gt=0,
        description="a category counts as already bought (no cross-sell of it) when bought in "
        "this many days before the cutoff; None: ever bought by the cutoff",
    )
    rank_by: Literal["expected_value", "probability", "auto"] = Field(
        "expected_value",
        description="serving order of a customer's offers; auto: the order with the higher "
        "value@k on the validation pairs (ties to expected_value)",
    )
    seasonal: Literal["auto"] | bool = Field(
        True,
        description="give the model the cutoff's day of the year (seasonal offers); auto: with "
        "and without, the better promotion metric on the validation pairs (ties to with)",
    )


class NBOConfig(CutoffExperiment):
    """A next-best-offer experiment: its ``nbo`` block says which offers and how to rank."""

    family: Literal["nbo"] = "nbo"
    nbo: NBOSpec = Field(default_factory=NBOSpec)
    promotion: PromotionPolicy = Field(default_factory=lambda: PromotionPolicy(metric="map_at_3"))


@dataclass
class NBOFrame:
    """Eligible (customer, offer) pairs at every cutoff with labels, customer inputs and split."""

    pairs: pd.DataFrame
    offers: pd.DataFrame
    feature_names: list[str]
    categorical: list[str]
    categories: list[str]
    feature_set: FeatureSet
    offers_source: str
    products: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    def part(self, name: str) -> pd.DataFrame:
        return self.pairs[self.pairs[SPLIT] == name]


@dataclass
class NBOResult:
    """What an NBO run produced: the serving model, metrics, grade and out-of-time pairs."""

    model: NBOModel  # calibrated; ``rank`` is what serving calls
    classifier: NBOClassifier  # uncalibrated (explanations, category statistics)
    baseline: PopularityBaseline
    offers: pd.DataFrame
    feature_names: list[str]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    test_pairs: pd.DataFrame  # customer_id, offer_id, kind, taken, probability, baseline_score..
    test_frame: pd.DataFrame  # test pairs with every model input column (champion re-scoring)
    per_offer: pd.DataFrame
    importance: pd.DataFrame
    calibration: CalibrationChoice | None
    grade: str
    params: dict[str, Any]
    offers_source: str
    products: dict[str, Any] | None
    row_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    baseline_name: str = BASELINE_NAME
    selection: NBOSelection | None = None


RankBy = Literal["expected_value", "probability"]


@dataclass(frozen=True)
class NBOSelection:
    """The NBO settings used and how each was chosen (validation pairs only)."""

    seasonal: bool
    rank_by: RankBy
    rules: dict[str, str]
    validation: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- inputs


def products_relation(cfg: Any, ctx: RunContext) -> tuple[str | None, dict[str, Any] | None]:
    """The product -> tier relation (ingested ``products`` table, else ``nbo.products``)."""
    catalog = ctx.catalog
    if catalog.has("products"):
        path = catalog.path("products")
    elif cfg.nbo.products:
        path = ctx.dataset.resolve_path(cfg.nbo.products, ctx.state)
        if not path.exists():
            raise FileNotFoundError(f"nbo.products: file not found: {path}")
    else:
        return None, None
    reader = (
        parquet_relation(path)
        if path.suffix == ".parquet"
        else f"read_csv({sql_literal(str(path))}, header = true, all_varchar = true)"
    )
    return products_relation_sql(reader), {"path": str(path), "sha256": _sha256(path)}


def load_offers(
    cfg: Any, con: duckdb.DuckDBPyConnection, ctx: RunContext, source: str
) -> tuple[pd.DataFrame, str]:
    """The experiment's offers (validated) and where they came from."""
    assert cfg.cutoffs is not None
    if cfg.nbo.offers == "derive":
        sql = derive_offers_sql(
            source,
            cfg.cutoffs.train[-1],
            cfg.nbo.margin_rate,
            cfg.nbo.min_offer_lines,
            cfg.nbo.exclude_categories,
        )
        raw, origin = con.execute(sql).df(), "derived"
    else:
        if not ctx.catalog.has("offers"):
            raise FileNotFoundError(
                f"no ingested offers table for {ctx.dataset.name!r} at "
                f"{ctx.catalog.path('offers')}; add an offers table to the dataset or set "
                "nbo.offers: derive"
            )
        raw, origin = ctx.catalog.read("offers"), "table"
    offers = validate_offers(raw, cfg.nbo.kinds)
    offers = offers[~offers["category"].isin(cfg.nbo.exclude_categories)].reset_index(drop=True)
    if offers.empty:
        raise ValueError(f"no {cfg.nbo.kinds} offers to rank ({origin} offers)")
    return offers, origin


def nbo_frame(cfg: Any, ctx: RunContext) -> NBOFrame:
    """Stacked eligible pairs with labels and customer inputs at every cutoff, split."""
    source = ctx.catalog.relation("transactions")
    fs = feature_set(cfg.feature_set, cfg.rfm)
    unknown = sorted(set(cfg.drop_columns) - set(fs.names))
    if unknown:
        raise ValueError(f"drop_columns: {unknown} are not features of {fs.name!r}")
    notes: list[str] = []
    con = connect(ctx.state)
    try:
        _, last = data_date_range(con, source)
        offers, origin = load_offers(cfg, con, ctx, source)
        products, products_info = products_relation(cfg, ctx)
        if products is None and (offers["kind"] == "up_sell").any():
            notes.append("no product tiers (products table, nbo.products): up-sell offers dropped")
            offers = offers[offers["kind"] != "up_sell"].reset_index(drop=True)
        if offers.empty:
            raise ValueError("no offers left to rank")
        seen = con.execute(
            f"SELECT DISTINCT CAST(category AS VARCHAR) FROM {source} WHERE category IS NOT NULL "
            f"AND CAST(ts AS DATE) <= {sql_date(cfg.cutoffs.train[-1])}"
        ).fetchall()
        offer_cats = [c for c in offers["category"] if isinstance(c, str)]
        categories = sorted({r[0] for r in seen} | set(offer_cats))
        offers_rel = offers_relation_sql(offers)
        frames = []
        cutoffs = [*cfg.cutoffs.train, cfg.cutoffs.test]
        ctx.cutoff_done(0, len(cutoffs))
        for as_of in cutoffs:
            if (last - as_of).days < cfg.horizon_days:
                raise ValueError(
                    f"cutoff {as_of} + horizon {cfg.horizon_days} days runs past the last data "
                    f"date {last}"
                )
            inputs = customer_inputs(con, source, as_of, fs, categories, products)
            labels = con.execute(
                offer_labels_sql(
                    source,
                    offers_rel,
                    as_of,
                    cfg.horizon_days,
                    cfg.lookback_days,
                    products,
                    cfg.nbo.upsell_steps,
                    cfg.nbo.bought_within_days,
                )
            ).df()
            labels[ID] = labels[ID].astype(str)
            frames.append(labels.merge(inputs, on=ID, how="inner", validate="many_to_one"))
            ctx.cutoff_done(len(frames), len(cutoffs))
    finally:
        con.close()
    pairs = attach_offers(pd.concat(frames, ignore_index=True), offers)
    # one training cutoff: 20 % of its customers (all their pairs) validate
    pairs[SPLIT] = fit_valid_split(pairs, cfg.cutoffs.train, cfg.cutoffs.test, cfg.seed, group=ID)
    names = [f for f in fs.names if f not in cfg.drop_columns]
    return NBOFrame(
        pairs=pairs,
        offers=offers,
        feature_names=names,
        categorical=[f for f in fs.categorical_names if f in names],
        categories=categories,
        feature_set=fs,
        offers_source=origin,
        products=products_info,
        notes=notes,
    )


# --------------------------------------------------------------------------- train + evaluate


def _evaluate(
    pairs: pd.DataFrame, score: str, ev: str, ks: list[int], kinds: list[str]
) -> dict[str, float]:
    """Ranking metrics (by ``score``) overall and per kind (where customers have a choice),
    value@k (ranked by ``ev``), and the pointwise metrics of ``score`` as a probability."""
    out = ranking_metrics(pairs, score, ks)
    by_value = ranking_metrics(pairs, ev, ks, value="value")
    out.update({k: v for k, v in by_value.items() if k.startswith("value_at_")})
    for kind in kinds:
        rows = pairs[pairs["kind"] == kind]
        # a kind with at most one eligible offer per customer has nothing to rank
        if len(rows) and rows[LABEL].any() and rows.groupby(ID).size().max() > 1:
            out.update({f"{kind}_{k}": v for k, v in ranking_metrics(rows, score, ks).items()})
    y = pairs[LABEL].to_numpy().astype(int)
    if len(np.unique(y)) == 2:
        out.update(binary_metrics(y, pairs[score].to_numpy(float)))
    out["n_pairs"] = float(len(pairs))
    return out


def _per_offer(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per offer on the test cutoff: eligible customers, take rate, mean predictions."""
    g = pairs.groupby("offer_id", sort=True)
    return pd.DataFrame(
        {
            "kind": g["kind"].first(),
            "category": g["category"].first(),
            "value": g["value"].first(),
            "eligible": g.size(),
            "taken": g[LABEL].sum(),
            "take_rate": g[LABEL].mean(),
            "mean_probability": g["probability"].mean(),
            "popularity": g["baseline_score"].mean(),
        }
    ).reset_index()


def _scored_pairs(rows: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    """Pairs with probability, value and expected value, as ``_evaluate`` reads them."""
    value = rows["offer_value"].to_numpy(float)
    return pd.DataFrame(
        {
            ID: rows[ID].astype(str).to_numpy(),
            "offer_id": rows["offer_id"].to_numpy(),
            "kind": rows["offer_kind"].to_numpy(),
            LABEL: rows[LABEL].to_numpy().astype(int),
            "probability": p,
            "value": value,
            "expected_value": p * value,
        }
    )


def _value_k(cfg: Any) -> int:
    """The k of value@k that ``rank_by: auto`` compares: the promotion metric's, else 3 (the
    served default)."""
    metric = cfg.promotion.metric
    return int(metric.rsplit("_", 1)[1]) if "_at_" in metric and metric[-1].isdigit() else 3


def choose_seasonal(
    cfg: Any, frame: NBOFrame, params: dict[str, Any], fit_rows: pd.DataFrame, valid: pd.DataFrame
) -> tuple[NBOClassifier, str, dict[str, float]]:
    """The classifier fitted on the fit pairs: seasonal as set, or for ``auto`` with and without
    the cutoff's day of the year, the higher promotion metric on the validation pairs (ties to
    seasonal)."""
    y = fit_rows[LABEL].to_numpy()

    def fit(seasonal: bool) -> NBOClassifier:
        clf = NBOClassifier(frame.feature_names, frame.categorical, params, cfg.seed, seasonal)
        return clf.fit(fit_rows, y)

    if cfg.nbo.seasonal != "auto":
        return fit(bool(cfg.nbo.seasonal)), "set in the experiment config", {}
    metric = cfg.promotion.metric
    sign = 1.0 if cfg.promotion.higher_is_better else -1.0
    fitted, scores = {}, {}
    for seasonal in (True, False):
        fitted[seasonal] = clf = fit(seasonal)
        pairs = _scored_pairs(valid, clf.predict_proba(valid)[:, 1])
        scores[seasonal] = _evaluate(pairs, "probability", "expected_value", _ks(cfg), [])[metric]
    best = not sign * scores[False] > sign * scores[True]
    rule = (
        f"auto: the better validation {metric} wins, ties to seasonal (with {scores[True]:.4f}, "
        f"without {scores[False]:.4f}: {'seasonal' if best else 'not seasonal'})"
    )
    return (
        fitted[best],
        rule,
        {
            f"seasonal_{k}": v
            for k, v in zip(("on", "off"), (scores[True], scores[False]), strict=True)
        },
    )


def choose_rank_by(
    cfg: Any, valid: pd.DataFrame, p_valid: np.ndarray
) -> tuple[RankBy, str, dict[str, float]]:
    """The serving order: as set, or for ``auto`` the order (expected value or probability) with
    the higher value@k on the validation pairs (ties to expected value)."""
    if cfg.nbo.rank_by != "auto":
        return cfg.nbo.rank_by, "set in the experiment config", {}
    k = _value_k(cfg)
    pairs = _scored_pairs(valid, p_valid)
    by: dict[RankBy, float] = {
        order: ranking_metrics(pairs, order, [k], value="value")[f"value_at_{k}"]
        for order in ("expected_value", "probability")
    }
    best: RankBy = "probability" if by["probability"] > by["expected_value"] else "expected_value"
    rule = (
        f"auto: the higher validation value@{k} wins, ties to expected_value (expected_value "
        f"{by['expected_value']:.4f}, probability {by['probability']:.4f}: {best})"
    )
    return best, rule, {f"value_at_{k}_by_{o}": v for o, v in by.items()}


def train_nbo(cfg: Any, frame: NBOFrame, params: dict[str, Any] | None = None) -> NBOResult:
    """Fit on ``fit`` pairs, calibrate on ``valid`` pairs, evaluate out of time on ``test``."""
    fit_rows, valid_rows, test_rows = frame.part("fit"), frame.part("valid"), frame.part("test")
    for name, rows in (("fit", fit_rows), ("valid", valid_rows), ("test", test_rows)):
        if rows[LABEL].nunique() < 2:
            raise ValueError(f"the {name} pairs need both taken and not-taken offers")
    params = {**DEFAULT_XGB_PARAMS, **cfg.model.params, **(params or {})}
    clf, seasonal_rule, seasonal_scores = choose_seasonal(cfg, frame, params, fit_rows, valid_rows)
    yv = valid_rows[LABEL].to_numpy().astype(int)
    choice: CalibrationChoice | None = None
    estimator: Any = clf
    if cfg.calibration.method != "none":
        if cfg.calibration.method == "auto":
            # Platt is strictly monotone: each customer's offer order stays the model's, where
            # isotonic steps would tie offers and break the ranking
            choice = CalibrationChoice(
                "sigmoid", {}, "nbo: Platt scaling keeps the ranking (isotonic would tie offers)"
            )
        else:
            choice = CalibrationChoice(cfg.calibration.method, {}, "set in the experiment config")
        estimator = calibrate(clf, valid_rows, yv, choice.method)
    rank_by, rank_rule, rank_scores = choose_rank_by(
        cfg, valid_rows, estimator.predict_proba(valid_rows)[:, 1]
    )
    selection = NBOSelection(
        seasonal=bool(clf.seasonal),
        rank_by=rank_by,
        rules={"seasonal": seasonal_rule, "rank_by": rank_rule},
        validation={**seasonal_scores, **rank_scores},
    )
    train_rows = pd.concat([fit_rows, valid_rows])
    baseline = PopularityBaseline(key="offer_id").fit(
        train_rows[["offer_id"]], train_rows[LABEL].to_numpy().astype(int)
    )
    info = {
        "family": "nbo",
        "dataset": Path(cfg.dataset).stem,
        "feature_set": frame.feature_set.key,
        "feature_set_spec": frame.feature_set.spec(),
        "horizon_days": cfg.horizon_days,
        "offers_source": frame.offers_source,
        "test_cutoff": cfg.cutoffs.test.isoformat() if cfg.cutoffs else None,
        "products": frame.products,  # the product -> tier file used, for scoring inputs
        "lookback_days": cfg.lookback_days,
    }
    model = NBOModel(
        estimator,
        clf,
        frame.offers,
        cfg.nbo.upsell_steps,
        rank_by,
        info,
        cfg.nbo.bought_within_days,
    )
    p_model = estimator.predict_proba(test_rows)[:, 1]
    p_raw = clf.predict_proba(test_rows)[:, 1]
    one = list(baseline.classes_).index(1)
    p_base = baseline.predict_proba(test_rows[["offer_id"]])[:, one]
    value = test_rows["offer_value"].to_numpy(float)
    preds = pd.DataFrame(
        {
            ID: test_rows[ID].astype(str).to_numpy(),
            "offer_id": test_rows["offer_id"].to_numpy(),
            "kind": test_rows["offer_kind"].to_numpy(),
            "category": test_rows["offer_category"].to_numpy(),
            LABEL: test_rows[LABEL].to_numpy().astype(int),
            "probability": p_model,
            "probability_uncalibrated": p_raw,
            "baseline_score": p_base,
            "value": value,
            "expected_value": p_model * value,
            "baseline_expected_value": p_base * value,
        }
    )
    ks = _ks(cfg)
    metrics = _evaluate(preds, "probability", "expected_value", ks, cfg.nbo.kinds)
    metrics["ece_uncalibrated"] = binary_metrics(preds[LABEL].to_numpy(), p_raw)["ece"]
    base_metrics = _evaluate(preds, "baseline_score", "baseline_expected_value", ks, cfg.nbo.kinds)
    metric = cfg.promotion.metric
    if metric not in metrics or metric not in base_metrics:
        raise ValueError(
            f"promotion.metric {metric!r} is not an NBO metric; e.g. map_at_3, ndcg_at_3, "
            f"hit_at_1, roc_auc (have {sorted(metrics)})"
        )
    rng = np.random.default_rng(cfg.seed)
    sample = test_rows.iloc[
        np.sort(rng.choice(len(test_rows), min(IMPORTANCE_ROWS, len(test_rows)), replace=False))
    ]
    counts = split_counts(frame.pairs, "pairs")
    counts.update(
        {
            f"customers_at_{pd.Timestamp(str(d)).date().isoformat()}": int(n)
            for d, n in frame.pairs.groupby(AS_OF)[ID].nunique().items()
        }
    )
    counts["offers"] = len(frame.offers)
    return NBOResult(
        model=model,
        classifier=clf,
        baseline=baseline,
        offers=frame.offers,
        feature_names=frame.feature_names,
        metrics=metrics,
        baseline_metrics=base_metrics,
        test_pairs=preds,
        test_frame=test_rows.reset_index(drop=True),
        per_offer=_per_offer(preds),
        importance=global_importance(clf.model_, clf.pair_features(sample)),
        calibration=choice,
        grade=grade(
            metrics[metric],
            base_metrics[metric],
            cfg.grade.a_margin,
            cfg.promotion.higher_is_better,
        ),
        params=params,
        offers_source=frame.offers_source,
        products=frame.products,
        row_counts=counts,
        notes=list(frame.notes),
        selection=selection,
    )


# --------------------------------------------------------------------------- MLflow


def plot_ranking(result: NBOResult, ks: list[int], path: Path, title: str) -> Path:
    """hit@k, MAP@k and NDCG@k of the model and the popularity baseline as grouped bars."""
    plt = pyplot()
    names = [f"{m}@{k}" for m in ("hit", "map", "ndcg") for k in ks]
    keys = [f"{m}_at_{k}" for m in ("hit", "map", "ndcg") for k in ks]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names)), 4.5), dpi=110)
    ax.bar(x - 0.2, [result.metrics[k] for k in keys], 0.4, label="XGBoost (calibrated)")
    ax.bar(x + 0.2, [result.baseline_metrics[k] for k in keys], 0.4, label=BASELINE_NAME)
    ax.set_xticks(x, names, rotation=45)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean over customers with a taken offer")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def input_example(result: NBOResult) -> pd.DataFrame:
    """One customer row of typical values (no customer's own data) with the real dtypes."""
    cols = result.model.input_columns
    row = typical_row(result.test_frame.drop_duplicates(ID)[cols[1:]])
    row.insert(0, ID, "C_EXAMPLE")
    return row


def _ks(cfg: Any) -> list[int]:
    """The k of the ranking metrics (with the promotion metric's own k)."""
    ks = sorted(set(cfg.nbo.k))
    metric = cfg.promotion.metric
    if "_at_" in metric and metric.rsplit("_", 1)[1].isdigit():
        ks = sorted({*ks, int(metric.rsplit("_", 1)[1])})
    return ks


class NBO(Family):
    name = "nbo"
    config = NBOConfig
    headline_metrics = ("hit_at_1", "map_at_3", "ndcg_at_3", "value_at_3", "roc_auc", "ece")

    def build_frame(self, cfg: Any, ctx: RunContext) -> Frame:
        nf = nbo_frame(cfg, ctx)
        manifest = {
            **cutoff_manifest(cfg, nf.feature_set.key),
            "offers": {
                "source": nf.offers_source,
                "count": len(nf.offers),
                "offer_ids": nf.offers["offer_id"].tolist(),
            },
            "products": nf.products,
        }
        return Frame(
            nf.pairs,
            nf.feature_names,
            nf.categorical,
            nf.feature_set,
            None,
            manifest=manifest,
            details=nf,
        )

    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        r = train_nbo(cfg, frame.details, params)
        return trained_from(r, r.test_pairs)

    def evaluate(self, cfg: Any, trained: Trained, scores: np.ndarray) -> dict[str, float]:
        p = np.asarray(scores, dtype=float)
        pairs = trained.test_predictions.assign(
            probability=p, expected_value=p * trained.test_predictions["value"]
        )
        return _evaluate(pairs, "probability", "expected_value", _ks(cfg), cfg.nbo.kinds)

    def champion_scores(self, cfg: Any, trained: Trained, python_model: Any) -> np.ndarray:
        return np.asarray(python_model.score_pairs(trained.test_frame), dtype=float)

    def model_scores(self, cfg: Any, trained: Trained) -> np.ndarray:
        return trained.test_predictions["probability"].to_numpy(dtype=float)

    def baseline_scores(self, cfg: Any, trained: Trained) -> np.ndarray:
        return trained.test_predictions["baseline_score"].to_numpy(dtype=float)

    def bootstrap_groups(self, cfg: Any, trained: Trained) -> np.ndarray | None:
        # a customer's offer pairs are ranked together: the customer is the resampling unit
        return trained.test_predictions[ID].astype(str).to_numpy()

    def metric_of(self, cfg: Any, trained: Trained, metric: str) -> MetricOf:
        """``metric`` of resampled test pairs; each draw of a customer (all its pairs, drawn
        together by ``bootstrap_groups``) ranks as a customer of its own. Ranking metrics are
        computed alone (fast); others through ``_evaluate``."""
        if metric not in trained.metrics:
            raise KeyError(metric)
        preds = trained.test_predictions
        base = pd.DataFrame(
            {
                ID: pd.factorize(preds[ID].astype(str))[0],
                "offer_id": preds["offer_id"].to_numpy(),
                "kind": preds["kind"].to_numpy(),
                LABEL: preds[LABEL].to_numpy().astype(int),
                "value": preds["value"].to_numpy(float),
            }
        )
        ks, kinds = _ks(cfg), list(cfg.nbo.kinds)
        name, _, k = metric.rpartition("_at_")

        def of(idx: np.ndarray, scores: np.ndarray) -> float:
            p = np.asarray(scores, dtype=float)[idx]
            cut = base.iloc[idx].reset_index(drop=True)
            copy = pd.Series(idx).groupby(idx).cumcount().to_numpy()  # which draw of the row
            cut[ID] = cut[ID].to_numpy() * (int(copy.max()) + 1) + copy
            cut["probability"], cut["expected_value"] = p, p * cut["value"].to_numpy()
            if name in ("hit", "map", "ndcg") and k.isdigit():
                return ranking_metrics(cut, "probability", [int(k)])[metric]
            if name == "value" and k.isdigit():
                return ranking_metrics(cut, "expected_value", [int(k)], value="value")[metric]
            return _evaluate(cut, "probability", "expected_value", ks, kinds)[metric]

        return of

    def wrap(self, cfg: Any, frame: Frame, trained: Trained) -> Any:
        return trained.model

    def input_example(self, cfg: Any, trained: Trained) -> pd.DataFrame:
        return input_example(trained.details)

    def predict_params(self, cfg: Any) -> dict[str, Any] | None:
        # with rank_by auto the served model's own chosen order is the default ("" = its own)
        return {"k": 3, "kind": "any", "by": "" if cfg.nbo.rank_by == "auto" else cfg.nbo.rank_by}

    def log_params(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        r: NBOResult = trained.details
        return {
            "calibration": r.calibration.method if r.calibration else "none",
            "nbo.offers": r.offers_source,
            "nbo.kinds": ",".join(cfg.nbo.kinds),
            "nbo.k": ",".join(map(str, sorted(set(cfg.nbo.k)))),
            "nbo.upsell_steps": cfg.nbo.upsell_steps,
            "nbo.bought_within_days": cfg.nbo.bought_within_days or "ever",
            "nbo.rank_by": r.model.rank_by,
            "nbo.rank_by.requested": cfg.nbo.rank_by,
            "nbo.seasonal": r.classifier.seasonal,
            "nbo.seasonal.requested": cfg.nbo.seasonal,
            "nbo.n_offers": len(r.offers),
            **({"nbo.margin_rate": cfg.nbo.margin_rate} if r.offers_source == "derived" else {}),
        }

    def tags(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, str]:
        return {"offers_source": trained.details.offers_source}

    def artifacts(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        r: NBOResult = trained.details
        out: dict[str, Any] = {
            "offers.csv": r.offers,
            "per_offer.csv": r.per_offer,
            "importance.csv": r.importance,
        }
        if r.notes:
            out["notes.json"] = {"notes": r.notes}
        if r.calibration:
            out["calibration.json"] = calibration_doc(r.calibration)
        if r.selection:
            out["selection.json"] = r.selection.to_dict()
        return out

    def notes(self, cfg: Any, trained: Trained) -> list[str]:
        sel: NBOSelection | None = trained.details.selection
        if sel is None:
            return []
        return [
            f"seasonal: {sel.seasonal} ({sel.rules['seasonal']})",
            f"rank_by: {sel.rank_by} ({sel.rules['rank_by']})",
        ]

    def charts(self, cfg: Any, trained: Trained, folder: Path) -> list[Path]:
        r: NBOResult = trained.details
        pairs = trained.test_predictions
        title = f"nbo, out of time ({cfg.cutoffs.test})"
        y = pairs[LABEL].to_numpy()
        return [
            plot_ranking(r, sorted(set(cfg.nbo.k)), folder / "ranking.png", f"ranking: {title}"),
            plot_calibration(
                {
                    "XGBoost calibrated": (y, pairs["probability"].to_numpy()),
                    "XGBoost uncalibrated": (y, pairs["probability_uncalibrated"].to_numpy()),
                    BASELINE_NAME: (y, pairs["baseline_score"].to_numpy()),
                },
                folder / "calibration.png",
                f"reliability: {title}",
            ),
            plot_importance(r.importance, folder / "importance.png", "global importance (SHAP)"),
        ]

    def describe(self, cfg: Any, trained: Trained) -> str:
        m, b, metric = trained.metrics, trained.baseline_metrics, cfg.promotion.metric
        r: NBOResult = trained.details
        return (
            f"nbo model on {r.model.info['dataset']} ({r.offers_source} offers, test cutoff "
            f"{cfg.cutoffs.test}): {metric} {m[metric]:.3f} vs {BASELINE_NAME} {b[metric]:.3f}, "
            f"grade {trained.grade}. {cfg.description}"
        ).strip()


FAMILY = NBO()
