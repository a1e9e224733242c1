"""Modelling frames: features + label + split per row, for each model family.

Split column ``split``: ``fit`` (model fitting), ``valid`` (calibration, tuning), ``test``
(out-of-time evaluation, never seen before the final score). For transaction families the last
training cutoff is the validation cutoff (with a single training cutoff, 20 % of its customers,
seeded); the test cutoff is the test. Labelled tables split by ``Split``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from features.build import compute_features, data_date_range, input_relations
from features.definitions import FeatureSet, feature_set
from features.labels import (
    campaign_response_label_sql,
    churn_label_sql,
    purchase_label_sql,
    spend_label_sql,
)
from features.sources import _lit
from features.store import StateDirs
from training.config import ExperimentConfig, Split

ID, LABEL, SPLIT, AS_OF = "customer_id", "label", "split", "as_of"


@dataclass
class ModelFrame:
    """Rows to model and what their columns mean."""

    frame: pd.DataFrame
    feature_names: list[str]
    categorical: list[str] = field(default_factory=list)
    value_column: str | None = None
    feature_set: FeatureSet | None = None

    def part(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame[SPLIT] == name]


def label_sql(cfg: ExperimentConfig, source: str, campaigns: str | None, as_of: date) -> str:
    """The label query of the experiment's family and target at one cutoff."""
    if cfg.family == "churn":
        return churn_label_sql(source, as_of, cfg.horizon_days, cfg.lookback_days)
    if cfg.family == "clv":
        return spend_label_sql(source, as_of, cfg.horizon_days)
    if cfg.family == "propensity":
        t = cfg.target
        if t.kind == "campaign_response":
            if campaigns is None:
                raise ValueError("target campaign_response needs a campaign_history table")
            return campaign_response_label_sql(campaigns, as_of, cfg.horizon_days, t.campaign_ids)
        category = t.category if t.kind == "category_purchase" else None
        return purchase_label_sql(source, as_of, cfg.horizon_days, cfg.lookback_days, category)
    raise ValueError(f"family {cfg.family!r} has no per-cutoff label here")


def transactions_frame(
    cfg: ExperimentConfig, con: duckdb.DuckDBPyConnection, state: StateDirs, dataset: str
) -> ModelFrame:
    """Stacked point-in-time features and labels at every cutoff of the experiment."""
    assert cfg.cutoffs is not None
    source = f"read_parquet({_lit(str(state.data(dataset) / 'transactions.parquet'))})"
    ch_path = state.data(dataset) / "campaign_history.parquet"
    campaigns = f"read_parquet({_lit(str(ch_path))})" if ch_path.exists() else None
    _, last = data_date_range(con, source)
    fs = feature_set(cfg.feature_set, cfg.rfm)
    relations = input_relations(state, dataset, fs)
    cutoffs = [*cfg.cutoffs.train, cfg.cutoffs.test]
    frames = []
    for as_of in cutoffs:
        if (last - as_of).days < cfg.horizon_days:
            raise ValueError(
                f"cutoff {as_of} + horizon {cfg.horizon_days} days runs past the last data date "
                f"{last}"
            )
        feats = compute_features(con, source, as_of, fs, **relations)
        labels = con.execute(label_sql(cfg, source, campaigns, as_of)).df()
        frame = labels.merge(feats, on=ID, how="inner", validate="one_to_one")
        frame.insert(1, AS_OF, pd.Timestamp(as_of))
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame[SPLIT] = "fit"
    frame.loc[frame[AS_OF] == pd.Timestamp(cfg.cutoffs.test), SPLIT] = "test"
    if len(cfg.cutoffs.train) > 1:
        frame.loc[frame[AS_OF] == pd.Timestamp(cfg.cutoffs.train[-1]), SPLIT] = "valid"
    else:
        train_idx = frame.index[frame[SPLIT] == "fit"]
        rng = np.random.default_rng(cfg.seed)
        valid = rng.random(len(train_idx)) < 0.2
        frame.loc[train_idx[valid], SPLIT] = "valid"
    value = cfg.value_column or ("value" if "value" in frame.columns else "spend_sum_365d")
    categorical = fs.categorical_names
    for c in categorical:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return ModelFrame(frame, fs.names, categorical, value if value in frame.columns else None, fs)


def split_labelled(frame: pd.DataFrame, split: Split, seed: int) -> pd.Series:
    """fit / valid / test for each row of a ready labelled table."""
    out = pd.Series("fit", index=frame.index, dtype=object)
    if split.kind == "date":
        when = pd.to_datetime(frame[split.date_column], errors="coerce")
        if when.isna().any():
            raise ValueError(f"split.date_column {split.date_column!r} has missing or bad dates")
        out[when >= pd.Timestamp(split.valid_from)] = "valid"
        out[when >= pd.Timestamp(split.test_from)] = "test"
        return out
    strat = frame[LABEL] if split.kind == "stratified" else None
    rest, test = train_test_split(
        frame.index, test_size=split.test_size, random_state=seed, stratify=strat
    )
    strat_rest = frame.loc[rest, LABEL] if split.kind == "stratified" else None
    _, valid = train_test_split(
        rest, test_size=split.valid_size, random_state=seed + 1, stratify=strat_rest
    )
    out[test] = "test"
    out[valid] = "valid"
    return out


def labelled_frame(cfg: ExperimentConfig, state: StateDirs, dataset: str) -> ModelFrame:
    """A ready customer table with a label, split by configuration."""
    path = state.data(dataset) / "labelled.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no ingested labelled table for {dataset!r} at {path}")
    frame = pd.read_parquet(path)
    unknown = sorted(set(cfg.drop_columns) - set(frame.columns))
    if unknown:
        raise ValueError(f"drop_columns: {unknown} are not columns of the table")
    reserved = {ID, LABEL, SPLIT, AS_OF, *cfg.drop_columns}
    if cfg.split.date_column:
        reserved.add(cfg.split.date_column)
    features = [c for c in frame.columns if c not in reserved]
    categorical = [
        c for c in features
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    for c in categorical:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    frame[SPLIT] = split_labelled(frame, cfg.split, cfg.seed)
    return ModelFrame(frame, features, categorical, cfg.value_column)
