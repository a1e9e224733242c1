"""Labelled: a ready customer table with a 0/1 label (e.g. a subscription-churn snapshot), split
by configuration, against a logistic-regression baseline.

Columns the dataset config does not type arrive as text; those whose values (nearly) all parse as
numbers are read as numbers (``features.sources.infer_numeric_types``) and every decision is
recorded (``inferred_types`` in the data manifest, one note per column on the command line);
categorical columns with very many levels are named as a warning (``many_levels``).

What the label's 1 means is configured (``label_meaning``) and recorded with the served model
(``info["label_meaning"]``): serving decides from it alone whether the score is a churn
probability or a response probability (``serving.targeting.score_kind``), never from a name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from features.sources import InferredType, infer_numeric_types, many_level_columns
from training.config import CalibrationSpec, ExperimentConfig, RefitOption, Split
from training.families.base import Frame, RunContext, Trained
from training.families.binary import BinaryDetails, BinaryFamily
from training.frames import AS_OF, ID, LABEL, SPLIT, split_labelled

#: What a 1 of a labelled table's label means (``serving.targeting.LABEL_MEANINGS``).
LabelMeaning = Literal["churn", "response", "other"]


class LabelledConfig(ExperimentConfig, RefitOption):
    """A labelled-table experiment: its ``split`` block says which rows validate and test."""

    family: Literal["labelled"] = "labelled"
    # "other" by default: a config written before this key trains as it did, and its model is
    # never taken for a churn or response model by mistake (serving refuses to rank by it).
    label_meaning: LabelMeaning = Field(
        "other",
        description="what a 1 of the label means, recorded with the model for serving: churn "
        "(the customer left / leaves: the score is P(leave)), response (the customer responded "
        "or bought after a contact or within a window: P(respond | contacted)), other (anything "
        "else: /score serves it, but /target and /campaigns/plan refuse to rank by it)",
    )
    split: Split = Field(default_factory=Split)
    drop_columns: list[str] = Field(
        default_factory=list, description="columns not to use (e.g. leaky ones)"
    )
    value_column: str | None = Field(
        None, description="money per customer for the decile table's captured revenue"
    )
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    infer_types: bool = Field(
        True,
        description="read undeclared text columns whose values (nearly) all parse as numbers "
        "as numbers (a type declared in the dataset config always wins)",
    )

    @property
    def test_label(self) -> str:
        return f"{self.split.kind} split"


@dataclass
class LabelledDetails(BinaryDetails):
    """The binary details plus the frame's notes on column types."""

    type_notes: list[str] = field(default_factory=list)


def column_types(
    frame: pd.DataFrame, declared: Mapping[str, str], features: list[str], infer: bool
) -> tuple[pd.DataFrame, list[str], dict[str, Any], list[str]]:
    """Infer numeric types of undeclared columns; (frame, categorical columns, manifest facts,
    notes)."""
    inferred: list[InferredType] = []
    if infer:
        frame, inferred = infer_numeric_types(frame, declared, features)
    categorical = [
        c
        for c in features
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    for c in categorical:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    many = many_level_columns(frame, categorical)
    facts: dict[str, Any] = {
        "inferred_types": {
            d.column: {
                "dtype": d.dtype,
                "non_empty": d.non_empty,
                "unparsed": d.unparsed,
                "reason": d.reason,
            }
            for d in inferred
        },
        "many_levels": {
            m.column: {"levels": m.levels, "unique_share": round(m.unique_share, 4)} for m in many
        },
    }
    notes = [d.note() for d in inferred] + [m.note() for m in many]
    return frame, categorical, facts, notes


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
        table = ctx.dataset.tables.get("labelled")
        declared = dict(table.types) if table is not None else {}
        frame, categorical, facts, notes = column_types(frame, declared, features, cfg.infer_types)
        frame[SPLIT] = split_labelled(frame, cfg.split, cfg.seed)
        return Frame(
            frame,
            features,
            categorical,
            None,
            cfg.value_column,
            manifest={"split": cfg.split.model_dump(mode="json"), **facts},
            details=notes,
        )

    def label_meaning(self, cfg: Any) -> str | None:
        return str(cfg.label_meaning)

    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        trained = super().train(cfg, frame, params)
        d = trained.details
        notes = list(frame.details) if isinstance(frame.details, list) else []
        trained.details = LabelledDetails(
            **{f.name: getattr(d, f.name) for f in fields(BinaryDetails)}, type_notes=notes
        )
        return trained

    def notes(self, cfg: Any, trained: Trained) -> list[str]:
        extra = getattr(trained.details, "type_notes", [])
        return [*super().notes(cfg, trained), *extra]


FAMILY = Labelled()
