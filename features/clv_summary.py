"""The BG/NBD and Gamma-Gamma summary of each customer at a cutoff, and the holdout target after it.

Time follows ``features.definitions``: a cutoff ``as_of`` is a calendar date T; the calibration
period holds every row dated on or before T, the holdout period the dates T+1 .. T+H. Time is
counted in calendar-day boundaries (DuckDB ``date_diff('day', DATE, DATE)``) and expressed in
``unit``: ``days`` or ``weeks`` (days / 7, so recency and T are fractional, as in the CDNOW data of
Fader, Hardie & Lee 2005).

A *purchase* is an order (an order_id with at least one non-return line), dated by its first line
and valued at the sum of its non-return lines, as in ``features.definitions``. A *purchase period*
is a calendar day with at least one purchase; several orders on one day are one period (the
convention of the BTYD literature and of ``lifetimes``). Per customer with a purchase on or before
T:

    frequency        x   = purchase days - 1 (repeat purchase periods)
    recency          t_x = time from the first to the last purchase day
    T                    = time from the first purchase day to T
    monetary_value       = mean value of the repeat purchase days (0 when x = 0)
    holdout_purchases    = purchase days in T+1 .. T+H
    holdout_spend        = value of the purchases in T+1 .. T+H (returns not netted)
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import duckdb
import pandas as pd

from features.sql import sql_date

TimeUnit = Literal["days", "weeks"]

#: Days per time unit.
UNIT_DAYS: dict[str, int] = {"days": 1, "weeks": 7}

#: Columns of the summary; the holdout ones only when a horizon is given.
SUMMARY_COLUMNS = ["customer_id", "frequency", "recency", "T", "monetary_value"]
HOLDOUT_COLUMNS = ["holdout_purchases", "holdout_spend"]


def clv_summary_sql(
    source: str, as_of: date, unit: TimeUnit = "days", horizon_days: int | None = None
) -> str:
    """SQL of the per-customer (x, t_x, T, monetary_value) summary at ``as_of`` and its holdout."""
    if unit not in UNIT_DAYS:
        raise ValueError(f"unit must be one of {sorted(UNIT_DAYS)}, not {unit!r}")
    if horizon_days is not None and horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1, not {horizon_days}")
    k = float(UNIT_DAYS[unit])
    t0 = sql_date(as_of)
    end = sql_date(as_of + timedelta(days=horizon_days or 0))
    holdout_cols = ""
    holdout_join = ""
    if horizon_days is not None:
        holdout_cols = """,
       CAST(coalesce(h.holdout_purchases, 0) AS BIGINT) AS holdout_purchases,
       CAST(coalesce(h.holdout_spend, 0.0) AS DOUBLE) AS holdout_spend"""
        holdout_join = """
LEFT JOIN (
    SELECT customer_id, count(*) AS holdout_purchases, sum(value) AS holdout_spend
    FROM days WHERE NOT calibration GROUP BY customer_id
) h ON c.customer_id = h.customer_id"""
    return f"""
WITH lines AS (
    SELECT customer_id, order_id, CAST(ts AS DATE) AS d, CAST(amount AS DOUBLE) AS amount
    FROM {source}
    WHERE CAST(ts AS DATE) <= {end}
      AND NOT (coalesce(is_return, FALSE) OR amount < 0)
),
orders AS (
    SELECT customer_id, order_id, d <= {t0} AS calibration, min(d) AS order_date,
           sum(amount) AS value
    FROM lines
    GROUP BY customer_id, order_id, d <= {t0}
),
days AS (
    SELECT customer_id, calibration, order_date AS d, sum(value) AS value
    FROM orders
    GROUP BY customer_id, calibration, order_date
),
calib AS (
    SELECT customer_id,
           count(*) - 1 AS frequency,
           date_diff('day', min(d), max(d)) AS recency_days,
           date_diff('day', min(d), {t0}) AS age_days,
           coalesce((sum(value) - arg_min(value, d)) / NULLIF(count(*) - 1, 0), 0.0) AS monetary
    FROM days WHERE calibration
    GROUP BY customer_id
)
SELECT c.customer_id,
       CAST(c.frequency AS BIGINT) AS frequency,
       c.recency_days / {k} AS recency,
       c.age_days / {k} AS "T",
       CAST(c.monetary AS DOUBLE) AS monetary_value{holdout_cols}
FROM calib c{holdout_join}
ORDER BY c.customer_id"""


def clv_summary(
    transactions: pd.DataFrame | str,
    as_of: date,
    unit: TimeUnit = "days",
    horizon_days: int | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    allow_partial_horizon: bool = False,
) -> pd.DataFrame:
    """The CLV summary at ``as_of`` from canonical transactions (a DataFrame or a DuckDB relation).

    With ``horizon_days`` the holdout columns are added; a horizon that runs past the last
    transaction date is refused unless ``allow_partial_horizon`` (it would undercount the target).
    """
    own = con is None
    con = con or duckdb.connect()
    try:
        if isinstance(transactions, pd.DataFrame):
            frame = transactions
            if "is_return" not in frame.columns:
                frame = frame.assign(is_return=False)
            con.register("__clv_transactions", frame)
            source = "__clv_transactions"
        else:
            source = transactions
        if horizon_days is not None and not allow_partial_horizon:
            last = con.execute(f"SELECT max(CAST(ts AS DATE)) FROM {source}").fetchall()[0][0]
            if last is None or (last - as_of).days < horizon_days:
                raise ValueError(
                    f"cutoff {as_of} + horizon {horizon_days} days runs past the last "
                    f"transaction date {last}"
                )
        return con.execute(clv_summary_sql(source, as_of, unit, horizon_days)).df()
    finally:
        if isinstance(transactions, pd.DataFrame):
            con.unregister("__clv_transactions")
        if own:
            con.close()
