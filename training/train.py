"""Training job: point-in-time frames, fit / validation / out-of-time test, calibrated XGBoost
against the family's simple baseline, everything logged to MLflow by ``log_result``."""

from __future__ import annotations

import json
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from features.sources import connect, load_dataset
from features.store import StateDirs
from models.baselines import ScoreColumnClassifier
from models.calibration import CalibrationChoice, calibrate, choose_calibration
from models.estimators import DEFAULT_XGB_PARAMS, logistic_baseline, xgb_pipeline
from models.explain import global_importance
from models.pyfunc import ScoringModel
from training.config import TRANSACTION_FAMILIES, ExperimentConfig
from training.evaluate import (
    binary_metrics,
    decile_table,
    grade,
    plot_calibration,
    plot_gains,
    plot_importance,
    plot_lift,
)
from training.frames import ID, LABEL, SPLIT, ModelFrame, labelled_frame, transactions_frame
from training.promote import PromotionDecision, decide_promotion

PIP_REQUIREMENTS = ["xgboost-cpu", "scikit-learn", "pandas", "numpy", "mlflow"]
BASELINE_NAMES = {"churn": "RFM points", "propensity": "RFM points", "labelled": "logistic"}


@dataclass
class TrainResult:
    """What a training run produced: models, metrics, grade and the out-of-time predictions."""

    model: Any  # calibrated: predict_proba is what money decisions use
    pipeline: Any  # the uncalibrated XGBoost pipeline (for SHAP reason codes)
    baseline: Any
    baseline_name: str
    feature_names: list[str]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    test_predictions: pd.DataFrame
    test_frame: pd.DataFrame
    deciles: pd.DataFrame
    importance: pd.DataFrame
    calibration: CalibrationChoice | None
    grade: str
    params: dict[str, Any]
    row_counts: dict[str, int] = field(default_factory=dict)


def _xy(frame: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    return frame[names], frame[LABEL].to_numpy().astype(int)


def fit_baseline(cfg: ExperimentConfig, mf: ModelFrame, fit_rows: pd.DataFrame) -> Any:
    """The family's simple baseline, fitted on the same rows as the model."""
    x, y = _xy(fit_rows, mf.feature_names)
    if "rfm_points" in mf.feature_names:
        select = ColumnTransformer([("rfm", "passthrough", ["rfm_points"])])
        return Pipeline([("select", select), ("score", ScoreColumnClassifier(column=0))]).fit(x, y)
    return logistic_baseline(mf.feature_names, mf.categorical).fit(x, y)


def fit_model(
    cfg: ExperimentConfig,
    mf: ModelFrame,
    params: dict[str, Any],
    callbacks: list[Any] | None = None,
) -> Any:
    """Fit the XGBoost pipeline on the fit rows (validation rows as eval set for pruning)."""
    fit_rows, valid_rows = mf.part("fit"), mf.part("valid")
    pipe = xgb_pipeline(mf.feature_names, mf.categorical, params, cfg.seed)
    x, y = _xy(fit_rows, mf.feature_names)
    pre = pipe.named_steps["pre"].fit(x, y)
    xv, yv = _xy(valid_rows, mf.feature_names)
    model = pipe.named_steps["xgb"]
    if callbacks:
        model.set_params(callbacks=callbacks, eval_metric="auc")
    model.fit(pre.transform(x), y, eval_set=[(pre.transform(xv), yv)], verbose=False)
    if callbacks:
        model.set_params(callbacks=None)
    return pipe


def train(
    cfg: ExperimentConfig, mf: ModelFrame, params: dict[str, Any] | None = None
) -> TrainResult:
    """Fit on ``fit`` rows, calibrate on ``valid`` rows, evaluate out of time on ``test`` rows."""
    fit_rows, valid_rows, test_rows = mf.part("fit"), mf.part("valid"), mf.part("test")
    for name, rows in (("fit", fit_rows), ("valid", valid_rows), ("test", test_rows)):
        if rows[LABEL].nunique() < 2:
            raise ValueError(f"the {name} rows need both positives and negatives")
    params = {**DEFAULT_XGB_PARAMS, **cfg.model.params, **(params or {})}
    pipe = fit_model(cfg, mf, params)
    xv, yv = _xy(valid_rows, mf.feature_names)
    choice: CalibrationChoice | None = None
    model = pipe
    if cfg.calibration.method != "none":
        if cfg.calibration.method == "auto":
            raw_valid = pipe.predict_proba(xv)[:, 1]
            choice = choose_calibration(raw_valid, yv, cfg.calibration.min_per_class, cfg.seed)
        else:
            choice = CalibrationChoice(cfg.calibration.method, {}, "set in the experiment config")
        model = calibrate(pipe, xv, yv, choice.method)
    baseline = fit_baseline(cfg, mf, fit_rows)
    xt, yt = _xy(test_rows, mf.feature_names)
    p_model = model.predict_proba(xt)[:, 1]
    p_raw = pipe.predict_proba(xt)[:, 1]
    p_base = baseline.predict_proba(xt)[:, 1]
    value = test_rows[mf.value_column].to_numpy() if mf.value_column else None
    preds = pd.DataFrame(
        {
            ID: test_rows[ID].astype(str).to_numpy(),
            LABEL: yt,
            "score": p_model,
            "score_uncalibrated": p_raw,
            "baseline_score": p_base,
        }
    )
    if value is not None:
        preds["value"] = value
    metrics = binary_metrics(yt, p_model)
    metrics["ece_uncalibrated"] = binary_metrics(yt, p_raw)["ece"]
    base_metrics = binary_metrics(yt, p_base)
    counts = {f"{s}_rows": int((mf.frame[SPLIT] == s).sum()) for s in ("fit", "valid", "test")}
    if "as_of" in mf.frame.columns:
        counts.update(
            {
                f"rows_at_{d.date().isoformat()}": int(n)
                for d, n in mf.frame.groupby("as_of").size().items()
            }
        )
    metric = cfg.promotion.metric
    return TrainResult(
        model=model,
        pipeline=pipe,
        baseline=baseline,
        baseline_name=BASELINE_NAMES.get(cfg.family, "baseline")
        if "rfm_points" in mf.feature_names or cfg.family == "labelled"
        else "logistic",
        feature_names=mf.feature_names,
        metrics=metrics,
        baseline_metrics=base_metrics,
        test_predictions=preds,
        test_frame=test_rows.reset_index(drop=True),
        deciles=decile_table(yt, p_model, value),
        importance=global_importance(pipe, xt),
        calibration=choice,
        grade=grade(
            metrics[metric],
            base_metrics[metric],
            cfg.grade.a_margin,
            cfg.promotion.higher_is_better,
        ),
        params=params,
        row_counts=counts,
    )


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_manifest(
    cfg: ExperimentConfig, ingest_report: dict[str, Any], row_counts: dict[str, int]
) -> dict[str, Any]:
    """The data manifest of a run: input files with sha256, cutoffs, horizon, row counts."""
    tables = ingest_report.get("tables", {})
    return {
        "dataset": ingest_report.get("dataset"),
        "input_files": [f for t in tables.values() for f in t.get("source_files", [])],
        "ingest": {
            name: {k: t[k] for k in ("read", "accepted", "quarantined", "quarantined_by_reason")}
            for name, t in tables.items()
        },
        "family": cfg.family,
        "feature_set": cfg.feature_set if cfg.family in TRANSACTION_FAMILIES else None,
        "cutoffs": None
        if cfg.cutoffs is None
        else {
            "train": [d.isoformat() for d in cfg.cutoffs.train],
            "validation": cfg.cutoffs.train[-1].isoformat(),
            "test": cfg.cutoffs.test.isoformat(),
        },
        "split": cfg.split.model_dump(mode="json") if cfg.family == "labelled" else None,
        "horizon_days": cfg.horizon_days if cfg.family in TRANSACTION_FAMILIES else None,
        "lookback_days": cfg.lookback_days if cfg.family in TRANSACTION_FAMILIES else None,
        "row_counts": row_counts,
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


def _input_example(features: pd.DataFrame) -> pd.DataFrame:
    """A one-row example with the real dtypes and typical values: no customer's own data."""
    row: dict[str, Any] = {}
    for c in features.columns:
        col = features[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            row[c] = col.median()
        else:
            modes = col.mode(dropna=True)
            row[c] = modes.iloc[0] if len(modes) else None
    return pd.DataFrame([row]).astype(features.dtypes.to_dict())


def run_name(cfg: ExperimentConfig, params: dict[str, Any]) -> str:
    """A run name that tells runs of one experiment apart in the MLflow UI."""
    return (f"{cfg.name} d{params.get('max_depth')} n{params.get('n_estimators')} "
            f"lr{params.get('learning_rate')}")


def run_description(cfg: ExperimentConfig, result: TrainResult) -> str:
    """A human sentence for the MLflow UI's run list."""
    m, b = result.metrics, result.baseline_metrics
    where = f"test cutoff {cfg.cutoffs.test}" if cfg.cutoffs else f"{cfg.split.kind} split"
    return (
        f"{cfg.family} model on {cfg.dataset} ({where}): ROC AUC {m['roc_auc']:.3f} vs "
        f"{result.baseline_name} {b['roc_auc']:.3f}, grade {result.grade}. {cfg.description}"
    ).strip()


def log_result(
    cfg: ExperimentConfig,
    result: TrainResult,
    manifest: dict[str, Any],
    state: StateDirs,
    feature_set_doc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log params, metrics, config, manifest, charts and model; register; decide promotion."""
    import mlflow

    setup_mlflow(state, cfg.experiment_name)
    with mlflow.start_run(run_name=run_name(cfg, result.params)) as _run, \
            tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        mlflow.set_tags(
            {
                "family": cfg.family,
                "dataset": manifest.get("dataset") or "",
                "feature_set": manifest.get("feature_set") or "",
                "git_sha": _git_sha(),
                "mlflow.source.git.commit": _git_sha(),
                "registered_model": cfg.registered_model,
                "test_cutoff": cfg.cutoffs.test.isoformat() if cfg.cutoffs else "",
                "grade": result.grade,
                "baseline": result.baseline_name,
                "mlflow.note.content": run_description(cfg, result),
            }
        )
        mlflow.log_params(
            {
                **{f"xgb.{k}": v for k, v in result.params.items()},
                "family": cfg.family,
                "feature_set": manifest.get("feature_set") or "",
                "horizon_days": cfg.horizon_days,
                "lookback_days": cfg.lookback_days,
                "train_cutoffs": ",".join(d.isoformat() for d in cfg.cutoffs.train)
                if cfg.cutoffs
                else "",
                "test_cutoff": cfg.cutoffs.test.isoformat() if cfg.cutoffs else "",
                "calibration": result.calibration.method if result.calibration else "none",
                "seed": cfg.seed,
            }
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
        mlflow.log_metrics({f"baseline_{k}": v for k, v in result.baseline_metrics.items()})
        metric = cfg.promotion.metric
        mlflow.log_metric(
            f"delta_baseline_{metric}", result.metrics[metric] - result.baseline_metrics[metric]
        )
        if cfg.config_path is not None:
            mlflow.log_artifact(str(cfg.config_path), artifact_path="config")
        mlflow.log_dict(cfg.model_dump(mode="json"), "config/resolved.json")
        mlflow.log_dict(manifest, "data_manifest.json")
        if feature_set_doc:
            mlflow.log_dict(feature_set_doc, "feature_set.json")
        if result.calibration:
            mlflow.log_dict(
                {
                    "method": result.calibration.method,
                    "rule": result.calibration.rule,
                    "crossfit_brier": result.calibration.brier,
                },
                "evaluation/calibration.json",
            )
        preds = result.test_predictions
        for name, frame in (("deciles.csv", result.deciles), ("importance.csv", result.importance)):
            frame.to_csv(tmp_path / name, index=False)
        preds.to_parquet(tmp_path / "test_predictions.parquet", index=False)
        y = preds[LABEL].to_numpy()
        curves = {
            "XGBoost": (y, preds["score"].to_numpy()),
            result.baseline_name: (y, preds["baseline_score"].to_numpy()),
        }
        title = f"{cfg.family}, out of time"
        plot_gains(curves, tmp_path / "gains.png", f"gains: {title}")
        plot_lift(curves, tmp_path / "lift.png", f"lift: {title}")
        plot_calibration(
            {
                "XGBoost calibrated": curves["XGBoost"],
                "XGBoost uncalibrated": (y, preds["score_uncalibrated"].to_numpy()),
            },
            tmp_path / "calibration.png",
            f"reliability: {title}",
        )
        plot_importance(result.importance, tmp_path / "importance.png", "global importance (SHAP)")
        for name in (
            "deciles.csv",
            "importance.csv",
            "test_predictions.parquet",
            "gains.png",
            "lift.png",
            "calibration.png",
            "importance.png",
        ):
            mlflow.log_artifact(str(tmp_path / name), artifact_path="evaluation")
        wrapper = ScoringModel(result.model, result.feature_names, cfg.family, result.pipeline)
        example = _input_example(result.test_frame[result.feature_names])
        return register_and_promote(
            cfg, wrapper, example, result.grade, lambda client: _decide(cfg, result, client)
        )


def register_and_promote(
    cfg: ExperimentConfig,
    wrapper: Any,
    example: pd.DataFrame,
    model_grade: str,
    decide: Any,
    predict_params: dict[str, Any] | None = None,
    version_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Inside an active run: log the pyfunc, register it as ``challenger``, decide promotion with
    ``decide(client)``, move ``champion`` when earned, and log the decision with its numbers."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    run = mlflow.active_run()
    output = wrapper.predict(None, example, predict_params) if predict_params else \
        wrapper.predict(None, example)
    with warnings.catch_warnings():
        # integer feature columns are never missing in snapshots: MLflow's hint does not apply
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapper,
            signature=infer_signature(example, output, predict_params),
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=cfg.registered_model,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    decision: PromotionDecision = decide(client)
    client.set_registered_model_alias(cfg.registered_model, "challenger", version)
    if decision.promote:
        client.set_registered_model_alias(cfg.registered_model, "champion", version)
    for key, value in {"grade": model_grade, "family": cfg.family, **(version_tags or {})}.items():
        client.set_model_version_tag(cfg.registered_model, version, key, value)
    mlflow.set_tags({"promoted_to_champion": str(decision.promote).lower(),
                     "promotion_reason": decision.reason, "model_version": version})
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
    y = result.test_predictions[LABEL].to_numpy()
    try:
        scores = wrapper.score(result.test_frame)
    except (ValueError, KeyError):
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


def load_frame(cfg: ExperimentConfig, state: StateDirs) -> tuple[ModelFrame, dict[str, Any]]:
    """The experiment's modelling frame and its dataset's ingest report."""
    dataset = load_dataset(cfg.dataset)
    report_path = state.data(dataset.name) / "ingest_report.json"
    ingest_report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if cfg.family == "labelled":
        return labelled_frame(cfg, state, dataset.name), ingest_report
    if cfg.family not in ("churn", "propensity"):
        raise ValueError(f"family {cfg.family!r} is trained by its own job, not training.train")
    con = connect(state)
    try:
        return transactions_frame(cfg, con, state, dataset.name), ingest_report
    finally:
        con.close()


def run_training(
    cfg: ExperimentConfig,
    state: StateDirs,
    progress: Any = None,
    params: dict[str, Any] | None = None,
) -> tuple[TrainResult, dict[str, Any]]:
    """The whole job: frame, train, log to MLflow, register, decide promotion."""
    if progress:
        progress("features")
    mf, ingest_report = load_frame(cfg, state)
    if progress:
        progress("fit")
    result = train(cfg, mf, params)
    manifest = build_manifest(cfg, ingest_report, result.row_counts)
    if progress:
        progress("log")
    fs_doc = (
        {"name": mf.feature_set.name, "features": mf.feature_set.describe()}
        if mf.feature_set
        else None
    )
    logged = log_result(cfg, result, manifest, state, fs_doc)
    return result, logged
