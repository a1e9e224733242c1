"""The validated config of a training job, loaded from ``experiments/<family>/<name>.yaml``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.definitions import RFMPointsConfig
from training.promote import PromotionPolicy


class Cutoffs(BaseModel):
    """Training cutoffs (stacked) and the later, out-of-time test cutoff."""

    model_config = ConfigDict(extra="forbid")
    train: list[date] = Field(min_length=1)
    test: date


class ModelSpec(BaseModel):
    """The estimator and its parameters."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["xgboost"] = "xgboost"
    params: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(BaseModel):
    """One experiment: dataset, feature set, cutoffs, horizon, model, seed, registry name."""

    model_config = ConfigDict(extra="forbid")

    name: str
    family: Literal["churn"] = "churn"
    dataset: str = Field(description="dataset name (experiments/datasets/<name>.yaml) or YAML path")
    feature_set: str = "churn_v1"
    horizon_days: int = Field(90, gt=0)
    lookback_days: int = Field(365, gt=0, description="active = an order in this window before T")
    cutoffs: Cutoffs
    model: ModelSpec = Field(default_factory=ModelSpec)
    rfm: RFMPointsConfig = Field(default_factory=RFMPointsConfig)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    seed: int = 42
    registered_model: str = Field(description="name in the MLflow model registry")
    experiment: str | None = Field(None, description="MLflow experiment (default: the name)")
    config_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _out_of_time(self) -> ExperimentConfig:
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


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Load and validate an experiment YAML; dataset paths resolve relative to the YAML."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment config not found: {path}")
    cfg = ExperimentConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    if cfg.dataset.endswith((".yaml", ".yml")) and not Path(cfg.dataset).is_absolute():
        cfg = cfg.model_copy(update={"dataset": str((path.parent / cfg.dataset).resolve())})
    return cfg.model_copy(update={"config_path": path.resolve()})
