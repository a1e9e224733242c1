"""Customer segments at a cutoff: RFM points bands and quintile codes, Pareto ABC, the customer
pyramid, lifecycle stages and behavioural clusters (pure functions; docs/segments.md).
(Over 600 lines on purpose: each scheme is short and they share their inputs and naming.)

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.cluster import KMeans
from sklearn.impute import SimpleImputer
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from features.definitions import RFMPointsConfig
from features.engine import lines_sql

# --------------------------------------------------------------------------- labels, in order

RFM_SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)
ABC_CLASSES = ("A", "B", "C")
PYRAMID_LEVELS = ("top", "big", "medium", "small")
LIFECYCLE_STAGES = ("new", "active", "loyal", "won back", "lapsing", "lapsed")
NOT_YET = "not yet a customer"
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

#: Scheme column -> its labels in display order (clusters are numbered, so have none).
SCHEMES: dict[str, tuple[str, ...] | None] = {
    "rfm_band": None,  # labels come from the config
    "rfm_segment": RFM_SEGMENTS,
    "abc_class": ABC_CLASSES,
    "pyramid_level": PYRAMID_LEVELS,
    "lifecycle_stage": LIFECYCLE_STAGES,
    "cluster": None,
}

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


class ClusterConfig(BaseModel):
    """Behavioural clusters: KMeans on log1p-scaled features, k chosen by silhouette."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    features: tuple[str, ...] = (
        "days_since_last_order",
        "days_since_first_order",
        "orders_count_total",
        "spend_sum_total",
        "spend_mean_order",
        "returns_share",
    )
    k_min: int = Field(2, ge=2)
    k_max: int = Field(8, ge=2)
    sample_size: int = Field(3000, ge=10, description="rows the silhouette is computed on")
    n_init: int = Field(4, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _range(self) -> ClusterConfig:
        if self.k_min > self.k_max:
            raise ValueError("k_min must not exceed k_max")
        return self


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


def order_gaps(
    transactions: pd.DataFrame | str,
    as_of: date,
    lapsed_days: int,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Run :func:`order_gaps_sql` on canonical transactions (a DataFrame or a DuckDB relation)."""
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
        return con.execute(order_gaps_sql(source, as_of, lapsed_days)).df()
    finally:
        if registered:
            con.unregister("__segments_transactions")
        if own:
            con.close()


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


def cluster_pipeline(k: int, seed: int, n_init: int = 4) -> Pipeline:
    """Impute (median), log1p, standardise, KMeans(k)."""
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("log1p", FunctionTransformer(_signed_log1p, feature_names_out="one-to-one")),
            ("scale", StandardScaler()),
            ("kmeans", KMeans(n_clusters=k, n_init=n_init, random_state=seed)),
        ]
    )


@dataclass
class ClusterResult:
    """Cluster labels (0 = largest cluster), the chosen k and the silhouette of every k tried."""

    labels: np.ndarray
    k: int
    silhouette: dict[int, float]
    features: list[str]
    pipeline: Pipeline | None = None
    criterion: str = (
        "silhouette (euclidean, scaled features) on a seeded sample; max, ties -> lower k"
    )
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
        }


def cluster_customers(features: pd.DataFrame, cfg: ClusterConfig | None = None) -> ClusterResult:
    """Behavioural clusters: k in k_min..k_max chosen by silhouette on a seeded sample, then KMeans
    with that k fitted on every customer; labels renumbered by cluster size (0 = largest)."""
    # one thread: on a busy 2-core machine KMeans on 3 000 x 6 took 0.8 s with 2 OpenMP threads
    # and 0.05 s with one (thread spin-waiting); these problems are too small to gain from more
    with threadpool_limits(limits=1):
        return _cluster_customers(features, cfg or ClusterConfig())


def _cluster_customers(features: pd.DataFrame, cfg: ClusterConfig) -> ClusterResult:
    cols = [c for c in cfg.features if c in features.columns]
    n = len(features)
    X = features[cols].astype(float).to_numpy()
    if cols:
        keep = [j for j in range(len(cols)) if np.nanstd(X[:, j]) > 0] if n else []
        cols = [cols[j] for j in keep]
        X = X[:, keep]
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(rng.choice(n, size=min(cfg.sample_size, n), replace=False)) if n else np.arange(0)
    sample = X[idx]
    n_unique = len(np.unique(np.nan_to_num(sample), axis=0)) if len(sample) and cols else 0
    scores: dict[int, float] = {}
    for k in range(cfg.k_min, cfg.k_max + 1):
        if k >= n_unique:  # silhouette needs 2 <= k <= n - 1 distinct points
            break
        pipe = cluster_pipeline(k, cfg.seed, cfg.n_init).fit(sample)
        scaled = pipe[:-1].transform(sample)
        scores[k] = float(silhouette_score(scaled, pipe[-1].labels_))
    if not scores:
        return ClusterResult(np.zeros(n, dtype="int64"), 1, {}, cols, None, sample_size=len(idx))
    best = max(scores, key=lambda k: (scores[k], -k))
    pipe = cluster_pipeline(best, cfg.seed, cfg.n_init).fit(X)
    raw = pipe[-1].labels_
    sizes = np.bincount(raw, minlength=best)
    rank = np.argsort(-sizes, kind="stable")  # old label of the i-th largest cluster
    relabel = np.empty(best, dtype="int64")
    relabel[rank] = np.arange(best)
    return ClusterResult(relabel[raw], best, scores, cols, pipe, sample_size=len(idx))


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
]


def segment_customers(
    features: pd.DataFrame,
    transactions_relation: pd.DataFrame | str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    cfg: SegmentsConfig | None = None,
    *,
    as_of: date | None = None,
) -> pd.DataFrame:
    """Every segment scheme per customer (SEGMENT_COLUMNS); cluster facts in attrs["clusters"].

    With ``transactions_relation`` (and ``as_of``, the cutoff the features were computed at) the
    order-day gaps are computed for "won back"; without it, gap columns already in ``features`` are
    used, and when there are none nobody is "won back".
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
    return out[SEGMENT_COLUMNS]


def segment_labels(scheme: str, cfg: SegmentsConfig | None = None) -> tuple[str, ...] | None:
    """Display order of a scheme's labels (None: numbered clusters)."""
    if scheme == "rfm_band":
        return (cfg or SegmentsConfig()).rfm_band_labels
    return SCHEMES[scheme]


def segment_summary(segments: pd.DataFrame, cfg: SegmentsConfig | None = None) -> pd.DataFrame:
    """Per scheme and segment: customers, share of customers, revenue, share of revenue.

    Shares are of all customers and of the total (net) revenue; known labels with no customers
    appear with zeros so that tables keep their shape from one cutoff to the next.
    """
    n = len(segments)
    total = float(segments["revenue"].sum())
    rows = []
    for scheme in SCHEMES:
        if scheme not in segments.columns:
            continue
        labels = segment_labels(scheme, cfg)
        key = segments[scheme].astype(str)
        grouped = segments.groupby(key, sort=False)["revenue"].agg(["size", "sum"])
        order = list(labels) if labels is not None else sorted(grouped.index, key=_natural)
        order += [s for s in grouped.index if s not in order]
        for seg in order:
            customers = int(grouped["size"].get(seg, 0))
            revenue = float(grouped["sum"].get(seg, 0.0))
            rows.append(
                {
                    "scheme": scheme,
                    "segment": seg,
                    "customers": customers,
                    "customer_share": customers / n if n else 0.0,
                    "revenue": revenue,
                    "revenue_share": revenue / total if total else 0.0,
                }
            )
    return pd.DataFrame(
        rows,
        columns=["scheme", "segment", "customers", "customer_share", "revenue", "revenue_share"],
    )


def _natural(label: str) -> tuple[int, str]:
    return (int(label), "") if label.lstrip("-").isdigit() else (10**9, label)
