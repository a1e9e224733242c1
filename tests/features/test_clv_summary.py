"""The (x, t_x, T, monetary_value) summary and its holdout target, on a hand-checked toy table."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.clv_summary import HOLDOUT_COLUMNS, SUMMARY_COLUMNS, clv_summary, clv_summary_sql

AS_OF = date(2024, 1, 15)

# customer, ts, order, amount, is_return
ROWS = [
    # A: purchase days 01-01 (two orders, 4 + 6 + 5 = 15), 01-08 (20; its return line is not
    # netted), 01-15 late in the day (30) -> x = 2, t_x = 14, T = 14, monetary (20 + 30) / 2 = 25
    ("A", "2024-01-01 09:00", "o1", 4.0, False),
    ("A", "2024-01-01 09:00", "o1", 6.0, False),
    ("A", "2024-01-01 17:00", "o2", 5.0, False),
    ("A", "2024-01-08 10:00", "o3", 20.0, False),
    ("A", "2024-01-09 10:00", "o3", -3.0, True),
    ("A", "2024-01-15 23:59", "o4", 30.0, False),
    # A's holdout (horizon 30 days = 01-16 .. 02-14): 10 + 5 + 7 on three days; the return-only
    # order o7 and the order on 02-15 are not counted
    ("A", "2024-01-16 08:00", "o5", 10.0, False),
    ("A", "2024-01-20 08:00", "o6", 5.0, False),
    ("A", "2024-01-21 08:00", "o7", -5.0, False),
    ("A", "2024-02-14 20:00", "o8", 7.0, False),
    ("A", "2024-02-15 08:00", "o9", 100.0, False),
    # B: one purchase day (a return-only order after it is no purchase) -> x = 0, T = 5
    ("B", "2024-01-10 12:00", "p1", 8.0, False),
    ("B", "2024-01-12 12:00", "p2", -8.0, True),
    # C: first purchase after the cutoff -> not in the summary
    ("C", "2024-01-20 12:00", "q1", 9.0, False),
    # D: only a return before the cutoff -> not a customer with a purchase
    ("D", "2024-01-03 12:00", "r1", -2.0, True),
    # E: last day of data, so a 30-day horizon from 01-15 is complete
    ("E", "2024-02-20 12:00", "s1", 1.0, False),
]


def _transactions(rows: list[tuple] = ROWS) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "ts", "order_id", "amount", "is_return"])
    return frame.assign(ts=pd.to_datetime(frame["ts"]))


def test_summary_in_days_hand_checked() -> None:
    s = clv_summary(_transactions(), AS_OF, "days", horizon_days=30).set_index("customer_id")
    assert list(s.reset_index().columns) == SUMMARY_COLUMNS + HOLDOUT_COLUMNS
    assert list(s.index) == ["A", "B"]
    assert s.loc["A"].to_dict() == {
        "frequency": 2,
        "recency": 14.0,
        "T": 14.0,
        "monetary_value": 25.0,
        "holdout_purchases": 3,
        "holdout_spend": 22.0,
    }
    assert s.loc["B"].to_dict() == {
        "frequency": 0,
        "recency": 0.0,
        "T": 5.0,
        "monetary_value": 0.0,
        "holdout_purchases": 0,
        "holdout_spend": 0.0,
    }
    assert s["frequency"].dtype == np.int64 and s["holdout_purchases"].dtype == np.int64


def test_weeks_are_days_over_seven() -> None:
    days = clv_summary(_transactions(), AS_OF, "days")
    weeks = clv_summary(_transactions(), AS_OF, "weeks")
    assert list(weeks.columns) == SUMMARY_COLUMNS  # no horizon, no holdout columns
    np.testing.assert_allclose(weeks[["recency", "T"]], days[["recency", "T"]] / 7)
    pd.testing.assert_series_equal(weeks["frequency"], days["frequency"])
    pd.testing.assert_series_equal(weeks["monetary_value"], days["monetary_value"])


def test_rows_after_the_cutoff_change_no_summary_column() -> None:
    before = clv_summary(_transactions(), AS_OF, "days")
    later = [r for r in ROWS if pd.Timestamp(r[1]).date() <= AS_OF] + [
        ("A", "2024-01-16 00:00", "z1", 999.0, False),
        ("B", "2024-03-01 00:00", "z2", 50.0, False),
        ("F", "2024-01-16 00:00", "z3", 5.0, False),
    ]
    after = clv_summary(_transactions(later), AS_OF, "days")
    pd.testing.assert_frame_equal(before, after)


def test_holdout_window_is_open_at_the_cutoff_and_closed_at_the_horizon() -> None:
    s = clv_summary(_transactions(), AS_OF, "days", horizon_days=29).set_index("customer_id")
    assert s.loc["A", "holdout_purchases"] == 2  # 02-14 is day 30, outside a 29-day horizon
    assert s.loc["A", "holdout_spend"] == 15.0
    s = clv_summary(_transactions(), date(2024, 1, 14), "days", horizon_days=1)
    a = s.set_index("customer_id").loc["A"]
    assert (a["frequency"], a["holdout_purchases"], a["holdout_spend"]) == (1, 1, 30.0)


def test_negative_amount_is_a_return_even_unflagged() -> None:
    rows = [*ROWS, ("B", "2024-01-11 12:00", "p3", -4.0, False)]
    s = clv_summary(_transactions(rows), AS_OF, "days").set_index("customer_id")
    assert s.loc["B", "frequency"] == 0


def test_missing_is_return_column_means_no_flagged_returns() -> None:
    frame = _transactions().drop(columns="is_return")
    s = clv_summary(frame, AS_OF, "days").set_index("customer_id")
    assert s.loc["A", "frequency"] == 2  # the negative line of o3 is still a return by its sign


def test_a_horizon_past_the_data_is_refused_unless_allowed() -> None:
    with pytest.raises(ValueError, match="runs past the last transaction date"):
        clv_summary(_transactions(), AS_OF, "days", horizon_days=60)
    s = clv_summary(_transactions(), AS_OF, "days", horizon_days=60, allow_partial_horizon=True)
    assert s.set_index("customer_id").loc["A", "holdout_purchases"] == 4


def test_a_duckdb_relation_gives_the_same_summary() -> None:
    con = duckdb.connect()
    con.register("tx", _transactions())
    via_relation = clv_summary("tx", AS_OF, "weeks", horizon_days=30, con=con)
    con.close()
    pd.testing.assert_frame_equal(via_relation, clv_summary(_transactions(), AS_OF, "weeks", 30))


@pytest.mark.parametrize(("unit", "horizon"), [("months", None), ("days", 0)])
def test_bad_arguments_are_refused(unit: str, horizon: int | None) -> None:
    with pytest.raises(ValueError):
        clv_summary_sql("tx", AS_OF, unit, horizon)  # type: ignore[arg-type]
