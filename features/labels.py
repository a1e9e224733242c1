"""Labels at cutoff T for horizon H, from rows dated T+1 .. T+H only (SQL, DuckDB dialect).

Same time convention as ``features.definitions``: ``days_ago`` < 0 means after the cutoff, so the
horizon is ``-H <= days_ago < 0``. Each function returns SQL yielding ``customer_id, label``
(and ``value`` where a money amount belongs to the label).
"""

from __future__ import annotations

from datetime import date

from features.engine import churn_label_sql
from features.sql import sql_date, sql_literal

__all__ = [
    "campaign_response_label_sql",
    "churn_label_sql",
    "first_purchase_label_sql",
    "purchase_label_sql",
    "spend_label_sql",
]


def _purchases(source: str, as_of: date) -> str:
    return f"""
    SELECT customer_id, category, CAST(amount AS DOUBLE) AS amount,
           date_diff('day', CAST(ts AS DATE), {sql_date(as_of)}) AS days_ago
    FROM {source}
    WHERE NOT (coalesce(is_return, FALSE) OR amount < 0)"""


def purchase_label_sql(
    source: str,
    as_of: date,
    horizon_days: int,
    lookback_days: int,
    category: str | None = None,
) -> str:
    """Propensity: among customers with an order in the lookback, any purchase in the horizon
    (of ``category`` when given); ``value`` is the horizon spend on it."""
    in_cat = f"AND category = {sql_literal(category)}" if category is not None else ""
    return f"""
WITH p AS ({_purchases(source, as_of)}
),
population AS (
    SELECT DISTINCT customer_id FROM p WHERE days_ago >= 0 AND days_ago < {lookback_days}
),
future AS (
    SELECT customer_id, sum(amount) AS value FROM p
    WHERE days_ago < 0 AND days_ago >= -{horizon_days} {in_cat}
    GROUP BY customer_id
)
SELECT a.customer_id,
       CASE WHEN f.customer_id IS NULL THEN 0 ELSE 1 END AS label,
       coalesce(f.value, 0.0) AS value
FROM population a LEFT JOIN future f ON a.customer_id = f.customer_id
ORDER BY a.customer_id"""


def first_purchase_label_sql(source: str, as_of: date, horizon_days: int) -> str:
    """First purchase: the customers whose first order falls in the horizon (no order on or
    before T, one in T+1 .. T+H), label 1, ``value`` their horizon spend. Join it to the prospects
    at T (``features.prospects``); a prospect absent from it is a 0."""
    return f"""
WITH p AS ({_purchases(source, as_of)}
)
SELECT CAST(customer_id AS VARCHAR) AS customer_id, 1 AS label,
       sum(amount) FILTER (WHERE days_ago < 0 AND days_ago >= -{int(horizon_days)}) AS value
FROM p
GROUP BY customer_id
HAVING max(days_ago) < 0 AND max(days_ago) >= -{int(horizon_days)}
ORDER BY customer_id"""


def spend_label_sql(source: str, as_of: date, horizon_days: int) -> str:
    """CLV target: net spend (purchases less returns) in the horizon, for every customer with an
    order by the cutoff; ``label`` is that spend floored at 0."""
    return f"""
WITH l AS (
    SELECT customer_id, CAST(amount AS DOUBLE) AS amount,
           (coalesce(is_return, FALSE) OR amount < 0) AS is_return,
           date_diff('day', CAST(ts AS DATE), {sql_date(as_of)}) AS days_ago
    FROM {source}
),
population AS (
    SELECT DISTINCT customer_id FROM l WHERE days_ago >= 0 AND NOT is_return
),
future AS (
    SELECT customer_id, sum(amount) AS value FROM l
    WHERE days_ago < 0 AND days_ago >= -{horizon_days}
    GROUP BY customer_id
)
SELECT a.customer_id,
       GREATEST(coalesce(f.value, 0.0), 0.0) AS label,
       coalesce(f.value, 0.0) AS value
FROM population a LEFT JOIN future f ON a.customer_id = f.customer_id
ORDER BY a.customer_id"""


def campaign_response_label_sql(
    campaigns: str, as_of: date, horizon_days: int, campaign_ids: list[str] | None = None
) -> str:
    """Response propensity: treated contacts sent in the horizon; label = responded.

    Features are taken at the cutoff before the send, so a customer's features never see the
    campaign. A customer contacted several times counts once (responded to any).
    """
    only = ""
    if campaign_ids:
        only = "AND campaign_id IN (" + ", ".join(sql_literal(c) for c in campaign_ids) + ")"
    return f"""
WITH c AS (
    SELECT customer_id, CAST(responded AS BOOLEAN) AS responded,
           date_diff('day', CAST(ts AS DATE), {sql_date(as_of)}) AS days_ago
    FROM {campaigns}
    WHERE lower("group") = 'treatment' {only}
)
SELECT customer_id, CAST(max(CASE WHEN responded THEN 1 ELSE 0 END) AS INTEGER) AS label
FROM c
WHERE days_ago < 0 AND days_ago >= -{horizon_days}
GROUP BY customer_id
ORDER BY customer_id"""
