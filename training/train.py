"""Training job: stacked point-in-time snapshots, out-of-time test, XGBoost against RFM points."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from xgboost import XGBClassifier

from features.build import training_frame, transactions_source
from features.definitions import FeatureSet, feature_set
from features.sources import connect, load_dataset
from features.store import StateDirs
from models.baselines import ScoreColumnClassifier
from models.pyfunc import ScoringModel
from training.config import ExperimentConfig
from training.evaluate import binary_metrics, decile_table, plot_gains
from training.promote import PromotionDecision, decide_promotion

DEFAULT_XGB_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "max_depth": 4,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "tree_method": "hist",
    "n_jobs": 2,
}

PIP_REQUIREMENTS = ["xgboost-cpu", "scikit-learn", "pandas", "numpy", "mlflow"]


@dataclass
class TrainResult:
    """What a training run produced: the fitted model, baseline, metrics and test predictions."""

    model: XGBClassifier
    baseline: ScoreColumnClassifier
    feature_names: list[str]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    test_predictions: pd.DataFrame
    test_frame: pd.DataFrame
    row_counts: dict[str, int] = field(default_factory=dict)


def train(cfg: ExperimentConfig, frame: pd.DataFrame, fs: FeatureSet) -> TrainResult:
    """Fit on the training cutoffs, score the test cutoff with the model and the RFM baseline."""
    is_test = frame["as_of"] == pd.Timestamp(cfg.cutoffs.test)
    train_rows, test_rows = frame[~is_test], frame[is_test]
    if train_rows["label"].nunique() < 2 or test_rows["label"].nunique() < 2:
        raise ValueError("both the training and the test rows need positives and negatives")
    names = fs.names
    x_train = train_rows[names].to_numpy(dtype=np.float64, na_value=np.nan)
    x_test = test_rows[names].to_numpy(dtype=np.float64, na_value=np.nan)
    params = {**DEFAULT_XGB_PARAMS, **cfg.model.params, "random_state": cfg.seed}
    model = XGBClassifier(**params).fit(x_train, train_rows["label"].to_numpy())
    rfm_col = names.index("rfm_points")
    baseline = ScoreColumnClassifier(column=rfm_col).fit(x_train, train_rows["label"].to_numpy())
    p_model = model.predict_proba(x_test)[:, 1]
    p_base = baseline.predict_proba(x_test)[:, 1]
    y = test_rows["label"].to_numpy()
    preds = pd.DataFrame(
        {
            "customer_id": test_rows["customer_id"].to_numpy(),
            "label": y,
            "score": p_model,
            "baseline_score": p_base,
        }
    )
    counts = {
        "train_rows": int(len(train_rows)),
        "test_rows": int(len(test_rows)),
        **{
            f"rows_at_{d.date().isoformat()}": int(n)
            for d, n in frame.groupby("as_of").size().items()
        },
    }
    return TrainResult(
        model=model,
        baseline=baseline,
        feature_names=names,
        metrics=binary_metrics(y, p_model),
        baseline_metrics=binary_metrics(y, p_base),
        test_predictions=preds,
        test_frame=test_rows.reset_index(drop=True),
        row_counts=counts,
    )


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_manifest(
    cfg: ExperimentConfig, ingest_report: dict[str, Any], result: TrainResult
) -> dict[str, Any]:
    """The data manifest of a run: input files with sha256, cutoffs, horizon, row counts."""
    return {
        "dataset": ingest_report.get("dataset"),
        "input_files": [
            f for t in ingest_report.get("tables", {}).values() for f in t.get("source_files", [])
        ],
        "ingest": {
            name: {k: t[k] for k in ("read", "accepted", "quarantined", "quarantined_by_reason")}
            for name, t in ingest_report.get("tables", {}).items()
        },
        "feature_set": cfg.feature_set,
        "cutoffs": {"train": [d.isoformat() for d in cfg.cutoffs.train],
                    "test": cfg.cutoffs.test.isoformat()},
        "horizon_days": cfg.horizon_days,
        "lookback_days": cfg.lookback_days,
        "row_counts": result.row_counts,
    }


def setup_mlflow(state: StateDirs, experiment_name: str) -> str:
    """Point MLflow at the state folder's store; create the experiment with absolute artifacts."""
    import mlflow

    mlflow.set_tracking_uri(state.tracking_uri)
    state.mlflow_dir.mkdir(parents=True, exist_ok=True)
    exp = mlflow.get_experiment_by_name(experiment_name)
    if exp is None:
        location = (state.artifact_root / experiment_name).as_uri()
        exp_id = mlflow.create_experiment(experiment_name, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def log_result(
    cfg: ExperimentConfig,
    result: TrainResult,
    fs: FeatureSet,
    manifest: dict[str, Any],
    state: StateDirs,
) -> dict[str, Any]:
    """Log params, metrics, config, manifest, gains chart and model; register; maybe promote."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    setup_mlflow(state, cfg.experiment_name)
    params = {**DEFAULT_XGB_PARAMS, **cfg.model.params}
    with mlflow.start_run(run_name=cfg.name) as run, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        mlflow.set_tags(
            {
                "family": cfg.family,
                "dataset": manifest.get("dataset") or "",
                "feature_set": fs.name,
                "git_sha": _git_sha(),
                "test_cutoff": cfg.cutoffs.test.isoformat(),
            }
        )
        mlflow.log_params(
            {
                **{f"xgb.{k}": v for k, v in params.items()},
                "feature_set": fs.name,
                "horizon_days": cfg.horizon_days,
                "lookback_days": cfg.lookback_days,
                "train_cutoffs": ",".join(d.isoformat() for d in cfg.cutoffs.train),
                "test_cutoff": cfg.cutoffs.test.isoformat(),
                "seed": cfg.seed,
            }
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
        mlflow.log_metrics({f"baseline_{k}": v for k, v in result.baseline_metrics.items()})
        if cfg.config_path is not None:
            mlflow.log_artifact(str(cfg.config_path), artifact_path="config")
        mlflow.log_dict(manifest, "data_manifest.json")
        mlflow.log_dict({"name": fs.name, "features": fs.describe()}, "feature_set.json")
        preds = result.test_predictions
        decile_table(preds["label"].to_numpy(), preds["score"].to_numpy()).to_csv(
            tmp_path / "deciles.csv", index=False
        )
        mlflow.log_artifact(str(tmp_path / "deciles.csv"), artifact_path="evaluation")
        preds.to_parquet(tmp_path / "test_predictions.parquet", index=False)
        mlflow.log_artifact(str(tmp_path / "test_predictions.parquet"), artifact_path="evaluation")
        chart = plot_gains(
            {
                "XGBoost": (preds["label"].to_numpy(), preds["score"].to_numpy()),
                "RFM points": (preds["label"].to_numpy(), preds["baseline_score"].to_numpy()),
            },
            tmp_path / "gains.png",
            f"{cfg.family} gains at {cfg.cutoffs.test} (out of time)",
        )
        mlflow.log_artifact(str(chart), artifact_path="evaluation")
        wrapper = ScoringModel(result.model, result.feature_names, cfg.family)
        example = _input_example(result.test_frame[result.feature_names])
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapper,
            signature=infer_signature(example, wrapper.predict(None, example)),
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=cfg.registered_model,
        )
        version = str(info.registered_model_version)
        decision = _decide(cfg, result, client := MlflowClient())
        client.set_registered_model_alias(cfg.registered_model, "challenger", version)
        if decision.promote:
            client.set_registered_model_alias(cfg.registered_model, "champion", version)
        mlflow.set_tag("promoted_to_champion", str(decision.promote).lower())
        mlflow.log_dict(decision.to_dict(), "promotion.json")
        if decision.champion is not None:
            mlflow.log_metric(f"champion_{decision.metric}", decision.champion)
        return {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "model_uri": info.model_uri,
            "registered_model": cfg.registered_model,
            "version": version,
            "champion": decision.promote,
            "decision": decision.to_dict(),
        }


def _input_example(features: pd.DataFrame) -> pd.DataFrame:
    """A one-row example with the real dtypes and median values: no customer's own data."""
    row = {c: features[c].median() for c in features.columns}
    return pd.DataFrame([row]).astype(features.dtypes.to_dict())


def _champion_metric(cfg: ExperimentConfig, result: TrainResult, client: Any) -> float | None:
    """The current champion's metric on the challenger's own test rows (None if no champion)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(cfg.registered_model, "champion")
    except MlflowException:
        return None
    champion = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}/{mv.version}")
    wrapper = champion.unwrap_python_model()
    y = result.test_predictions["label"].to_numpy()
    try:
        scores = wrapper.score(result.test_frame)
    except ValueError:
        # the champion needs features this frame lacks: fall back to its own logged test metric
        run = client.get_run(mv.run_id)
        return run.data.metrics.get(f"test_{cfg.promotion.metric}")
    return binary_metrics(y, scores)[cfg.promotion.metric]


def _decide(cfg: ExperimentConfig, result: TrainResult, client: Any) -> PromotionDecision:
    """Champion / challenger decision on the out-of-time metric."""
    metric = cfg.promotion.metric
    return decide_promotion(
        cfg.promotion,
        challenger=result.metrics[metric],
        baseline=result.baseline_metrics[metric],
        champion=_champion_metric(cfg, result, client),
    )


def run_training(
    cfg: ExperimentConfig, state: StateDirs, progress: Any = None
) -> tuple[TrainResult, dict[str, Any]]:
    """The whole job: load the dataset's accepted data, build the frame, train, log to MLflow."""
    dataset = load_dataset(cfg.dataset)
    fs = feature_set(cfg.feature_set, cfg.rfm)
    report_path = state.data(dataset.name) / "ingest_report.json"
    ingest_report = json.loads(report_path.read_text()) if report_path.exists() else {}
    con = connect(state)
    try:
        cutoffs: list[date] = [*cfg.cutoffs.train, cfg.cutoffs.test]
        source = transactions_source(state, dataset.name)
        if progress:
            progress("features")
        frame = training_frame(con, source, fs, cutoffs, cfg.horizon_days, cfg.lookback_days)
    finally:
        con.close()
    if progress:
        progress("fit")
    result = train(cfg, frame, fs)
    manifest = build_manifest(cfg, ingest_report, result)
    if progress:
        progress("log")
    logged = log_result(cfg, result, fs, manifest, state)
    return result, logged
