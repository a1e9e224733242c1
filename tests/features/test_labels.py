"""Labels of every family at a cutoff, on a handmade table: only (T, T+H] counts."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pytest

from features.labels import (
    campaign_response_label_sql,
    purchase_label_sql,
    spend_label_sql,
)

T = date(2024, 3, 31)
TX = [
    ("A", "2024-03-01 10:00", "o1", "shoes", 50.0, False),
    ("A", "2024-04-05 10:00", "o2", "bags", 30.0, False),  # in the horizon, new category
    ("A", "2024-04-06 10:00", "o2-R", "bags", -10.0, True),  # a return in the horizon
    ("B", "2024-02-01 10:00", "o3", "bags", 20.0, False),
    ("B", "2024-03-31 23:00", "o4", "bags", 5.0, False),  # on T: history, not label
    ("C", "2023-01-01 10:00", "o5", "bags", 10.0, False),  # outside the lookback
    ("C", "2024-04-10 10:00", "o6", "shoes", 70.0, False),
    ("D", "2024-03-15 10:00", "o7", "shoes", 15.0, False),
    ("D", "2024-07-15 10:00", "o8", "shoes", 15.0, False),  # after the horizon
]
CAMPAIGNS = [
    ("K1", "A", "2024-04-02 09:00", "treatment", True),
    ("K1", "B", "2024-04-02 09:00", "treatment", False),
    ("K1", "C", "2024-04-02 09:00", "control", True),  # control: not a treated contact
    ("K2", "D", "2024-03-30 09:00", "treatment", True),  # before T: not in this label
]


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    tx = pd.DataFrame(
        TX, columns=["customer_id", "ts", "order_id", "category", "amount", "is_return"]
    )
    tx["ts"] = pd.to_datetime(tx["ts"])
    ch = pd.DataFrame(CAMPAIGNS, columns=["campaign_id", "customer_id", "ts", "group", "responded"])
    ch["ts"] = pd.to_datetime(ch["ts"])
    c.register("tx", tx)
    c.register("ch", ch)
    return c


def _labels(con, sql: str) -> dict[str, float]:
    frame = con.execute(sql).df()
    return dict(zip(frame["customer_id"], frame["label"], strict=True))


def test_any_purchase_among_the_active(con):
    labels = _labels(con, purchase_label_sql("tx", T, 30, 365))
    assert labels == {"A": 1, "B": 0, "D": 0}  # C is not active in the lookback


def test_category_purchase(con):
    assert _labels(con, purchase_label_sql("tx", T, 30, 365, "bags")) == {"A": 1, "B": 0, "D": 0}
    assert _labels(con, purchase_label_sql("tx", T, 30, 365, "shoes")) == {"A": 0, "B": 0, "D": 0}


def test_spend_in_horizon_is_net_of_returns(con):
    labels = _labels(con, spend_label_sql("tx", T, 30))
    assert labels == {"A": 20.0, "B": 0.0, "C": 70.0, "D": 0.0}


def test_campaign_response_counts_treated_contacts_in_the_horizon(con):
    assert _labels(con, campaign_response_label_sql("ch", T, 30)) == {"A": 1, "B": 0}
    assert _labels(con, campaign_response_label_sql("ch", T, 30, ["K2"])) == {}
