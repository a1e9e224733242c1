"""The value job's HTML page: the year-by-year value table, totals per segment, the value x risk
grid and Plotly charts, in the campaign page's house style (plotly.js embedded once, offline).

``render_value_page(result)`` is pure: an ``experiments.value.ValueResult`` in, HTML out. Every
figure is labelled as what it is: an expectation of the fitted model, not an observed amount.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

from features.pages import (
    DASH,
    fmt_count,
    fmt_money,
    fmt_pct,
    page,
)
from features.pages import layout as _layout
from features.pages import plotly_div as _plotly_div
from features.pages import row as _row
from features.pages import table as _table

VALUE_CSS = """
td.let-go { background: #eceff1; color: #607d8b; } td.contact { background: #e8f5e9; }
td.empty { background: #fff; color: #bbb; }
"""
SCHEME_TITLES = {
    "abc_class": "Pareto ABC class",
    "pyramid_level": "Customer pyramid",
    "rfm_band": "RFM points band",
    "rfm_segment": "RFM named segment",
    "lifecycle_stage": "Lifecycle stage",
    "cluster": "Behavioural cluster",
}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _money(x: Any) -> str:
    return fmt_money(float(x)) if x is not None and np.isfinite(float(x)) else DASH


def _count(x: Any) -> str:
    return fmt_count(float(x)) if x is not None else DASH


def year_table(frame: pd.DataFrame) -> str:
    """The literature's table form of ``value_by_group`` rows (one group)."""
    headers = [
        ("Year", "text"),
        ("Expected customers alive at start", ""),
        ("Retention rate in the year", ""),
        ("Expected purchases", ""),
        ("Expected revenue", ""),
        ("Costs", ""),
        ("Gross profit", ""),
        ("Discount factor", ""),
        ("NPV of gross profit", ""),
        ("Cumulative NPV", ""),
        ("Cumulative NPV per customer", ""),
    ]
    rows = [
        _row(
            [
                (str(int(r["year"])), "text"),
                (_count(r["expected_alive_start"]), ""),
                (fmt_pct(r["retention_rate"]), ""),
                (_count(r["expected_purchases"]), ""),
                (_money(r["expected_revenue"]), ""),
                (_money(r["expected_costs"]), ""),
                (_money(r["expected_gross_profit"]), ""),
                (f"{r['discount_factor']:.4f}", ""),
                (_money(r["npv"]), ""),
                (_money(r["cumulative_npv"]), ""),
                (_money(r["npv_per_customer"]), ""),
            ]
        )
        for r in _records(frame)
    ]
    return _table(headers, rows)


def segment_table(frame: pd.DataFrame) -> str:
    """Per segment: customers, K-year expected revenue, gross profit, NPV, NPV per customer and
    share, year-1 retention rate."""
    last = frame.loc[frame.groupby("segment")["year"].idxmax()].set_index("segment")
    first = frame[frame["year"] == 1].set_index("segment")
    sums = frame.groupby("segment")[["expected_revenue", "expected_gross_profit"]].sum()
    npv = last["cumulative_npv"].astype(float).to_dict()
    total = float(sum(npv.values()))
    order = last["cumulative_npv"].sort_values(ascending=False).index
    headers = [
        ("Segment", "text"),
        ("Customers", ""),
        ("Expected revenue", ""),
        ("Gross profit", ""),
        ("NPV", ""),
        ("NPV per customer", ""),
        ("Share of NPV", ""),
        ("Retention rate, year 1", ""),
    ]
    rows = [
        _row(
            [
                (_e(seg), "text"),
                (_count(last.at[seg, "customers"]), ""),
                (_money(sums.at[seg, "expected_revenue"]), ""),
                (_money(sums.at[seg, "expected_gross_profit"]), ""),
                (_money(last.at[seg, "cumulative_npv"]), ""),
                (_money(last.at[seg, "npv_per_customer"]), ""),
                (fmt_pct(npv[seg] / total if total else math.nan), ""),
                (fmt_pct(first.at[seg, "retention_rate"]), ""),
            ]
        )
        for seg in order
    ]
    return _table(headers, rows)


def grid_table(grid: pd.DataFrame) -> str:
    """Value decile (rows, 10 on top) x risk decile (columns): the mean worthwhile retention
    spend per customer and the customers in the cell; grey cells are let go."""
    cells = {(int(c["value_decile"]), int(c["risk_decile"])): c for c in _records(grid)}
    headers = [("Value decile \\ risk decile", "text")] + [(str(r), "") for r in range(1, 11)]
    rows = []
    for v in range(10, 0, -1):
        tds = [(str(v), "text")]
        for r in range(1, 11):
            if (v, r) not in cells:
                tds.append(("·", "empty"))
                continue
            c = cells[(v, r)]
            cls = "let-go" if bool(c["let_go"]) else "contact"
            tds.append(
                (
                    f"{_money(c['max_retention_spend_mean'])}<br><small>"
                    f"{_count(c['customers'])} · risk {fmt_pct(c['churn_risk_mean'], 0)}"
                    "</small>",
                    cls,
                )
            )
        rows.append(_row(tds))
    return _table(headers, rows)


# ---------------------------------------------------------------- charts


def value_by_year_chart(overall: pd.DataFrame) -> Any:
    """Expected gross profit and its NPV per year (bars), cumulative NPV (line)."""
    import plotly.graph_objects as go

    years = [f"year {int(y)}" for y in overall["year"]]
    fig = go.Figure()
    fig.add_bar(x=years, y=overall["expected_gross_profit"], name="expected gross profit")
    fig.add_bar(x=years, y=overall["npv"], name="discounted (NPV of the year)")
    fig.add_scatter(
        x=years, y=overall["cumulative_npv"], name="cumulative NPV", mode="lines+markers"
    )
    layout = _layout("Expected value of the base per year", "money")
    layout["margin"] = {**layout["margin"], "t": 110}  # a two-row legend under the title
    fig.update_layout(**layout)
    return fig


def segment_chart(frame: pd.DataFrame, scheme: str) -> Any:
    """Cumulative NPV per segment and year (lines)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    last = frame.loc[frame.groupby("segment")["year"].idxmax()]
    for seg in last.sort_values("cumulative_npv", ascending=False)["segment"]:
        part = frame[frame["segment"] == seg]
        fig.add_scatter(
            x=[f"year {int(y)}" for y in part["year"]],
            y=part["cumulative_npv"],
            name=str(seg),
            mode="lines+markers",
        )
    title = f"Cumulative NPV per {SCHEME_TITLES.get(scheme, scheme).lower()}"
    layout = _layout(title, "cumulative NPV")
    layout["margin"] = {**layout["margin"], "t": 130}  # room for a legend of many segments
    fig.update_layout(**layout)
    return fig


def grid_chart(grid: pd.DataFrame) -> Any:
    """Heat map of the mean worthwhile retention spend per (value decile, risk decile)."""
    import plotly.graph_objects as go

    z = np.full((10, 10), np.nan)
    text = np.full((10, 10), "", dtype=object)
    for c in _records(grid):
        i, j = int(c["value_decile"]) - 1, int(c["risk_decile"]) - 1
        spend = float(c["max_retention_spend_mean"])
        z[i, j] = spend
        text[i, j] = (
            f"{int(c['customers']):,} customers<br>worthwhile spend {fmt_money(spend)}"
            f"<br>{'let go' if c['let_go'] else 'worth a contact'}"
        )
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(1, 11)),
            y=list(range(1, 11)),
            text=text,
            hovertemplate="value decile %{y}, risk decile %{x}<br>%{text}<extra></extra>",
            colorscale="YlGn",
            # the top cell would wash out the rest: the scale stops at the 90th percentile
            zmax=float(np.nanpercentile(z, 90)) if np.isfinite(z).any() else None,
            zmin=0.0,
            colorbar={"title": {"text": "mean spend"}},
        )
    )
    layout = _layout("Most worth spending to keep a customer (mean per cell)", "value decile")
    layout["xaxis"] = {"title": {"text": "churn-risk decile (10 = highest risk)"}, "dtick": 1}
    layout["yaxis"] = {"title": {"text": "value decile (10 = most valuable if kept)"}, "dtick": 1}
    fig.update_layout(**layout)
    return fig


# ---------------------------------------------------------------- the page


def _facts(result: Any) -> str:
    f = result.facts
    margin = f"global margin {fmt_pct(f['margin_default'])} of revenue"
    if f["margin_by_category"]:
        cats = ", ".join(f"{k} {fmt_pct(v)}" for k, v in sorted(f["margin_by_category"].items()))
        margin += (
            f"; per category {cats} (these priced {fmt_pct(f['revenue_share_priced_by_category'])}"
            " of past revenue"
            + ("" if f["data_has_categories"] else "; the data has no categories")
            + ")"
        )
    margin += f"; mean margin over customers {fmt_pct(f['margin_mean'])}"
    timing = "year end" if f["discount_timing"] == "end_of_year" else "year start"
    ret = f["retention"]
    bg = ", ".join(f"{k} {v:.4g}" for k, v in f["bgnbd"].items())
    gg = ", ".join(f"{k} {v:.4g}" for k, v in f["gamma_gamma"].items())
    items = [
        ("Figures", f"{f['basis']}"),
        ("Margin", margin),
        (
            "Discounting",
            f"{fmt_pct(f['annual_discount_rate'])} a year, at the {timing}, "
            f"over {f['years']} years",
        ),
        (
            "Retention contact",
            f"costs {fmt_money(ret['contact_cost'])} a contact plus {fmt_money(ret['offer_cost'])} "
            f"when it succeeds; succeeds with probability {fmt_pct(ret['success_rate'])}",
        ),
        (
            "Models",
            f"BG/NBD ({bg}; time in {f['unit']}); Gamma-Gamma ({gg}) on "
            f"{fmt_count(f['repeat_buyers'])} repeat buyers",
        ),
    ]
    return (
        '<div class="scroll"><table>'
        + "".join(
            f'<tr><th class="text">{_e(k)}</th><td class="text">{_e(v)}</td></tr>' for k, v in items
        )
        + "</table></div>"
    )


def render_value_page(result: Any) -> str:
    """The value page's HTML (self-contained; plotly.js embedded once in the head)."""
    t = result.totals()
    years = result.facts["years"]
    words = (
        f'<p class="words">{fmt_count(t["customers"])} customers with a purchase by '
        f"{_e(result.as_of)} are expected to bring {_money(t['expected_revenue'])} of revenue and "
        f"{_money(t['expected_gross_profit'])} of gross profit over the next {years} years, "
        f"worth {_money(t['npv'])} today (NPV; {_money(t['npv_per_customer'])} per customer). "
        f"About {fmt_count(t['expected_alive_end'])} of them are expected to still be customers "
        f"at the end of year {years}. A retention contact pays for "
        f"{fmt_count(t['worth_a_contact'])} customers (up to "
        f"{_money(t['max_retention_spend_total'])} in all); {fmt_count(t['let_go'])} are let go: "
        "no contact pays on them.</p>"
    )
    parts = [
        f"<h1>Customer value: {_e(result.dataset)} at {_e(result.as_of)}</h1>",
        f'<p class="meta">Job <code>{_e(result.job.name)}</code>. All figures are expected '
        "values of a model, not observed amounts.</p>",
        words,
        _facts(result),
        f"<h2>Value by year, all customers</h2>{year_table(result.overall)}",
        '<p class="note">Customers alive: the sum of each customer\'s probability of being '
        "alive at the year's start (BG/NBD); retention rate: expected alive at the year's end / "
        "at its start; costs = revenue − gross profit.</p>",
    ]
    charts = [
        "<figure>"
        + _plotly_div(value_by_year_chart(result.overall), "chart-value-by-year")
        + "<figcaption>Expected gross profit, its discounted value and the cumulative NPV."
        "</figcaption></figure>"
    ]
    for scheme, frame in result.by_segment.items():
        title = SCHEME_TITLES.get(scheme, scheme)
        parts.append(f"<h2>Value per segment: {_e(title)}</h2>{segment_table(frame)}")
        charts.append(
            "<figure>"
            + _plotly_div(segment_chart(frame, scheme), f"chart-segment-{scheme}")
            + f"<figcaption>{_e(title)}: cumulative NPV per year.</figcaption></figure>"
        )
    parts += [
        "<h2>Value × churn risk</h2>",
        '<p class="note">Customers in deciles of their value if kept (NPV over the next '
        f"{years} years if alive now) and of their churn risk ({_e(risk_said(result))}). A "
        "cell shows the most worth spending to keep one of its customers — the expected NPV a "
        "successful retention contact saves, risk × value if kept — the customers in it and their "
        "mean risk. Grey cells are let go: at the cell's mean, no contact pays "
        "(success × (spend − offer cost) ≤ contact cost)."
        + (
            " BG/NBD counts a customer without a repeat purchase as alive (risk 0): one-time "
            "buyers sit in the lowest risk decile.</p>"
            if result.facts.get("risk", {}).get("source", "bgnbd") == "bgnbd"
            else "</p>"
        ),
        grid_table(result.grid),
    ]
    charts.append(
        "<figure>"
        + _plotly_div(grid_chart(result.grid), "chart-value-risk")
        + "<figcaption>Hover a cell for its customers and decision.</figcaption></figure>"
    )
    parts += ["<h2>Charts</h2>", f'<div class="charts">{"".join(charts)}</div>']
    title = f"Customer value — {result.dataset} at {result.as_of}"
    return page(title, "".join(parts), css=VALUE_CSS)


def risk_said(result: Any) -> str:
    """Where the grid's churn risk came from, in words (the model's, with the customers it did
    not score, or BG/NBD's)."""
    risk = result.facts.get("risk") or {}
    if risk.get("source") != "model":
        return "1 − P(alive now), BG/NBD"
    rest = risk.get("customers_bgnbd", 0)
    tail = f"; {rest:,} customers it did not score: 1 − P(alive now), BG/NBD" if rest else ""
    return f"{risk['meaning']}{tail}"
