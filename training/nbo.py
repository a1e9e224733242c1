"""Next-best-offer training job: offers, eligible (customer, offer) pairs with labels at stacked
cutoffs, one calibrated XGBoost classifier against the popularity baseline, ranking metrics out
of time, everything logged to MLflow the way ``training.train.log_result`` does."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from features.build import compute_features, data_date_range
from features.definitions import FeatureSet, feature_set
from features.offers import (
    customer_profile_sql,
    derive_offers_sql,
    offer_labels_sql,
    offers_relation_sql,
    products_relation_sql,
    profile_frame,
    validate_offers,
)
from features.sources import DatasetConfig, _lit, _sha256, connect, load_dataset
from features.store import StateDirs
from models.calibration import CalibrationChoice, calibrate
from models.estimators import DEFAULT_XGB_PARAMS
from models.explain import global_importance
from models.nbo import NBOClassifier, NBOModel, PopularityBaseline, attach_offers, ranking_metrics
from training.config import ExperimentConfig
from training.evaluate import binary_metrics, grade, plot_calibration, plot_importance
from training.promote import PromotionDecision, decide_promotion
from training.train import _git_sha, build_manifest, register_and_promote, setup_mlflow

ID, AS_OF, SPLIT, LABEL = "customer_id", "as_of", "split", "taken"
BASELINE_NAME = "popularity"
IMPORTANCE_ROWS = 5_000


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


# --------------------------------------------------------------------------- inputs


def products_relation(
    cfg: ExperimentConfig, state: StateDirs, dataset: DatasetConfig
) -> tuple[str | None, dict[str, Any] | None]:
    """The product -> tier relation (ingested ``products`` table, else ``nbo.products``)."""
    ingested = state.data(dataset.name) / "products.parquet"
    if ingested.exists():
        path = ingested
    elif cfg.nbo.products:
        path = dataset.resolve_path(cfg.nbo.products, state)
        if not path.exists():
            raise FileNotFoundError(f"nbo.products: file not found: {path}")
    else:
        return None, None
    reader = (
        f"read_parquet({_lit(str(path))})"
        if path.suffix == ".parquet"
        else f"read_csv({_lit(str(path))}, header = true, all_varchar = true)"
    )
    return products_relation_sql(reader), {"path": str(path), "sha256": _sha256(path)}


def load_offers(
    cfg: ExperimentConfig, con: duckdb.DuckDBPyConnection, state: StateDirs, dataset: str,
    source: str,
) -> tuple[pd.DataFrame, str]:
    """The experiment's offers (validated) and where they came from."""
    assert cfg.cutoffs is not None
    if cfg.nbo.offers == "derive":
        sql = derive_offers_sql(
            source, cfg.cutoffs.train[-1], cfg.nbo.margin_rate, cfg.nbo.min_offer_lines,
            cfg.nbo.exclude_categories,
        )
        raw, origin = con.execute(sql).df(), "derived"
    else:
        path = state.data(dataset) / "offers.parquet"
        if not path.exists():
            raise FileNotFoundError(
                f"no ingested offers table for {dataset!r} at {path}; add an offers table to the "
                "dataset or set nbo.offers: derive"
            )
        raw, origin = pd.read_parquet(path), "table"
    offers = validate_offers(raw, cfg.nbo.kinds)
    offers = offers[~offers["category"].isin(cfg.nbo.exclude_categories)].reset_index(drop=True)
    if offers.empty:
        raise ValueError(f"no {cfg.nbo.kinds} offers to rank ({origin} offers)")
    return offers, origin


def customer_inputs(
    con: duckdb.DuckDBPyConnection,
    source: str,
    as_of: date,
    fs: FeatureSet,
    categories: list[str],
    products: str | None = None,
) -> pd.DataFrame:
    """What ``NBOModel.rank`` needs per customer at ``as_of``: features of ``fs``, category
    shares and tiers, for every customer with a purchase by then."""
    feats = compute_features(con, source, as_of, fs)
    feats[ID] = feats[ID].astype(str)
    long = con.execute(customer_profile_sql(source, as_of, None, products)).df()
    profile = profile_frame(long, categories)
    out = feats.merge(profile, on=ID, how="inner", validate="one_to_one")
    out.insert(1, AS_OF, pd.Timestamp(as_of))
    return out


def scoring_inputs(
    cfg: ExperimentConfig, state: StateDirs, model: NBOModel, as_of: date | None = None
) -> pd.DataFrame:
    """``customer_inputs`` for a trained model at ``as_of`` (default: the last data date)."""
    dataset = load_dataset(cfg.dataset)
    source = f"read_parquet({_lit(str(state.data(dataset.name) / 'transactions.parquet'))})"
    products, _ = products_relation(cfg, state, dataset)
    con = connect(state)
    try:
        as_of = as_of or data_date_range(con, source)[1]
        fs = feature_set(cfg.feature_set, cfg.rfm)
        return customer_inputs(con, source, as_of, fs, model.categories, products)
    finally:
        con.close()


def nbo_frame(cfg: ExperimentConfig, state: StateDirs) -> NBOFrame:
    """Stacked eligible pairs with labels and customer inputs at every cutoff, split."""
    assert cfg.cutoffs is not None
    dataset = load_dataset(cfg.dataset)
    tx_path = state.data(dataset.name) / "transactions.parquet"
    if not tx_path.exists():
        raise FileNotFoundError(f"no ingested transactions for {dataset.name!r} at {tx_path}")
    source = f"read_parquet({_lit(str(tx_path))})"
    fs = feature_set(cfg.feature_set, cfg.rfm)
    unknown = sorted(set(cfg.drop_columns) - set(fs.names))
    if unknown:
        raise ValueError(f"drop_columns: {unknown} are not features of {fs.name!r}")
    notes: list[str] = []
    con = connect(state)
    try:
        _, last = data_date_range(con, source)
        offers, origin = load_offers(cfg, con, state, dataset.name, source)
        products, products_info = products_relation(cfg, state, dataset)
        if products is None and (offers["kind"] == "up_sell").any():
            notes.append("no product tiers (products table, nbo.products): up-sell offers dropped")
            offers = offers[offers["kind"] != "up_sell"].reset_index(drop=True)
        if offers.empty:
            raise ValueError("no offers left to rank")
        seen = con.execute(
            f"SELECT DISTINCT CAST(category AS VARCHAR) FROM {source} WHERE category IS NOT NULL "
            f"AND CAST(ts AS DATE) <= DATE '{cfg.cutoffs.train[-1].isoformat()}'"
        ).fetchall()
        offer_cats = [c for c in offers["category"] if isinstance(c, str)]
        categories = sorted({r[0] for r in seen} | set(offer_cats))
        offers_rel = offers_relation_sql(offers)
        frames = []
        for as_of in [*cfg.cutoffs.train, cfg.cutoffs.test]:
            if (last - as_of).days < cfg.horizon_days:
                raise ValueError(
                    f"cutoff {as_of} + horizon {cfg.horizon_days} days runs past the last data "
                    f"date {last}"
                )
            inputs = customer_inputs(con, source, as_of, fs, categories, products)
            labels = con.execute(
                offer_labels_sql(
                    source, offers_rel, as_of, cfg.horizon_days, cfg.lookback_days, products,
                    cfg.nbo.upsell_steps, cfg.nbo.bought_within_days,
                )
            ).df()
            labels[ID] = labels[ID].astype(str)
            frames.append(labels.merge(inputs, on=ID, how="inner", validate="many_to_one"))
    finally:
        con.close()
    pairs = attach_offers(pd.concat(frames, ignore_index=True), offers)
    pairs[SPLIT] = "fit"
    pairs.loc[pairs[AS_OF] == pd.Timestamp(cfg.cutoffs.test), SPLIT] = "test"
    if len(cfg.cutoffs.train) > 1:
        pairs.loc[pairs[AS_OF] == pd.Timestamp(cfg.cutoffs.train[-1]), SPLIT] = "valid"
    else:  # one training cutoff: 20 % of its customers (all their pairs) validate
        fit = pairs[SPLIT] == "fit"
        ids = np.sort(pairs.loc[fit, ID].unique())
        rng = np.random.default_rng(cfg.seed)
        valid_ids = set(ids[rng.random(len(ids)) < 0.2])
        pairs.loc[fit & pairs[ID].isin(valid_ids), SPLIT] = "valid"
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


def train_nbo(
    cfg: ExperimentConfig, frame: NBOFrame, params: dict[str, Any] | None = None
) -> NBOResult:
    """Fit on ``fit`` pairs, calibrate on ``valid`` pairs, evaluate out of time on ``test``."""
    fit_rows, valid_rows, test_rows = frame.part("fit"), frame.part("valid"), frame.part("test")
    for name, rows in (("fit", fit_rows), ("valid", valid_rows), ("test", test_rows)):
        if rows[LABEL].nunique() < 2:
            raise ValueError(f"the {name} pairs need both taken and not-taken offers")
    params = {**DEFAULT_XGB_PARAMS, **cfg.model.params, **(params or {})}
    clf = NBOClassifier(
        frame.feature_names, frame.categorical, params, cfg.seed, cfg.nbo.seasonal
    )
    clf.fit(fit_rows, fit_rows[LABEL].to_numpy())
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
    train_rows = pd.concat([fit_rows, valid_rows])
    baseline = PopularityBaseline(key="offer_id").fit(
        train_rows[["offer_id"]], train_rows[LABEL].to_numpy().astype(int)
    )
    info = {
        "family": "nbo",
        "dataset": Path(cfg.dataset).stem,
        "feature_set": frame.feature_set.name,
        "horizon_days": cfg.horizon_days,
        "offers_source": frame.offers_source,
        "test_cutoff": cfg.cutoffs.test.isoformat() if cfg.cutoffs else None,
        "products": frame.products,  # the product -> tier file used, for scoring inputs
        "lookback_days": cfg.lookback_days,
    }
    model = NBOModel(
        estimator, clf, frame.offers, cfg.nbo.upsell_steps, cfg.nbo.rank_by, info,
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
    ks = sorted(set(cfg.nbo.k))
    metrics = _evaluate(preds, "probability", "expected_value", ks, cfg.nbo.kinds)
    metrics["ece_uncalibrated"] = binary_metrics(preds[LABEL], p_raw)["ece"]
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
    counts = {f"{s}_pairs": int((frame.pairs[SPLIT] == s).sum()) for s in ("fit", "valid", "test")}
    counts.update(
        {
            f"pairs_at_{d.date().isoformat()}": int(n)
            for d, n in frame.pairs.groupby(AS_OF).size().items()
        }
    )
    counts.update(
        {
            f"customers_at_{d.date().isoformat()}": int(n)
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
            metrics[metric], base_metrics[metric], cfg.grade.a_margin,
            cfg.promotion.higher_is_better,
        ),
        params=params,
        offers_source=frame.offers_source,
        products=frame.products,
        row_counts=counts,
        notes=list(frame.notes),
    )


# --------------------------------------------------------------------------- MLflow


def plot_ranking(result: NBOResult, ks: list[int], path: Path, title: str) -> Path:
    """hit@k, MAP@k and NDCG@k of the model and the popularity baseline as grouped bars."""
    from training.evaluate import pyplot

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


def _input_example(result: NBOResult) -> pd.DataFrame:
    """One customer row of typical values (no customer's own data) with the real dtypes."""
    cols = result.model.input_columns
    frame = result.test_frame.drop_duplicates(ID)
    row: dict[str, Any] = {ID: "C_EXAMPLE"}
    for c in cols[1:]:
        col = frame[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            row[c] = col.median()
        else:
            modes = col.mode(dropna=True)
            row[c] = modes.iloc[0] if len(modes) else None
    out = pd.DataFrame([row])
    return out.astype({c: frame[c].dtype for c in cols[1:]})


def run_description(cfg: ExperimentConfig, result: NBOResult) -> str:
    """A human sentence for the MLflow UI's run list."""
    m, b, metric = result.metrics, result.baseline_metrics, cfg.promotion.metric
    return (
        f"nbo model on {result.model.info['dataset']} ({result.offers_source} offers, test "
        f"cutoff {cfg.cutoffs.test if cfg.cutoffs else ''}): {metric} {m[metric]:.3f} vs "
        f"{BASELINE_NAME} {b[metric]:.3f}, grade {result.grade}. {cfg.description}"
    ).strip()


def _champion_metric(cfg: ExperimentConfig, result: NBOResult, client: Any) -> float | None:
    """The current champion's metric on the challenger's own test pairs (None if no champion)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(cfg.registered_model, "champion")
    except MlflowException:
        return None
    metric = cfg.promotion.metric
    try:
        wrapper = mlflow.pyfunc.load_model(
            f"models:/{cfg.registered_model}/{mv.version}"
        ).unwrap_python_model()
        p = wrapper.score_pairs(result.test_frame)
        pairs = result.test_pairs.assign(probability=p, expected_value=p * result.test_pairs.value)
        ks = sorted(set(cfg.nbo.k))
        if "_at_" in metric:
            ks = sorted({*ks, int(metric.rsplit("_", 1)[1])})
        return _evaluate(pairs, "probability", "expected_value", ks, cfg.nbo.kinds)[metric]
    except (ValueError, KeyError, AttributeError, TypeError):
        # the champion needs inputs or offers this run lacks: fall back to its logged metric
        return client.get_run(mv.run_id).data.metrics.get(f"test_{metric}")


def log_nbo_result(
    cfg: ExperimentConfig,
    result: NBOResult,
    manifest: dict[str, Any],
    state: StateDirs,
    feature_set_doc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log params, metrics, config, manifest, charts and model; register; decide promotion."""
    import mlflow

    assert cfg.cutoffs is not None
    setup_mlflow(state, cfg.experiment_name)
    ks = sorted(set(cfg.nbo.k))
    with mlflow.start_run(run_name=cfg.name) as _run, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        mlflow.set_tags(
            {
                "family": "nbo",
                "dataset": manifest.get("dataset") or "",
                "feature_set": manifest.get("feature_set") or "",
                "git_sha": _git_sha(),
                "test_cutoff": cfg.cutoffs.test.isoformat(),
                "grade": result.grade,
                "baseline": BASELINE_NAME,
                "offers_source": result.offers_source,
                "mlflow.note.content": run_description(cfg, result),
            }
        )
        mlflow.log_params(
            {
                **{f"xgb.{k}": v for k, v in result.params.items()},
                "family": "nbo",
                "feature_set": manifest.get("feature_set") or "",
                "horizon_days": cfg.horizon_days,
                "lookback_days": cfg.lookback_days,
                "train_cutoffs": ",".join(d.isoformat() for d in cfg.cutoffs.train),
                "test_cutoff": cfg.cutoffs.test.isoformat(),
                "calibration": result.calibration.method if result.calibration else "none",
                "seed": cfg.seed,
                "nbo.offers": result.offers_source,
                "nbo.kinds": ",".join(cfg.nbo.kinds),
                "nbo.k": ",".join(map(str, ks)),
                "nbo.upsell_steps": cfg.nbo.upsell_steps,
                "nbo.bought_within_days": cfg.nbo.bought_within_days or "ever",
                "nbo.rank_by": cfg.nbo.rank_by,
                "nbo.n_offers": len(result.offers),
                **({"nbo.margin_rate": cfg.nbo.margin_rate} if result.offers_source == "derived"
                   else {}),
            }
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
        mlflow.log_metrics({f"baseline_{k}": v for k, v in result.baseline_metrics.items()})
        if cfg.config_path is not None:
            mlflow.log_artifact(str(cfg.config_path), artifact_path="config")
        mlflow.log_dict(cfg.model_dump(mode="json"), "config/resolved.json")
        mlflow.log_dict(manifest, "data_manifest.json")
        if feature_set_doc:
            mlflow.log_dict(feature_set_doc, "feature_set.json")
        if result.notes:
            mlflow.log_dict({"notes": result.notes}, "notes.json")
        if result.calibration:
            mlflow.log_dict(
                {
                    "method": result.calibration.method,
                    "rule": result.calibration.rule,
                    "crossfit_brier": result.calibration.brier,
                },
                "evaluation/calibration.json",
            )
        result.offers.to_csv(tmp_path / "offers.csv", index=False)
        result.per_offer.to_csv(tmp_path / "per_offer.csv", index=False)
        result.importance.to_csv(tmp_path / "importance.csv", index=False)
        result.test_pairs.to_parquet(tmp_path / "test_predictions.parquet", index=False)
        title = f"nbo, out of time ({cfg.cutoffs.test})"
        plot_ranking(result, ks, tmp_path / "ranking.png", f"ranking: {title}")
        y = result.test_pairs[LABEL].to_numpy()
        plot_calibration(
            {
                "XGBoost calibrated": (y, result.test_pairs["probability"].to_numpy()),
                "XGBoost uncalibrated": (
                    y, result.test_pairs["probability_uncalibrated"].to_numpy()
                ),
                BASELINE_NAME: (y, result.test_pairs["baseline_score"].to_numpy()),
            },
            tmp_path / "calibration.png",
            f"reliability: {title}",
        )
        plot_importance(result.importance, tmp_path / "importance.png", "global importance (SHAP)")
        for name in (
            "offers.csv", "per_offer.csv", "importance.csv", "test_predictions.parquet",
            "ranking.png", "calibration.png", "importance.png",
        ):
            mlflow.log_artifact(str(tmp_path / name), artifact_path="evaluation")
        params = {"k": 3, "kind": "any", "by": cfg.nbo.rank_by}
        return register_and_promote(
            cfg, result.model, _input_example(result), result.grade,
            lambda client: _decide(cfg, result, client), predict_params=params,
        )


def _decide(cfg: ExperimentConfig, result: NBOResult, client: Any) -> PromotionDecision:
    """Champion / challenger decision on the out-of-time metric."""
    metric = cfg.promotion.metric
    return decide_promotion(
        cfg.promotion,
        challenger=result.metrics[metric],
        baseline=result.baseline_metrics[metric],
        champion=_champion_metric(cfg, result, client),
    )


def nbo_manifest(
    cfg: ExperimentConfig, state: StateDirs, result: NBOResult
) -> dict[str, Any]:
    """The data manifest (``training.train.build_manifest``) plus offers and product tiers."""
    dataset = load_dataset(cfg.dataset)
    report_path = state.data(dataset.name) / "ingest_report.json"
    ingest_report = json.loads(report_path.read_text()) if report_path.exists() else {}
    manifest = build_manifest(cfg, ingest_report, result.row_counts)
    manifest["offers"] = {
        "source": result.offers_source,
        "count": len(result.offers),
        "offer_ids": result.offers["offer_id"].tolist(),
    }
    manifest["products"] = result.products
    return manifest


def run_nbo_training(
    cfg: ExperimentConfig,
    state: StateDirs,
    progress: Any = None,
    params: dict[str, Any] | None = None,
) -> tuple[NBOResult, dict[str, Any]]:
    """The whole job: pairs, train, evaluate against popularity, log to MLflow, register."""
    if cfg.family != "nbo":
        raise ValueError(f"run_nbo_training trains family 'nbo', not {cfg.family!r}")
    if progress:
        progress("features")
    frame = nbo_frame(cfg, state)
    if progress:
        progress("fit")
    result = train_nbo(cfg, frame, params)
    if progress:
        progress("log")
    fs_doc = {"name": frame.feature_set.name, "features": frame.feature_set.describe()}
    logged = log_nbo_result(cfg, result, nbo_manifest(cfg, state, result), state, fs_doc)
    return result, logged


__all__ = [
    "NBOFrame",
    "NBOResult",
    "customer_inputs",
    "log_nbo_result",
    "nbo_frame",
    "run_nbo_training",
    "scoring_inputs",
    "train_nbo",
]
