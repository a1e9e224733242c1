"""First purchase: P(a first order in the next ``horizon_days``) for prospects, people known from
events or a sign-up with no order yet (``features.prospects``), against the recency of their last
event (a one-column score, like RFM points for buyers). Point-in-time snapshots stacked over the
training cutoffs, tested out of time on the test cutoff; with a synthetic
``truth_first_purchase.parquet`` beside the events file the test rows are also graded against the
generator's true probabilities (metrics ``truth_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from scipy.stats import spearmanr
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from features.build import data_date_range, prospects_snapshot_sql
from features.definitions import FeatureSet
from features.labels import first_purchase_label_sql
from features.prospects import PROSPECT_SET, prospect_feature_set
from features.sources import connect
from models.baselines import ScoreColumnClassifier
from training.config import CutoffExperiment, RefitOption
from training.evaluate import binary_metrics, grade
from training.families.base import Frame, RunContext, Trained
from training.families.binary import (
    BinaryFamily,
    Fold,
    cutoff_manifest,
    split_fold,
    time_folds,
)
from training.frames import AS_OF, ID, LABEL, SPLIT, fit_valid_split

TRUTH_FILE = "truth_first_purchase.parquet"
RECENCY = "days_since_last_event"
NEVER_DAYS = 3650.0  # the recency of a prospect known only from a sign-up (no event)


class FirstPurchaseConfig(CutoffExperiment, RefitOption):
    """A first-purchase experiment: prospects at each cutoff, their first order in the horizon."""

    family: Literal["first_purchase"] = "first_purchase"
    feature_set: str = PROSPECT_SET
    attributes: list[str] = Field(
        default_factory=lambda: ["age_band"],
        description="customers columns used as features once a prospect has signed up",
    )

    @model_validator(mode="after")
    def _prospect_set(self) -> FirstPurchaseConfig:
        if self.feature_set != PROSPECT_SET:
            raise ValueError(f"feature_set: a first-purchase model reads {PROSPECT_SET!r}")
        return self


def recency_score(x: Any) -> np.ndarray:
    """Higher for a more recent last event: -log(1 + days), no event read as ``NEVER_DAYS``."""
    days = np.nan_to_num(np.asarray(x, dtype=float), nan=NEVER_DAYS)
    return -np.log1p(np.maximum(days, 0.0))


def recency_baseline() -> Pipeline:
    """The baseline: a logistic map of the last event's recency (one column, monotone)."""
    select = ColumnTransformer([("recency", FunctionTransformer(recency_score), [RECENCY])])
    return Pipeline([("select", select), ("score", ScoreColumnClassifier(column=0))])


@dataclass
class TruthGrade:
    """The test rows against the generator's truth."""

    path: Path
    matched: int
    metrics: dict[str, float]


class FirstPurchase(BinaryFamily):
    name = "first_purchase"
    config = FirstPurchaseConfig
    fixed_label_meaning = "response"

    def served_feature_set(self, cfg: Any) -> FeatureSet | None:
        return prospect_feature_set(cfg.attributes)

    def build_frame(self, cfg: Any, ctx: RunContext) -> Frame:
        """Prospects' features and first-purchase labels at every cutoff, stacked."""
        catalog = ctx.catalog
        source = catalog.relation("transactions")
        events, customers = (
            catalog.relation_or_none("events"),
            catalog.relation_or_none("customers"),
        )
        if events is None and customers is None:
            raise ValueError("a first-purchase model needs an events or a customers table")
        fs = prospect_feature_set(cfg.attributes)
        given = {"events": events, "customers": customers}
        missing = sorted({f.level for f in fs.features if given[f.level] is None})
        cutoffs = [*cfg.cutoffs.train, cfg.cutoffs.test]
        con = connect(ctx.state)
        try:
            _, last = data_date_range(con, source)
            frames = []
            for done, as_of in enumerate(cutoffs):
                if (last - as_of).days < cfg.horizon_days:
                    raise ValueError(
                        f"cutoff {as_of} + horizon {cfg.horizon_days} days runs past the last "
                        f"data date {last}"
                    )
                # the snapshot's own SQL: customers as of the cutoff when the table has
                # history (no later version leaks in), the same rows serving scores
                feats = con.execute(
                    prospects_snapshot_sql(ctx.state, ctx.dataset.name, fs, as_of)
                ).df()
                labels = con.execute(first_purchase_label_sql(source, as_of, cfg.horizon_days))
                frame = feats.merge(labels.df(), on=ID, how="left", validate="one_to_one")
                frame[LABEL] = frame[LABEL].fillna(0).astype(int)
                frame["value"] = frame["value"].fillna(0.0)
                frame.insert(1, AS_OF, pd.Timestamp(as_of))
                frames.append(frame)
                ctx.cutoff_done(done + 1, len(cutoffs))
        finally:
            con.close()
        table = pd.concat(frames, ignore_index=True)
        table[SPLIT] = fit_valid_split(table, cfg.cutoffs.train, cfg.cutoffs.test, cfg.seed)
        names = [f for f in fs.names if f not in cfg.drop_columns]
        categorical = [c for c in fs.categorical_names if c in names]
        for c in categorical:
            table[c] = table[c].astype(object).where(table[c].notna(), None)
        for c in set(names) - set(categorical):  # DuckDB gives nullable Int64 where NULLs are
            table[c] = table[c].astype("float64")
        manifest = {
            **cutoff_manifest(cfg, fs.key),
            "population": "prospects: an event or a sign-up by the cutoff, no order by then",
            "tables_missing": missing,
        }
        truth = _truth_path(ctx)
        if truth is not None:
            manifest["truth_file"] = str(truth)
        return Frame(table, names, categorical, fs, "value", manifest, details=truth)

    def calibration_folds(self, cfg: Any, frame: Frame) -> list[Fold]:
        folds = time_folds(frame.frame, cfg.horizon_days, cfg.calibration.folds)
        return folds or [split_fold(frame.frame)]

    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        """The binary fit and test; then the recency baseline replaces the logistic one (kept as
        ``logistic_*``) and, with a truth file, the test rows are graded against it."""
        trained = super().train(cfg, frame, params)
        known = frame.frame[frame.frame[SPLIT] != "test"]
        test = trained.test_frame
        baseline = recency_baseline().fit(known[frame.feature_names], known[LABEL].astype(int))
        p_base = baseline.predict_proba(test[frame.feature_names])[:, 1]
        preds = trained.test_predictions
        logistic = self.evaluate(cfg, trained, preds["baseline_score"].to_numpy())
        preds["baseline_score"] = p_base
        trained.baseline_name = "visit recency"
        trained.baseline_metrics = self.evaluate(cfg, trained, p_base)
        trained.extra_metrics["logistic"] = logistic
        trained.details.baseline = baseline
        metric, higher = self.promotion_metric(cfg)
        trained.grade = grade(
            trained.metrics[metric], trained.baseline_metrics[metric], cfg.grade.a_margin, higher
        )
        if isinstance(frame.details, Path):
            graded = grade_against_truth(cfg, frame.details, preds)
            if graded is not None:
                trained.extra_metrics["truth"] = graded.metrics
        return trained

    def log_params(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        return {
            **super().log_params(cfg, frame, trained),
            "attributes": ",".join(cfg.attributes),
            "baseline": trained.baseline_name,
        }

    def notes(self, cfg: Any, trained: Trained) -> list[str]:
        lines = super().notes(cfg, trained)
        truth = trained.extra_metrics.get("truth")
        if truth:
            lines.append(
                f"against the generator's truth ({int(truth['rows'])} test rows): ROC AUC model "
                f"{trained.metrics['roc_auc']:.4f}, true probability {truth['roc_auc']:.4f}, "
                f"baseline {trained.baseline_metrics['roc_auc']:.4f}; mean |model - truth| "
                f"{truth['model_abs_error']:.4f}, Spearman(model, truth) "
                f"{truth['model_spearman']:.3f}"
            )
        return lines


def _truth_path(ctx: RunContext) -> Path | None:
    """A synthetic dataset's first-purchase truth, beside its events file, if there is one."""
    for name in ("events", "customers"):
        table = ctx.dataset.tables.get(name)
        for src in table.sources if table is not None else []:
            candidate = ctx.dataset.resolve_path(src.path, ctx.state).parent / TRUTH_FILE
            if candidate.exists():
                return candidate
    return None


def grade_against_truth(cfg: Any, path: Path, preds: pd.DataFrame) -> TruthGrade | None:
    """The test rows' true probabilities (test cutoff and horizon of the truth file): the
    oracle's metrics on the observed labels, and how far the model and the baseline are from it.
    None when the truth has no rows for this test cutoff and horizon."""
    truth = pd.read_parquet(path)
    at = pd.to_datetime(truth["as_of"]).dt.date == cfg.cutoffs.test
    truth = truth[at & (truth["horizon_days"] == cfg.horizon_days)]
    if truth.empty:
        return None
    p_true = preds[ID].map(truth.set_index(truth[ID].astype(str))["p_first_purchase"])
    rows = p_true.notna().to_numpy()
    if rows.sum() < 2:
        return None
    y, p = preds[LABEL].to_numpy()[rows], p_true.to_numpy(dtype=float)[rows]
    model, base = preds["score"].to_numpy()[rows], preds["baseline_score"].to_numpy()[rows]
    metrics = binary_metrics(y, p)
    metrics.update(
        {
            "rows": float(rows.sum()),
            "unmatched_rows": float((~rows).sum()),
            "mean_true_probability": float(p.mean()),
            "model_abs_error": float(np.mean(np.abs(model - p))),
            "baseline_abs_error": float(np.mean(np.abs(base - p))),
            "model_spearman": float(spearmanr(model, p).statistic),
            "baseline_spearman": float(spearmanr(base, p).statistic),
        }
    )
    return TruthGrade(path, int(rows.sum()), metrics)


FAMILY = FirstPurchase()
