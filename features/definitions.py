"""Features declared as data, grouped into versioned feature sets that a model pins.

Time convention (one definition for every engine):
    A cutoff ``as_of`` is a calendar date T. Features see every row dated on or before T (the whole
    day T); labels see dates T+1 .. T+H. ``days_ago`` of a row is the number of calendar-day
    boundaries between its date and T (DuckDB ``date_diff('day', DATE, DATE)``, Spark ``datediff``),
    so a row on T has days_ago 0. A window of N days holds rows with days_ago < N (T-N+1 .. T).
    "The 90 days before" a 90-day window are the rows with 90 <= days_ago < 180.

An *order* is one order_id of a customer with at least one non-return line; its date is the date
of its first line and its value the sum of its non-return lines. Returns are the lines flagged
is_return (or with a negative amount). The population at T is every customer with an order on or
before T.

Each feature is one SQL expression (DuckDB dialect, written to transpile to Spark with sqlglot) at
one level; aggregates run per customer over the level's rows, which have these columns:
    ``orders``      the customer's orders: days_ago, amount, n_lines, n_units (sum of quantity),
                    order_weekday (0 = Monday .. 6 = Sunday), order_month (1..12), gap_days (days
                    since the customer's previous order; NULL for the first);
    ``lines``       the customer's lines: days_ago, amount, quantity, is_return, order_id,
                    product_id, category;
    ``categories``  one row per category the customer bought (non-return lines, category not NULL):
                    category, amount, share (of the customer's spend over those categories);
    ``events``      the customer's events (optional ``events`` table): event_type (lower case),
                    days_ago;
    ``customers``   a scalar expression over the customer's row of the optional ``customers`` table
                    (its columns plus signup_days_ago); a table with history is read as of T
                    (``features.build.attribute_plan``), one without is today's state;
    ``households``  the orders (days_ago, amount, customer_id) of every customer of the customer's
                    household, from an optional map (customer_id, household_id); a customer absent
                    from the map is a household of one;
    ``contacts``    the customer's contacts from the optional ``campaign_history`` table: rows of a
                    treatment arm (``group`` other than control) sent on or before T, with
                    days_ago (of the send date), campaign_id, offer_id, responded and reason
                    (lower case, NULL when empty). The outcome columns are only *known* once the
                    response window is over: a feature reads responded / reason only of contacts
                    with days_ago >= ``CONTACT_RESPONSE_DAYS`` (the contract has no response date);
    ``offer_contacts`` the same contacts with ``offer_kind`` (lower case) of their offer from the
                    optional ``offers`` table (NULL when the offer is not there);
    ``context``     a scalar expression over ``cutoff`` (the date T itself), the same for every
                    customer: the season the label window starts in, which moves base rates
                    (docs/training.md, Calibration);
    ``derived``     an expression over the set's other (non-derived) features.
A feature whose level has no rows for a customer (no events, say) takes its ``default`` (NULL when
none). Released feature sets are never edited: add ``churn_v2`` instead. Sets combine with ``+``:
``feature_set("crm_v1+crm_engagement_v1")``.

(Over 600 lines on purpose: it is the feature catalogue itself, every feature declared as data.)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

Level = Literal[
    "orders",
    "lines",
    "categories",
    "events",
    "customers",
    "households",
    "contacts",
    "offer_contacts",
    "context",
    "derived",
]
DType = Literal["double", "integer", "string"]

#: The input relations each level reads (context and derived features read none).
LEVEL_INPUTS: dict[str, tuple[str, ...]] = {
    "orders": ("transactions",),
    "lines": ("transactions",),
    "categories": ("transactions",),
    "events": ("events",),
    "customers": ("customers",),
    "households": ("households",),
    "contacts": ("campaign_history",),
    "offer_contacts": ("campaign_history", "offers"),
    "context": (),
    "derived": (),
}


@dataclass(frozen=True)
class Feature:
    """One declared feature: name, SQL at a level, window, dtype and meaning."""

    name: str
    level: Level
    sql: str
    dtype: DType = "double"
    window_days: int | None = None
    description: str = ""
    default: float | None = None
    family: str = ""


class RFMPointsConfig(BaseModel):
    """The literature's RFM points scheme (PRODUCT.md); every number configurable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recency_bands_days: tuple[int, ...] = Field(
        (91, 182, 365), description="upper bounds (days since last order) of the recency bands"
    )
    recency_points: tuple[int, ...] = Field((20, 10, 3), description="points per recency band")
    recency_points_older: int = 1
    history_days: int = 730
    points_per_order: float = 4.0
    frequency_cap: float = 20.0
    monetary_share: float = 0.10
    monetary_cap: float = 20.0


#: Customers-table columns that never change for a customer (everything else can: country,
#: consent, segment-like fields) and the one the engine derives from them.
FIXED_CUSTOMER_COLUMNS = frozenset({"customer_id", "signup_date", "signup_days_ago"})
#: The attribute name of household membership (the ``households`` level).
HOUSEHOLD = "household"


class CurrentStateAttributes(BaseModel):
    """Attributes that can change (country, consent, household, segment-like fields) of a
    customers table without history are today's values: at historical training cutoffs they are
    left out unless named in ``allow`` (a table with history is read as of each cutoff)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: tuple[str, ...] = Field(
        (),
        description="attributes (customers columns, or 'household') whose current value may be "
        "used at historical cutoffs all the same",
    )


def rfm_recency_points_sql(cfg: RFMPointsConfig, recency: str) -> str:
    """SQL of the R points from the days since the last order."""
    bands = " ".join(
        f"WHEN {recency} < {b} THEN {p}"
        for b, p in zip(cfg.recency_bands_days, cfg.recency_points, strict=True)
    )
    return f"(CASE WHEN {recency} IS NULL THEN 0 {bands} ELSE {cfg.recency_points_older} END)"


def rfm_frequency_points_sql(cfg: RFMPointsConfig, orders_2y: str) -> str:
    """SQL of the F points: points per order in the history, capped."""
    return f"LEAST({cfg.points_per_order} * {orders_2y}, {cfg.frequency_cap})"


def rfm_monetary_points_sql(cfg: RFMPointsConfig, spend_2y: str) -> str:
    """SQL of the M points: a share of the spend in the history, floored at 0 and capped."""
    return f"LEAST(GREATEST({cfg.monetary_share} * {spend_2y}, 0.0), {cfg.monetary_cap})"


def rfm_points_sql(cfg: RFMPointsConfig, recency: str, orders_2y: str, spend_2y: str) -> str:
    """SQL of R + F + M points from the recency, the order count and the spend in the history."""
    r = rfm_recency_points_sql(cfg, recency)
    f = rfm_frequency_points_sql(cfg, orders_2y)
    m = rfm_monetary_points_sql(cfg, spend_2y)
    return f"CAST({r} AS DOUBLE) + {f} + {m}"


# --------------------------------------------------------------------------- churn_v1 (released)


def _window_features(days: int) -> list[Feature]:
    return [
        Feature(
            f"orders_count_{days}d",
            "orders",
            f"count(*) FILTER (WHERE days_ago < {days})",
            "integer",
            days,
            f"orders in the last {days} days",
        ),
        Feature(
            f"spend_sum_{days}d",
            "orders",
            f"coalesce(sum(amount) FILTER (WHERE days_ago < {days}), 0.0)",
            "double",
            days,
            f"spend on orders in the last {days} days",
        ),
    ]


def _core_features(rfm: RFMPointsConfig) -> list[Feature]:
    h = rfm.history_days
    return [
        Feature(
            "days_since_last_order",
            "orders",
            "min(days_ago)",
            "integer",
            None,
            "recency: days from the last order to the cutoff",
        ),
        Feature(
            "days_since_first_order",
            "orders",
            "max(days_ago)",
            "integer",
            None,
            "tenure: days from the first order to the cutoff",
        ),
        Feature(
            "orders_count_total",
            "orders",
            "count(*)",
            "integer",
            None,
            "frequency: orders up to the cutoff",
        ),
        Feature(
            "spend_sum_total",
            "orders",
            "sum(amount)",
            "double",
            None,
            "monetary: spend on all orders up to the cutoff",
        ),
        Feature(
            "spend_mean_order",
            "orders",
            "avg(amount)",
            "double",
            None,
            "monetary: mean order value",
        ),
        *_window_features(30),
        *_window_features(90),
        *_window_features(365),
        Feature(
            f"orders_count_{h}d",
            "orders",
            f"count(*) FILTER (WHERE days_ago < {h})",
            "integer",
            h,
            "orders in the RFM history window",
        ),
        Feature(
            f"spend_sum_{h}d",
            "orders",
            f"coalesce(sum(amount) FILTER (WHERE days_ago < {h}), 0.0)",
            "double",
            h,
            "spend in the RFM history window",
        ),
        Feature(
            "returns_share",
            "lines",
            "coalesce(-sum(amount) FILTER (WHERE is_return) / "
            "NULLIF(sum(amount) FILTER (WHERE NOT is_return), 0.0), 0.0)",
            "double",
            None,
            "returned value / purchased value, up to the cutoff",
        ),
        Feature(
            "categories_distinct",
            "lines",
            "count(DISTINCT category) FILTER (WHERE NOT is_return)",
            "integer",
            None,
            "distinct categories bought up to the cutoff",
        ),
        Feature(
            "rfm_points",
            "derived",
            rfm_points_sql(rfm, "days_since_last_order", f"orders_count_{h}d", f"spend_sum_{h}d"),
            "double",
            h,
            "RFM points score R + F + M (max 60), the literature's scheme",
        ),
    ]


# --------------------------------------------------------------------------- crm_v1 families

CRM_WINDOWS = (7, 30, 90, 180, 365)


def _tagged(family: str, feats: Iterable[Feature]) -> list[Feature]:
    return [replace(f, family=family) for f in feats]


def _rfm_family(rfm: RFMPointsConfig) -> list[Feature]:
    h = rfm.history_days
    core = {f.name: f for f in _core_features(rfm)}
    feats = [
        core[n]
        for n in (
            "days_since_last_order",
            "orders_count_total",
            "spend_sum_total",
            "spend_mean_order",
        )
    ]
    for w in dict.fromkeys((*CRM_WINDOWS, h)):  # the history window, unless already a window
        feats += _window_features(w)
    feats += [
        Feature(
            "rfm_recency_points",
            "derived",
            f"CAST({rfm_recency_points_sql(rfm, 'days_since_last_order')} AS DOUBLE)",
            "double",
            None,
            "R points of the RFM scheme (by days since the last order)",
        ),
        Feature(
            "rfm_frequency_points",
            "derived",
            rfm_frequency_points_sql(rfm, f"orders_count_{h}d"),
            "double",
            h,
            "F points of the RFM scheme (per order in the history window, capped)",
        ),
        Feature(
            "rfm_monetary_points",
            "derived",
            rfm_monetary_points_sql(rfm, f"spend_sum_{h}d"),
            "double",
            h,
            "M points of the RFM scheme (share of the history spend, capped)",
        ),
        core["rfm_points"],
    ]
    return _tagged("rfm", feats)


def _trend_family() -> list[Feature]:
    now = "days_ago < 90"
    before = "days_ago >= 90 AND days_ago < 180"
    spend_now = f"coalesce(sum(amount) FILTER (WHERE {now}), 0.0)"
    spend_before = f"coalesce(sum(amount) FILTER (WHERE {before}), 0.0)"
    orders_now = f"count(*) FILTER (WHERE {now})"
    orders_before = f"count(*) FILTER (WHERE {before})"
    return _tagged(
        "trend",
        [
            Feature(
                "spend_trend_diff_180d",
                "orders",
                f"{spend_now} - {spend_before}",
                "double",
                180,
                "spend in the last 90 days minus spend in the 90 days before",
            ),
            Feature(
                "spend_trend_ratio_180d",
                "orders",
                f"{spend_now} / NULLIF({spend_before}, 0.0)",
                "double",
                180,
                "spend in the last 90 days / spend in the 90 days before (NULL when that is 0)",
            ),
            Feature(
                "orders_trend_diff_180d",
                "orders",
                f"{orders_now} - {orders_before}",
                "integer",
                180,
                "orders in the last 90 days minus orders in the 90 days before",
            ),
            Feature(
                "orders_trend_ratio_180d",
                "orders",
                f"{orders_now} / NULLIF({orders_before}, 0)",
                "double",
                180,
                "orders in the last 90 days / orders in the 90 days before (NULL when that is 0)",
            ),
        ],
    )


def _interpurchase_family() -> list[Feature]:
    return _tagged(
        "interpurchase",
        [
            Feature(
                "interpurchase_days_mean",
                "orders",
                "avg(gap_days)",
                "double",
                None,
                "mean days between consecutive orders (NULL with one order)",
            ),
            Feature(
                "interpurchase_days_std",
                "orders",
                "stddev_samp(gap_days)",
                "double",
                None,
                "sample std of the days between consecutive orders (NULL with < 3 orders)",
            ),
            Feature(
                "days_overdue",
                "derived",
                "days_since_last_order - interpurchase_days_mean",
                "double",
                None,
                "days since the last order minus the mean gap: > 0 when the next order is late",
            ),
        ],
    )


def _basket_family() -> list[Feature]:
    return _tagged(
        "basket",
        [
            Feature(
                "lines_mean_order",
                "orders",
                "avg(n_lines)",
                "double",
                None,
                "basket size: mean (non-return) lines per order",
            ),
            Feature(
                "units_mean_order",
                "orders",
                "avg(n_units)",
                "double",
                None,
                "basket size: mean units (sum of quantity) per order",
            ),
            Feature(
                "spend_max_order",
                "orders",
                "max(amount)",
                "double",
                None,
                "basket value: largest order value",
            ),
            Feature(
                "spend_mean_order_365d",
                "orders",
                "avg(amount) FILTER (WHERE days_ago < 365)",
                "double",
                365,
                "basket value: mean order value in the last 365 days",
            ),
        ],
    )


def _category_family() -> list[Feature]:
    return _tagged(
        "category",
        [
            Feature(
                "categories_distinct",
                "lines",
                "count(DISTINCT category) FILTER (WHERE NOT is_return)",
                "integer",
                None,
                "distinct categories bought up to the cutoff",
            ),
            Feature(
                "products_distinct",
                "lines",
                "count(DISTINCT product_id) FILTER (WHERE NOT is_return)",
                "integer",
                None,
                "distinct products bought up to the cutoff",
            ),
            Feature(
                "category_share_max",
                "categories",
                "max(share)",
                "double",
                None,
                "share of spend in the customer's top category (1 = single-category buyer)",
            ),
            Feature(
                "category_entropy",
                "categories",
                "-sum(share * ln(share)) FILTER (WHERE share > 0)",
                "double",
                None,
                "Shannon entropy (nats) of the spend shares over categories (0 = one category)",
            ),
        ],
    )


def _returns_family() -> list[Feature]:
    core = {f.name: f for f in _core_features(RFMPointsConfig())}
    return _tagged(
        "returns",
        [
            core["returns_share"],
            Feature(
                "returns_share_365d",
                "lines",
                "coalesce(-sum(amount) FILTER (WHERE is_return AND days_ago < 365) / "
                "NULLIF(sum(amount) FILTER (WHERE NOT is_return AND days_ago < 365), 0.0), 0.0)",
                "double",
                365,
                "returned value / purchased value, last 365 days",
            ),
            Feature(
                "returns_lines_share",
                "lines",
                "count(*) FILTER (WHERE is_return) / NULLIF(count(*), 0)",
                "double",
                None,
                "share of the customer's lines that are returns / cancellations",
            ),
            Feature(
                "returns_orders_share",
                "lines",
                "count(DISTINCT order_id) FILTER (WHERE is_return) / "
                "NULLIF(count(DISTINCT order_id), 0)",
                "double",
                None,
                "cancellation rate: share of the customer's order ids with a return line",
            ),
        ],
    )


def _season_family() -> list[Feature]:
    return _tagged(
        "season",
        [
            Feature(
                "orders_share_weekend",
                "orders",
                "count(*) FILTER (WHERE order_weekday >= 5) / NULLIF(count(*), 0)",
                "double",
                None,
                "share of orders placed on a Saturday or Sunday",
            ),
            Feature(
                "orders_share_novdec",
                "orders",
                "count(*) FILTER (WHERE order_month >= 11) / NULLIF(count(*), 0)",
                "double",
                None,
                "share of orders placed in November or December",
            ),
        ],
    )


def _context_family() -> list[Feature]:
    return _tagged(
        "context",
        [
            Feature(
                "cutoff_month",
                "context",
                "month(cutoff)",
                "integer",
                None,
                "calendar month of the cutoff T (1-12): the season the label window starts in",
            ),
        ],
    )


def context_feature_names() -> frozenset[str]:
    """Features of the ``context`` level: the same for every customer of a snapshot and
    different between any two snapshot dates by design (not drift, not a customer's reason)."""
    return frozenset(f.name for f in _context_family())


def _tenure_family() -> list[Feature]:
    core = {f.name: f for f in _core_features(RFMPointsConfig())}
    return _tagged("tenure", [core["days_since_first_order"]])


ENGAGEMENT_EVENTS = (
    ("visit", "visits"),
    ("email_open", "email_opens"),
    ("click", "clicks"),
    ("complaint", "complaints"),
)


def _engagement_family() -> list[Feature]:
    feats = [
        Feature(
            f"{what}_count_{w}d",
            "events",
            f"count(*) FILTER (WHERE event_type = '{etype}' AND days_ago < {w})",
            "integer",
            w,
            f"{etype} events in the last {w} days",
            default=0.0,
        )
        for w in (30, 90)
        for etype, what in ENGAGEMENT_EVENTS
    ]
    feats += [
        Feature(
            "days_since_last_event",
            "events",
            "min(days_ago)",
            "integer",
            None,
            "days from the last event of any type to the cutoff (NULL: no event)",
        ),
        Feature(
            "days_since_last_visit",
            "events",
            "min(days_ago) FILTER (WHERE event_type = 'visit')",
            "integer",
            None,
            "days from the last visit to the cutoff (NULL: no visit)",
        ),
        Feature(
            "clicks_per_open_90d",
            "events",
            "count(*) FILTER (WHERE event_type = 'click' AND days_ago < 90) / "
            "NULLIF(count(*) FILTER (WHERE event_type = 'email_open' AND days_ago < 90), 0)",
            "double",
            90,
            "clicks / e-mail opens in the last 90 days (NULL: no open)",
        ),
    ]
    return _tagged("engagement", feats)


def _customer_family() -> list[Feature]:
    return _tagged(
        "customer",
        [
            Feature(
                "signup_tenure_days",
                "customers",
                "CASE WHEN signup_days_ago >= 0 THEN signup_days_ago END",
                "integer",
                None,
                "days from sign-up to the cutoff (NULL: unknown or after the cutoff)",
            ),
            Feature(
                "country",
                "customers",
                "CAST(country AS VARCHAR)",
                "string",
                None,
                "country code as recorded; encode with UnseenCategoryEncoder",
            ),
        ],
    )


def _household_family() -> list[Feature]:
    return _tagged(
        "household",
        [
            Feature(
                "household_customers_count",
                "households",
                "count(DISTINCT customer_id)",
                "integer",
                None,
                "customers of the household with an order up to the cutoff",
            ),
            Feature(
                "household_orders_count_total",
                "households",
                "count(*)",
                "integer",
                None,
                "orders of the whole household up to the cutoff",
            ),
            Feature(
                "household_orders_count_365d",
                "households",
                "count(*) FILTER (WHERE days_ago < 365)",
                "integer",
                365,
                "orders of the whole household in the last 365 days",
            ),
            Feature(
                "household_spend_sum_total",
                "households",
                "sum(amount)",
                "double",
                None,
                "spend of the whole household up to the cutoff",
            ),
            Feature(
                "household_spend_sum_365d",
                "households",
                "coalesce(sum(amount) FILTER (WHERE days_ago < 365), 0.0)",
                "double",
                365,
                "spend of the whole household in the last 365 days",
            ),
            Feature(
                "household_days_since_last_order",
                "households",
                "min(days_ago)",
                "integer",
                None,
                "days from the household's last order to the cutoff",
            ),
        ],
    )


#: Days after its send date at which a contact's outcome (responded, reason) is known: the
#: ``campaign_history`` contract has no response date, so a response counts at cutoff T only when
#: send date + CONTACT_RESPONSE_DAYS <= T (days_ago >= 30). Campaign windows of up to 30 days
#: (the synthetic default) are then complete; a longer window needs a new set version.
CONTACT_RESPONSE_DAYS = 30
#: The offer kinds of the ``offers`` contract.
OFFER_KINDS = ("cross_sell", "up_sell", "retention")


def _known(cond: str = "", window: int | None = None, within: int = CONTACT_RESPONSE_DAYS) -> str:
    """FILTER condition: the contact's outcome is known at T (and ``cond``, and in ``window``)."""
    parts = [cond] if cond else []
    parts.append(f"days_ago >= {within}")
    if window is not None:
        parts.append(f"days_ago < {window}")
    return " AND ".join(parts)


RESPONDED = "responded"
NEGATIVE = "NOT responded AND reason IS NOT NULL"


def _contact_family() -> list[Feature]:
    w = CONTACT_RESPONSE_DAYS
    rule = f"outcome known {w} days after the send date"
    feats = [
        Feature(
            "days_since_last_contact",
            "contacts",
            "min(days_ago)",
            "integer",
            None,
            "days from the last contact (send date, treatment arms) to the cutoff "
            "(NULL: never contacted)",
        ),
        *(
            Feature(
                f"contacts_count_{n}d",
                "contacts",
                f"count(*) FILTER (WHERE days_ago < {n})",
                "integer",
                n,
                f"contacts sent in the last {n} days",
                default=0.0,
            )
            for n in (30, 90, 365)
        ),
        Feature(
            "contacts_count_total",
            "contacts",
            "count(*)",
            "integer",
            None,
            "contacts sent up to the cutoff",
            default=0.0,
        ),
        Feature(
            "responses_count_total",
            "contacts",
            f"count(*) FILTER (WHERE {_known(RESPONDED)})",
            "integer",
            None,
            f"contacts the customer responded to ({rule})",
            default=0.0,
        ),
        Feature(
            "responses_count_365d",
            "contacts",
            f"count(*) FILTER (WHERE {_known(RESPONDED, 365)})",
            "integer",
            365,
            f"responses to contacts sent in the last 365 days ({rule})",
            default=0.0,
        ),
        Feature(
            "negative_responses_count_total",
            "contacts",
            f"count(*) FILTER (WHERE {_known(NEGATIVE)})",
            "integer",
            None,
            f"contacts declined with a reason (no response, reason given; {rule})",
            default=0.0,
        ),
        Feature(
            "negative_responses_count_365d",
            "contacts",
            f"count(*) FILTER (WHERE {_known(NEGATIVE, 365)})",
            "integer",
            365,
            f"negative responses to contacts sent in the last 365 days ({rule})",
            default=0.0,
        ),
        Feature(
            "response_rate_365d",
            "contacts",
            f"count(*) FILTER (WHERE {_known(RESPONDED, 365)}) / "
            f"NULLIF(count(*) FILTER (WHERE {_known(window=365)}), 0)",
            "double",
            365,
            f"responses / contacts with a known outcome sent in the last 365 days ({rule}; "
            "NULL: none)",
        ),
        Feature(
            "days_since_last_response",
            "contacts",
            f"min(days_ago) FILTER (WHERE {_known(RESPONDED)})",
            "integer",
            None,
            f"days from the send date of the last contact responded to ({rule}; NULL: none)",
        ),
        Feature(
            "days_since_last_negative_response",
            "contacts",
            f"min(days_ago) FILTER (WHERE {_known(NEGATIVE)})",
            "integer",
            None,
            f"days from the send date of the last contact declined with a reason ({rule}; "
            "NULL: none)",
        ),
    ]
    return _tagged("contacts", feats)


def _contact_offer_family() -> list[Feature]:
    rule = f"outcome known {CONTACT_RESPONSE_DAYS} days after the send date"
    feats = []
    for kind in OFFER_KINDS:
        is_kind = f"offer_kind = '{kind}'"
        feats += [
            Feature(
                f"{kind}_contacts_count_total",
                "offer_contacts",
                f"count(*) FILTER (WHERE {is_kind})",
                "integer",
                None,
                f"contacts with a {kind} offer up to the cutoff",
                default=0.0,
            ),
            Feature(
                f"{kind}_responses_count_total",
                "offer_contacts",
                f"count(*) FILTER (WHERE {_known(f'{is_kind} AND {RESPONDED}')})",
                "integer",
                None,
                f"responses to {kind} offers ({rule})",
                default=0.0,
            ),
            Feature(
                f"{kind}_negative_responses_count_total",
                "offer_contacts",
                f"count(*) FILTER (WHERE {_known(f'{is_kind} AND {NEGATIVE}')})",
                "integer",
                None,
                f"{kind} offers declined with a reason ({rule})",
                default=0.0,
            ),
            Feature(
                f"days_since_last_{kind}_contact",
                "offer_contacts",
                f"min(days_ago) FILTER (WHERE {is_kind})",
                "integer",
                None,
                f"days from the last contact with a {kind} offer (NULL: none)",
            ),
        ]
    return _tagged("contact_offers", feats)


def contact_reason_features(reasons: Sequence[str]) -> list[Feature]:
    """Negative responses per configured reason (``campaign_history.reason`` is free text, so the
    list is data-dependent, like category shares: declare a new set with them)."""
    feats = []
    for reason in reasons:
        slug = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")
        sql_lit = "'" + reason.strip().lower().replace("'", "''") + "'"
        feats.append(
            Feature(
                f"negative_responses_{slug}_count_total",
                "contacts",
                f"count(*) FILTER (WHERE {_known(f'{NEGATIVE} AND reason = {sql_lit}')})",
                "integer",
                None,
                f"contacts declined with the reason {reason!r} (outcome known "
                f"{CONTACT_RESPONSE_DAYS} days after the send date)",
                default=0.0,
                family="contact_reasons",
            )
        )
    return feats


def category_share_features(
    categories: Sequence[str], window_days: int | None = None
) -> list[Feature]:
    """Spend-share features for a configured category list (data-dependent: declare a new set)."""
    within = f" AND days_ago < {window_days}" if window_days else ""
    suffix = f"{window_days}d" if window_days else "total"
    feats = []
    for cat in categories:
        slug = re.sub(r"[^a-z0-9]+", "_", cat.lower()).strip("_")
        lit = cat.replace("'", "''")
        feats.append(
            Feature(
                f"spend_share_{slug}_{suffix}",
                "lines",
                "coalesce(sum(amount) FILTER "
                f"(WHERE NOT is_return AND category = '{lit}'{within}) / "
                f"NULLIF(sum(amount) FILTER (WHERE NOT is_return{within}), 0.0), 0.0)",
                "double",
                window_days,
                f"share of spend in category {cat!r}",
                family="category",
            )
        )
    return feats


# --------------------------------------------------------------------------- feature sets

#: The prospects' feature set (``features.prospects``) and its default customers attributes.
PROSPECT_SET = "prospects_v1"
DEFAULT_PROSPECT_ATTRIBUTES: tuple[str, ...] = ("age_band",)


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned list of features."""

    name: str
    features: tuple[Feature, ...]
    description: str = ""
    rfm: RFMPointsConfig | None = None  # the RFM settings it was built with (None: default)
    # the customers columns of a prospects set (``features.prospects``; None: not one)
    attributes: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        """The name that pins the whole definition: the released name with default settings,
        ``<name>@rfm-<digest>`` with custom RFM settings, ``<name>@attrs-<digest>`` for a
        prospects set with other attributes than ``age_band`` (snapshots and models use this)."""
        if self.attributes is not None and self.attributes != DEFAULT_PROSPECT_ATTRIBUTES:
            blob = json.dumps(list(self.attributes))
            return f"{self.name}@attrs-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
        if self.rfm is None or self.rfm == RFMPointsConfig():
            return self.name
        blob = json.dumps(self.rfm.model_dump(mode="json"), sort_keys=True)
        return f"{self.name}@rfm-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    @property
    def fingerprint(self) -> str:
        """sha256 of every feature's definition: equal fingerprints compute equal values."""
        blob = json.dumps([list(_definition(f)) for f in self.features], default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def spec(self) -> dict[str, Any]:
        """What rebuilds this set anywhere (``feature_set_from_spec``), as JSON-able data."""
        custom = self.rfm is not None and self.rfm != RFMPointsConfig()
        return {
            "name": self.name,
            "key": self.key,
            "rfm": self.rfm.model_dump(mode="json") if custom and self.rfm else None,
            "fingerprint": self.fingerprint,
            **({} if self.attributes is None else {"attributes": list(self.attributes)}),
        }

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_names(self) -> list[str]:
        """Features a model can take as numbers."""
        return [f.name for f in self.features if f.dtype != "string"]

    @property
    def categorical_names(self) -> list[str]:
        """Features to encode (``UnseenCategoryEncoder``) before a numeric model."""
        return [f.name for f in self.features if f.dtype == "string"]

    @property
    def inputs(self) -> list[str]:
        """Input relations the set reads (always ``transactions``: it defines the population)."""
        needed = {n for f in self.features for n in LEVEL_INPUTS[f.level]}
        return ["transactions", *sorted(needed - {"transactions"})]

    def describe(self) -> list[dict[str, object]]:
        """The set as data, for MLflow and docs."""
        return [
            {
                "name": f.name,
                "level": f.level,
                "dtype": f.dtype,
                "window_days": f.window_days,
                "description": f.description,
                "family": f.family,
                "sql": f.sql,
                "default": f.default,
            }
            for f in self.features
        ]


def _set(name: str, description: str, feats: Iterable[Feature]) -> FeatureSet:
    return FeatureSet(name, tuple(feats), description)


def _sets(rfm: RFMPointsConfig) -> dict[str, Callable[[], FeatureSet]]:
    return {
        "churn_v1": lambda: FeatureSet(
            "churn_v1",
            tuple(_core_features(rfm)),
            "RFM, order counts and spend in 30/90/365-day windows, tenure, returns, categories",
        ),
        "crm_v1": lambda: _set(
            "crm_v1",
            "transactions only: RFM and 7/30/90/180/365-day windows, trends, inter-purchase time,"
            " basket, category mix, returns, seasonality, tenure",
            [
                *_rfm_family(rfm),
                *_tenure_family(),
                *_trend_family(),
                *_interpurchase_family(),
                *_basket_family(),
                *_category_family(),
                *_returns_family(),
                *_season_family(),
            ],
        ),
        "crm_engagement_v1": lambda: _set(
            "crm_engagement_v1",
            "engagement counts from the optional events table",
            _engagement_family(),
        ),
        "crm_customer_v1": lambda: _set(
            "crm_customer_v1", "attributes from the optional customers table", _customer_family()
        ),
        "crm_household_v1": lambda: _set(
            "crm_household_v1",
            "household aggregates from an optional customer -> household map",
            _household_family(),
        ),
        "crm_contacts_v1": lambda: _set(
            "crm_contacts_v1",
            "contact history from the optional campaign_history table: recency, contacts in "
            "30/90/365 days, responses, negative responses, response rate (an outcome is known "
            f"{CONTACT_RESPONSE_DAYS} days after the send date)",
            _contact_family(),
        ),
        "crm_contact_offers_v1": lambda: _set(
            "crm_contact_offers_v1",
            "contact history by offer kind (campaign_history joined to the offers table's kind)",
            _contact_offer_family(),
        ),
        "context_v1": lambda: _set(
            "context_v1",
            "the cutoff's season (calendar month of T): combine with another set, e.g. "
            "churn_v1+context_v1",
            _context_family(),
        ),
    }


#: Released feature sets, in catalogue order.
RELEASED_SETS = (
    "churn_v1",
    "crm_v1",
    "crm_engagement_v1",
    "crm_customer_v1",
    "crm_household_v1",
    "context_v1",
    "crm_contacts_v1",
    "crm_contact_offers_v1",
)


def _definition(f: Feature) -> tuple[object, ...]:
    """What makes two features the same (documentation fields aside)."""
    return (f.name, f.level, f.sql, f.dtype, f.window_days, f.default)


def feature_set(
    name: str, rfm: RFMPointsConfig | None = None, attributes: Sequence[str] | None = None
) -> FeatureSet:
    """Look up a released feature set by name; ``a+b`` combines released sets in that order.
    ``prospects_v1`` (``features.prospects``, over people with no order yet) stands alone and
    takes its customers ``attributes`` (None: ``age_band``); no other set takes attributes."""
    if "@" in name:
        raise KeyError(
            f"feature set {name!r} is a key with custom settings; rebuild it from its spec "
            "(the snapshot's feature_set.json or the model's info), not by name"
        )
    if PROSPECT_SET in name.split("+"):
        if name != PROSPECT_SET:
            raise ValueError(
                f"feature set {name!r}: {PROSPECT_SET} is computed over prospects (no order "
                "yet) and combines with no set computed over buyers"
            )
        from features.prospects import prospect_feature_set

        chosen = DEFAULT_PROSPECT_ATTRIBUTES if attributes is None else tuple(attributes)
        return prospect_feature_set(chosen)
    if attributes is not None:
        raise ValueError(f"feature set {name!r} takes no attributes (only {PROSPECT_SET} does)")
    fs = _lookup(name, rfm or RFMPointsConfig())
    return replace(fs, rfm=rfm) if rfm is not None and rfm != RFMPointsConfig() else fs


def feature_set_from_spec(spec: Mapping[str, Any]) -> FeatureSet:
    """Rebuild a feature set from ``FeatureSet.spec()``; refuses a definition that changed."""
    rfm = RFMPointsConfig.model_validate(spec["rfm"]) if spec.get("rfm") else None
    attributes = spec.get("attributes")
    fs = feature_set(
        str(spec["name"]), rfm, None if attributes is None else [str(a) for a in attributes]
    )
    wanted = spec.get("fingerprint")
    if wanted and fs.fingerprint != wanted:
        raise ValueError(
            f"feature set {fs.key!r}: its definition in this version of Patron differs from the "
            "one recorded (fingerprint mismatch); retrain or rebuild the snapshot"
        )
    return fs


def _lookup(name: str, rfm: RFMPointsConfig) -> FeatureSet:
    sets = _sets(rfm)
    parts = name.split("+")
    unknown = [p for p in parts if p not in sets]
    if unknown:
        raise KeyError(f"unknown feature set {unknown[0]!r}; known: {sorted(sets)}")
    if len(parts) == 1:
        return sets[name]()
    merged: dict[str, Feature] = {}
    for part in parts:
        for f in sets[part]().features:
            if f.name in merged and _definition(merged[f.name]) != _definition(f):
                raise ValueError(f"feature {f.name!r} is defined differently in {part!r}")
            merged.setdefault(f.name, f)
    return FeatureSet(name, tuple(merged.values()), " + ".join(parts))


def catalogue_markdown(names: Sequence[str] = RELEASED_SETS) -> str:
    """The feature catalogue as markdown tables (one per set), rendered from the declarations."""
    out = []
    for name in names:
        fs = feature_set(name)
        out.append(f"### `{fs.name}` ({len(fs.features)} features)\n")
        out.append(f"{fs.description}. Inputs: {', '.join(fs.inputs)}.\n")
        out.append("| feature | family | level | dtype | window | description | SQL |")
        out.append("|---|---|---|---|---|---|---|")
        for f in fs.features:
            window = f"{f.window_days} d" if f.window_days else "all"
            sql = f.sql.replace("|", "\\|")
            out.append(
                f"| `{f.name}` | {f.family or '-'} | {f.level} | {f.dtype} | {window} | "
                f"{f.description} | `{sql}` |"
            )
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- categorical encoding


class UnseenCategoryEncoder(TransformerMixin, BaseEstimator):
    """Ordinal codes for string features; a category unseen in ``fit`` maps to ``other``.

    Categories seen at least ``min_frequency`` times in ``fit`` keep a code (sorted order); missing
    values are the category ``missing``; everything else (unseen, rare, or missing when no missing
    value was seen) gets the code of ``other``, the last one. Output is float64, ready to stack
    with numeric features. Values are compared as strings.
    """

    def __init__(
        self, min_frequency: int = 1, other: str = "__other__", missing: str = "__missing__"
    ) -> None:
        self.min_frequency = min_frequency
        self.other = other
        self.missing = missing

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

    def _strings(self, X: Any, reset: bool) -> pd.DataFrame:
        array = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False)
        frame = pd.DataFrame(np.asarray(array, dtype=object))
        return frame.apply(lambda col: col.where(col.notna(), self.missing).map(str))

    def fit(self, X: Any, y: Any = None) -> UnseenCategoryEncoder:
        """Learn the categories of each column that keep their own code."""
        frame = self._strings(X, reset=True)
        self.categories_ = []
        for j in range(frame.shape[1]):
            counts = frame.iloc[:, j].value_counts()
            kept = sorted(
                str(c) for c in counts.index[counts >= self.min_frequency] if c != self.other
            )
            self.categories_.append(np.asarray([*kept, self.other], dtype=object))
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Codes of each value; unseen values take the ``other`` code."""
        check_is_fitted(self, "categories_")
        frame = self._strings(X, reset=False)
        out = np.empty(frame.shape, dtype=np.float64)
        for j, cats in enumerate(self.categories_):
            codes = pd.Index(cats).get_indexer(frame.iloc[:, j])
            out[:, j] = np.where(codes < 0, len(cats) - 1, codes)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output names equal input names."""
        check_is_fitted(self, "categories_")
        return _check_feature_names_in(self, input_features)


if __name__ == "__main__":  # render the catalogue for docs/features.md
    print(catalogue_markdown())
