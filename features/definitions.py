"""Features declared as data, grouped into versioned feature sets that a model pins.

Time convention (one definition for every engine):
    A cutoff ``as_of`` is a calendar date T. Features see every row dated on or before T (the whole
    day T); labels see dates T+1 .. T+H. ``days_ago`` of a row is the number of calendar-day
    boundaries between its date and T (DuckDB ``date_diff('day', DATE, DATE)``, Spark ``datediff``),
    so a row on T has days_ago 0. A window of N days holds rows with days_ago < N (T-N+1 .. T).

An *order* is one order_id of a customer with at least one non-return line; its date is the date of
its first line and its value the sum of its non-return lines. Returns are the lines flagged is_return
(or with a negative amount).

Each feature is one SQL expression at one level:
    ``orders``   an aggregate over the customer's orders (columns: days_ago, amount),
    ``lines``    an aggregate over the customer's lines (days_ago, amount, is_return, category, ...),
    ``derived``  an expression over other features of the same set.
Released feature sets are never edited: add ``churn_v2`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Level = Literal["orders", "lines", "derived"]


@dataclass(frozen=True)
class Feature:
    """One declared feature: name, SQL at a level, window, dtype and meaning."""

    name: str
    level: Level
    sql: str
    dtype: Literal["double", "integer"] = "double"
    window_days: int | None = None
    description: str = ""


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


def rfm_points_sql(cfg: RFMPointsConfig, recency: str, orders_2y: str, spend_2y: str) -> str:
    """SQL of R + F + M points from the recency, the order count and the spend in the history."""
    bands = " ".join(
        f"WHEN {recency} < {b} THEN {p}"
        for b, p in zip(cfg.recency_bands_days, cfg.recency_points, strict=True)
    )
    r = f"(CASE WHEN {recency} IS NULL THEN 0 {bands} ELSE {cfg.recency_points_older} END)"
    f = f"LEAST({cfg.points_per_order} * {orders_2y}, {cfg.frequency_cap})"
    m = f"LEAST(GREATEST({cfg.monetary_share} * {spend_2y}, 0.0), {cfg.monetary_cap})"
    return f"CAST({r} AS DOUBLE) + {f} + {m}"


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
        Feature("days_since_last_order", "orders", "min(days_ago)", "integer", None,
                "recency: days from the last order to the cutoff"),
        Feature("days_since_first_order", "orders", "max(days_ago)", "integer", None,
                "tenure: days from the first order to the cutoff"),
        Feature("orders_count_total", "orders", "count(*)", "integer", None,
                "frequency: orders up to the cutoff"),
        Feature("spend_sum_total", "orders", "sum(amount)", "double", None,
                "monetary: spend on all orders up to the cutoff"),
        Feature("spend_mean_order", "orders", "avg(amount)", "double", None,
                "monetary: mean order value"),
        *_window_features(30),
        *_window_features(90),
        *_window_features(365),
        Feature(f"orders_count_{h}d", "orders", f"count(*) FILTER (WHERE days_ago < {h})",
                "integer", h, "orders in the RFM history window"),
        Feature(f"spend_sum_{h}d", "orders",
                f"coalesce(sum(amount) FILTER (WHERE days_ago < {h}), 0.0)", "double", h,
                "spend in the RFM history window"),
        Feature("returns_share", "lines",
                "coalesce(-sum(amount) FILTER (WHERE is_return) / "
                "NULLIF(sum(amount) FILTER (WHERE NOT is_return), 0.0), 0.0)",
                "double", None, "returned value / purchased value, up to the cutoff"),
        Feature("categories_distinct", "lines",
                "count(DISTINCT category) FILTER (WHERE NOT is_return)", "integer", None,
                "distinct categories bought up to the cutoff"),
        Feature("rfm_points", "derived",
                rfm_points_sql(rfm, "days_since_last_order", f"orders_count_{h}d", f"spend_sum_{h}d"),
                "double", h, "RFM points score R + F + M (max 60), the literature's scheme"),
    ]


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned list of features."""

    name: str
    features: tuple[Feature, ...]
    description: str = ""

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def describe(self) -> list[dict[str, object]]:
        """The set as data, for MLflow and docs."""
        return [
            {"name": f.name, "level": f.level, "dtype": f.dtype, "window_days": f.window_days,
             "description": f.description}
            for f in self.features
        ]


def feature_set(name: str, rfm: RFMPointsConfig | None = None) -> FeatureSet:
    """Look up a released feature set by name."""
    rfm = rfm or RFMPointsConfig()
    sets = {
        "churn_v1": lambda: FeatureSet(
            "churn_v1", tuple(_core_features(rfm)),
            "RFM, order counts and spend in 30/90/365-day windows, tenure, returns, categories",
        ),
    }
    if name not in sets:
        raise KeyError(f"unknown feature set {name!r}; known: {sorted(sets)}")
    return sets[name]()
