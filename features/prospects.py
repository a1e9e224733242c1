"""Prospects at a cutoff: people known from ``events`` or ``customers`` with no order yet, and
their point-in-time features (the ``prospects_v1`` set, declared as data like every feature).

Time convention of ``features.definitions``: at cutoff T a person is *known* when they have an
event dated on or before T or a customers row whose ``signup_date`` is on or before T (a row
without a sign-up date, or signed up after T, is not known from the customers table at T); a
*prospect* is a known person with no order on or before T (an order: an order id with a
non-return line). Features read events dated on or before T and the customers row only when it
is visible at T, so an event or a sign-up after T changes nothing (tests/features/test_journey.py).
The engine's sets are computed for buyers (``features.engine.features_sql``: every customer with
an order); this module computes the same kind of declared features over prospects.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from features.definitions import (
    DEFAULT_PROSPECT_ATTRIBUTES,
    PROSPECT_SET,
    Feature,
    FeatureSet,
)
from features.sql import sql_date

__all__ = [
    "PROSPECT_SET",
    "is_prospect_set",
    "orders_before_sql",
    "prospect_feature_set",
    "prospect_features",
    "prospects_sql",
]


def _visits(window: int | None) -> Feature:
    where = "event_type = 'visit'" + (f" AND days_ago < {window}" if window else "")
    span = f"{window}d" if window else "total"
    return Feature(
        f"visits_count_{span}",
        "events",
        f"count(*) FILTER (WHERE {where})",
        "integer",
        window,
        f"visit events {'in the last ' + str(window) + ' days' if window else 'up to the cutoff'}",
        default=0.0,
        family="prospect",
    )


def prospect_features(attributes: Sequence[str] = DEFAULT_PROSPECT_ATTRIBUTES) -> list[Feature]:
    """The prospect features: visit counts and recency from events, the sign-up (registration)
    and the named customer attributes as recorded at sign-up (NULL before it)."""
    feats = [_visits(w) for w in (7, 30, 90, None)]
    feats += [
        Feature(
            "events_count_90d",
            "events",
            "count(*) FILTER (WHERE days_ago < 90)",
            "integer",
            90,
            "events of any type in the last 90 days",
            default=0.0,
            family="prospect",
        ),
        Feature(
            "days_since_first_event",
            "events",
            "max(days_ago)",
            "integer",
            None,
            "days from the first event of any type to the cutoff (NULL: no event)",
            family="prospect",
        ),
        Feature(
            "days_since_last_event",
            "events",
            "min(days_ago)",
            "integer",
            None,
            "days from the last event of any type to the cutoff (NULL: no event)",
            family="prospect",
        ),
        Feature(
            "days_since_last_visit",
            "events",
            "min(days_ago) FILTER (WHERE event_type = 'visit')",
            "integer",
            None,
            "days from the last visit to the cutoff (NULL: no visit)",
            family="prospect",
        ),
        Feature(
            "registered",
            "customers",
            "1",
            "integer",
            None,
            "1 when the person signed up on or before the cutoff",
            default=0.0,
            family="prospect",
        ),
        Feature(
            "days_since_registration",
            "customers",
            "signup_days_ago",
            "integer",
            None,
            "days from sign-up to the cutoff (NULL: not signed up by then)",
            family="prospect",
        ),
    ]
    feats += [
        Feature(
            a,
            "customers",
            f"CAST({a} AS VARCHAR)",
            "string",
            None,
            f"{a} as recorded at sign-up (NULL: not signed up by the cutoff)",
            family="prospect",
        )
        for a in attributes
    ]
    return feats


def prospect_feature_set(attributes: Sequence[str] = DEFAULT_PROSPECT_ATTRIBUTES) -> FeatureSet:
    """``prospects_v1`` over the named customer attributes (recorded in its spec, so
    ``features.definitions.feature_set_from_spec`` rebuilds it)."""
    return FeatureSet(
        PROSPECT_SET,
        tuple(prospect_features(attributes)),
        "prospects (no order by the cutoff): visits, events, sign-up and attributes at sign-up",
        attributes=tuple(attributes),
    )


def is_prospect_set(fs: FeatureSet) -> bool:
    """Whether ``fs`` is computed over prospects (``prospects_sql``), not by the engine."""
    return fs.name == PROSPECT_SET


_CTYPE = {"double": "DOUBLE", "integer": "BIGINT", "string": "VARCHAR"}


def orders_before_sql(transactions: str, as_of: date) -> str:
    """Customers with an order (an order id with a non-return line) dated on or before T."""
    return f"""SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id FROM {transactions}
    WHERE CAST(ts AS DATE) <= {sql_date(as_of)} AND customer_id IS NOT NULL
      AND NOT (coalesce(is_return, FALSE) OR amount < 0)"""


def prospects_sql(
    as_of: date,
    transactions: str,
    fs: FeatureSet,
    *,
    events: str | None = None,
    customers: str | None = None,
) -> str:
    """SQL of ``fs`` at ``as_of`` for every prospect (known by T, no order by T): customer_id,
    then the features in declaration order; rows ordered by customer_id."""
    if events is None and customers is None:
        raise ValueError("prospects need an events or a customers relation")
    a = sql_date(as_of)
    by_level = {lvl: [f for f in fs.features if f.level == lvl] for lvl in ("events", "customers")}
    other = [f.name for f in fs.features if f.level not in by_level]
    if other:
        raise ValueError(f"prospect features read events or customers only: {other}")
    ctes = [f"buyers AS ({orders_before_sql(transactions, as_of)})"]
    known = []
    if events is not None:
        ctes.append(f"""events_seen AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id, lower(event_type) AS event_type,
           date_diff('day', CAST(ts AS DATE), {a}) AS days_ago
    FROM {events}
    WHERE CAST(ts AS DATE) <= {a} AND customer_id IS NOT NULL
)""")
        known.append("SELECT customer_id FROM events_seen")
    if customers is not None:
        ctes.append(f"""customers_seen AS (
    SELECT *, CAST(customer_id AS VARCHAR) AS person_id,
           date_diff('day', CAST(signup_date AS DATE), {a}) AS signup_days_ago
    FROM {customers}
    WHERE signup_date IS NOT NULL AND CAST(signup_date AS DATE) <= {a}
)""")
        known.append("SELECT person_id AS customer_id FROM customers_seen")
    ctes.append(f"""population AS (
    SELECT DISTINCT k.customer_id FROM ({" UNION ALL ".join(known)}) k
    ANTI JOIN buyers b ON k.customer_id = b.customer_id
)""")
    cols = ["p.customer_id"]
    joins = ""
    for level, rel, key in (
        ("events", "events_seen", "customer_id"),
        ("customers", "customers_seen", "person_id"),
    ):
        feats = by_level[level]
        present = rel == "events_seen" and events is not None
        present |= rel == "customers_seen" and customers is not None
        if not feats:
            continue
        if present:
            agg = ",\n           ".join(
                f"{'min(' + f.sql + ')' if level == 'customers' else f.sql} AS {f.name}"
                for f in feats
            )
            ctes.append(
                f"f_{level} AS (\n    SELECT {key} AS customer_id,\n           {agg}\n"
                f"    FROM {rel} GROUP BY {key}\n)"
            )
            joins += f"\n    LEFT JOIN f_{level} ON p.customer_id = f_{level}.customer_id"
        for f in feats:
            value = f"f_{level}.{f.name}" if present else "NULL"
            if f.default is not None:
                value = f"coalesce({value}, {f.default})"
            cols.append(f"CAST({value} AS {_CTYPE[f.dtype]}) AS {f.name}")
    select = ",\n       ".join(cols)
    with_ctes = ",\n".join(ctes)
    return f"""
WITH {with_ctes}
SELECT {select}
FROM population p{joins}
ORDER BY p.customer_id"""
