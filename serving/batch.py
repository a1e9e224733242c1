"""Batch scoring: the whole snapshot through the same code as POST /score, to one parquet file.

A campaign system that would rather pull a file than call the API gets, per customer, exactly the
fields /score returns (flattened: ``segment_*`` and ``reason_<i>_*`` columns), written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.store import StateDirs, atomic_path
from serving.handlers import score_records
from serving.kinds import N_REASONS, ScoreModel
from serving.settings import ServedModel, ServingSettings
from serving.state import build_state

CHUNK = 20_000  # rows explained per call: bounds the memory of the SHAP matrix
SEGMENT_FIELDS = ("rfm_code", "rfm_segment", "abc_class", "lifecycle_stage", "win_back_priority")
COLUMNS = [
    "customer_id",
    "score",
    "probability",
    "value",
    "percentile",
    "decile",
    *(f"segment_{k}" for k in SEGMENT_FIELDS),
    *(
        f"reason_{i + 1}_{k}"
        for i in range(N_REASONS)
        for k in ("feature", "value", "contribution")
    ),
]


def _one_model(spec: ServingSettings | ServedModel, family: str | None) -> ServingSettings:
    """Settings holding only the model to score."""
    if isinstance(spec, ServedModel):
        return ServingSettings(models={family or "model": spec}, reload_interval_s=0)
    if family is None:
        if len(spec.models) != 1:
            raise ValueError(f"name the model to score among {sorted(spec.models)}")
        family = next(iter(spec.models))
    if family not in spec.models:
        raise ValueError(f"model {family!r} is not configured; known: {sorted(spec.models)}")
    return spec.model_copy(update={"models": {family: spec.models[family]}})


def flatten(records: list[dict[str, Any]]) -> pd.DataFrame:
    """/score records as flat columns: segment_<field> and reason_<i>_<field> (i = 1..3)."""
    rows = []
    for rec in records:
        row = {k: v for k, v in rec.items() if k not in ("segment", "reasons")}
        seg = rec["segment"] or {}
        for key in SEGMENT_FIELDS:
            row[f"segment_{key}"] = seg.get(key)
        for i in range(N_REASONS):
            reason = rec["reasons"][i] if i < len(rec["reasons"]) else {}
            for key in ("feature", "value", "contribution"):
                row[f"reason_{i + 1}_{key}"] = reason.get(key)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("score", "probability", "value", "percentile"):
        frame[col] = frame[col].astype("float64")
    for i in range(N_REASONS):
        for key in ("value", "contribution"):
            frame[f"reason_{i + 1}_{key}"] = frame[f"reason_{i + 1}_{key}"].astype("float64")
    return frame


def score_base(
    state: StateDirs,
    spec: ServingSettings | ServedModel,
    out_path: str | Path,
    family: str | None = None,
    reasons: bool = True,
) -> Path:
    """Score every customer of the model's latest snapshot into ``out_path`` (parquet, atomic)."""
    settings = _one_model(spec, family)
    family = next(iter(settings.models))
    served_state = build_state(settings, state)
    served = served_state.models[family]
    if not isinstance(served, ScoreModel):
        raise ValueError(f"model {family!r} is a {served.meta.kind} model, not a scorer")
    parts = []
    for start in range(0, served.base.size, CHUNK):
        positions = np.arange(start, min(start + CHUNK, served.base.size))
        parts.append(flatten(score_records(served, positions, reasons)))
    frame = pd.concat(parts, ignore_index=True) if parts else flatten([])
    frame.insert(0, "model", family)
    frame["registered_model"] = served.meta.registered_model
    frame["version"] = served.meta.version
    frame["as_of"] = served.base.as_of.isoformat()
    out = Path(out_path)
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    return out


def score_to_file(
    family: str,
    out_path: str | Path,
    state: StateDirs | None = None,
    settings: ServingSettings | None = None,
    reasons: bool = True,
) -> Path:
    """``patron score --model <family> --out <file>``: settings default to $PATRON_SERVING."""
    settings = settings or ServingSettings.from_env()
    state = state or StateDirs.resolve(settings.home)
    return score_base(state, settings, out_path, family=family, reasons=reasons)
