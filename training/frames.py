"""Split helpers every family's frame uses, written once.

Split column ``split``: ``fit`` (model fitting), ``valid`` (calibration, tuning), ``test``
(out-of-time evaluation, never seen before the final score). For cutoff families the last
training cutoff is the validation cutoff (with a single training cutoff, 20 % of its customers,
seeded); the test cutoff is the test. Labelled tables split by ``Split``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from training.config import Split

ID, LABEL, SPLIT, AS_OF = "customer_id", "label", "split", "as_of"
VALID_SHARE = 0.2


def fit_valid_split(
    frame: pd.DataFrame,
    train: Sequence[date],
    test: date,
    seed: int,
    group: str | None = None,
) -> pd.Series:
    """fit / valid / test per row of a frame stacked over cutoffs (``as_of``): the test cutoff
    is ``test``; the last training cutoff is ``valid`` when there are several, else a seeded
    ``VALID_SHARE`` of the rows (of the ``group`` values, e.g. customers, when given)."""
    out = pd.Series("fit", index=frame.index, dtype=object)
    out[frame[AS_OF] == pd.Timestamp(test)] = "test"
    if len(train) > 1:
        out[frame[AS_OF] == pd.Timestamp(train[-1])] = "valid"
        return out
    fit = out == "fit"
    rng = np.random.default_rng(seed)
    if group is None:
        idx = frame.index[fit]
        out[idx[rng.random(len(idx)) < VALID_SHARE]] = "valid"
    else:
        ids = np.sort(frame.loc[fit, group].unique())
        chosen = set(ids[rng.random(len(ids)) < VALID_SHARE])
        out[fit & frame[group].isin(chosen)] = "valid"
    return out


def split_labelled(frame: pd.DataFrame, split: Split, seed: int) -> pd.Series:
    """fit / valid / test for each row of a ready labelled table."""
    out = pd.Series("fit", index=frame.index, dtype=object)
    if split.kind == "ordered":
        n = len(frame)
        n_test = int(round(n * split.test_size))
        n_valid = int(round((n - n_test) * split.valid_size))
        out.iloc[n - n_test - n_valid : n - n_test] = "valid"
        out.iloc[n - n_test :] = "test"
        return out
    if split.kind == "date":
        when = pd.to_datetime(frame[split.date_column], errors="coerce")
        if when.isna().any():
            raise ValueError(f"split.date_column {split.date_column!r} has missing or bad dates")
        assert split.valid_from is not None and split.test_from is not None  # Split validates
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


def rolling_origin(
    frame: pd.DataFrame, horizon_days: int
) -> list[tuple[pd.Timestamp, list[pd.Timestamp], np.ndarray, np.ndarray]]:
    """Rolling origin over a stacked frame's non-test cutoffs (``as_of``): for each cutoff ``v``
    after the first, the earlier cutoffs whose label window closed by then (cutoff + horizon <=
    ``v``: their labels are known at ``v``), the positions of their rows and of the rows at ``v``.
    Cutoffs without such a predecessor are left out; test rows are never in a fold."""
    when = pd.to_datetime(frame[AS_OF]).dt.normalize().to_numpy()
    known = frame[SPLIT].to_numpy() != "test"
    cutoffs = sorted(pd.unique(when[known]))
    horizon = np.timedelta64(horizon_days, "D")
    out = []
    for v in cutoffs[1:]:
        earlier = [c for c in cutoffs if c + horizon <= v]
        if earlier:
            fit = np.flatnonzero(known & np.isin(when, earlier))
            at_v = np.flatnonzero(known & (when == v))
            out.append((pd.Timestamp(v), [pd.Timestamp(c) for c in earlier], fit, at_v))
    return out
