"""Customer segments at a cutoff: RFM points bands and quintile codes, Pareto ABC, the customer
pyramid, lifecycle stages, behavioural clusters, demographic segments (customer attributes as of
the cutoff) and needs segments (category revenue shares up to the cutoff); pure functions,
docs/segments.md. (Over 900 lines on purpose: each scheme is short and they share their inputs,
the k choice and naming.)

Input is the per-customer feature frame at a cutoff ``as_of`` (``features.build.compute_features``
with the ``churn_v1`` set: customer_id, days_since_last_order, days_since_first_order,
orders_count_total, orders_count_365d, spend_sum_total, returns_share, rfm_points, ...). The
lifecycle stage "won back" also needs the gaps between a customer's order days, computed from the
transactions by :func:`order_gaps_sql` under the time convention of ``features.definitions``: only
rows dated on or before ``as_of`` are read and days count calendar-day boundaries.

Revenue is net by default: the order value up to the cutoff minus the returned value
(``spend_sum_total * (1 - returns_share)``), so it can be zero or negative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import pairwise_distances, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from features.definitions import RFMPointsConfig
from features.engine import lines_sql
from features.segment_names import (
    ABC_CLASSES,
    LIFECYCLE_STAGES,
    NOT_YET,
    PYRAMID_LEVELS,
    RFM_SEGMENTS,
)

# --------------------------------------------------------------------------- labels, in order

# RFM_SEGMENTS, ABC_CLASSES, PYRAMID_LEVELS, LIFECYCLE_STAGES, NOT_YET: features.segment_names
NO_LONGER = "no longer a customer"

#: Named segment of each (R score, F score): the common RFM grid (rows R 1..5, columns F 1..5).
_GRID = {
    1: ("Lost", "Hibernating", "At risk", "At risk", "Can't lose them"),
    2: ("Hibernating", "Hibernating", "At risk", "At risk", "Can't lose them"),
    3: ("About to sleep", "About to sleep", "Need attention", "Loyal", "Loyal"),
    4: ("Promising", "Potential loyalist", "Potential loyalist", "Loyal", "Loyal"),
    5: ("New", "Potential loyalist", "Potential loyalist", "Champions", "Champions"),
}
RFM_SEGMENT_GRID: dict[tuple[int, int], str] = {
    (r, f): name for r, row in _GRID.items() for f, name in enumerate(row, start=1)
}

#: The stages of the customer journey (``features.journey``), in journey order: two before the
#: first purchase, then the lifecycle's stages with "new"/"active" split by the orders so far.
JOURNEY_STAGES = (
    "visitor",
    "registered",
    "first purchase",
    "repeat",
    "loyal",
    "won back",
    "lapsing",
    "lapsed",
)

#: Scheme column -> its labels in display order (clusters are numbered, so have none).
SCHEMES: dict[str, tuple[str, ...] | None] = {
    "rfm_band": None,  # labels come from the config
    "rfm_segment": RFM_SEGMENTS,
    "abc_class": ABC_CLASSES,
    "pyramid_level": PYRAMID_LEVELS,
    "lifecycle_stage": LIFECYCLE_STAGES,
    "journey_stage": JOURNEY_STAGES,  # buyers and prospects (features.journey)
    "cluster": None,
    "demographic_segment": None,  # numbered; names in "<scheme>_name"
    "needs_segment": None,
}
#: Schemes that carry a readable name per segment in a "<scheme>_name" column.
NAMED_SCHEMES = ("demographic_segment", "needs_segment")
#: Customers table columns that are never attributes (keys, history, household fields, PII).
NOT_ATTRIBUTES = frozenset(
    {
        "customer_id",
        "valid_from",
        "valid_to",
        "updated_at",
        "__version",
        "first_name",
        "last_name",
        "name",
        "email",
        "phone",
        "address",
        "postcode",
    }
)

_EPS = 1e-12  # cumulative shares are compared with this slack so that 0.8 - 1e-17 is not "< 0.8"


# --------------------------------------------------------------------------- configuration


class LifecycleConfig(BaseModel):
    """Thresholds of the lifecycle stages (days count calendar-day boundaries to the cutoff)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    new_days: int = Field(90, ge=1, description="new: first order fewer than this many days ago")
    lapsing_days: int = Field(90, ge=1, description="lapsing: no order for more than this")
    lapsed_days: int = Field(180, ge=1, description="lapsed: no order for more than this")
    won_back_days: int = Field(
        90,
        ge=1,
        description="won back: an order fewer than this many days ago that ended a gap between "
        "order days longer than lapsed_days",
    )
    loyal_min_orders: int = Field(4, ge=1, description="loyal: at least this many orders ...")
    loyal_orders_column: str = Field(
        "orders_count_365d", description="... counted in this feature (the last year)"
    )
    lapsed_within_days: int = Field(
        7,
        ge=1,
        description="lapsed_recently: days_since_last_order in "
        "(lapsed_days, lapsed_days + lapsed_within_days]",
    )

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleConfig:
        if self.lapsing_days >= self.lapsed_days:
            raise ValueError("lapsing_days must be smaller than lapsed_days")
        return self


class KChoiceConfig(BaseModel):
    """How k is chosen: k in k_min..k_max by silhouette on a seeded sample (max; ties: lower k)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    k_min: int = Field(2, ge=2)
    k_max: int = Field(8, ge=2)
    sample_size: int = Field(3000, ge=10, description="rows the silhouette is computed on")
    n_init: int = Field(4, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _range(self) -> KChoiceConfig:
        if self.k_min > self.k_max:
            raise ValueError("k_min must not exceed k_max")
        return self


class ClusterConfig(KChoiceConfig):
    """Behavioural clusters: KMeans on log1p-scaled features, k chosen by silhouette."""

    features: tuple[str, ...] = (
        "days_since_last_order",
        "days_since_first_order",
        "orders_count_total",
        "spend_sum_total",
        "spend_mean_order",
        "returns_share",
    )


#: Attributes the demographic segments use when none are configured (those that exist).
DEFAULT_ATTRIBUTES = ("age_band", "region")


class DemographicConfig(KChoiceConfig):
    """Demographic segments: KMeans over customer attributes as of the cutoff (categoricals
    one-hot, scaled so that a mismatch weighs like one standard deviation of a numeric)."""

    attributes: tuple[str, ...] | None = Field(
        None,
        description="customers columns to cluster on; None: those of DEFAULT_ATTRIBUTES present "
        "(the scheme is skipped when there are none); a named column that does not exist is an "
        "error",
    )
    max_levels: int = Field(
        12, ge=2, description="most frequent values kept per categorical; the rest is 'other'"
    )


class NeedsConfig(KChoiceConfig):
    """Needs segments: KMeans on the square roots of each customer's category revenue shares
    (Euclidean there is the Hellinger distance between the share vectors)."""

    max_categories: int = Field(
        20, ge=2, description="categories with the most revenue kept; the rest is 'other'"
    )
    name_min_share: float = Field(
        0.25, gt=0.0, le=1.0, description="a category names a segment from this mean share"
    )
    name_max_categories: int = Field(3, ge=1, description="at most this many names per segment")


class SegmentsConfig(BaseModel):
    """Every segmentation parameter; one object per segmentation job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rfm: RFMPointsConfig = Field(
        RFMPointsConfig(), description="RFM points scheme used to compute features"
    )
    rfm_band_edges: tuple[float, ...] = Field(
        (20.0, 40.0), description="RFM points band edges; bands are [lo, hi), the last closed"
    )
    rfm_band_labels: tuple[str, ...] = ("low", "medium", "high")
    recency_column: str = "days_since_last_order"
    frequency_column: str = "orders_count_total"
    monetary_column: str = "spend_sum_total"
    revenue: Literal["net", "gross"] = Field(
        "net", description="net: order value minus returns; gross: order value"
    )
    abc_cumulative_shares: tuple[float, float] = Field(
        (0.80, 0.95), description="revenue share reached at the end of A and of B"
    )
    pyramid_cumulative_shares: tuple[float, float, float] = Field(
        (0.01, 0.05, 0.20), description="customer share reached at the end of top, big, medium"
    )
    lifecycle: LifecycleConfig = LifecycleConfig()  # frozen: a shared default is safe
    clusters: ClusterConfig = ClusterConfig()
    demographics: DemographicConfig = DemographicConfig()
    needs: NeedsConfig = NeedsConfig()
    journey: bool = Field(
        True,
        description="journey stages (features.journey) over the buyers and the prospects, when "
        "the dataset has an events table",
    )

    @model_validator(mode="after")
    def _check(self) -> SegmentsConfig:
        if len(self.rfm_band_labels) != len(self.rfm_band_edges) + 1:
            raise ValueError("rfm_band_labels needs one label more than rfm_band_edges")
        for name in ("rfm_band_edges", "abc_cumulative_shares", "pyramid_cumulative_shares"):
            values = getattr(self, name)
            if any(b <= a for a, b in zip(values, values[1:], strict=False)):
                raise ValueError(f"{name} must be strictly increasing")
        for name in ("abc_cumulative_shares", "pyramid_cumulative_shares"):
            if not all(0.0 < v < 1.0 for v in getattr(self, name)):
                raise ValueError(f"{name} must lie in (0, 1)")
        return self


# --------------------------------------------------------------------------- revenue, RFM


def customer_revenue(features: pd.DataFrame, revenue: Literal["net", "gross"] = "net") -> pd.Series:
    """Revenue per customer: order value up to the cutoff, minus returns when ``net``."""
    gross = features["spend_sum_total"].astype(float).fillna(0.0)
    if revenue == "gross":
        return gross.rename("revenue")
    if "returns_share" not in features.columns:
        raise KeyError("revenue='net' needs the returns_share feature; use revenue='gross'")
    returned = gross * features["returns_share"].astype(float).fillna(0.0)
    return (gross - returned).rename("revenue")


def rfm_bands(points: pd.Series, edges: Sequence[float], labels: Sequence[str]) -> pd.Series:
    """Band of each RFM points score: [lo, hi) bands at ``edges``; NaN points go to the lowest."""
    codes = np.searchsorted(np.asarray(edges, dtype=float), points.fillna(-np.inf), side="right")
    return pd.Series(np.asarray(labels, dtype=object)[codes], index=points.index, name="rfm_band")


def quintile_scores(values: pd.Series, higher_is_better: bool = True, n: int = 5) -> pd.Series:
    """Score 1..n by quantile of mid-ranks: equal values share a score, so row order cannot matter.

    A value's mid-rank r (average rank of its ties, 1..N) gives ``floor(n * (r - 0.5) / N) + 1``;
    without ties that is exact quintiles, with ties the block takes the score of its middle.
    Missing values get score 1.
    """
    if len(values) == 0:
        return pd.Series([], index=values.index, dtype="int8")
    v = values.astype(float) if higher_is_better else -values.astype(float)
    ranks = v.rank(method="average", na_option="top")
    scaled = n * (ranks - 0.5) / len(v)
    floored = pd.Series(np.floor(scaled.to_numpy()), index=scaled.index, name=scaled.name)
    return (floored.clip(0, n - 1) + 1).astype("int8")


def rfm_segment_name(r: int, f: int) -> str:
    """Named segment of an (R score, F score) pair (RFM_SEGMENT_GRID)."""
    return RFM_SEGMENT_GRID[(int(r), int(f))]


def rfm_quintiles(
    features: pd.DataFrame,
    recency: str = "days_since_last_order",
    frequency: str = "orders_count_total",
    monetary: str = "spend_sum_total",
) -> pd.DataFrame:
    """R, F, M quintile scores (5 = most recent / frequent / spending), the code "545", the name."""
    r = quintile_scores(features[recency], higher_is_better=False)
    f = quintile_scores(features[frequency])
    m = quintile_scores(features[monetary])
    code = r.astype(str) + f.astype(str) + m.astype(str)
    name = [RFM_SEGMENT_GRID[(int(a), int(b))] for a, b in zip(r, f, strict=True)]
    return pd.DataFrame(
        {
            "r_score": r,
            "f_score": f,
            "m_score": m,
            "rfm_code": code,
            "rfm_segment": pd.Series(name, index=features.index, dtype=object),
        },
        index=features.index,
    )


# --------------------------------------------------------------------------- Pareto ABC, pyramid


def _value_order(revenue: pd.Series, customer_id: pd.Series) -> np.ndarray:
    """Positions sorted by revenue descending, ties by customer id (a stable, documented order)."""
    frame = pd.DataFrame({"revenue": revenue.to_numpy(), "cid": customer_id.astype(str).to_numpy()})
    ranked = frame.sort_values(["revenue", "cid"], ascending=[False, True], kind="mergesort")
    return ranked.index.to_numpy()


def abc_classes(
    revenue: pd.Series, customer_id: pd.Series, cumulative_shares: tuple[float, float] = (0.8, 0.95)
) -> pd.Series:
    """Pareto ABC: A until 80 % of revenue is reached (the crossing customer included), B to 95 %.

    Customers are ranked by revenue (ties by customer id); a customer's class is set by the share of
    the positive revenue total held by the customers ranked before it: < 80 % -> A, < 95 % -> B,
    else C. Customers with zero or negative revenue are C.
    """
    a, b = cumulative_shares
    out = np.full(len(revenue), "C", dtype=object)
    pos = revenue.clip(lower=0.0).fillna(0.0).to_numpy(dtype=float)
    total = pos.sum()
    if total > 0:
        order = _value_order(revenue, customer_id)
        sorted_pos = pos[order]
        before = (np.cumsum(sorted_pos) - sorted_pos) / total
        cls = np.where(before < a - _EPS, "A", np.where(before < b - _EPS, "B", "C"))
        cls = np.where(sorted_pos > 0, cls, "C")
        out[order] = cls
    return pd.Series(out, index=revenue.index, name="abc_class")


def customer_pyramid(
    revenue: pd.Series,
    customer_id: pd.Series,
    cumulative_shares: tuple[float, float, float] = (0.01, 0.05, 0.20),
) -> pd.Series:
    """Customer pyramid by revenue rank: top 1 %, big next 4 %, medium next 15 %, small the rest.

    The customer at rank i (0-based, by revenue, ties by id) of N is top when i / N < 1 %, and so
    on; the first customer is always top. Customers with zero or negative revenue are small.
    """
    n = len(revenue)
    out = np.full(n, "small", dtype=object)
    if n:
        order = _value_order(revenue, customer_id)
        before = np.arange(n) / n
        t, bg, m = cumulative_shares
        lvl = np.select(
            [before < t - _EPS, before < bg - _EPS, before < m - _EPS],
            ["top", "big", "medium"],
            "small",
        )
        out[order] = lvl
        out[(revenue.fillna(0.0) <= 0).to_numpy()] = "small"
    return pd.Series(out, index=revenue.index, name="pyramid_level")


def pareto_curve(segments: pd.DataFrame, max_points: int = 500) -> pd.DataFrame:
    """Cumulative share of positive revenue against the share of customers ranked by revenue."""
    rev = segments["revenue"].clip(lower=0.0).fillna(0.0).to_numpy(dtype=float)
    n = len(rev)
    if n == 0 or rev.sum() <= 0:
        return pd.DataFrame({"customer_share": [0.0, 1.0], "revenue_share": [0.0, 0.0]})
    order = _value_order(segments["revenue"], segments["customer_id"])
    cum = np.concatenate([[0.0], np.cumsum(rev[order]) / rev.sum()])
    share = np.arange(n + 1) / n
    keep = np.unique(np.linspace(0, n, min(max_points, n + 1)).round().astype(int))
    return pd.DataFrame({"customer_share": share[keep], "revenue_share": cum[keep]})


# --------------------------------------------------------------------------- lifecycle


def order_gaps_sql(source: str, as_of: date, lapsed_days: int) -> str:
    """SQL of each customer's gaps between order days, from rows dated on or before ``as_of``.

    Orders are as in ``features.definitions`` (an order_id with a non-return line, dated by its
    first line); gaps are counted between distinct order days (two orders on one day are one day).
    Columns: last_gap_days (before the latest order day; NULL with one order day),
    longest_gap_days, days_since_won_back (days_ago of the latest order day that ended a gap
    longer than ``lapsed_days``; NULL when none).
    """
    return f"""
WITH lines AS ({lines_sql(source, as_of)}
),
orders AS (
    SELECT customer_id, order_id, max(days_ago) AS days_ago
    FROM lines WHERE NOT is_return
    GROUP BY customer_id, order_id
),
order_days AS (
    SELECT DISTINCT customer_id, days_ago FROM orders
),
gaps AS (
    SELECT customer_id, days_ago,
           lag(days_ago) OVER (PARTITION BY customer_id ORDER BY days_ago DESC) - days_ago
               AS gap_days,
           row_number() OVER (PARTITION BY customer_id ORDER BY days_ago) AS recent_rank
    FROM order_days
)
SELECT customer_id,
       CAST(max(gap_days) FILTER (WHERE recent_rank = 1) AS BIGINT) AS last_gap_days,
       CAST(max(gap_days) AS BIGINT) AS longest_gap_days,
       CAST(min(days_ago) FILTER (WHERE gap_days > {int(lapsed_days)}) AS BIGINT)
           AS days_since_won_back
FROM gaps
GROUP BY customer_id
ORDER BY customer_id"""


def _run_on_transactions(
    transactions: pd.DataFrame | str,
    sql: Callable[[str], str],
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Run ``sql(relation)`` on canonical transactions (a DataFrame, registered for the query, or
    a DuckDB relation)."""
    own = con is None
    con = con or duckdb.connect()
    registered = isinstance(transactions, pd.DataFrame)
    try:
        if isinstance(transactions, pd.DataFrame):
            frame = transactions
            if "is_return" not in frame.columns:
                frame = frame.assign(is_return=False)
            for col in ("category", "product_id", "quantity"):
                if col not in frame.columns:
                    frame = frame.assign(**{col: None})
            con.register("__segments_transactions", frame)
            source = "__segments_transactions"
        else:
            source = str(transactions)
        return con.execute(sql(source)).df()
    finally:
        if registered:
            con.unregister("__segments_transactions")
        if own:
            con.close()


def order_gaps(
    transactions: pd.DataFrame | str,
    as_of: date,
    lapsed_days: int,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Run :func:`order_gaps_sql` on canonical transactions (a DataFrame or a DuckDB relation)."""
    return _run_on_transactions(
        transactions, lambda src: order_gaps_sql(src, as_of, lapsed_days), con
    )


def lifecycle_stages(
    features: pd.DataFrame,
    cfg: LifecycleConfig | None = None,
    days_since_won_back: pd.Series | None = None,
) -> pd.DataFrame:
    """Lifecycle stage at the cutoff and the "lapsed in the last 7 days" flag, per customer.

    First match wins: lapsed (no order for > lapsed_days), lapsing (> lapsing_days), new (first
    order < new_days ago), won back (an order < won_back_days ago ended a gap > lapsed_days),
    loyal (>= loyal_min_orders orders in the last year), else active. Without
    ``days_since_won_back`` (aligned with ``features``) nobody is won back.
    """
    cfg = cfg or LifecycleConfig()
    d = features["days_since_last_order"].to_numpy(dtype=float)
    t = features["days_since_first_order"].to_numpy(dtype=float)
    n = features[cfg.loyal_orders_column].fillna(0).to_numpy(dtype=float)
    if days_since_won_back is None:
        won = np.zeros(len(features), dtype=bool)
    else:
        w = pd.Series(days_since_won_back).to_numpy(dtype=float, na_value=np.nan)
        won = np.nan_to_num(w, nan=np.inf) < cfg.won_back_days
    stage = np.select(
        [
            d > cfg.lapsed_days,
            d > cfg.lapsing_days,
            t < cfg.new_days,
            won,
            n >= cfg.loyal_min_orders,
        ],
        ["lapsed", "lapsing", "new", "won back", "loyal"],
        "active",
    ).astype(object)
    flag = (d > cfg.lapsed_days) & (d <= cfg.lapsed_days + cfg.lapsed_within_days)
    return pd.DataFrame({"lifecycle_stage": stage, "lapsed_recently": flag}, index=features.index)


def _stages(frame: pd.DataFrame | pd.Series) -> pd.Series:
    if isinstance(frame, pd.Series):
        return frame.astype(object)
    return frame.set_index("customer_id")["lifecycle_stage"].astype(object)


def lifecycle_flow(
    stages_t0: pd.DataFrame | pd.Series, stages_t1: pd.DataFrame | pd.Series
) -> pd.DataFrame:
    """Customers moving between lifecycle stages from one cutoff to the next.

    Each argument is a segments frame (customer_id, lifecycle_stage) or a Series of stages indexed
    by customer id. Rows: stage at t0 (first row "not yet a customer": customers first seen at t1);
    columns: stage at t1 (plus "no longer a customer" when someone of t0 is absent at t1). The
    cells sum to the number of distinct customers at either cutoff.
    """
    s0, s1 = _stages(stages_t0), _stages(stages_t1)
    ids = s0.index.union(s1.index)
    frm = s0.reindex(ids).fillna(NOT_YET)
    to = s1.reindex(ids).fillna(NO_LONGER)
    rows = [NOT_YET, *LIFECYCLE_STAGES]
    cols = [*LIFECYCLE_STAGES, *([NO_LONGER] if (to == NO_LONGER).any() else [])]
    counts = pd.crosstab(
        pd.Categorical(frm, categories=rows), pd.Categorical(to, categories=cols), dropna=False
    )
    counts = counts.reindex(index=rows, columns=cols, fill_value=0).astype("int64")
    counts.index.name, counts.columns.name = "from", "to"
    return counts


# --------------------------------------------------------------------------- clusters


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    """log1p that keeps the sign (equal to log1p on non-negative values)."""
    return np.sign(x) * np.log1p(np.abs(x))


def _behaviour_steps() -> list[tuple[str, Any]]:
    """Impute (median), log1p, standardise: the behavioural clusters' preprocessing."""
    return [
        ("impute", SimpleImputer(strategy="median")),
        ("log1p", FunctionTransformer(_signed_log1p, feature_names_out="one-to-one")),
        ("scale", StandardScaler()),
    ]


def cluster_pipeline(k: int, seed: int, n_init: int = 4) -> Pipeline:
    """Impute (median), log1p, standardise, KMeans(k)."""
    return Pipeline(
        [*_behaviour_steps(), ("kmeans", KMeans(n_clusters=k, n_init=n_init, random_state=seed))]
    )


BEHAVIOUR_CRITERION = (
    "silhouette (euclidean, scaled features) on a seeded sample; max, ties -> lower k"
)
DEMOGRAPHIC_CRITERION = (
    "silhouette over distinct profiles weighted by customers (euclidean on one-hot "
    "categoricals / sqrt 2 and standardised numerics: squared distance = mismatched attributes "
    "+ squared z-differences) on a seeded sample; max, ties -> lower k"
)
NEEDS_CRITERION = (
    "silhouette over distinct profiles weighted by customers (euclidean on sqrt category "
    "shares = sqrt 2 x Hellinger distance) on a seeded sample; max, ties -> lower k"
)


def distinct_silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    """The silhouette of the distinct rows of ``X``, each weighted by how often it occurs.

    A row's a is the weighted mean distance to the *other* profiles of its cluster, b the least
    weighted mean distance to another cluster; a cluster of one profile scores 0, as a singleton
    does in the ordinary silhouette. Without duplicate rows this is the ordinary silhouette. With
    attributes, many customers share a profile and the ordinary silhouette rises towards 1 as k
    approaches the number of profiles (a cluster of identical customers has a = 0), so it would
    always pick k_max; collapsing identical customers removes that.
    """
    uniq, first, counts = np.unique(X, axis=0, return_index=True, return_counts=True)
    lab = np.asarray(labels)[first]  # KMeans gives identical rows one label
    clusters = np.unique(lab)
    if len(clusters) < 2:
        return 0.0
    member = (lab[None, :] == clusters[:, None]) * counts[None, :]  # cluster x profile weights
    sums = pairwise_distances(uniq) @ member.T  # profile x cluster: weighted distance sums
    sizes = member.sum(axis=1)
    own = np.searchsorted(clusters, lab)
    rows = np.arange(len(uniq))
    others = sizes[own] - counts  # customers of the own cluster with another profile
    a = sums[rows, own] / np.maximum(others, 1)
    mean_to = sums / sizes[None, :]
    mean_to[rows, own] = np.inf
    b = mean_to.min(axis=1)
    s = np.where(others > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float((s * counts).sum() / counts.sum())


@dataclass
class ClusterResult:
    """Cluster labels (0 = largest cluster), the chosen k and the silhouette of every k tried."""

    labels: np.ndarray
    k: int
    silhouette: dict[int, float]
    features: list[str]
    pipeline: Pipeline | None = None
    criterion: str = BEHAVIOUR_CRITERION
    sample_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no pipeline)."""
        return {
            "k": self.k,
            "criterion": self.criterion,
            "sample_size": self.sample_size,
            "silhouette": {str(k): v for k, v in self.silhouette.items()},
            "features": self.features,
            **self.extra,
        }


def choose_k_and_cluster(
    X: pd.DataFrame | np.ndarray,
    preprocess: Callable[[], list[tuple[str, Any]]],
    cfg: KChoiceConfig,
    features: list[str],
    criterion: str = BEHAVIOUR_CRITERION,
    score: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> ClusterResult:
    """KMeans after ``preprocess`` (a factory of Pipeline steps): k in k_min..k_max chosen by
    ``score`` (default: the silhouette, euclidean, on the preprocessed rows) of a seeded sample,
    maximum wins, ties to the lower k; then the whole pipeline with that k fitted on every row,
    labels renumbered by cluster size (0 = largest). Runs with one thread (see
    :func:`cluster_customers`)."""
    with threadpool_limits(limits=1):
        return _choose_k_and_cluster(X, preprocess, cfg, features, criterion, score or _silhouette)


def _silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    return float(silhouette_score(X, labels))


def _choose_k_and_cluster(
    X: pd.DataFrame | np.ndarray,
    preprocess: Callable[[], list[tuple[str, Any]]],
    cfg: KChoiceConfig,
    features: list[str],
    criterion: str,
    score: Callable[[np.ndarray, np.ndarray], float],
) -> ClusterResult:
    n = len(X)
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(rng.choice(n, size=min(cfg.sample_size, n), replace=False)) if n else np.arange(0)
    scores: dict[int, float] = {}
    if n and features:
        sample = X.iloc[idx] if isinstance(X, pd.DataFrame) else X[idx]
        scaled = np.asarray(Pipeline(preprocess()).fit_transform(sample), dtype=float)
        n_unique = len(np.unique(scaled, axis=0))
        for k in range(cfg.k_min, cfg.k_max + 1):
            if k >= n_unique:  # silhouette needs 2 <= k <= n - 1 distinct points
                break
            km = KMeans(n_clusters=k, n_init=cfg.n_init, random_state=cfg.seed).fit(scaled)
            scores[k] = score(scaled, km.labels_)
    if not scores:
        return ClusterResult(np.zeros(n, dtype="int64"), 1, {}, features, None, criterion, len(idx))
    best = max(scores, key=lambda k: (scores[k], -k))
    kmeans = KMeans(n_clusters=best, n_init=cfg.n_init, random_state=cfg.seed)
    pipe = Pipeline([*preprocess(), ("kmeans", kmeans)]).fit(X)
    return ClusterResult(
        _by_size(pipe[-1].labels_, best), best, scores, features, pipe, criterion, len(idx)
    )


def _by_size(raw: np.ndarray, k: int) -> np.ndarray:
    """Labels renumbered by cluster size (0 = largest; ties keep their order)."""
    sizes = np.bincount(raw, minlength=k)
    rank = np.argsort(-sizes, kind="stable")  # old label of the i-th largest cluster
    relabel = np.empty(k, dtype="int64")
    relabel[rank] = np.arange(k)
    return relabel[raw]


def cluster_customers(features: pd.DataFrame, cfg: ClusterConfig | None = None) -> ClusterResult:
    """Behavioural clusters: k in k_min..k_max chosen by silhouette on a seeded sample, then KMeans
    with that k fitted on every customer; labels renumbered by cluster size (0 = largest)."""
    # one thread: on a busy 2-core machine KMeans on 3 000 x 6 took 0.8 s with 2 OpenMP threads
    # and 0.05 s with one (thread spin-waiting); these problems are too small to gain from more
    cfg = cfg or ClusterConfig()
    cols = [c for c in cfg.features if c in features.columns]
    X = features[cols].astype(float).to_numpy()
    if cols and len(features):
        keep = [j for j in range(len(cols)) if np.nanstd(X[:, j]) > 0]
        cols = [cols[j] for j in keep]
        X = X[:, keep]
    return choose_k_and_cluster(X, _behaviour_steps, cfg, cols)


# --------------------------------------------------------------------------- demographic segments

MISSING = "(missing)"
OTHER = "other"


def resolve_attributes(columns: Sequence[str], cfg: DemographicConfig) -> tuple[list[str], str]:
    """The attributes to cluster on, or none and the reason. A configured attribute that is not
    a column is a ValueError naming the config key."""
    available = [c for c in columns if c not in NOT_ATTRIBUTES]
    if cfg.attributes is None:
        present = [a for a in DEFAULT_ATTRIBUTES if a in columns]
        if not present:
            return [], (
                f"the customers table has none of the default attributes "
                f"({', '.join(DEFAULT_ATTRIBUTES)}); set segments.demographics.attributes "
                f"(available: {', '.join(available) or 'none'})"
            )
        return present, ""
    for a in cfg.attributes:
        if a not in columns or a in NOT_ATTRIBUTES:
            raise ValueError(
                f"segments.demographics.attributes: {a!r} is not a customers column; "
                f"available: {', '.join(available) or 'none'}"
            )
    return list(dict.fromkeys(cfg.attributes)), ""


def attribute_frame(
    attributes: pd.DataFrame, columns: Sequence[str], max_levels: int
) -> pd.DataFrame:
    """Attributes ready to encode: numerics as float; other columns as strings, missing values a
    level of their own, values beyond the ``max_levels`` most frequent lumped into "other"."""
    out: dict[str, pd.Series] = {}
    for col in columns:
        values = attributes[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out[col] = values.astype(float)
            continue
        text = values.astype(object).where(values.notna(), MISSING).astype(str)
        counts = text.value_counts()
        keep = set(sorted(counts.index, key=lambda v: (-counts[v], v))[:max_levels])
        out[col] = text.where(text.isin(keep), OTHER)
    return pd.DataFrame(out, index=attributes.index)


def _scale_one_hot(x: Any) -> Any:
    # two one-hot rows that differ in one attribute are sqrt(2) apart; divided by sqrt(2) a
    # mismatch adds 1 to the squared distance, as a one-standard-deviation numeric gap does
    return x / np.sqrt(2.0)


def demographic_steps(frame: pd.DataFrame) -> Callable[[], list[tuple[str, Any]]]:
    """Preprocessing of an :func:`attribute_frame`: one-hot / sqrt 2 for categoricals, median
    imputation and standardisation for numerics."""
    numeric = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    categorical = [c for c in frame.columns if c not in numeric]

    def steps() -> list[tuple[str, Any]]:
        parts: list[tuple[str, Any, list[str]]] = []
        if categorical:
            one_hot = Pipeline(
                [
                    ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ("matching", FunctionTransformer(_scale_one_hot)),
                ]
            )
            parts.append(("categorical", one_hot, categorical))
        if numeric:
            scale = Pipeline(
                [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
            )
            parts.append(("numeric", scale, numeric))
        return [("encode", ColumnTransformer(parts))]

    return steps


def demographic_segments(
    attributes: pd.DataFrame, cfg: DemographicConfig | None = None
) -> tuple[ClusterResult, pd.DataFrame]:
    """Demographic segments of the rows of ``attributes`` (customer attributes as of the cutoff,
    columns as resolved by :func:`resolve_attributes`): the cluster result and the encoded-ready
    attribute frame. Constant attributes are dropped."""
    cfg = cfg or DemographicConfig()
    frame = attribute_frame(attributes, list(attributes.columns), cfg.max_levels)
    varying = [c for c in frame.columns if frame[c].nunique(dropna=True) > 1]
    frame = frame[varying]
    result = choose_k_and_cluster(
        frame, demographic_steps(frame), cfg, varying, DEMOGRAPHIC_CRITERION, distinct_silhouette
    )
    return result, frame


def demographic_profile(frame: pd.DataFrame, labels: np.ndarray) -> dict[int, dict[str, Any]]:
    """Per segment: the modal value of each categorical (and its share in the segment), the mean
    of each numeric, and every value's share in the segment."""
    out: dict[int, dict[str, Any]] = {}
    for seg in sorted(set(labels.tolist())):
        part = frame[labels == seg]
        modal: dict[str, Any] = {}
        modal_share: dict[str, float] = {}
        shares: dict[str, float] = {}
        for col in frame.columns:
            if pd.api.types.is_float_dtype(frame[col]):
                modal[col] = round(float(part[col].mean()), 3)
                continue
            counts = part[col].value_counts(normalize=True)
            order = sorted(counts.index, key=lambda v: (-counts[v], v))
            modal[col], modal_share[col] = order[0], float(counts[order[0]])
            shares.update({f"{col} = {v}": float(counts[v]) for v in order})
        out[int(seg)] = {"modal": modal, "modal_share": modal_share, "value_shares": shares}
    return out


def demographic_name(profile: dict[str, Any]) -> str:
    """A segment's name: its modal values (numerics: the mean), joined by " · "."""
    return " · ".join(
        str(v) if isinstance(v, str) else f"{a} {v:g}" for a, v in profile["modal"].items()
    )


# --------------------------------------------------------------------------- needs segments


def category_spend_sql(source: str, as_of: date) -> str:
    """SQL of each customer's spend per category from rows dated on or before ``as_of``:
    non-return lines with a category and a positive amount (customer_id, category, amount)."""
    return f"""
WITH lines AS ({lines_sql(source, as_of)}
)
SELECT customer_id, CAST(category AS VARCHAR) AS category, sum(amount) AS amount
FROM lines
WHERE NOT is_return AND category IS NOT NULL AND amount > 0
GROUP BY customer_id, category
ORDER BY customer_id, category"""


def category_spend(
    transactions: pd.DataFrame | str,
    as_of: date,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Run :func:`category_spend_sql` on canonical transactions (a DataFrame or a relation)."""
    return _run_on_transactions(transactions, lambda src: category_spend_sql(src, as_of), con)


def category_shares(spend: pd.DataFrame, max_categories: int = 20) -> pd.DataFrame:
    """Each customer's share of category spend (rows sum to 1; index customer_id), over the
    ``max_categories`` categories with the most spend and "other" for the rest; customers with
    no category spend are absent."""
    spend = spend[spend["amount"] > 0]
    if spend.empty:
        return pd.DataFrame(index=pd.Index([], name="customer_id"))
    totals = spend.groupby("category")["amount"].sum()
    ranked = sorted(totals.index, key=lambda c: (-totals[c], str(c)))
    kept = set(ranked[:max_categories])
    category = spend["category"].where(spend["category"].isin(kept), OTHER)
    wide = (
        spend.assign(category=category)
        .pivot_table(index="customer_id", columns="category", values="amount", aggfunc="sum")
        .fillna(0.0)
    )
    columns = [c for c in ranked if c in kept] + ([OTHER] if OTHER in wide.columns else [])
    wide = wide.reindex(columns=columns, fill_value=0.0)
    wide.columns.name = None
    return wide.div(wide.sum(axis=1), axis=0)


def _hellinger_steps() -> list[tuple[str, Any]]:
    return [("sqrt", FunctionTransformer(np.sqrt, feature_names_out="one-to-one"))]


def needs_segments(shares: pd.DataFrame, cfg: NeedsConfig | None = None) -> ClusterResult:
    """Needs segments: KMeans on the square roots of the category shares (Euclidean distance
    there is sqrt 2 x the Hellinger distance), k by silhouette on a seeded sample."""
    cfg = cfg or NeedsConfig()
    cols = [str(c) for c in shares.columns]
    X = shares.to_numpy(dtype=float)
    return choose_k_and_cluster(
        X, _hellinger_steps, cfg, cols, NEEDS_CRITERION, distinct_silhouette
    )


def needs_name(mean_shares: pd.Series, cfg: NeedsConfig | None = None) -> str:
    """A needs segment's name: its categories with a mean share of at least ``name_min_share``
    (largest first, at most ``name_max_categories``) joined by " + "; "mixed" when none."""
    cfg = cfg or NeedsConfig()
    ranked = mean_shares.sort_values(ascending=False, kind="mergesort")
    names = [str(c) for c, v in ranked.items() if v >= cfg.name_min_share]
    return " + ".join(names[: cfg.name_max_categories]) or "mixed"


# --------------------------------------------------------------------------- all together

SEGMENT_COLUMNS = [
    "customer_id",
    "revenue",
    "days_since_last_order",
    "days_since_first_order",
    "orders_count_total",
    "rfm_points",
    "rfm_band",
    "r_score",
    "f_score",
    "m_score",
    "rfm_code",
    "rfm_segment",
    "abc_class",
    "pyramid_level",
    "lifecycle_stage",
    "lapsed_recently",
    "last_gap_days",
    "longest_gap_days",
    "days_since_won_back",
    "cluster",
    "demographic_segment",
    "demographic_segment_name",
    "needs_segment",
    "needs_segment_name",
]


def segment_customers(
    features: pd.DataFrame,
    transactions_relation: pd.DataFrame | str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    cfg: SegmentsConfig | None = None,
    *,
    as_of: date | None = None,
    customers: pd.DataFrame | None = None,
    category_spend: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every segment scheme per customer (SEGMENT_COLUMNS); facts of the clusters, demographic
    and needs segments in attrs["clusters"], attrs["demographics"], attrs["needs"].

    With ``transactions_relation`` (and ``as_of``, the cutoff the features were computed at) the
    order-day gaps are computed for "won back"; without it, gap columns already in ``features`` are
    used, and when there are none nobody is "won back". ``customers`` (one row per customer: the
    attributes as of the cutoff) gives the demographic segments, ``category_spend``
    (:func:`category_spend` up to the cutoff) the needs segments; without them, or when they hold
    nothing to cluster, the scheme is skipped with the reason in attrs (its columns are NA).
    """
    cfg = cfg or SegmentsConfig()
    feats = features.reset_index(drop=True)
    gap_cols = ["last_gap_days", "longest_gap_days", "days_since_won_back"]
    if transactions_relation is not None:
        if as_of is None:
            raise ValueError("as_of is needed to compute order gaps from transactions")
        gaps = order_gaps(transactions_relation, as_of, cfg.lifecycle.lapsed_days, con)
        feats = feats.drop(columns=[c for c in gap_cols if c in feats.columns])
        feats = feats.merge(gaps, on="customer_id", how="left", validate="one_to_one")
    for col in gap_cols:
        if col not in feats.columns:
            feats[col] = pd.Series(pd.NA, index=feats.index, dtype="Int64")
    revenue = customer_revenue(feats, cfg.revenue)
    out = pd.DataFrame(
        {
            "customer_id": feats["customer_id"],
            "revenue": revenue,
            "days_since_last_order": feats["days_since_last_order"],
            "days_since_first_order": feats["days_since_first_order"],
            "orders_count_total": feats["orders_count_total"],
            "rfm_points": feats["rfm_points"].astype(float),
        }
    )
    out["rfm_band"] = rfm_bands(out["rfm_points"], cfg.rfm_band_edges, cfg.rfm_band_labels)
    out = out.join(
        rfm_quintiles(feats, cfg.recency_column, cfg.frequency_column, cfg.monetary_column)
    )
    out["abc_class"] = abc_classes(revenue, feats["customer_id"], cfg.abc_cumulative_shares)
    out["pyramid_level"] = customer_pyramid(
        revenue, feats["customer_id"], cfg.pyramid_cumulative_shares
    )
    out = out.join(lifecycle_stages(feats, cfg.lifecycle, feats["days_since_won_back"]))
    for col in gap_cols:
        out[col] = feats[col].astype("Int64")
    if cfg.clusters.enabled:
        result = cluster_customers(feats, cfg.clusters)
        out["cluster"] = result.labels
        out.attrs["clusters"] = result.summary()
    else:
        out["cluster"] = np.zeros(len(out), dtype="int64")
        out.attrs["clusters"] = {"k": 1, "criterion": "disabled", "silhouette": {}, "features": []}
    demo_cols, demographics = demographic_columns(out, customers, cfg.demographics)
    needs_cols, needs = needs_columns(out, category_spend, cfg.needs)
    facts = {**out.attrs, "demographics": demographics, "needs": needs}
    out = out.join(demo_cols).join(needs_cols)[SEGMENT_COLUMNS]
    out.attrs = facts
    return out


def _skipped(scheme: str, index: pd.Index, reason: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    cols = pd.DataFrame(
        {
            scheme: pd.Series(pd.NA, index=index, dtype="Int64"),
            f"{scheme}_name": pd.Series(pd.NA, index=index, dtype="string"),
        }
    )
    return cols, {"k": None, "skipped": reason, "silhouette": {}, "features": []}


def _assigned(
    scheme: str,
    seg: pd.DataFrame,
    ids: pd.Index,
    result: ClusterResult,
    names: dict[int, str],
    unassigned: str,
) -> pd.DataFrame:
    """The scheme's two columns over every customer of ``seg`` (those not in ``ids``: NA)."""
    labels = pd.Series(result.labels, index=ids)
    by_customer = seg["customer_id"].map(labels)
    label = pd.Series(by_customer.to_numpy(), index=seg.index).astype("Int64")
    name = label.map(lambda v: unassigned if pd.isna(v) else f"{int(v)}: {names[int(v)]}")
    return pd.DataFrame({scheme: label, f"{scheme}_name": name.astype("string")})


def _profile_rows(
    seg: pd.DataFrame, column: pd.Series, names: dict[int, str], extra: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per segment: name, customers, share of customers and of revenue (of all customers), extra."""
    n, total = len(seg), float(seg["revenue"].sum())
    rows = []
    for s_id, name in names.items():
        mask = (column == s_id).fillna(False).to_numpy(dtype=bool)
        revenue = float(seg.loc[mask, "revenue"].sum())
        rows.append(
            {
                "segment": s_id,
                "name": name,
                "customers": int(mask.sum()),
                "customer_share": float(mask.sum()) / n if n else 0.0,
                # 12 digits: the per-customer sums come from a parallel aggregation whose last
                # bit varies between runs; a share is not read beyond that
                "revenue_share": round(revenue / total, 12) if total else 0.0,
                **extra.get(s_id, {}),
            }
        )
    return rows


def demographic_columns(
    seg: pd.DataFrame, customers: pd.DataFrame | None, cfg: DemographicConfig
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """demographic_segment(_name) of the customers of ``seg`` and the facts (choice, profile)."""
    scheme = "demographic_segment"
    if not cfg.enabled:
        return _skipped(scheme, seg.index, "disabled (segments.demographics.enabled)")
    if customers is None:
        if cfg.attributes is not None:
            raise ValueError(
                f"segments.demographics.attributes: {cfg.attributes[0]!r} is not a customers "
                "column; the dataset has no customers table"
            )
        return _skipped(scheme, seg.index, "no customers table")
    attributes, reason = resolve_attributes(list(customers.columns), cfg)
    if not attributes:
        return _skipped(scheme, seg.index, reason)
    rows = customers.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    rows = rows.loc[rows.index.isin(seg["customer_id"]), attributes]
    if rows.empty:
        return _skipped(scheme, seg.index, "no customer with a purchase has a customers row")
    result, frame = demographic_segments(rows, cfg)
    if not result.features:
        return _skipped(scheme, seg.index, f"the attributes {attributes} are constant")
    profile = demographic_profile(frame, result.labels)
    names = {s: demographic_name(p) for s, p in profile.items()}
    cols = _assigned(scheme, seg, rows.index, result, names, "not segmented: no customers row")
    facts = result.summary()
    facts.update(
        k_at_k_max=bool(result.k == cfg.k_max),
        attributes=attributes,
        distance="squared euclidean = mismatched categorical attributes + squared z-differences",
        unassigned=int(cols[scheme].isna().sum()),
        profile=_profile_rows(seg, cols[scheme], names, profile),
    )
    return cols, facts


def needs_columns(
    seg: pd.DataFrame, spend: pd.DataFrame | None, cfg: NeedsConfig
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """needs_segment(_name) of the customers of ``seg`` and the facts (choice, profile)."""
    scheme = "needs_segment"
    if not cfg.enabled:
        return _skipped(scheme, seg.index, "disabled (segments.needs.enabled)")
    if spend is None:
        return _skipped(scheme, seg.index, "no category spend given")
    spend = spend[spend["customer_id"].isin(seg["customer_id"])]
    shares = category_shares(spend, cfg.max_categories)
    if shares.empty:
        return _skipped(scheme, seg.index, "no transaction line up to the cutoff has a category")
    if shares.shape[1] < 2:
        return _skipped(scheme, seg.index, "only one category up to the cutoff")
    result = needs_segments(shares, cfg)
    labels = pd.Series(result.labels, index=shares.index)
    means = shares.groupby(labels.to_numpy()).mean()
    names = {int(s): needs_name(means.loc[s], cfg) for s in means.index}
    extra = {
        int(s): {"mean_shares": {str(c): round(float(v), 4) for c, v in means.loc[s].items()}}
        for s in means.index
    }
    cols = _assigned(scheme, seg, shares.index, result, names, "not segmented: no category spend")
    facts = result.summary()
    facts.update(
        k_at_k_max=bool(result.k == cfg.k_max),
        categories=[str(c) for c in shares.columns],
        distance="Hellinger (euclidean on sqrt shares, / sqrt 2)",
        unassigned=int(cols[scheme].isna().sum()),
        profile=_profile_rows(seg, cols[scheme], names, extra),
    )
    return cols, facts


def segment_labels(scheme: str, cfg: SegmentsConfig | None = None) -> tuple[str, ...] | None:
    """Display order of a scheme's labels (None: numbered clusters)."""
    if scheme == "rfm_band":
        return (cfg or SegmentsConfig()).rfm_band_labels
    return SCHEMES[scheme]


def segment_summary(
    segments: pd.DataFrame,
    cfg: SegmentsConfig | None = None,
    journey: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per scheme and segment: customers, share of customers, revenue, share of revenue.

    Shares are of all customers and of the total (net) revenue; known labels with no customers
    appear with zeros so that tables keep their shape from one cutoff to the next. ``journey``
    (customer_id, journey_stage of every known person: ``features.journey.journey_stages``)
    gives the ``journey_stage`` rows over buyers and prospects: its shares are of every known
    person, a prospect's revenue is 0.
    """
    total = float(segments["revenue"].sum())
    rows: list[dict[str, Any]] = []
    for scheme in SCHEMES:
        labels = segment_labels(scheme, cfg)
        if scheme == "journey_stage" and journey is not None:
            revenue = segments.set_index(segments["customer_id"].astype(str))["revenue"]
            ids = journey["customer_id"].astype(str)
            people = pd.DataFrame(
                {
                    scheme: journey[scheme].astype(str).to_numpy(),
                    "revenue": ids.map(revenue).fillna(0.0).to_numpy(dtype=float),
                }
            )
            rows += _scheme_rows(scheme, people[scheme], people["revenue"], labels, total)
            continue
        if scheme not in segments.columns:
            continue
        if scheme in NAMED_SCHEMES:
            if segments[scheme].isna().all():
                continue  # skipped scheme: its reason is in the meta and the report
            key = segments[f"{scheme}_name"].astype(str).rename(scheme)
        else:
            key = segments[scheme].astype(str)
        rows += _scheme_rows(scheme, key, segments["revenue"], labels, total)
    return pd.DataFrame(
        rows,
        columns=["scheme", "segment", "customers", "customer_share", "revenue", "revenue_share"],
    )


def _scheme_rows(
    scheme: str,
    key: pd.Series,
    revenue: pd.Series,
    labels: Sequence[str] | None,
    total: float,
) -> list[dict[str, Any]]:
    """One summary row per segment of a scheme (``key``: the segment of each row)."""
    n = len(key)
    grouped = revenue.groupby(key.to_numpy(), sort=False).agg(["size", "sum"])
    order = list(labels) if labels is not None else sorted(grouped.index, key=_natural)
    order += [s for s in grouped.index if s not in order]
    rows = []
    for seg in order:
        customers = int(grouped["size"].get(seg, 0))
        value = float(grouped["sum"].get(seg, 0.0))
        rows.append(
            {
                "scheme": scheme,
                "segment": seg,
                "customers": customers,
                "customer_share": customers / n if n else 0.0,
                "revenue": value,
                "revenue_share": value / total if total else 0.0,
            }
        )
    return rows


def _natural(label: str) -> tuple[int, str]:
    head = label.split(":", 1)[0]  # named schemes: "0: garden + home"
    return (int(head), label) if head.lstrip("-").isdigit() else (10**9, label)
