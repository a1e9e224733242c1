"""What the binary families (churn, propensity, labelled) share: a calibrated XGBoost classifier
against a simple baseline, fitted on ``fit`` rows, calibrated on ``valid`` rows, evaluated out of
time on ``test`` rows; point-in-time frames stacked over cutoffs for the transaction families."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from features.build import compute_features, data_date_range, input_relations
from features.definitions import feature_set
from features.sources import connect
from models.baselines import ScoreColumnClassifier
from models.calibration import CalibrationChoice, calibrate, choose_calibration
from models.estimators import DEFAULT_XGB_PARAMS, logistic_baseline, xgb_pipeline
from models.explain import global_importance
from models.pyfunc import ScoringModel
from training.config import CutoffExperiment, ExperimentConfig
from training.evaluate import (
    binary_metrics,
    decile_table,
    fast_binary_metric,
    grade,
    plot_calibration,
    plot_gains,
    plot_importance,
    plot_lift,
)
from training.evidence import MetricOf
from training.families.base import (
    Family,
    Frame,
    RunContext,
    Trained,
    calibration_doc,
    served_info,
    split_counts,
)
from training.frames import ID, LABEL, SPLIT, fit_valid_split

AS_OF = "as_of"


@dataclass
class BinaryDetails:
    """The binary families' own results: both pipelines, calibration, deciles, importance."""

    pipeline: Any  # the uncalibrated XGBoost pipeline (SHAP reason codes)
    baseline: Any
    calibration: CalibrationChoice | None
    deciles: pd.DataFrame
    importance: pd.DataFrame


def _xy(frame: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    return frame[names], frame[LABEL].to_numpy().astype(int)


def fit_model(
    cfg: Any, frame: Frame, params: dict[str, Any], callbacks: list[Any] | None = None
) -> Any:
    """Fit the XGBoost pipeline on the fit rows (validation rows as eval set for pruning)."""
    fit_rows, valid_rows = frame.part("fit"), frame.part("valid")
    pipe = xgb_pipeline(frame.feature_names, frame.categorical, params, cfg.seed)
    x, y = _xy(fit_rows, frame.feature_names)
    pre = pipe.named_steps["pre"].fit(x, y)
    xv, yv = _xy(valid_rows, frame.feature_names)
    model = pipe.named_steps["xgb"]
    if callbacks:
        model.set_params(callbacks=callbacks, eval_metric="auc")
    model.fit(pre.transform(x), y, eval_set=[(pre.transform(xv), yv)], verbose=False)
    if callbacks:
        model.set_params(callbacks=None)
    return pipe


def fit_baseline(frame: Frame, fit_rows: pd.DataFrame) -> tuple[Any, str]:
    """RFM points when the frame has them, else a logistic regression; fitted on the same rows."""
    x, y = _xy(fit_rows, frame.feature_names)
    if "rfm_points" in frame.feature_names:
        select = ColumnTransformer([("rfm", "passthrough", ["rfm_points"])])
        pipe = Pipeline([("select", select), ("score", ScoreColumnClassifier(column=0))])
        return pipe.fit(x, y), "RFM points"
    return logistic_baseline(frame.feature_names, frame.categorical).fit(x, y), "logistic"


class BinaryFamily(Family):
    """A calibrated classifier of a 0/1 label against a simple baseline."""

    headline_metrics = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")
    tunable = True

    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        """Fit on ``fit`` rows, calibrate on ``valid`` rows, evaluate out of time on ``test``."""
        fit_rows, valid_rows, test_rows = frame.part("fit"), frame.part("valid"), frame.part("test")
        for name, rows in (("fit", fit_rows), ("valid", valid_rows), ("test", test_rows)):
            if rows[LABEL].nunique() < 2:
                raise ValueError(f"the {name} rows need both positives and negatives")
        params = {**DEFAULT_XGB_PARAMS, **cfg.model.params, **(params or {})}
        pipe = fit_model(cfg, frame, params)
        xv, yv = _xy(valid_rows, frame.feature_names)
        choice: CalibrationChoice | None = None
        model = pipe
        if cfg.calibration.method != "none":
            if cfg.calibration.method == "auto":
                raw_valid = pipe.predict_proba(xv)[:, 1]
                choice = choose_calibration(raw_valid, yv, cfg.calibration.min_per_class, cfg.seed)
            else:
                choice = CalibrationChoice(
                    cfg.calibration.method, {}, "set in the experiment config"
                )
            model = calibrate(pipe, xv, yv, choice.method)
        baseline, baseline_name = fit_baseline(frame, fit_rows)
        xt, yt = _xy(test_rows, frame.feature_names)
        p_model = model.predict_proba(xt)[:, 1]
        p_raw = pipe.predict_proba(xt)[:, 1]
        p_base = baseline.predict_proba(xt)[:, 1]
        value = test_rows[frame.value_column].to_numpy() if frame.value_column else None
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
        trained = Trained(
            model=model,
            baseline_name=baseline_name,
            metrics={},
            baseline_metrics={},
            test_predictions=preds,
            test_frame=test_rows.reset_index(drop=True),
            grade="",
            params=params,
            feature_names=frame.feature_names,
            row_counts=split_counts(frame.frame),
        )
        trained.metrics = self.evaluate(cfg, trained, p_model)
        trained.metrics["ece_uncalibrated"] = self.evaluate(cfg, trained, p_raw)["ece"]
        trained.baseline_metrics = self.evaluate(cfg, trained, p_base)
        metric, higher = self.promotion_metric(cfg)
        trained.grade = grade(
            trained.metrics[metric], trained.baseline_metrics[metric], cfg.grade.a_margin, higher
        )
        trained.details = BinaryDetails(
            pipeline=pipe,
            baseline=baseline,
            calibration=choice,
            deciles=decile_table(yt, p_model, value),
            importance=global_importance(pipe, xt),
        )
        return trained

    def evaluate(self, cfg: Any, trained: Trained, scores: np.ndarray) -> dict[str, float]:
        return binary_metrics(trained.test_predictions[LABEL].to_numpy(), scores)

    def wrap(self, cfg: Any, frame: Frame, trained: Trained) -> Any:
        return ScoringModel(
            trained.model,
            trained.feature_names,
            self.name,
            trained.details.pipeline,
            served_info(frame),
        )

    def log_params(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        calib = trained.details.calibration
        return {"calibration": calib.method if calib else "none"}

    def artifacts(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        d: BinaryDetails = trained.details
        out: dict[str, Any] = {"deciles.csv": d.deciles, "importance.csv": d.importance}
        if d.calibration:
            out["calibration.json"] = calibration_doc(d.calibration)
        return out

    def charts(self, cfg: Any, trained: Trained, folder: Path) -> list[Path]:
        preds = trained.test_predictions
        y = preds[LABEL].to_numpy()
        curves = {
            "XGBoost": (y, preds["score"].to_numpy()),
            trained.baseline_name: (y, preds["baseline_score"].to_numpy()),
        }
        title = f"{self.name}, out of time"
        return [
            plot_gains(curves, folder / "gains.png", f"gains: {title}"),
            plot_lift(curves, folder / "lift.png", f"lift: {title}"),
            plot_calibration(
                {
                    "XGBoost calibrated": curves["XGBoost"],
                    "XGBoost uncalibrated": (y, preds["score_uncalibrated"].to_numpy()),
                },
                folder / "calibration.png",
                f"reliability: {title}",
            ),
            plot_importance(
                trained.details.importance, folder / "importance.png", "global importance (SHAP)"
            ),
        ]

    def notes(self, cfg: Any, trained: Trained) -> list[str]:
        calib = trained.details.calibration
        return [f"calibration: {f'{calib.method} ({calib.rule})' if calib else 'none'}"]

    def describe(self, cfg: Any, trained: Trained) -> str:
        m, b = trained.metrics, trained.baseline_metrics
        return (
            f"{self.name} model on {cfg.dataset} ({cfg.test_label}): ROC AUC {m['roc_auc']:.3f} "
            f"vs {trained.baseline_name} {b['roc_auc']:.3f}, grade {trained.grade}. "
            f"{cfg.description}"
        ).strip()

    # calibration, Brier and lift must not get significantly worse for a promotion
    guard_metrics: ClassVar[tuple[str, ...]] = ("ece", "brier", "lift_top_decile")

    def metric_of(self, cfg: Any, trained: Trained, metric: str) -> MetricOf:
        """Vectorised metrics for the promotion bootstrap (``evaluate`` on cut rows otherwise)."""
        fast = fast_binary_metric(metric, trained.test_predictions[LABEL].to_numpy())
        return fast if fast is not None else super().metric_of(cfg, trained, metric)


class CutoffBinaryFamily(BinaryFamily):
    """A binary family whose label is computed from transactions at each cutoff."""

    config: ClassVar[type[ExperimentConfig]] = CutoffExperiment

    @abstractmethod
    def label_sql(self, cfg: Any, ctx: RunContext, source: str, as_of: date) -> str:
        """The label query at one cutoff: customer_id, label."""

    def build_frame(self, cfg: Any, ctx: RunContext) -> Frame:
        return cutoff_frame(cfg, ctx, lambda source, as_of: self.label_sql(cfg, ctx, source, as_of))


def cutoff_frame(cfg: Any, ctx: RunContext, label_sql: Any) -> Frame:
    """Stacked point-in-time features and labels at every cutoff of the experiment; the last
    training cutoff validates (with one training cutoff, 20 % of its customers, seeded)."""
    catalog = ctx.catalog
    source = catalog.relation("transactions")
    fs = feature_set(cfg.feature_set, cfg.rfm)
    unknown = sorted(set(cfg.drop_columns) - set(fs.names))
    if unknown:
        raise ValueError(f"drop_columns: {unknown} are not features of {fs.name!r}")
    relations = input_relations(ctx.state, ctx.dataset.name, fs)
    cutoffs = [*cfg.cutoffs.train, cfg.cutoffs.test]
    con = connect(ctx.state)
    try:
        _, last = data_date_range(con, source)
        frames = []
        for as_of in cutoffs:
            if (last - as_of).days < cfg.horizon_days:
                raise ValueError(
                    f"cutoff {as_of} + horizon {cfg.horizon_days} days runs past the last data "
                    f"date {last}"
                )
            feats = compute_features(con, source, as_of, fs, **relations)
            labels = con.execute(label_sql(source, as_of)).df()
            frame = labels.merge(feats, on=ID, how="inner", validate="one_to_one")
            frame.insert(1, AS_OF, pd.Timestamp(as_of))
            frames.append(frame)
    finally:
        con.close()
    frame = pd.concat(frames, ignore_index=True)
    frame[SPLIT] = fit_valid_split(frame, cfg.cutoffs.train, cfg.cutoffs.test, cfg.seed)
    value = cfg.value_column or ("value" if "value" in frame.columns else "spend_sum_365d")
    names = [f for f in fs.names if f not in cfg.drop_columns]
    categorical = [c for c in fs.categorical_names if c in names]
    for c in categorical:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return Frame(
        frame,
        names,
        categorical,
        fs,
        value if value in frame.columns else None,
        manifest=cutoff_manifest(cfg, fs.key),
    )


def cutoff_manifest(cfg: Any, feature_set_key: str) -> dict[str, Any]:
    """The manifest facts of a cutoff experiment: feature set, cutoffs, horizon, lookback."""
    return {
        "feature_set": feature_set_key,
        "cutoffs": {
            "train": [d.isoformat() for d in cfg.cutoffs.train],
            "validation": cfg.cutoffs.train[-1].isoformat(),
            "test": cfg.cutoffs.test.isoformat(),
        },
        "horizon_days": cfg.horizon_days,
        "lookback_days": cfg.lookback_days,
    }
