"""Labelled: a ready customer table with a 0/1 label (e.g. a subscription-churn snapshot), split
by configuration, against a logistic-regression baseline."""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from pydantic import Field

from training.config import CalibrationSpec, ExperimentConfig, Split
from training.families.base import Frame, RunContext
from training.families.binary import BinaryFamily
from training.frames import AS_OF, ID, LABEL, SPLIT, split_labelled


class LabelledConfig(ExperimentConfig):
    """A labelled-table experiment: its ``split`` block says which rows validate and test."""

    family: Literal["labelled"] = "labelled"
    split: Split = Field(default_factory=Split)
    drop_columns: list[str] = Field(
        default_factory=list, description="columns not to use (e.g. leaky ones)"
    )
    value_column: str | None = Field(
        None, description="money per customer for the decile table's captured revenue"
    )
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)

    @property
    def test_label(self) -> str:
        return f"{self.split.kind} split"


class Labelled(BinaryFamily):
    name = "labelled"
    config = LabelledConfig

    def build_frame(self, cfg: Any, ctx: RunContext) -> Frame:
        frame = ctx.catalog.read("labelled")
        unknown = sorted(set(cfg.drop_columns) - set(frame.columns))
        if unknown:
            raise ValueError(f"drop_columns: {unknown} are not columns of the table")
        reserved = {ID, LABEL, SPLIT, AS_OF, *cfg.drop_columns}
        if cfg.split.date_column:
            reserved.add(cfg.split.date_column)
        features = [c for c in frame.columns if c not in reserved]
        categorical = [
            c
            for c in features
            if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
        ]
        for c in categorical:
            frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
        frame[SPLIT] = split_labelled(frame, cfg.split, cfg.seed)
        return Frame(
            frame,
            features,
            categorical,
            None,
            cfg.value_column,
            manifest={"split": cfg.split.model_dump(mode="json")},
        )


FAMILY = Labelled()
