"""Propensity: P(any purchase / a purchase in a category / a campaign response) in the next
``horizon_days``, against the RFM points baseline."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.labels import campaign_response_label_sql, purchase_label_sql
from training.config import CutoffExperiment, RefitOption
from training.families.base import Frame, RunContext, Trained
from training.families.binary import CutoffBinaryFamily


class Target(BaseModel):
    """What a propensity model predicts."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["any_purchase", "category_purchase", "campaign_response"] = "any_purchase"
    category: str | None = Field(None, description="category for category_purchase")
    campaign_ids: list[str] | None = Field(None, description="campaigns for campaign_response")

    @model_validator(mode="after")
    def _needs(self) -> Target:
        if self.kind == "category_purchase" and not self.category:
            raise ValueError("target.category is required for kind category_purchase")
        return self


class PropensityConfig(CutoffExperiment, RefitOption):
    """A propensity experiment: its ``target`` block says what is predicted."""

    family: Literal["propensity"] = "propensity"
    target: Target = Field(default_factory=Target)


class Propensity(CutoffBinaryFamily):
    name = "propensity"
    config = PropensityConfig
    fixed_label_meaning = "response"

    def label_sql(self, cfg: Any, ctx: RunContext, source: str, as_of: date) -> str:
        t = cfg.target
        if t.kind == "campaign_response":
            campaigns = ctx.catalog.relation_or_none("campaign_history")
            if campaigns is None:
                raise ValueError("target campaign_response needs a campaign_history table")
            return campaign_response_label_sql(campaigns, as_of, cfg.horizon_days, t.campaign_ids)
        category = t.category if t.kind == "category_purchase" else None
        return purchase_label_sql(source, as_of, cfg.horizon_days, cfg.lookback_days, category)

    def log_params(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        return {
            **super().log_params(cfg, frame, trained),
            "target": cfg.target.kind,
            "target.category": cfg.target.category or "",
        }


FAMILY = Propensity()
