"""Offers for the next-best-offer family: offer tables, customer category profiles, eligibility
and labels at a cutoff (pure SQL builders and pandas functions; running them is the caller's job).

Time convention as in ``features.definitions``: at cutoff T (a date), the customer's history is
every non-return line dated on or before T (``days_ago >= 0``), the horizon is T+1 .. T+H
(``-H <= days_ago < 0``), and the population is every customer with a non-return line in the
``lookback_days`` before T (``0 <= days_ago < lookback_days``).

Offers (``kind``):
    cross_sell  sells a category. Eligible: customers who do not already buy the category:
                no purchase of it by T (``bought_within_days`` None, the default) or none in
                the last ``bought_within_days`` days before T (a lapsed category is offered
                again). Taken: the customer buys the category in the horizon.
    up_sell     sells a tier (optionally within a category). A customer's current tier is the
                maximum tier of the products bought by T (0 when no bought product has a known
                tier). Eligible: offer tier in (current, current + ``upsell_steps``], and, for an
                offer with a category, the customer already buys that category (same window).
                Taken: the
                customer buys a product of exactly that tier (in that category, if set) in the
                horizon. Tiers come from a products relation (product_id, tier); without one no
                line has a tier.
    retention   not an NBO offer (the churn family handles retention); ignored here.

Offer groups for data without categories are a dataset concern: map ``category`` with an
``{expr: ...}`` column mapping in the dataset YAML (see docs/nbo.md). ``derive_offers_sql`` then
makes one cross-sell offer per group, valued at ``margin_rate`` x the median order-line amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd

from features.sql import sql_date, sql_literal

NBO_KINDS = ("cross_sell", "up_sell")
OFFER_COLUMNS = ("offer_id", "category", "kind", "tier", "value", "cost")
SHARE_PREFIX = "cat_share__"
RECENCY_PREFIX = "cat_days__"
TIER_COLUMNS = ("current_tier", "mean_tier")


def share_column(category: str) -> str:
    """Name of the profile column holding a customer's share of lines in ``category``."""
    return f"{SHARE_PREFIX}{category}"


def recency_column(category: str) -> str:
    """Name of the profile column holding the days from the customer's last purchase in
    ``category`` to T (NaN = never bought)."""
    return f"{RECENCY_PREFIX}{category}"


def products_relation_sql(reader: str) -> str:
    """A (product_id, tier) relation from a reader (``read_parquet(...)``, ``read_csv(...)``),
    one row per product (the highest tier if a product repeats)."""
    return f"""(
    SELECT CAST(product_id AS VARCHAR) AS product_id, max(TRY_CAST(tier AS BIGINT)) AS tier
    FROM {reader}
    WHERE product_id IS NOT NULL
    GROUP BY 1
)"""


def purchases_sql(
    source: str, as_of: date, products: str | None = None, horizon_days: int = 0
) -> str:
    """Non-return lines dated on or before T + ``horizon_days`` with category, product tier
    (NULL without ``products``) and days_ago."""
    tier = "p.tier" if products else "CAST(NULL AS BIGINT)"
    join = (
        f"LEFT JOIN {products} p ON CAST(t.product_id AS VARCHAR) = p.product_id"
        if products
        else ""
    )
    return f"""
    SELECT t.customer_id, CAST(t.category AS VARCHAR) AS category, {tier} AS tier,
           CAST(t.amount AS DOUBLE) AS amount,
           date_diff('day', CAST(t.ts AS DATE), {sql_date(as_of)}) AS days_ago
    FROM {source} t {join}
    WHERE NOT (coalesce(t.is_return, FALSE) OR t.amount < 0)
      AND CAST(t.ts AS DATE) <= {sql_date(as_of + timedelta(days=int(horizon_days)))}"""


def _population(lookback_days: int | None) -> str:
    within = f" AND days_ago < {int(lookback_days)}" if lookback_days else ""
    return f"SELECT DISTINCT customer_id FROM p WHERE days_ago >= 0{within}"


def customer_profile_sql(
    source: str, as_of: date, lookback_days: int | None, products: str | None = None
) -> str:
    """Long profile at ``as_of``: customer_id, category, n_lines and last_days_ago (by T),
    current_tier, mean_tier.

    One row per (customer, bought category); a customer of the population without a categorised
    line has one row with category NULL and n_lines 0. ``lookback_days`` None: every customer
    with a purchase by T.
    """
    return f"""
WITH p AS ({purchases_sql(source, as_of, products)}
),
pop AS ({_population(lookback_days)}),
cats AS (
    SELECT customer_id, category, count(*) AS n_lines, min(days_ago) AS last_days_ago
    FROM p WHERE days_ago >= 0 AND category IS NOT NULL
    GROUP BY customer_id, category
),
tiers AS (
    SELECT customer_id, max(tier) AS current_tier, avg(tier) AS mean_tier
    FROM p WHERE days_ago >= 0
    GROUP BY customer_id
)
SELECT pop.customer_id, c.category, CAST(coalesce(c.n_lines, 0) AS BIGINT) AS n_lines,
       CAST(c.last_days_ago AS DOUBLE) AS last_days_ago,
       CAST(t.current_tier AS DOUBLE) AS current_tier, CAST(t.mean_tier AS DOUBLE) AS mean_tier
FROM pop
LEFT JOIN cats c ON pop.customer_id = c.customer_id
LEFT JOIN tiers t ON pop.customer_id = t.customer_id
ORDER BY pop.customer_id, c.category"""


def profile_frame(long: pd.DataFrame, categories: Sequence[str]) -> pd.DataFrame:
    """Wide profile: customer_id; per category its share of the customer's categorised lines
    (0 = never bought) and the days since its last purchase (NaN = never); current_tier,
    mean_tier."""
    ids = pd.Index(pd.unique(long["customer_id"].astype(str)), name="customer_id")
    lines = long.dropna(subset=["category"]).assign(
        customer_id=lambda d: d["customer_id"].astype(str)
    )
    counts = lines.pivot_table(
        index="customer_id", columns="category", values="n_lines", aggfunc="sum", fill_value=0
    ).reindex(index=ids, fill_value=0)
    recency = lines.pivot_table(
        index="customer_id", columns="category", values="last_days_ago", aggfunc="min"
    ).reindex(index=ids, columns=list(categories))
    totals = counts.sum(axis=1).to_numpy(dtype=float)
    shares = counts.reindex(columns=list(categories), fill_value=0).to_numpy(dtype=float)
    shares = np.divide(
        shares, totals[:, None], out=np.zeros_like(shares), where=totals[:, None] > 0
    )
    out = pd.concat(
        [
            pd.DataFrame(shares, columns=[share_column(c) for c in categories], index=ids),
            pd.DataFrame(
                recency.to_numpy(dtype=float),
                columns=[recency_column(c) for c in categories],
                index=ids,
            ),
        ],
        axis=1,
    )
    tiers = (
        long.assign(customer_id=long["customer_id"].astype(str))
        .groupby("customer_id")[list(TIER_COLUMNS)]
        .first()
    )
    return out.join(tiers.astype(float)).reset_index()


def validate_offers(offers: pd.DataFrame, kinds: Sequence[str] = NBO_KINDS) -> pd.DataFrame:
    """Offers of the given kinds in a normal form; raises on what would make ranking wrong."""
    missing = [c for c in ("offer_id", "kind", "value") if c not in offers.columns]
    if missing:
        raise ValueError(f"offers lack columns {missing}")
    out = pd.DataFrame(
        {
            "offer_id": offers["offer_id"].astype(str),
            "category": offers["category"].astype(object)
            if "category" in offers
            else pd.Series(None, index=offers.index, dtype=object),
            "kind": offers["kind"].astype(str).str.strip().str.lower(),
            "tier": pd.to_numeric(offers["tier"], errors="coerce") if "tier" in offers else np.nan,
            "value": pd.to_numeric(offers["value"], errors="coerce").astype(float),
            "cost": pd.to_numeric(offers["cost"], errors="coerce").fillna(0.0).astype(float)
            if "cost" in offers
            else 0.0,
        }
    )
    out["category"] = out["category"].where(out["category"].notna(), None)
    out.loc[out["category"].notna(), "category"] = out["category"].dropna().astype(str)
    out = out[out["kind"].isin(list(kinds))].reset_index(drop=True)
    dup = out.loc[out["offer_id"].duplicated(), "offer_id"]
    if len(dup):
        raise ValueError(f"duplicate offer ids {sorted(dup)}")
    no_value = out.loc[out["value"].isna(), "offer_id"]
    if len(no_value):
        raise ValueError(f"offers without a numeric value: {list(no_value)}")
    bad_x = out[(out["kind"] == "cross_sell") & out["category"].isna()]
    if len(bad_x):
        raise ValueError(f"cross-sell offers need a category: {list(bad_x['offer_id'])}")
    bad_u = out[(out["kind"] == "up_sell") & out["tier"].isna()]
    if len(bad_u):
        raise ValueError(f"up-sell offers need a tier: {list(bad_u['offer_id'])}")
    return out.sort_values("offer_id", kind="stable").reset_index(drop=True)


def offers_relation_sql(offers: pd.DataFrame) -> str:
    """A VALUES relation (offer_id, category, kind, tier) of validated offers."""
    if offers.empty:
        raise ValueError("no offers")
    rows = []
    values = zip(
        offers["offer_id"], offers["category"], offers["kind"], offers["tier"], strict=True
    )
    for offer_id, category, kind, tier_value in values:
        cat = "NULL" if category is None else sql_literal(category)
        tier = "NULL" if pd.isna(tier_value) else str(int(tier_value))
        rows.append(f"({sql_literal(offer_id)}, {cat}, {sql_literal(kind)}, {tier})")
    return (
        "(SELECT CAST(offer_id AS VARCHAR) AS offer_id, CAST(category AS VARCHAR) AS category, "
        "CAST(kind AS VARCHAR) AS kind, CAST(tier AS BIGINT) AS tier FROM (VALUES "
        + ", ".join(rows)
        + ") v(offer_id, category, kind, tier))"
    )


def offer_labels_sql(
    source: str,
    offers: str,
    as_of: date,
    horizon_days: int,
    lookback_days: int | None,
    products: str | None = None,
    upsell_steps: int = 1,
    bought_within_days: int | None = None,
) -> str:
    """Every eligible (customer, offer) pair at ``as_of`` with ``taken`` (1 = bought in the
    horizon what the offer sells); rules in the module docstring. ``offers`` is a relation with
    offer_id, category, kind, tier."""
    h = int(horizon_days)
    within = f" AND days_ago < {int(bought_within_days)}" if bought_within_days else ""
    return f"""
WITH p AS ({purchases_sql(source, as_of, products, h)}
),
pop AS ({_population(lookback_days)}),
bought AS (
    SELECT DISTINCT customer_id, category FROM p
    WHERE days_ago >= 0 AND category IS NOT NULL{within}
),
cur AS (
    SELECT customer_id, coalesce(max(tier), 0) AS tier FROM p WHERE days_ago >= 0
    GROUP BY customer_id
),
future_cat AS (
    SELECT DISTINCT customer_id, category FROM p WHERE days_ago < 0 AND category IS NOT NULL
),
future_tier AS (
    SELECT DISTINCT customer_id, tier, category FROM p WHERE days_ago < 0 AND tier IS NOT NULL
),
o AS (SELECT * FROM {offers} WHERE kind IN ('cross_sell', 'up_sell')),
pairs AS (
    SELECT pop.customer_id, o.offer_id, o.kind, o.category, o.tier,
           coalesce(cur.tier, 0) AS current_tier
    FROM pop CROSS JOIN o LEFT JOIN cur ON pop.customer_id = cur.customer_id
),
eligible AS (
    SELECT pr.* FROM pairs pr
    LEFT JOIN bought b ON pr.customer_id = b.customer_id AND pr.category = b.category
    WHERE (pr.kind = 'cross_sell' AND pr.category IS NOT NULL AND b.customer_id IS NULL)
       OR (pr.kind = 'up_sell' AND pr.tier IS NOT NULL AND pr.tier > pr.current_tier
           AND pr.tier <= pr.current_tier + {int(upsell_steps)}
           AND (pr.category IS NULL OR b.customer_id IS NOT NULL))
)
SELECT e.customer_id, e.offer_id,
       CAST(max(CASE WHEN fc.customer_id IS NOT NULL OR ft.customer_id IS NOT NULL
                     THEN 1 ELSE 0 END) AS INTEGER) AS taken
FROM eligible e
LEFT JOIN future_cat fc
    ON e.kind = 'cross_sell' AND e.customer_id = fc.customer_id AND e.category = fc.category
LEFT JOIN future_tier ft
    ON e.kind = 'up_sell' AND e.customer_id = ft.customer_id AND e.tier = ft.tier
   AND (e.category IS NULL OR e.category = ft.category)
GROUP BY e.customer_id, e.offer_id
ORDER BY e.customer_id, e.offer_id"""


def eligibility_matrix(
    profile: pd.DataFrame,
    offers: pd.DataFrame,
    upsell_steps: int = 1,
    bought_within_days: int | None = None,
) -> np.ndarray:
    """Boolean (customers x offers) eligibility from a wide profile (``profile_frame`` columns);
    the same rules as ``offer_labels_sql``."""
    n = len(profile)
    out = np.zeros((n, len(offers)), dtype=bool)
    cur = (
        pd.to_numeric(profile["current_tier"], errors="coerce").fillna(0.0).to_numpy(float)
        if "current_tier" in profile
        else np.zeros(n)
    )
    cats = sorted({c for c in offers["category"] if isinstance(c, str)})
    cols = [recency_column(c) for c in cats]
    missing = [c for c in cols if c not in profile.columns]
    if missing:
        raise ValueError(f"profile lacks columns {missing} for the offers' categories")
    days = profile[cols].to_numpy(dtype=float, na_value=np.nan).reshape(n, len(cols))
    bought_all = ~np.isnan(days)
    if bought_within_days:
        bought_all &= days < bought_within_days
    where = {c: i for i, c in enumerate(cats)}
    rows = zip(offers["kind"], offers["category"], offers["tier"], strict=True)
    for j, (kind, category, tier) in enumerate(rows):
        bought = bought_all[:, where[category]] if isinstance(category, str) else None
        if kind == "cross_sell":
            out[:, j] = ~bought if bought is not None else False
        elif kind == "up_sell" and not pd.isna(tier):
            ok = (tier > cur) & (tier <= cur + upsell_steps)
            out[:, j] = ok & bought if bought is not None else ok
    return out


def derive_offers_sql(
    source: str,
    until: date,
    margin_rate: float,
    min_lines: int = 1,
    exclude: Sequence[str] = (),
) -> str:
    """One cross-sell offer per category (offer group) from the lines dated on or before
    ``until``: offer_id ``XS_<category>``, value = ``margin_rate`` x the median non-return line
    amount (a margin proxy when no costs are known), cost 0; groups with fewer than ``min_lines``
    lines and the ``exclude`` list are left out; ``lines`` gives the support."""
    excluded = ", ".join(sql_literal(str(c)) for c in exclude)
    skip = f"AND category NOT IN ({excluded})" if exclude else ""
    return f"""
SELECT 'XS_' || category AS offer_id, category, 'cross_sell' AS kind,
       CAST(NULL AS BIGINT) AS tier,
       round({float(margin_rate)} * median(CAST(amount AS DOUBLE)), 2) AS value,
       0.0 AS cost, count(*) AS lines
FROM {source}
WHERE NOT (coalesce(is_return, FALSE) OR amount <= 0)
  AND category IS NOT NULL AND CAST(ts AS DATE) <= {sql_date(until)} {skip}
GROUP BY category
HAVING count(*) >= {int(min_lines)}
ORDER BY category"""


__all__ = [
    "NBO_KINDS",
    "OFFER_COLUMNS",
    "RECENCY_PREFIX",
    "SHARE_PREFIX",
    "TIER_COLUMNS",
    "customer_profile_sql",
    "derive_offers_sql",
    "eligibility_matrix",
    "offer_labels_sql",
    "offers_relation_sql",
    "products_relation_sql",
    "profile_frame",
    "purchases_sql",
    "recency_column",
    "share_column",
    "validate_offers",
]
