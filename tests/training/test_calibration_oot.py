"""Calibration that holds out of time: like-for-like folds, a map kept only on held-out ECE, the
season as a feature (docs/training.md, Calibration)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.definitions import context_feature_names, feature_set
from features.engine import features_sql
from features.sources import connect
from models.calibration import (
    CalibratedModel,
    ScoreMap,
    choose_score_map,
    expected_calibration_error,
)
from training.families.binary import split_fold, time_folds

QUARTERS = ["2023-06-30", "2023-09-30", "2023-12-31", "2024-03-31", "2024-06-30"]


def _stacked(train: list[str], test: str, per_cutoff: int = 20) -> pd.DataFrame:
    rows = []
    for when in [*train, test]:
        split = "test" if when == test else ("valid" if when == train[-1] else "fit")
        rows += [
            {"as_of": pd.Timestamp(when), "split": split, "label": i % 2} for i in range(per_cutoff)
        ]
    return pd.DataFrame(rows)


def test_folds_fit_only_on_cutoffs_whose_labels_were_known_and_never_on_test_rows():
    table = _stacked(QUARTERS, "2024-09-30")
    folds = time_folds(table, horizon_days=90, k=10)
    assert folds
    for fit_at, score_at in folds:
        v = table["as_of"].iloc[score_at].unique()
        assert len(v) == 1
        fitted = table["as_of"].iloc[fit_at]
        assert (fitted + pd.Timedelta(days=90) <= v[0]).all()  # label windows ended by v
        assert (table["split"].iloc[np.r_[fit_at, score_at]] != "test").all()


def test_only_folds_that_see_the_season_as_the_test_does_are_kept():
    # the test (2024-09-30) has 2023-09-30 a year earlier among the training cutoffs: only a
    # fold whose fit holds its own month a year earlier is like-for-like (2024-06-30)
    table = _stacked(QUARTERS, "2024-09-30")
    folds = time_folds(table, horizon_days=90, k=10)
    scored = [pd.Timestamp(table["as_of"].iloc[s].iloc[0]).date() for _, s in folds]
    assert scored == [date(2024, 6, 30)]
    # without a year of history before the test, folds without one are the like-for-like ones
    short = _stacked(QUARTERS[:3], "2024-03-31")
    scored = [
        pd.Timestamp(short["as_of"].iloc[s].iloc[0]).date()
        for _, s in time_folds(short, horizon_days=90, k=10)
    ]
    assert scored == [date(2023, 9, 30), date(2023, 12, 31)]


def test_a_horizon_longer_than_the_cutoff_spacing_leaves_no_fold_and_the_split_fold_is_used():
    table = _stacked(QUARTERS, "2025-06-30")
    assert time_folds(table, horizon_days=400, k=3) == []
    fit_at, score_at = split_fold(table)
    assert set(table["split"].iloc[fit_at]) == {"fit"}
    assert set(table["split"].iloc[score_at]) == {"valid"}


def _calibrated_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < p).astype(int)
    return p, y, np.repeat(np.arange(3), n // 3 + 1)[:n]


def test_the_identity_is_kept_when_no_map_lowers_the_heldout_ece():
    p, y, fold = _calibrated_scores(9000, 1)
    choice = choose_score_map(p, y, fold, seed=0)
    assert set(choice.ece) == {"none", "sigmoid", "isotonic"}
    assert choice.method == min(choice.ece, key=lambda m: (choice.ece[m], m != "none"))
    # calibrated scores: a map has nothing real to correct, so whatever wins wins by noise only
    assert choice.ece[choice.method] <= choice.ece["none"]
    assert choice.ece["none"] < 0.03


def test_a_map_is_kept_when_it_lowers_the_heldout_ece():
    p, y, fold = _calibrated_scores(9000, 2)
    distorted = p**3  # far too low: a map must help
    choice = choose_score_map(distorted, y, fold, seed=0)
    assert choice.method in ("sigmoid", "isotonic")
    assert choice.ece[choice.method] < choice.ece["none"] - 0.1
    mapped = ScoreMap.fit(distorted, y, choice.method)(distorted)
    assert expected_calibration_error(y, mapped) < expected_calibration_error(y, distorted)


def test_isotonic_is_not_tried_on_too_few_rows_per_class():
    p, y, fold = _calibrated_scores(300, 3)
    choice = choose_score_map(p, y, fold, min_per_class=200)
    assert "isotonic" not in choice.ece and "isotonic not tried" in choice.rule


def test_a_calibrated_model_applies_its_map_to_the_fitted_classifier():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 2))
    y = (x[:, 0] + rng.normal(size=600) > 0).astype(int)
    fitted = LogisticRegression().fit(x, y)
    score_map = ScoreMap("sigmoid", slope=2.0, intercept=-0.5)
    model = CalibratedModel.from_parts(fitted, score_map)
    raw = fitted.predict_proba(x)[:, 1]
    assert model.predict_proba(x)[:, 1] == pytest.approx(score_map(raw))
    assert ScoreMap("none")(raw) == pytest.approx(raw)


def test_the_cutoff_month_is_the_month_of_t_for_every_customer(tmp_path):
    from features.store import StateDirs

    tx = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a"],
            "order_id": ["1", "2", "3"],
            "ts": pd.to_datetime(["2024-01-05", "2024-02-01", "2024-03-30"]),
            "amount": [10.0, 20.0, 5.0],
            "quantity": [1.0, 2.0, 1.0],
            "category": ["x", "y", "x"],
            "product_id": ["p", "q", "p"],
            "is_return": [False, False, False],
        }
    )
    path = tmp_path / "tx.parquet"
    tx.to_parquet(path)
    fs = feature_set("churn_v1+context_v1")
    con = connect(StateDirs(tmp_path))
    try:
        for when, month in ((date(2024, 3, 31), 3), (date(2024, 9, 30), 9)):
            source = f"read_parquet('{path}')"
            out = con.execute(features_sql(source, when, fs)).df()
            assert (out["cutoff_month"] == month).all() and len(out) == 2
    finally:
        con.close()
    assert "cutoff_month" in context_feature_names()
