"""Snapshots and training frames: labels, stacking and the horizon guard, on a handmade table."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pytest

from features.build import compute_churn_labels, compute_features, training_frame
from features.definitions import feature_set

ROWS = [
    # customer, ts, order, amount, is_return
    ("A", "2024-01-10 09:00", "o1", 100.0, False),
    ("A", "2024-03-30 18:00", "o2", 50.0, False),
    ("A", "2024-04-15 10:00", "o3", 20.0, False),  # after the cutoff, inside the horizon
    ("B", "2023-12-01 10:00", "o4", 300.0, False),
    ("B", "2024-02-01 10:00", "o4-R", -100.0, True),
    ("C", "2022-01-01 10:00", "o5", 10.0, False),  # outside the 365-day lookback: not active
    ("D", "2024-03-31 23:59", "o6", 40.0, False),  # last minute of the cutoff day: counted
    ("E", "2024-04-01 00:00", "o7", 40.0, False),  # first minute after the cutoff: invisible
    ("E", "2024-07-01 00:00", "o8", 40.0, False),
]
AS_OF = date(2024, 3, 31)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    frame = pd.DataFrame(ROWS, columns=["customer_id", "ts", "order_id", "amount", "is_return"])
    frame["ts"] = pd.to_datetime(frame["ts"])
    frame["category"] = "c"
    frame["product_id"] = "p"
    frame["quantity"] = 1.0
    c = duckdb.connect()
    c.register("tx_frame", frame)
    c.execute("CREATE TABLE tx AS SELECT * FROM tx_frame")
    return c


def test_features_see_the_whole_cutoff_day_and_nothing_after(con):
    feats = compute_features(con, "tx", AS_OF, feature_set("churn_v1")).set_index("customer_id")
    assert sorted(feats.index) == ["A", "B", "C", "D"]
    assert feats.loc["A", "days_since_last_order"] == 1
    assert feats.loc["A", "orders_count_total"] == 2
    assert feats.loc["A", "spend_sum_total"] == 150.0
    assert feats.loc["D", "days_since_last_order"] == 0
    assert feats.loc["B", "returns_share"] == pytest.approx(100 / 300)
    assert feats.loc["A", "orders_count_90d"] == 2  # 2024-01-10 is 81 days back: inside
    assert feats.loc["A", "orders_count_30d"] == 1
    # RFM points: A = 20 (1 day) + 4 x 2 orders + 10 % of 150; B = 10 + 4 + min(30, 20) cap
    assert feats.loc["A", "rfm_points"] == 43.0
    assert feats.loc["B", "rfm_points"] == 34.0
    assert feats.loc["C", "rfm_points"] == 1.0  # older than a year, nothing in two years


def test_churn_labels(con):
    labels = compute_churn_labels(con, "tx", AS_OF, 90, 365).set_index("customer_id")["label"]
    assert labels.to_dict() == {"A": 0, "B": 1, "D": 1}


def test_horizon_past_the_end_of_data_is_refused(con):
    with pytest.raises(ValueError, match="runs past the last data date"):
        compute_churn_labels(con, "tx", date(2024, 6, 1), 90, 365)


def test_training_frame_stacks_cutoffs(con):
    frame = training_frame(con, "tx", feature_set("churn_v1"), [date(2024, 1, 31), AS_OF], 90, 365)
    assert frame.groupby("as_of").size().to_dict() == {
        pd.Timestamp("2024-01-31"): 2,  # A and B; C's only order is older than the lookback
        pd.Timestamp("2024-03-31"): 3,
    }
