"""Campaign evaluation: what each campaign and offer really did, measured against its control group.

Per campaign and offer (the rows of ``campaign_history``; a campaign's send date is its first
contact's date, its response window the ``window_days`` days from the send date):

* contacts (treated), control, response rates in each group;
* uplift = rate(treatment) - rate(control) with a 95 % confidence interval by **Newcombe's hybrid
  score method** (Newcombe 1998, method 10: Wilson score intervals of each proportion combined),
  which keeps its coverage for small groups and rates near 0 or 1, where the Wald interval does
  not; and a two-sided p-value: the pooled **two-proportion z-test**, or **Fisher's exact test**
  when an expected cell count of the 2 x 2 table is below 5 (column ``test``);
* incremental responses = uplift x contacts (interval scaled likewise);
* incremental revenue: from ``transactions`` when given (net amount per contact in the window,
  treated mean minus control mean, x contacts; Welch normal 95 % interval), else from the offer's
  ``value`` x incremental responses; contact costs = contacts x the offer's ``cost`` (or
  ``contact_cost``); ROI = (incremental revenue - contact costs) / contact costs;
* actual vs expected: with ``expected_scores`` (``campaign_id``?, ``customer_id``, ``score`` =
  P(respond) at send time), expected = the sum of the treated contacts' scores, compared with the
  responses of those same contacts;
* negative responses: treated non-responders (``declined``), by the reason they gave
  (``declined_<reason>``, ``declined_no_reason``) -- price or fit, as the campaign process asks.

Only plain functions: ``evaluate_campaigns`` on frames, ``run_campaign_evaluate`` on a dataset's
ingested tables (optionally writing an HTML page with a chart).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from features.catalog import Catalog
from features.sources import load_dataset
from features.store import StateDirs, atomic_path
from models.decisions.readout import newcombe_interval, wilson_interval

KEYS = ["campaign_id", "offer_id"]
NO_OFFER = "(none)"


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, str]:
    """Two-sided p-value of ``p1 = p2``: pooled z-test, or Fisher's exact test when an expected
    cell count is below 5. Returns (p-value, test name)."""
    if n1 == 0 or n2 == 0:
        return float("nan"), "none"
    pooled = (x1 + x2) / (n1 + n2)
    expected = np.outer([n1, n2], [pooled, 1 - pooled])
    if expected.min() < 5:
        table = [[x1, n1 - x1], [x2, n2 - x2]]
        return float(stats.fisher_exact(table, alternative="two-sided")[1]), "fisher"
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (x1 / n1 - x2 / n2) / se
    return float(2 * stats.norm.sf(abs(z))), "z"


def _reason_column(reason: str) -> str:
    return "declined_" + (re.sub(r"[^0-9a-z]+", "_", reason.strip().lower()).strip("_") or "other")


def prepare_contacts(campaign_history: pd.DataFrame) -> pd.DataFrame:
    """Contacts with ``treated`` (bool), ``responded`` (bool), ``send_date``; one row per campaign
    and customer (a repeated contact keeps its first row)."""
    missing = {"campaign_id", "customer_id", "ts", "group", "responded"} - set(campaign_history)
    if missing:
        raise ValueError(f"campaign_history lacks columns {sorted(missing)}")
    ch = campaign_history.copy()
    ch["campaign_id"] = ch["campaign_id"].astype(str)
    ch["customer_id"] = ch["customer_id"].astype(str)
    if "offer_id" not in ch:
        ch["offer_id"] = NO_OFFER
    ch["offer_id"] = ch["offer_id"].astype(object).where(ch["offer_id"].notna(), NO_OFFER)
    ch["ts"] = pd.to_datetime(ch["ts"])
    group = ch["group"].astype("string").str.strip().str.lower()
    bad = sorted(set(group.dropna()) - {"treatment", "control"})
    if bad or group.isna().any():
        raise ValueError(f"group must be treatment or control; found {bad[:5] or ['<missing>']}")
    ch["treated"] = (group == "treatment").to_numpy()
    ch["responded"] = ch["responded"].astype(bool)
    ch = ch.sort_values(["campaign_id", "ts"], kind="stable")
    ch = ch[~ch.duplicated(["campaign_id", "customer_id"])]
    ch["send_date"] = ch.groupby("campaign_id")["ts"].transform("min").dt.normalize()
    return ch.reset_index(drop=True)


def window_revenue(
    contacts: pd.DataFrame, transactions: pd.DataFrame, window_days: int | dict[str, int]
) -> pd.Series:
    """Net amount (returns included) each contact spent in its campaign's window."""
    days = contacts["campaign_id"].map(
        window_days if isinstance(window_days, dict) else lambda _: window_days
    )
    if days.isna().any():
        raise ValueError("window_days has no entry for some campaigns")
    start = contacts["send_date"]
    end = start + pd.to_timedelta(days.astype(int), unit="D")
    tx = transactions[["customer_id", "ts", "amount"]].copy()
    tx["customer_id"] = tx["customer_id"].astype(str)
    tx["ts"] = pd.to_datetime(tx["ts"])
    keyed = pd.DataFrame(
        {"customer_id": contacts["customer_id"], "row": contacts.index, "start": start, "end": end}
    )
    joined = keyed.merge(tx, on="customer_id", how="inner")
    inside = joined[(joined["ts"] >= joined["start"]) & (joined["ts"] < joined["end"])]
    spent = inside.groupby("row")["amount"].sum()
    return spent.reindex(contacts.index, fill_value=0.0).astype(float)


def evaluate_campaigns(
    campaign_history: pd.DataFrame,
    transactions: pd.DataFrame | None = None,
    expected_scores: pd.DataFrame | None = None,
    *,
    offers: pd.DataFrame | None = None,
    window_days: int | dict[str, int] = 30,
    contact_cost: float | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per campaign and offer: response rates, uplift with interval and p-value,
    incremental responses and revenue, ROI, actual vs expected, negative responses by reason."""
    ch = prepare_contacts(campaign_history)
    if transactions is not None:
        ch["revenue"] = window_revenue(ch, transactions, window_days)
    if expected_scores is not None:
        on = ["campaign_id", "customer_id"] if "campaign_id" in expected_scores else ["customer_id"]
        scores = expected_scores[[*on, "score"]].copy()
        for c in on:
            scores[c] = scores[c].astype(str)
        ch = ch.merge(scores.drop_duplicates(on), on=on, how="left", validate="many_to_one")
    reasons = pd.Series(dtype=object)
    if "reason" in ch:
        reasons = ch["reason"].where(ch["reason"].notna() & (ch["reason"].astype(str) != ""))
    reason_names = sorted({str(r).strip().lower() for r in reasons.dropna()})
    value = cost = None
    if offers is not None:
        table = offers.assign(offer_id=offers["offer_id"].astype(str)).set_index("offer_id")
        value, cost = table.get("value"), table.get("cost")

    rows = []
    for (campaign, offer), g in ch.groupby(KEYS, sort=False):
        treated, control = g[g["treated"]], g[~g["treated"]]
        n_t, n_c = len(treated), len(control)
        x_t, x_c = int(treated["responded"].sum()), int(control["responded"].sum())
        rate_t = x_t / n_t if n_t else np.nan
        rate_c = x_c / n_c if n_c else np.nan
        low, high = (float(v) for v in newcombe_interval(x_t, n_t, x_c, n_c, confidence))
        p_value, test = two_proportion_test(x_t, n_t, x_c, n_c)
        uplift = rate_t - rate_c
        row: dict[str, Any] = {
            "campaign_id": campaign,
            "offer_id": offer,
            "send_date": g["send_date"].iloc[0].date(),
            "contacts": n_t,
            "control": n_c,
            "responses_treatment": x_t,
            "responses_control": x_c,
            "response_rate_treatment": rate_t,
            "response_rate_control": rate_c,
            "uplift": uplift,
            "uplift_ci_low": low,
            "uplift_ci_high": high,
            "p_value": p_value,
            "test": test,
            "incremental_responses": uplift * n_t,
            "incremental_responses_ci_low": low * n_t,
            "incremental_responses_ci_high": high * n_t,
        }
        per_contact = contact_cost
        if per_contact is None and cost is not None and offer in cost.index:
            per_contact = float(cost.get(offer, np.nan))
        revenue = np.nan
        if transactions is not None:
            rev_t, rev_c = treated["revenue"], control["revenue"]
            diff = rev_t.mean() - rev_c.mean() if n_t and n_c else np.nan
            se = (
                math.sqrt(rev_t.var(ddof=1) / n_t + rev_c.var(ddof=1) / n_c)
                if (n_t > 1 and n_c > 1)
                else np.nan
            )
            z = stats.norm.ppf(0.5 + confidence / 2)
            revenue = diff * n_t
            row.update(
                revenue_source="transactions",
                revenue_per_contact_treatment=rev_t.mean() if n_t else np.nan,
                revenue_per_contact_control=rev_c.mean() if n_c else np.nan,
                incremental_revenue=revenue,
                incremental_revenue_ci_low=(diff - z * se) * n_t,
                incremental_revenue_ci_high=(diff + z * se) * n_t,
            )
        elif value is not None and offer in value.index:
            revenue = float(value.get(offer, np.nan)) * uplift * n_t
            row.update(revenue_source="offer value", incremental_revenue=revenue)
        else:
            row.update(revenue_source="none", incremental_revenue=np.nan)
        total_cost = per_contact * n_t if per_contact is not None else np.nan
        row["contact_costs"] = total_cost
        row["roi"] = (revenue - total_cost) / total_cost if total_cost else np.nan
        if expected_scores is not None:
            scored = treated[treated["score"].notna()]
            expected = float(scored["score"].sum()) if len(scored) else np.nan
            row.update(
                scored_contacts=len(scored),
                expected_responses=expected,
                actual_responses_scored=int(scored["responded"].sum()),
                actual_vs_expected=scored["responded"].sum() / expected if expected else np.nan,
            )
        declined = treated[~treated["responded"]]
        row["declined"] = len(declined)
        given = reasons.reindex(declined.index).dropna().astype(str).str.strip().str.lower()
        for name in reason_names:
            row[_reason_column(name)] = int((given == name).sum())
        row["declined_no_reason"] = len(declined) - len(given)
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(["send_date", "campaign_id", "offer_id"], kind="stable").reset_index(
        drop=True
    )


def _window_transactions(
    contacts: pd.DataFrame, transactions: str, window_days: int | dict[str, int]
) -> pd.DataFrame:
    """Only the transactions of contacted customers inside some campaign window (DuckDB)."""
    import duckdb

    days = contacts["campaign_id"].map(
        window_days if isinstance(window_days, dict) else lambda _: window_days
    )
    windows = pd.DataFrame(
        {
            "customer_id": contacts["customer_id"],
            "start": contacts["send_date"],
            "end": contacts["send_date"] + pd.to_timedelta(days, unit="D"),
        }
    )
    con = duckdb.connect()
    try:
        con.register("windows", windows)
        # a semi-join: a row in two customers' windows (overlapping campaigns) is read once
        return con.execute(
            f"SELECT t.customer_id, t.ts, t.amount FROM {transactions} t WHERE EXISTS ("
            "SELECT 1 FROM windows w WHERE t.customer_id = w.customer_id "
            "AND t.ts >= w.start AND t.ts < w.end)"
        ).df()
    finally:
        con.close()


def run_campaign_evaluate(
    state: StateDirs,
    dataset: str,
    campaign_ids: Sequence[str] | None = None,
    out_html: Path | None = None,
    *,
    window_days: int | dict[str, int] = 30,
    expected_scores: pd.DataFrame | None = None,
    contact_cost: float | None = None,
) -> pd.DataFrame:
    """Evaluate a dataset's ingested campaign history (with its transactions and offers when
    ingested); optionally write its HTML page."""
    name = load_dataset(dataset).name
    catalog = Catalog(state, name)
    history = catalog.read("campaign_history")
    if campaign_ids:
        unknown = sorted(set(campaign_ids) - set(history["campaign_id"].astype(str)))
        if unknown:
            raise ValueError(f"campaigns {unknown} are not in the campaign history")
        history = history[history["campaign_id"].astype(str).isin(list(campaign_ids))]
    transactions = None
    relation = catalog.relation_or_none("transactions")
    if relation is not None:
        transactions = _window_transactions(prepare_contacts(history), relation, window_days)
    report = evaluate_campaigns(
        history,
        transactions,
        expected_scores,
        offers=catalog.read_or_none("offers"),
        window_days=window_days,
        contact_cost=contact_cost,
    )
    if out_html is not None:
        write_report(report, Path(out_html), f"Campaign evaluation: {name}")
    return report


# --------------------------------------------------------------------------- report


def write_report(report: pd.DataFrame, path: Path, title: str) -> Path:
    """The evaluation as one self-contained page (experiments.evaluate_page), written atomically;
    nothing else is written beside it."""
    from experiments.evaluate_page import render_evaluate_page

    with atomic_path(path) as tmp:
        tmp.write_text(render_evaluate_page(report, title), encoding="utf-8")
    return path


__all__ = [
    "evaluate_campaigns",
    "newcombe_interval",
    "prepare_contacts",
    "run_campaign_evaluate",
    "two_proportion_test",
    "wilson_interval",
    "window_revenue",
    "write_report",
]
