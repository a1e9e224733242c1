"""Compile declared feature sets and labels to SQL (DuckDB dialect; transpiled for Spark).

Every function here is pure: it takes a relation (a table name or ``read_parquet(...)``), a cutoff and
the declarations, and returns SQL text. Running the SQL is ``features.build``'s job.
"""

from __future__ import annotations

from datetime import date

from features.definitions import FeatureSet


def _date(d: date) -> str:
    return f"DATE '{d.isoformat()}'"


def lines_sql(source: str, as_of: date) -> str:
    """Transaction lines up to and including day ``as_of`` with their ``days_ago``."""
    return f"""
    SELECT customer_id, order_id, category, product_id,
           CAST(amount AS DOUBLE) AS amount,
           CAST(quantity AS DOUBLE) AS quantity,
           (coalesce(is_return, FALSE) OR amount < 0) AS is_return,
           date_diff('day', CAST(ts AS DATE), {_date(as_of)}) AS days_ago
    FROM {source}
    WHERE CAST(ts AS DATE) <= {_date(as_of)}"""


def features_sql(source: str, as_of: date, fs: FeatureSet) -> str:
    """SQL computing feature set ``fs`` at ``as_of`` for every customer with an order by then."""
    order_feats = [f for f in fs.features if f.level == "orders"]
    line_feats = [f for f in fs.features if f.level == "lines"]
    derived = [f for f in fs.features if f.level == "derived"]
    ctype = {"double": "DOUBLE", "integer": "BIGINT"}
    o_cols = ",\n           ".join(f"{f.sql} AS {f.name}" for f in order_feats)
    l_cols = ",\n           ".join(f"{f.sql} AS {f.name}" for f in line_feats) or "0 AS __none"
    base_cols = [f"CAST({f.name} AS {ctype[f.dtype]}) AS {f.name}" for f in order_feats + line_feats]
    der_cols = [f"CAST({f.sql} AS {ctype[f.dtype]}) AS {f.name}" for f in derived]
    final = ",\n       ".join(["customer_id", *base_cols, *der_cols])
    return f"""
WITH lines AS ({lines_sql(source, as_of)}
),
orders AS (
    SELECT customer_id, order_id, max(days_ago) AS days_ago, sum(amount) AS amount
    FROM lines WHERE NOT is_return
    GROUP BY customer_id, order_id
),
f_orders AS (
    SELECT customer_id,
           {o_cols}
    FROM orders GROUP BY customer_id
),
f_lines AS (
    SELECT customer_id,
           {l_cols}
    FROM lines GROUP BY customer_id
),
base AS (
    SELECT o.*, l.* EXCLUDE (customer_id)
    FROM f_orders o LEFT JOIN f_lines l ON o.customer_id = l.customer_id
)
SELECT {final}
FROM base
ORDER BY customer_id"""


def churn_label_sql(source: str, as_of: date, horizon_days: int, lookback_days: int) -> str:
    """Churn at ``as_of``: an order in the lookback window and none in (as_of, as_of + horizon]."""
    return f"""
WITH o AS (
    SELECT customer_id,
           date_diff('day', CAST(ts AS DATE), {_date(as_of)}) AS days_ago
    FROM {source}
    WHERE NOT (coalesce(is_return, FALSE) OR amount < 0)
),
active AS (
    SELECT DISTINCT customer_id FROM o WHERE days_ago >= 0 AND days_ago < {lookback_days}
),
future AS (
    SELECT DISTINCT customer_id FROM o WHERE days_ago < 0 AND days_ago >= -{horizon_days}
)
SELECT a.customer_id, CASE WHEN f.customer_id IS NULL THEN 1 ELSE 0 END AS label
FROM active a LEFT JOIN future f ON a.customer_id = f.customer_id
ORDER BY a.customer_id"""
