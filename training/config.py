"""The validated config of a training job, loaded from ``experiments/<family>/<name>.yaml``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.definitions import RFMPointsConfig
from training.promote import PromotionPolicy

Family = Literal["churn", "propensity", "labelled", "clv", "nbo", "uplift"]
TRANSACTION_FAMILIES = ("churn", "propensity", "clv", "nbo")


class Cutoffs(BaseModel):
    """Training cutoffs (stacked; the last one is the validation cutoff) and the test cutoff."""

    model_config = ConfigDict(extra="forbid")
    train: list[date] = Field(min_length=1)
    test: date


class Target(BaseModel):
    """What a propensity model predicts (churn and CLV have fixed targets)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["any_purchase", "category_purchase", "campaign_response"] = "any_purchase"
    category: str | None = Field(None, description="category for category_purchase")
    campaign_ids: list[str] | None = Field(None, description="campaigns for campaign_response")

    @model_validator(mode="after")
    def _needs(self) -> Target:
        if self.kind == "category_purchase" and not self.category:
            raise ValueError("target.category is required for kind category_purchase")
        return self


class Split(BaseModel):
    """How a ready labelled table is split into fit / validation / test rows."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["random", "stratified", "date"] = "stratified"
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


class ModelSpec(BaseModel):
    """The estimator and its parameters."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["xgboost"] = "xgboost"
    params: dict[str, Any] = Field(default_factory=dict)


class CalibrationSpec(BaseModel):
    """Calibration on the validation rows (models/calibration.py states the rule for ``auto``)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"
    min_per_class: int = Field(200, gt=0)


class SearchParam(BaseModel):
    """One dimension of the Optuna search space."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class TuningSpec(BaseModel):
    """Optuna search: seeded TPE, median pruning on the validation metric."""

    model_config = ConfigDict(extra="forbid")
    n_trials: int = Field(20, gt=0)
    timeout_s: float | None = Field(None, gt=0)
    search_space: dict[str, SearchParam] = Field(default_factory=dict)


class GradePolicy(BaseModel):
    """A / B / C against the family's baseline (docs/evaluation.md)."""

    model_config = ConfigDict(extra="forbid")
    a_margin: float = Field(0.02, ge=0, description="A when the model beats the baseline by this")


class NBOSpec(BaseModel):
    """Next-best-offer options (docs/nbo.md)."""

    model_config = ConfigDict(extra="forbid")
    k: list[int] = Field(default_factory=lambda: [1, 3, 5])
    kinds: list[Literal["cross_sell", "up_sell"]] = Field(
        default_factory=lambda: ["cross_sell", "up_sell"]
    )
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
    rank_by: Literal["expected_value", "probability"] = Field(
        "expected_value", description="serving order of a customer's offers"
    )
    seasonal: bool = Field(
        True, description="give the model the cutoff's day of the year (seasonal offers)"
    )


class UpliftSpec(BaseModel):
    """Uplift options: campaigns, learner, where features come from, groups, metric (see
    docs/campaigns.md)."""

    model_config = ConfigDict(extra="forbid")
    campaign_ids: list[str] | None = Field(None, description="campaigns to learn from (all)")
    learner: Literal["x", "t"] = "x"
    top_k: list[float] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3], description="fractions for uplift at top k"
    )
    metric: Literal["qini", "auuc"] = Field(
        "qini", description="test metric for the grade and the champion / challenger decision"
    )
    features: Literal["auto", "transactions", "campaign_history"] = Field(
        "auto",
        description="transactions: the feature set at the day before each send; campaign_history:"
        " its extra (passthrough) columns; auto: transactions when the dataset has them",
    )
    treatment_groups: list[str] = Field(
        default_factory=lambda: ["treatment"], description="group values meaning treated"
    )
    control_groups: list[str] = Field(
        default_factory=lambda: ["control"], description="group values meaning control"
    )

    @model_validator(mode="after")
    def _fractions(self) -> UpliftSpec:
        if not self.top_k or any(not 0 < k <= 1 for k in self.top_k):
            raise ValueError(f"uplift.top_k must be fractions in (0, 1], got {self.top_k}")
        both = {g.lower() for g in self.treatment_groups} & {g.lower() for g in self.control_groups}
        if both:
            raise ValueError(f"uplift: groups {sorted(both)} are both treatment and control")
        return self


class ExperimentConfig(BaseModel):
    """One experiment: dataset, feature set, cutoffs or split, target, model, tuning, registry."""

    model_config = ConfigDict(extra="forbid")

    name: str
    family: Family = "churn"
    description: str = ""
    dataset: str = Field(description="dataset name (experiments/datasets/<name>.yaml) or YAML path")
    feature_set: str = "churn_v1"
    horizon_days: int = Field(90, gt=0)
    lookback_days: int = Field(365, gt=0, description="active = an order in this window before T")
    cutoffs: Cutoffs | None = None
    target: Target = Field(default_factory=Target)
    split: Split = Field(default_factory=Split)
    drop_columns: list[str] = Field(
        default_factory=list, description="labelled tables: columns not to use (e.g. leaky ones)"
    )
    value_column: str | None = Field(
        None, description="money per customer for the decile table's captured revenue"
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    grade: GradePolicy = Field(default_factory=GradePolicy)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    nbo: NBOSpec = Field(default_factory=NBOSpec)
    uplift: UpliftSpec = Field(default_factory=UpliftSpec)
    rfm: RFMPointsConfig = Field(default_factory=RFMPointsConfig)
    seed: int = 42
    registered_model: str = Field(description="name in the MLflow model registry")
    experiment: str | None = Field(None, description="MLflow experiment (default: the name)")
    config_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _out_of_time(self) -> ExperimentConfig:
        if self.family in TRANSACTION_FAMILIES and self.cutoffs is None:
            raise ValueError(f"cutoffs: required for family {self.family!r}")
        if self.cutoffs is None:
            return self
        for t in self.cutoffs.train:
            if (self.cutoffs.test - t).days < self.horizon_days:
                raise ValueError(
                    f"cutoffs.train: {t} + horizon {self.horizon_days} days overlaps the test "
                    f"cutoff {self.cutoffs.test}; its labels would see the test period"
                )
        return self

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load and validate an experiment YAML; dataset paths resolve relative to the YAML."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    data.update(overrides or {})
    cfg = ExperimentConfig.model_validate(data)
    if cfg.dataset.endswith((".yaml", ".yml")) and not Path(cfg.dataset).is_absolute():
        cfg = cfg.model_copy(update={"dataset": str((path.parent / cfg.dataset).resolve())})
    return cfg.model_copy(update={"config_path": path.resolve()})
