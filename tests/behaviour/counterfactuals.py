"""Counterfactual rows for behaviour checks, and the direction check itself.

A counterfactual changes one thing about a customer's history and keeps every feature that
follows from it consistent, so the model is asked about a customer who could exist (a tree model
says nothing reliable about impossible rows). All shifts work on the churn_v1 columns
(``features.definitions``); derived features (``rfm_points``) are recomputed from their own SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

from features.definitions import FeatureSet

WINDOWS = (30, 90, 365, 730)  # the windows of orders_count_<w>d / spend_sum_<w>d
Scorer = Callable[[pd.DataFrame], np.ndarray]


def recompute_derived(rows: pd.DataFrame, fs: FeatureSet) -> pd.DataFrame:
    """The rows with every derived feature of ``fs`` recomputed from its declared SQL."""
    derived = [f for f in fs.features if f.level == "derived" and f.name in rows.columns]
    if not derived:
        return rows
    con = duckdb.connect()
    try:
        con.register("rows_in", rows.reset_index(drop=True).assign(_row=np.arange(len(rows))))
        select = ", ".join(f"{f.sql} AS {f.name}" for f in derived)
        values = con.execute(f"SELECT {select} FROM rows_in ORDER BY _row").df()
    finally:
        con.close()
    out = rows.copy()
    for f in derived:
        out[f.name] = pd.Series(values[f.name].to_numpy(), index=out.index).astype(
            rows[f.name].dtype
        )
    return out


def age_last_order(rows: pd.DataFrame, days: int, fs: FeatureSet) -> pd.DataFrame:
    """Each customer's orders happened ``days`` further back than they did, counted from the
    last one: the same customer, ``days`` longer silent.

    Shifted: ``days_since_last_order`` + days; ``days_since_first_order`` raised to at least the
    new recency; ``orders_count_<w>d`` and ``spend_sum_<w>d`` set to 0 for every window ``w`` the
    last order has now left (no order can lie inside a window younger than the last order);
    ``rfm_points`` recomputed. Lifetime totals, the mean order, returns and categories keep
    their values (the orders still exist, only older).
    """
    out = rows.copy()
    last = out["days_since_last_order"] + days
    out["days_since_last_order"] = last
    out["days_since_first_order"] = np.maximum(out["days_since_first_order"], last)
    for w in WINDOWS:
        left = last >= w
        out.loc[left, f"orders_count_{w}d"] = 0
        out.loc[left, f"spend_sum_{w}d"] = 0.0
    return recompute_derived(out, fs)


def add_recent_orders(rows: pd.DataFrame, k: int, fs: FeatureSet) -> pd.DataFrame:
    """``k`` more orders in the last 90 days, each worth the customer's mean order, placed on day
    ``clip(days_since_last_order, 30, 89)``: inside the 90-day window, outside the 30-day one.

    Shifted: ``orders_count_{90,365,730}d`` and ``orders_count_total`` + k; the matching
    ``spend_sum_*`` + k x ``spend_mean_order`` (so the mean order is unchanged);
    ``days_since_last_order`` becomes 89 where it was 90 or more (an order in the last 90 days
    makes the last order that recent: the only way such a customer exists); ``returns_share``
    recomputed with the extra purchases in its denominator; ``rfm_points`` recomputed.
    """
    out = rows.copy()
    extra = k * out["spend_mean_order"].clip(lower=0.0)
    share = out["returns_share"]
    # returns_share = returns / purchases and net spend = purchases - returns
    purchases = out["spend_sum_total"] / (1.0 - share).where(share < 1.0)
    for w in (90, 365, 730):
        out[f"orders_count_{w}d"] += k
        out[f"spend_sum_{w}d"] += extra
    out["orders_count_total"] += k
    out["spend_sum_total"] += extra
    new_share = share * purchases / (purchases + extra)
    out["returns_share"] = new_share.where(new_share.notna(), share)
    out["days_since_last_order"] = np.minimum(out["days_since_last_order"], 89)
    return recompute_derived(out, fs)


def scale_spend_365d(rows: pd.DataFrame, factor: float, fs: FeatureSet) -> pd.DataFrame:
    """Every order of the last 365 days worth ``factor`` times what it was.

    Shifted: ``spend_sum_{30,90,365}d`` x factor; ``spend_sum_730d`` and ``spend_sum_total`` +
    the extra 365-day spend; ``spend_mean_order`` = total / orders (it is avg(amount) over the
    same rows); ``rfm_points`` recomputed. Order counts, recency and categories are unchanged;
    ``returns_share`` is kept (exact when returns in the year scale with its purchases).
    """
    out = rows.copy()
    extra = (factor - 1.0) * out["spend_sum_365d"]
    for w in (30, 90, 365):
        out[f"spend_sum_{w}d"] *= factor
    out["spend_sum_730d"] += extra
    out["spend_sum_total"] += extra
    out["spend_mean_order"] = out["spend_sum_total"] / out["orders_count_total"]
    return recompute_derived(out, fs)


@dataclass(frozen=True)
class DirectionResult:
    """Mean score before and after a counterfactual, and whether it moved the forbidden way."""

    name: str
    before: float
    after: float
    expect: Literal["not_lower", "not_higher"]
    tolerance: float  # allowed move the forbidden way, in score units
    n: int

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def violated(self) -> bool:
        if self.expect == "not_lower":
            return self.change < -self.tolerance
        return self.change > self.tolerance

    def __str__(self) -> str:
        return (
            f"{self.name}: mean score {self.before:.4f} -> {self.after:.4f} "
            f"(change {self.change:+.4f}, must be {self.expect.replace('_', ' ')} within "
            f"{self.tolerance}; n={self.n})"
        )


def direction_check(
    score: Scorer,
    rows: pd.DataFrame,
    shift: Callable[[pd.DataFrame], pd.DataFrame],
    expect: Literal["not_lower", "not_higher"],
    tolerance: float,
    name: str = "",
) -> DirectionResult:
    """Score ``rows`` and ``shift(rows)``; compare the means (not the rows: a tree model may
    step the other way for a few customers and still have the right direction)."""
    before = np.asarray(score(rows), dtype=float)
    after = np.asarray(score(shift(rows)), dtype=float)
    return DirectionResult(
        name, float(before.mean()), float(after.mean()), expect, tolerance, len(rows)
    )


def id_sensitivity(score: Scorer, rows: pd.DataFrame) -> float:
    """Largest change of any row's score when every customer id is replaced by another."""
    renamed = rows.assign(customer_id=[f"renamed-{i}" for i in range(len(rows))][::-1])
    return float(np.max(np.abs(np.asarray(score(renamed)) - np.asarray(score(rows)))))


def order_sensitivity(score: Scorer, rows: pd.DataFrame, seed: int = 0) -> float:
    """Largest change of any row's score when the rows come in another order."""
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled = np.asarray(score(rows.iloc[order].reset_index(drop=True)))
    return float(np.max(np.abs(shuffled - np.asarray(score(rows))[order])))
