"""The validated serving config: which models to load by alias and which snapshot to hold."""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, ConfigDict, Field

ENV_VAR = "PATRON_SERVING"


class ServedModel(BaseModel):
    """One model served by registry name and alias."""

    model_config = ConfigDict(extra="forbid")
    registered_model: str
    alias: str = "champion"
    dataset: str = Field(description="dataset whose latest feature snapshot is scored")
    feature_set: str = "churn_v1"


class ServingSettings(BaseModel):
    """The service's config, passed to the server process as JSON in $PATRON_SERVING."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, ServedModel] = Field(description="family name -> served model")
    home: str | None = Field(None, description="state folder (default $PATRON_HOME)")
    max_batch: int = Field(10_000, gt=0, description="largest customer_ids list accepted")

    @classmethod
    def from_env(cls) -> ServingSettings:
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise RuntimeError(f"${ENV_VAR} is not set; start the service with `patron serve`")
        return cls.model_validate(json.loads(raw))
