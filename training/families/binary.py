"""What the binary families (churn, propensity, labelled) share: a calibrated XGBoost classifier
against a simple baseline, fitted on ``fit`` rows, calibrated on ``valid`` rows, evaluated out of
time on ``test`` rows; point-in-time frames stacked over cutoffs for the transaction families."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from features.build import attribute_plan, compute_features, data_date_range
from features.definitions import feature_set
from features.sources import connect
from models.baselines import ScoreColumnClassifier
from models.calibration import CalibratedModel, MapChoice, ScoreMap, choose_score_map
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
    served_info,
    split_counts,
)
from training.frames import AS_OF, ID, LABEL, SPLIT, fit_valid_split, rolling_origin


@dataclass
class BinaryDetails:
    """The binary families' own results: the shipped and the evaluated model, calibration,
    deciles, importance."""

    pipeline: Any  # the shipped uncalibrated XGBoost pipeline (SHAP reason codes)
    baseline: Any
    calibration: MapChoice
    deciles: pd.DataFrame
    importance: pd.DataFrame
    evaluated: Any = None  # the calibrated model the test figures describe (fit without test rows)
    evaluated_pipeline: Any = None
    out_of_fold: pd.DataFrame | None = None  # fold, score (uncalibrated), label
    fitted_rows: dict[str, int] = field(default_factory=dict)


Fold = tuple[np.ndarray, np.ndarray]
"""(rows to fit on, rows to score) as positions in the frame."""


def split_fold(table: pd.DataFrame) -> Fold:
    """The one fold fit → valid."""
    split = table[SPLIT].to_numpy()
    return np.flatnonzero(split == "fit"), np.flatnonzero(split == "valid")


def stratified_folds(table: pd.DataFrame, k: int, seed: int) -> list[Fold]:
    """``k`` stratified folds of the non-test rows."""
    from sklearn.model_selection import StratifiedKFold

    known = np.flatnonzero(table[SPLIT].to_numpy() != "test")
    y = table[LABEL].to_numpy()[known]
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(known[a], known[b]) for a, b in folds.split(known, y)]


def time_folds(table: pd.DataFrame, horizon_days: int, k: int) -> list[Fold]:
    """Rolling origin over the training cutoffs, like-for-like with the test: for each of the last
    ``k`` training cutoffs ``v``, fit on the cutoffs whose label window (cutoff + horizon) ended by
    ``v`` and score the rows at ``v``. A fold is kept only when it sees the season as the test
    does: its fit cutoffs include one about a year before ``v`` exactly when the training cutoffs
    include one about a year before the test cutoff (a model that has seen the same season a year
    earlier is calibrated differently from one that has not). Empty when no fold qualifies."""
    when = pd.to_datetime(table[AS_OF]).dt.normalize()
    known = sorted(pd.unique(when[table[SPLIT] != "test"]))
    tests = pd.unique(when[table[SPLIT] == "test"])
    test_seen = bool(len(tests)) and _season_seen(pd.Timestamp(tests[0]), known)
    folds: list[Fold] = [
        (fit, at_v)
        for v, earlier, fit, at_v in rolling_origin(table, horizon_days)
        if _season_seen(v, earlier) == test_seen
    ]
    return folds[-k:]


def _season_seen(cutoff: Any, fitted: list[Any]) -> bool:
    """Whether a cutoff among ``fitted`` lies a year (± 45 days) before ``cutoff``."""
    year, slack = pd.Timedelta(days=365), pd.Timedelta(days=45)
    return any(abs((pd.Timestamp(cutoff) - pd.Timestamp(c)) - year) <= slack for c in fitted)


def out_of_fold(cfg: Any, frame: Frame, folds: list[Fold], params: dict[str, Any]) -> pd.DataFrame:
    """Uncalibrated scores of each fold's rows by a model fitted on that fold's fit rows."""
    table = frame.frame
    parts = []
    for number, (fit_at, score_at) in enumerate(folds):
        fit_rows, rows = table.iloc[fit_at], table.iloc[score_at]
        if fit_rows[LABEL].nunique() < 2 or rows.empty:
            continue
        pipe = fit_pipeline(cfg, frame, fit_rows, params)
        parts.append(
            pd.DataFrame(
                {
                    "fold": number,
                    "score": pipe.predict_proba(rows[frame.feature_names])[:, 1],
                    LABEL: rows[LABEL].to_numpy().astype(int),
                }
            )
        )
    if not parts:
        raise ValueError("calibration: no fold to fit a calibrator on (no fit rows before a fold)")
    return pd.concat(parts, ignore_index=True)


def choose_map(cfg: Any, oof: pd.DataFrame) -> MapChoice:
    """The calibration map: ``auto`` keeps whichever of none / Platt / isotonic has the lowest
    held-out ECE; a configured method is honoured (its held-out ECE and the identity's are still
    reported)."""
    spec = cfg.calibration
    p, y, fold = oof["score"].to_numpy(), oof[LABEL].to_numpy(), oof["fold"].to_numpy()
    if spec.method == "auto":
        return choose_score_map(p, y, fold, min_per_class=spec.min_per_class, seed=cfg.seed)
    measured = choose_score_map(p, y, fold, ("none", spec.method), 0, cfg.seed)
    return MapChoice(
        spec.method, measured.ece, "set in the experiment config", measured.folds, measured.rows
    )


def fit_pipeline(cfg: Any, frame: Frame, rows: pd.DataFrame, params: dict[str, Any]) -> Any:
    """The XGBoost pipeline fitted on ``rows``."""
    pipe = xgb_pipeline(frame.feature_names, frame.categorical, params, cfg.seed)
    x, y = _xy(rows, frame.feature_names)
    return pipe.fit(x, y)


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

    def calibration_folds(self, cfg: Any, frame: Frame) -> list[Fold]:
        """Folds of the non-test rows whose out-of-fold scores fit and judge the calibrator:
        ``calibration.folds`` stratified folds (a labelled table split at random), else the one
        fold fit → valid (a date or ordered split)."""
        table = frame.frame
        if getattr(cfg, "split", None) is not None and cfg.split.kind in ("random", "stratified"):
            return stratified_folds(table, cfg.calibration.folds, cfg.seed)
        return [split_fold(table)]

    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        """Calibrate on out-of-fold scores, fit the evaluated model on every non-test row and
        test it out of time; then (``refit``) the shipped model is refitted on every labelled row,
        test rows included, with the same parameters and calibration method."""
        fit_rows, valid_rows, test_rows = frame.part("fit"), frame.part("valid"), frame.part("test")
        for name, rows in (("fit", fit_rows), ("valid", valid_rows), ("test", test_rows)):
            if rows[LABEL].nunique() < 2:
                raise ValueError(f"the {name} rows need both positives and negatives")
        params = {**DEFAULT_XGB_PARAMS, **cfg.model.params, **(params or {})}
        table = frame.frame
        folds = self.calibration_folds(cfg, frame)
        oof = out_of_fold(cfg, frame, folds, params)
        choice = choose_map(cfg, oof)
        known = table[table[SPLIT] != "test"]
        pipe = fit_pipeline(cfg, frame, known, params)
        model = CalibratedModel.from_parts(
            pipe, ScoreMap.fit(oof["score"], oof[LABEL], choice.method)
        )
        baseline, baseline_name = fit_baseline(frame, known)
        xt, yt = _xy(test_rows, frame.feature_names)
        p_model = model.predict_proba(xt)[:, 1]
        p_raw = pipe.predict_proba(xt)[:, 1]
        p_base = baseline.predict_proba(xt)[:, 1]
        shipped, shipped_pipe, shipped_rows = model, pipe, len(known)
        if getattr(cfg, "refit", False):
            shipped_pipe = fit_pipeline(cfg, frame, table, params)
            evidence = pd.concat(
                [oof[["score", LABEL]], pd.DataFrame({"score": p_raw, LABEL: yt})],
                ignore_index=True,
            )
            shipped = CalibratedModel.from_parts(
                shipped_pipe, ScoreMap.fit(evidence["score"], evidence[LABEL], choice.method)
            )
            shipped_rows = len(table)
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
            model=shipped,
            baseline_name=baseline_name,
            metrics={},
            baseline_metrics={},
            test_predictions=preds,
            test_frame=test_rows.reset_index(drop=True),
            grade="",
            params=params,
            feature_names=frame.feature_names,
            row_counts=split_counts(table),
        )
        trained.metrics = self.evaluate(cfg, trained, p_model)
        trained.metrics["ece_uncalibrated"] = self.evaluate(cfg, trained, p_raw)["ece"]
        trained.baseline_metrics = self.evaluate(cfg, trained, p_base)
        metric, higher = self.promotion_metric(cfg)
        trained.grade = grade(
            trained.metrics[metric], trained.baseline_metrics[metric], cfg.grade.a_margin, higher
        )
        trained.details = BinaryDetails(
            pipeline=shipped_pipe,
            baseline=baseline,
            calibration=choice,
            deciles=decile_table(yt, p_model, value),
            importance=global_importance(pipe, xt),
            evaluated=model,
            evaluated_pipeline=pipe,
            out_of_fold=oof,
            fitted_rows={"evaluated": len(known), "shipped": shipped_rows},
        )
        return trained

    def evaluate(self, cfg: Any, trained: Trained, scores: np.ndarray) -> dict[str, float]:
        return binary_metrics(trained.test_predictions[LABEL].to_numpy(), scores)

    def wrap(self, cfg: Any, frame: Frame, trained: Trained) -> Any:
        d: BinaryDetails = trained.details
        return ScoringModel(
            trained.model,
            trained.feature_names,
            self.name,
            d.pipeline,
            served_info(frame, self.label_meaning(cfg)),
            evaluated=d.evaluated if d.evaluated is not trained.model else None,
        )

    def champion_scores(self, cfg: Any, trained: Trained, python_model: Any) -> np.ndarray:
        """A champion's scores by the model its own test figures describe (never by a refit that
        may have been fitted on these very rows)."""
        try:
            return np.asarray(python_model.score(trained.test_frame, evaluated=True), dtype=float)
        except TypeError:  # a wrapper without an evaluated model
            return np.asarray(python_model.score(trained.test_frame), dtype=float)

    def log_params(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        d: BinaryDetails = trained.details
        return {
            "calibration": d.calibration.method,
            "calibration_folds": d.calibration.folds,
            "refit": bool(getattr(cfg, "refit", False)),
            "evaluated_fit_rows": d.fitted_rows.get("evaluated", 0),
            "shipped_fit_rows": d.fitted_rows.get("shipped", 0),
        }

    def artifacts(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        d: BinaryDetails = trained.details
        shipped_map = trained.model.map_.to_dict() if hasattr(trained.model, "map_") else {}
        evaluated_map = d.evaluated.map_.to_dict() if hasattr(d.evaluated, "map_") else {}
        out: dict[str, Any] = {
            "deciles.csv": d.deciles,
            "importance.csv": d.importance,
            "calibration.json": {
                **d.calibration.to_dict(),
                "heldout_ece_by_method": d.calibration.ece,
                "map_evaluated": evaluated_map,
                "map_shipped": shipped_map,
                "fitted_rows": d.fitted_rows,
            },
        }
        return out

    def charts(self, cfg: Any, trained: Trained, folder: Path) -> list[Path]:
        preds = trained.test_predictions
        y = preds[LABEL].to_numpy()
        curves = {
            "XGBoost": (y, preds["score"].to_numpy()),
            trained.baseline_name: (y, preds["baseline_score"].to_numpy()),
        }
        title = f"{self.name}, {cfg.test_label}"  # out of time, or the labelled table's split
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
        d: BinaryDetails = trained.details
        c = d.calibration
        held = ", ".join(f"{m} {v:.4f}" for m, v in c.ece.items())
        rows = d.fitted_rows
        shipped = (
            f"the shipped model is refitted on all {rows.get('shipped', 0):,} labelled rows "
            "(test rows included): the test figures describe the evaluated model fitted on "
            f"{rows.get('evaluated', 0):,} rows"
            if rows.get("shipped", 0) > rows.get("evaluated", 0)
            else "the shipped model is the evaluated one (refit: false)"
        )
        return [
            f"calibration: {c.method} — held-out ECE over {c.folds} fold(s), {c.rows:,} "
            f"out-of-fold rows: {held} ({c.rule})",
            shipped,
        ]

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

    def calibration_folds(self, cfg: Any, frame: Frame) -> list[Fold]:
        """Rolling origin over the training cutoffs (the last ``calibration.folds``, each fitted
        on the cutoffs whose labels were known by then); with one training cutoff, fit → valid."""
        folds = time_folds(frame.frame, cfg.horizon_days, cfg.calibration.folds)
        return folds or [split_fold(frame.frame)]


def cutoff_frame(cfg: Any, ctx: RunContext, label_sql: Any) -> Frame:
    """Stacked point-in-time features and labels at every cutoff of the experiment; the last
    training cutoff validates (with one training cutoff, 20 % of its customers, seeded)."""
    catalog = ctx.catalog
    source = catalog.relation("transactions")
    fs = feature_set(cfg.feature_set, cfg.rfm)
    unknown = sorted(set(cfg.drop_columns) - set(fs.names))
    if unknown:
        raise ValueError(f"drop_columns: {unknown} are not features of {fs.name!r}")
    plan = attribute_plan(ctx.state, ctx.dataset.name, fs, cfg.current_state_attributes)
    cutoffs = [*cfg.cutoffs.train, cfg.cutoffs.test]
    con = connect(ctx.state)
    try:
        _, last = data_date_range(con, source)
        frames = []
        ctx.cutoff_done(0, len(cutoffs))
        for as_of in cutoffs:
            if (last - as_of).days < cfg.horizon_days:
                raise ValueError(
                    f"cutoff {as_of} + horizon {cfg.horizon_days} days runs past the last data "
                    f"date {last}"
                )
            feats = compute_features(con, source, as_of, fs, **plan.relations(as_of))
            labels = con.execute(label_sql(source, as_of)).df()
            frame = labels.merge(feats, on=ID, how="inner", validate="one_to_one")
            frame.insert(1, AS_OF, pd.Timestamp(as_of))
            frames.append(frame)
            ctx.cutoff_done(len(frames), len(cutoffs))
    finally:
        con.close()
    frame = pd.concat(frames, ignore_index=True)
    frame[SPLIT] = fit_valid_split(frame, cfg.cutoffs.train, cfg.cutoffs.test, cfg.seed)
    value = cfg.value_column or ("value" if "value" in frame.columns else "spend_sum_365d")
    names = [f for f in fs.names if f not in cfg.drop_columns and f not in plan.dropped]
    categorical = [c for c in fs.categorical_names if c in names]
    for c in categorical:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return Frame(
        frame,
        names,
        categorical,
        fs,
        value if value in frame.columns else None,
        manifest={**cutoff_manifest(cfg, fs.key), "attributes": plan.manifest},
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
