"""The customer journey at a cutoff: the lifecycle stages extended before the first purchase.

The e-CRM journey runs first visit -> registration -> first purchase -> repeat -> pause -> return
-> loyalty. At cutoff T every known person (``features.prospects``: an event or a sign-up by T)
has one stage; ``JOURNEY_STAGES`` in journey order:

* ``visitor``: no order by T, known from events only (not signed up by T);
* ``registered``: no order by T, signed up on or before T;
* buyers take their lifecycle stage (``features.segments.lifecycle_stages``, its thresholds in
  ``LifecycleConfig``), with ``new`` and ``active`` split by the number of orders so far:
  ``first purchase`` (one order) and ``repeat`` (two or more); ``lapsing``, ``lapsed``,
  ``won back`` and ``loyal`` as there.

Pure functions over the per-customer frames; ``journey_at`` runs them on ingested relations.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from features.segments import JOURNEY_STAGES, LifecycleConfig, lifecycle_stages, order_gaps

__all__ = ["JOURNEY_STAGES", "JourneyConfig", "journey_at", "journey_stages", "prospects_at"]


class JourneyConfig(BaseModel):
    """Thresholds of the journey stages: the lifecycle's, for buyers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lifecycle: LifecycleConfig = LifecycleConfig()


def journey_stages(
    buyers: pd.DataFrame,
    prospects: pd.DataFrame | None = None,
    cfg: JourneyConfig | None = None,
    days_since_won_back: pd.Series | None = None,
) -> pd.DataFrame:
    """customer_id, journey_stage for every buyer (a feature frame at T with
    days_since_last_order, days_since_first_order, orders_count_total and the lifecycle's loyal
    column) and every prospect (customer_id, registered); ``days_since_won_back`` aligned with
    ``buyers`` (None: nobody is won back)."""
    cfg = cfg or JourneyConfig()
    buyers = buyers.reset_index(drop=True)
    won = (
        None
        if days_since_won_back is None
        else pd.Series(days_since_won_back).reset_index(drop=True)
    )
    life = lifecycle_stages(buyers, cfg.lifecycle, won)["lifecycle_stage"].to_numpy(dtype=object)
    one = buyers["orders_count_total"].fillna(0).to_numpy(dtype=float) <= 1
    early = np.isin(life, ["new", "active"])
    stage = np.where(early, np.where(one, "first purchase", "repeat"), life).astype(object)
    parts = [
        pd.DataFrame({"customer_id": buyers["customer_id"].astype(str), "journey_stage": stage})
    ]
    if prospects is not None and len(prospects):
        registered = prospects["registered"].fillna(0).to_numpy(dtype=float) > 0
        parts.insert(
            0,
            pd.DataFrame(
                {
                    "customer_id": prospects["customer_id"].astype(str).to_numpy(),
                    "journey_stage": np.where(registered, "registered", "visitor").astype(object),
                }
            ),
        )
    out = pd.concat(parts, ignore_index=True)
    if out["customer_id"].duplicated().any():
        raise ValueError("a person is both a buyer and a prospect: prospects have no order by T")
    out["journey_stage"] = pd.Categorical(out["journey_stage"], categories=JOURNEY_STAGES)
    return out.sort_values("customer_id", ignore_index=True)


def prospects_at(
    con: duckdb.DuckDBPyConnection,
    transactions: str,
    as_of: date,
    *,
    events: str | None = None,
    customers: str | None = None,
) -> pd.DataFrame | None:
    """customer_id, registered and the event features of every prospect at ``as_of`` (None
    without events and customers: there are no prospects)."""
    from features.prospects import prospect_feature_set, prospects_sql

    if events is None and customers is None:
        return None
    fs = prospect_feature_set(attributes=())
    given = {"events": events, "customers": customers}
    fs = replace(fs, features=tuple(f for f in fs.features if given[f.level] is not None))
    sql = prospects_sql(as_of, transactions, fs, events=events, customers=customers)
    prospects = con.execute(sql).df()
    if "registered" not in prospects.columns:
        prospects["registered"] = 0
    return prospects


def journey_at(
    con: duckdb.DuckDBPyConnection,
    transactions: str,
    as_of: date,
    *,
    events: str | None = None,
    customers: str | None = None,
    cfg: JourneyConfig | None = None,
) -> pd.DataFrame:
    """Journey stages at ``as_of`` from DuckDB relations (transactions; events and customers
    optional: without them there are no prospects)."""
    from features.build import compute_features
    from features.definitions import feature_set

    cfg = cfg or JourneyConfig()
    buyers = compute_features(con, transactions, as_of, feature_set("churn_v1"))
    gaps = order_gaps(transactions, as_of, cfg.lifecycle.lapsed_days, con)
    buyers = buyers.merge(gaps, on="customer_id", how="left", validate="one_to_one")
    prospects = prospects_at(con, transactions, as_of, events=events, customers=customers)
    return journey_stages(buyers, prospects, cfg, buyers["days_since_won_back"])
