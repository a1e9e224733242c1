"""The validated config of a training job, loaded from ``experiments/<family>/<name>.yaml``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.definitions import CurrentStateAttributes, RFMPointsConfig
from training.promote import PromotionPolicy


class Cutoffs(BaseModel):
    """Training cutoffs (stacked; the last one is the validation cutoff) and the test cutoff."""

    model_config = ConfigDict(extra="forbid")
    train: list[date] = Field(min_length=1)
    test: date


class Split(BaseModel):
    """How a ready labelled table is split into fit / validation / test rows."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["random", "stratified", "date", "ordered"] = Field(
        "stratified",
        description="ordered: in table order, the last test_size share is test and the last "
        "valid_size share of the rest is valid (a table without dates, sorted by time)",
    )
    test_size: float = Field(0.25, gt=0, lt=1)
    valid_size: float = Field(0.2, gt=0, lt=1, description="share of the non-test rows")
    date_column: str | None = Field(None, description="for kind date")
    valid_from: date | None = Field(None, description="for kind date: rows from here are valid")
    test_from: date | None = Field(None, description="for kind date: rows from here are test")

    @model_validator(mode="after")
    def _date_split(self) -> Split:
        if self.kind == "date" and not (self.date_column and self.valid_from and self.test_from):
            raise ValueError("split kind 'date' needs date_column, valid_from and test_from")
        if self.kind == "date" and self.valid_from >= self.test_from:  # type: ignore[operator]
            raise ValueError("split.valid_from must be before split.test_from")
        return self


class MinRows(BaseModel):
    """The fewest rows a run fits on and is tested on; fewer refuses the run before fitting."""

    model_config = ConfigDict(extra="forbid")
    fit: int = Field(50, ge=1, description="rows (pairs, contacts) the model is fitted on")
    test: int = Field(30, ge=1, description="rows the model and baseline are tested on")


class LeakCheck(BaseModel):
    """A column that alone separates the label this well on the fit rows is refused as a
    probable leak, unless named in ``allow``."""

    model_config = ConfigDict(extra="forbid")
    max_single_auc: float = Field(0.98, gt=0.5, le=1.0)
    allow: list[str] = Field(default_factory=list, description="columns allowed all the same")


class ModelSpec(BaseModel):
    """The estimator and its parameters."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["xgboost"] = "xgboost"
    params: dict[str, Any] = Field(default_factory=dict)


class CalibrationSpec(BaseModel):
    """Calibration fitted on out-of-fold scores and kept only when it lowers the held-out ECE
    (models/calibration.py states the rule for ``auto``; docs/training.md, Calibration)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"
    min_per_class: int = Field(200, gt=0, description="isotonic needs this many rows per class")
    folds: int = Field(
        3,
        ge=1,
        description="out-of-fold evidence: the last this many training cutoffs (rolling origin), "
        "or this many stratified folds of a labelled table",
    )


class RefitOption(BaseModel):
    """Evaluate, then ship a model refitted on every labelled row."""

    refit: bool = Field(
        True,
        description="after the out-of-time test, refit the shipped model on all labelled rows "
        "(test rows included); the test figures describe the evaluated model",
    )


class SearchParam(BaseModel):
    """One dimension of the Optuna search space."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class TuningSpec(BaseModel):
    """Optuna search: seeded TPE, each trial validated over several out-of-time folds (median
    pruning after each fold); docs/training.md, Tuning."""

    model_config = ConfigDict(extra="forbid")
    n_trials: int = Field(20, gt=0)
    folds: int = Field(
        3,
        ge=2,
        description="validation folds: the last this many training cutoffs (rolling origin, "
        "capped by the cutoffs there are), or k stratified folds of a labelled table's non-test "
        "rows",
    )
    timeout_s: float | None = Field(None, gt=0)
    search_space: dict[str, SearchParam] = Field(default_factory=dict)


class GradePolicy(BaseModel):
    """A / B / C against the family's baseline (docs/evaluation.md)."""

    model_config = ConfigDict(extra="forbid")
    a_margin: float = Field(0.02, ge=0, description="A when the model beats the baseline by this")


class ExperimentConfig(BaseModel):
    """The part of an experiment every family shares; each family's config subclasses it with
    ``family: Literal["<name>"]`` and its own block (the union is discriminated by ``family``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    family: str
    description: str = ""
    dataset: str = Field(description="dataset name (experiments/datasets/<name>.yaml) or YAML path")
    model: ModelSpec = Field(default_factory=ModelSpec)
    grade: GradePolicy = Field(default_factory=GradePolicy)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    min_rows: MinRows = Field(default_factory=MinRows)
    leak_check: LeakCheck = Field(default_factory=LeakCheck)
    seed: int = 42
    registered_model: str = Field(description="name in the MLflow model registry")
    experiment: str | None = Field(None, description="MLflow experiment (default: the name)")
    config_path: Path | None = Field(default=None, exclude=True)

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def test_label(self) -> str:
        """Where the test rows come from, for run descriptions."""
        return "test split"


class CutoffExperiment(ExperimentConfig):
    """Families trained on point-in-time features at stacked cutoffs, tested out of time."""

    feature_set: str = "churn_v1"
    horizon_days: int = Field(90, gt=0)
    lookback_days: int = Field(365, gt=0, description="active = an order in this window before T")
    cutoffs: Cutoffs
    value_column: str | None = Field(
        None, description="money per customer for the decile table's captured revenue"
    )
    drop_columns: list[str] = Field(
        default_factory=list, description="features not to use (e.g. leaky ones)"
    )
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    rfm: RFMPointsConfig = Field(default_factory=RFMPointsConfig)
    current_state_attributes: CurrentStateAttributes = Field(
        default_factory=CurrentStateAttributes,
        description="attributes a customers table without history gives only today's value of; "
        "left out at historical cutoffs unless named in allow (features.build.attribute_plan)",
    )

    @model_validator(mode="after")
    def _out_of_time(self) -> CutoffExperiment:
        for t in self.cutoffs.train:
            if (self.cutoffs.test - t).days < self.horizon_days:
                raise ValueError(
                    f"cutoffs.train: {t} + horizon {self.horizon_days} days overlaps the test "
                    f"cutoff {self.cutoffs.test}; its labels would see the test period"
                )
        return self

    @property
    def test_label(self) -> str:
        return f"test cutoff {self.cutoffs.test}"


def experiment_config(data: dict[str, Any]) -> ExperimentConfig:
    """Validate an experiment mapping with the config class of its ``family`` (default churn):
    the experiment config is a union discriminated by family, open to registered families."""
    from training.families import get_family

    family = str(data.get("family", "churn"))
    return get_family(family).config.model_validate({**data, "family": family})


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load an experiment YAML and validate it with its family's config (from the registry);
    dataset paths resolve relative to the YAML."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an experiment config is a mapping of keys")
    cfg = experiment_config({**data, **(overrides or {})})
    if cfg.dataset.endswith((".yaml", ".yml")) and not Path(cfg.dataset).is_absolute():
        cfg = cfg.model_copy(update={"dataset": str((path.parent / cfg.dataset).resolve())})
    return cfg.model_copy(update={"config_path": path.resolve()})
