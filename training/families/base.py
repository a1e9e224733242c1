"""The shape of a model family: what one run path and one logging path need from it.

A family declares its config block (a subclass of ``ExperimentConfig`` discriminated by
``family``), builds its frame (features + label + fit / valid / test), fits the model and its
baseline, scores rows, evaluates any scores on the test rows (model, baseline and champion alike),
wraps the model for serving and draws its charts. ``training.run`` does everything else, the same
way for every family: run start, manifest, config, feature set, tags, params, metrics, charts,
model with signature, registration and promotion.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from features.catalog import Catalog
from features.definitions import FeatureSet
from features.sources import DatasetConfig
from features.store import StateDirs
from training.config import ExperimentConfig
from training.evidence import MetricOf


@dataclass(frozen=True)
class RunContext:
    """Where a run reads from: the state folder, the dataset config and its catalog."""

    state: StateDirs
    dataset: DatasetConfig
    #: hears (done, total) as a family builds its features cutoff by cutoff (a progress bar)
    on_cutoff: Callable[[int, int], None] | None = None

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.state, self.dataset.name)

    def cutoff_done(self, done: int, total: int) -> None:
        """Say that ``done`` of ``total`` cutoffs have their features (0 of n: starting)."""
        if self.on_cutoff is not None:
            self.on_cutoff(done, total)


@dataclass
class Trained:
    """What a family's ``train`` returns: the fitted model, its baseline, and the evaluation of
    both on the same test rows. ``details`` is the family's own result object (kept for callers
    and tests: calibration choice, per-offer tables, uplift truth …)."""

    model: Any  # what the served wrapper scores with
    baseline_name: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    test_predictions: pd.DataFrame  # one row per test row: ids, label, model and baseline scores
    test_frame: pd.DataFrame  # the test rows with every model input (champion re-scoring)
    grade: str
    params: dict[str, Any]  # estimator parameters (logged as ``model.<name>``)
    feature_names: list[str]
    row_counts: dict[str, int] = field(default_factory=dict)
    details: Any = None
    extra_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # e.g. random, truth


@dataclass
class Frame:
    """A family's modelling frame: rows with a ``split`` column and what the columns mean."""

    frame: pd.DataFrame
    feature_names: list[str]
    categorical: list[str] = field(default_factory=list)
    feature_set: FeatureSet | None = None
    value_column: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)  # family facts for the data manifest
    details: Any = None  # the family's own frame object

    def part(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name]


class Family(ABC):
    """One model family. Subclass, set ``name`` and ``config``, implement the abstract methods and
    register an instance (``training.families.register``)."""

    name: ClassVar[str]
    config: ClassVar[type[ExperimentConfig]]
    #: whether ``training.tune`` can search its parameters (binary families)
    tunable: ClassVar[bool] = False
    #: the test metric names ``patron train`` prints first
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    #: what a 1 of the family's label means when it is fixed (churn, response): recorded with
    #: the served model, so serving knows a churn probability from a response probability
    fixed_label_meaning: ClassVar[str | None] = None

    @abstractmethod
    def build_frame(self, cfg: Any, ctx: RunContext) -> Frame:
        """Features + label + fit / valid / test split."""

    @abstractmethod
    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        """Fit the model and the baseline; evaluate both on the test rows with ``evaluate``."""

    @abstractmethod
    def evaluate(self, cfg: Any, trained: Trained, scores: np.ndarray) -> dict[str, float]:
        """Metrics of any scores of the test rows (model, baseline and champion alike)."""

    @abstractmethod
    def wrap(self, cfg: Any, frame: Frame, trained: Trained) -> Any:
        """The MLflow python model served for this family."""

    def label_meaning(self, cfg: Any) -> str | None:
        """What a 1 of the model's label means (churn / response / other; None: no 0/1 label)."""
        return self.fixed_label_meaning

    def served_feature_set(self, cfg: Any) -> FeatureSet | None:
        """The feature set the served model scores from (None: the family reads no snapshot)."""
        from features.definitions import feature_set

        name = getattr(cfg, "feature_set", None)
        return feature_set(name, getattr(cfg, "rfm", None)) if name else None

    def champion_scores(self, cfg: Any, trained: Trained, python_model: Any) -> np.ndarray:
        """Scores of the test rows by a loaded champion (its own ``score`` by default)."""
        return np.asarray(python_model.score(trained.test_frame), dtype=float)

    def promotion_metric(self, cfg: Any) -> tuple[str, bool]:
        """(metric, higher is better) of the grade and the champion decision."""
        return cfg.promotion.metric, cfg.promotion.higher_is_better

    # ---------------------------------------------------------- what the promotion gate reads

    #: metrics that must not be significantly worse for a promotion (``promotion.guards`` wins)
    guard_metrics: ClassVar[tuple[str, ...]] = ()

    def promotion_guards(self, cfg: Any) -> list[str]:
        """The guard metrics of the promotion gate: the config's, else the family's defaults."""
        guards = cfg.promotion.guards
        return list(self.guard_metrics if guards is None else guards)

    def model_scores(self, cfg: Any, trained: Trained) -> np.ndarray:
        """The model's scores of the test rows, in ``test_predictions`` order."""
        return trained.test_predictions["score"].to_numpy(dtype=float)

    def baseline_scores(self, cfg: Any, trained: Trained) -> np.ndarray:
        """The baseline's scores of the same test rows, in the same order."""
        return trained.test_predictions["baseline_score"].to_numpy(dtype=float)

    def bootstrap_groups(self, cfg: Any, trained: Trained) -> np.ndarray | None:
        """The unit the bootstrap resamples, one label per test row (None: rows). Rows that are
        not independent (all offer pairs of one customer) must be drawn together."""
        return None

    def metric_of(self, cfg: Any, trained: Trained, metric: str) -> MetricOf:
        """``metric_of(idx, scores)``: ``metric`` of ``scores[idx]`` on the test rows ``idx``
        (drawn with replacement). By default ``evaluate`` on a ``Trained`` cut to those rows, so
        any family works; override with vectorised metrics when ``evaluate`` is slow. Raises
        KeyError when ``evaluate`` does not give ``metric``."""
        if metric not in trained.metrics:
            raise KeyError(metric)
        every = np.arange(len(trained.test_predictions))
        same_rows = len(trained.test_frame) == len(trained.test_predictions)

        def of(idx: np.ndarray, scores: np.ndarray) -> float:
            if len(idx) == len(every) and np.array_equal(idx, every):
                cut = trained
            else:
                cut = replace(
                    trained,
                    test_predictions=trained.test_predictions.iloc[idx].reset_index(drop=True),
                    test_frame=(
                        trained.test_frame.iloc[idx].reset_index(drop=True)
                        if same_rows
                        else trained.test_frame
                    ),
                )
            return float(self.evaluate(cfg, cut, np.asarray(scores)[idx])[metric])

        return of

    def input_example(self, cfg: Any, trained: Trained) -> pd.DataFrame:
        """One row of typical values with the real dtypes (no customer's own data)."""
        return typical_row(trained.test_frame[trained.feature_names])

    def predict_params(self, cfg: Any) -> dict[str, Any] | None:
        """Parameters of the served model's ``predict`` (for its signature), if any."""
        return None

    def log_params(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        """The family's own parameters (beyond the shared ones)."""
        return {}

    def tags(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, str]:
        """The family's own run tags (beyond the shared ones): by default its label meaning."""
        meaning = self.label_meaning(cfg)
        return {"label_meaning": meaning} if meaning else {}

    def artifacts(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        """Evaluation tables (DataFrame → csv / parquet by suffix) and documents (dict → json),
        by file name under ``evaluation/``."""
        return {}

    def charts(self, cfg: Any, trained: Trained, folder: Path) -> list[Path]:
        """PNG charts written into ``folder``."""
        return []

    def notes(self, cfg: Any, trained: Trained) -> list[str]:
        """Lines ``patron train`` prints under the metrics (e.g. the calibration chosen)."""
        return []

    def describe(self, cfg: Any, trained: Trained) -> str:
        """A human sentence for the MLflow run list."""
        metric, _ = self.promotion_metric(cfg)
        return (
            f"{self.name} model on {cfg.dataset} ({cfg.test_label}): {metric} "
            f"{trained.metrics[metric]:.3f} vs {trained.baseline_name} "
            f"{trained.baseline_metrics[metric]:.3f}, grade {trained.grade}. {cfg.description}"
        ).strip()

    def run_name(self, cfg: Any, trained: Trained) -> str:
        """A run name that tells runs of one experiment apart in the MLflow UI."""
        p = trained.params
        lr = p.get("learning_rate")
        rate = f"{lr:.3g}" if isinstance(lr, int | float) else lr
        return f"{cfg.name} d{p.get('max_depth')} n{p.get('n_estimators')} lr{rate}"


def trained_from(result: Any, predictions: pd.DataFrame, **extra: Any) -> Trained:
    """A ``Trained`` over a family's own result object (which keeps the fields of the same name)."""
    return Trained(
        model=result.model,
        baseline_name=result.baseline_name,
        metrics=result.metrics,
        baseline_metrics=result.baseline_metrics,
        test_predictions=predictions,
        test_frame=result.test_frame,
        grade=result.grade,
        params=result.params,
        feature_names=result.feature_names,
        row_counts=result.row_counts,
        details=result,
        **extra,
    )


def served_info(frame: Frame, label_meaning: str | None = None) -> dict[str, Any]:
    """What a served model records for serving: the dataset and the feature set spec (to rebuild
    its inputs) and what a 1 of its label means (``Family.label_meaning``), when it has one."""
    info: dict[str, Any] = {"dataset": frame.manifest.get("dataset")}
    if frame.feature_set is not None:
        info["feature_set_spec"] = frame.feature_set.spec()
    if label_meaning is not None:
        info["label_meaning"] = label_meaning
    return info


def calibration_doc(choice: Any) -> dict[str, Any]:
    """The calibration chosen, with its rule and cross-fitted Brier scores, for MLflow."""
    return {"method": choice.method, "rule": choice.rule, "crossfit_brier": choice.brier}


def typical_row(features: pd.DataFrame) -> pd.DataFrame:
    """A one-row frame of medians (numbers) and modes (others) with the columns' dtypes."""
    row: dict[str, Any] = {}
    for c in features.columns:
        col = features[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            row[c] = col.median()
        else:
            modes = col.mode(dropna=True)
            row[c] = modes.iloc[0] if len(modes) else None
    return pd.DataFrame([row]).astype(features.dtypes.to_dict())


def split_counts(frame: pd.DataFrame, unit: str = "rows") -> dict[str, int]:
    """Rows per split (``fit_rows`` …) and per cutoff (``rows_at_<date>``) of a frame."""
    counts = {f"{s}_{unit}": int((frame["split"] == s).sum()) for s in ("fit", "valid", "test")}
    if "as_of" in frame.columns:
        counts.update(
            {
                f"{unit}_at_{pd.Timestamp(str(d)).date().isoformat()}": int(n)
                for d, n in frame.groupby("as_of").size().items()
            }
        )
    return counts
