"""CLV training job: XGBoost on point-in-time features (target = spend in the horizon) against
BG/NBD + Gamma-Gamma fitted on the same history, both evaluated out of time."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.clv_summary import clv_summary
from features.sources import _lit, connect, load_dataset
from features.store import StateDirs
from models.clv import BetaGeoModel, GammaGammaModel, clv_metrics, customer_lifetime_value
from models.estimators import DEFAULT_XGB_PARAMS, xgb_pipeline
from models.explain import global_importance
from models.pyfunc import ScoringModel
from training.config import ExperimentConfig
from training.evaluate import decile_table, grade, plot_gains, plot_importance
from training.frames import ID, LABEL, ModelFrame, transactions_frame
from training.promote import decide_promotion
from training.train import (
    _git_sha,
    _input_example,
    build_manifest,
    register_and_promote,
    setup_mlflow,
)

DEFAULT_CLV_PARAMS: dict[str, Any] = {"objective": "reg:tweedie", "tweedie_variance_power": 1.5}


@dataclass
class CLVResult:
    """A fitted CLV regressor, the BG/NBD baseline's predictions and both metric sets."""

    model: Any
    feature_names: list[str]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    test_predictions: pd.DataFrame
    test_frame: pd.DataFrame
    deciles: pd.DataFrame
    importance: pd.DataFrame
    grade: str
    params: dict[str, Any]
    baseline_params: dict[str, float]
    baseline_name: str = "BG/NBD + Gamma-Gamma"
    row_counts: dict[str, int] = field(default_factory=dict)


def bgnbd_baseline(
    transactions: str, as_of: Any, horizon_days: int, con: Any, discount_rate: float = 0.0
) -> tuple[pd.DataFrame, dict[str, float]]:
    """BG/NBD + Gamma-Gamma fitted on the history up to ``as_of`` (weeks); CLV over the horizon."""
    summary = clv_summary(transactions, as_of, "weeks", horizon_days=None, con=con)
    bg = BetaGeoModel().fit(summary)
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    gg = GammaGammaModel().fit(repeat)
    value = customer_lifetime_value(bg, gg, summary, horizon_days / 7.0, discount_rate)
    params = {**{f"bgnbd_{k}": float(v) for k, v in bg.params_.items()},
              **{f"gg_{k}": float(v) for k, v in gg.params_.items()}}
    return pd.DataFrame({ID: summary[ID].astype(str), "bgnbd_clv": value}), params


def train_clv(cfg: ExperimentConfig, mf: ModelFrame, baseline: pd.DataFrame,
              baseline_params: dict[str, float]) -> CLVResult:
    """Fit XGBoost on fit + valid rows; score test rows; compare with the BG/NBD baseline."""
    train_rows = mf.frame[mf.frame["split"] != "test"]
    test_rows = mf.frame[mf.frame["split"] == "test"].reset_index(drop=True)
    params = {**DEFAULT_XGB_PARAMS, **DEFAULT_CLV_PARAMS, **cfg.model.params}
    pipe = xgb_pipeline(mf.feature_names, mf.categorical, params, cfg.seed, regression=True)
    pipe.fit(train_rows[mf.feature_names], train_rows[LABEL].to_numpy())
    pred = np.clip(pipe.predict(test_rows[mf.feature_names]), 0.0, None)
    y = test_rows[LABEL].to_numpy(dtype=float)
    base = test_rows[[ID]].astype(str).merge(baseline, on=ID, how="left")["bgnbd_clv"]
    base = base.fillna(0.0).to_numpy()
    preds = pd.DataFrame({ID: test_rows[ID].astype(str), LABEL: y, "score": pred,
                          "baseline_score": base, "value": y})
    metrics, base_metrics = clv_metrics(y, pred), clv_metrics(y, base)
    metric = cfg.promotion.metric
    counts = {f"{s}_rows": int((mf.frame["split"] == s).sum()) for s in ("fit", "valid", "test")}
    return CLVResult(
        model=pipe,
        feature_names=mf.feature_names,
        metrics=metrics,
        baseline_metrics=base_metrics,
        test_predictions=preds,
        test_frame=test_rows,
        deciles=decile_table((y > 0).astype(float), pred, y),
        importance=global_importance(pipe, test_rows[mf.feature_names]),
        grade=grade(metrics[metric], base_metrics[metric], cfg.grade.a_margin,
                    cfg.promotion.higher_is_better),
        params=params,
        baseline_params=baseline_params,
        row_counts=counts,
    )


def log_clv_result(cfg: ExperimentConfig, result: CLVResult, manifest: dict[str, Any],
                   state: StateDirs) -> dict[str, Any]:
    """Log the CLV run like the binary families: params, metrics, charts, model, promotion."""
    import mlflow
    from mlflow.exceptions import MlflowException

    setup_mlflow(state, cfg.experiment_name)
    metric = cfg.promotion.metric
    with mlflow.start_run(run_name=cfg.name) as _run, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        m, b = result.metrics, result.baseline_metrics
        mlflow.set_tags({
            "family": "clv", "dataset": manifest.get("dataset") or "",
            "feature_set": cfg.feature_set, "git_sha": _git_sha(), "grade": result.grade,
            "baseline": result.baseline_name,
            "test_cutoff": cfg.cutoffs.test.isoformat() if cfg.cutoffs else "",
            "mlflow.note.content": (
                f"CLV over {cfg.horizon_days} days on {cfg.dataset}: Gini {m['gini']:.3f} vs "
                f"BG/NBD {b['gini']:.3f}, Spearman {m['spearman']:.3f} vs {b['spearman']:.3f}, "
                f"grade {result.grade}"),
        })
        mlflow.log_params({**{f"xgb.{k}": v for k, v in result.params.items()},
                           **result.baseline_params, "family": "clv",
                           "feature_set": cfg.feature_set, "horizon_days": cfg.horizon_days,
                           "seed": cfg.seed})
        mlflow.log_metrics({f"test_{k}": v for k, v in m.items() if np.isfinite(v)})
        mlflow.log_metrics({f"baseline_{k}": v for k, v in b.items() if np.isfinite(v)})
        if cfg.config_path is not None:
            mlflow.log_artifact(str(cfg.config_path), artifact_path="config")
        mlflow.log_dict(manifest, "data_manifest.json")
        preds = result.test_predictions
        result.deciles.to_csv(tmp_path / "deciles.csv", index=False)
        result.importance.to_csv(tmp_path / "importance.csv", index=False)
        preds.to_parquet(tmp_path / "test_predictions.parquet", index=False)
        y = preds["value"].to_numpy()
        plot_gains({"XGBoost": (y, preds["score"].to_numpy()),
                    result.baseline_name: (y, preds["baseline_score"].to_numpy())},
                   tmp_path / "gains.png", "share of horizon spend captured (out of time)")
        plot_importance(result.importance, tmp_path / "importance.png", "global importance (SHAP)")
        for name in ("deciles.csv", "importance.csv", "test_predictions.parquet", "gains.png",
                     "importance.png"):
            mlflow.log_artifact(str(tmp_path / name), artifact_path="evaluation")
        wrapper = ScoringModel(result.model, result.feature_names, "clv")
        example = _input_example(result.test_frame[result.feature_names])

        def decide(client: Any) -> Any:
            champion = None
            try:
                mv = client.get_model_version_by_alias(cfg.registered_model, "champion")
                loaded = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}/{mv.version}")
                scores = loaded.unwrap_python_model().score(result.test_frame)
                champion = clv_metrics(preds[LABEL].to_numpy(), np.clip(scores, 0, None))[metric]
            except MlflowException:
                pass
            return decide_promotion(cfg.promotion, m[metric], b[metric], champion)

        return register_and_promote(cfg, wrapper, example, result.grade, decide)


def run_clv_training(cfg: ExperimentConfig, state: StateDirs,
                     progress: Any = None) -> tuple[CLVResult, dict[str, Any]]:
    """The CLV job: frames, BG/NBD baseline at the test cutoff, XGBoost, MLflow."""
    import json

    assert cfg.cutoffs is not None
    dataset = load_dataset(cfg.dataset)
    report_path = state.data(dataset.name) / "ingest_report.json"
    ingest_report = json.loads(report_path.read_text()) if report_path.exists() else {}
    con = connect(state)
    try:
        if progress:
            progress("features")
        mf = transactions_frame(cfg, con, state, dataset.name)
        source = f"read_parquet({_lit(str(state.data(dataset.name) / 'transactions.parquet'))})"
        if progress:
            progress("fit")
        baseline, bparams = bgnbd_baseline(source, cfg.cutoffs.test, cfg.horizon_days, con)
    finally:
        con.close()
    result = train_clv(cfg, mf, baseline, bparams)
    if progress:
        progress("log")
    logged = log_clv_result(cfg, result, build_manifest(cfg, ingest_report, result.row_counts),
                            state)
    return result, logged
