"""Churn: P(no order in the next ``horizon_days``) for customers active in the lookback window,
against the RFM points baseline."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from features.labels import churn_label_sql
from training.config import CutoffExperiment, RefitOption
from training.families.base import RunContext
from training.families.binary import CutoffBinaryFamily


class ChurnConfig(CutoffExperiment, RefitOption):
    """A churn experiment (no block of its own)."""

    family: Literal["churn"] = "churn"


class Churn(CutoffBinaryFamily):
    name = "churn"
    config = ChurnConfig
    fixed_label_meaning = "churn"

    def label_sql(self, cfg: Any, ctx: RunContext, source: str, as_of: date) -> str:
        return churn_label_sql(source, as_of, cfg.horizon_days, cfg.lookback_days)


FAMILY = Churn()
