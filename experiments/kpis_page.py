"""The KPI report's HTML page: the targets and their verdicts, the month table, the figures per
segment and Plotly charts, in the campaign page's house style (plotly.js embedded once, offline).

``render_kpis_page(result)`` is pure: an ``experiments.kpis.KpiResult`` in, HTML out. A month
whose churn horizon has not elapsed shows when its churn will be known, never a number; a partial
last month and months with less history than the active window are marked.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from features.pages import (
    DASH,
    figure,
    fmt_count,
    fmt_money,
    fmt_pct,
    page,
)
from features.pages import layout as _layout
from features.pages import row as _row
from features.pages import table as _table

KPI_CSS = """
td.pending { color: #8d6e63; background: #fbf7f3; font-style: italic; text-align: center; }
td.month { white-space: nowrap; text-align: left; }
tr.partial td { background: #fffde7; } tr.thin td:first-child { color: #888; }
.badge.met { background: #2e7d32; } .badge.not-met { background: #c62828; }
.badge.not-known-yet { background: #78909c; }
"""
CHART_HEIGHT = 480
SEGMENT_TITLES = {"abc_class": "Pareto ABC class", "lifecycle_stage": "Lifecycle stage"}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _ok(x: Any) -> bool:
    return x is not None and not pd.isna(x) and bool(np.isfinite(float(x)))


def _badge(verdict: str) -> str:
    return f'<span class="badge {verdict.replace(" ", "-")}">{_e(verdict)}</span>'


def _month_cell(row: dict[Any, Any]) -> str:
    text = _e(row["month"])
    if row["partial_month"]:
        text += f"<br><small>to {_e(row['month_end'])} only</small>"
    if not row["history_complete"]:
        text += "<br><small>short history</small>"
    return text


def _pending(row: dict[Any, Any]) -> tuple[str, str]:
    """A churn cell of a month whose horizon has not elapsed: when it will be known."""
    return f"not known yet: known on {_e(row['churn_known_on'])}", "pending"


def _spanned_row(cells: list[tuple[str, str, int]], cls: str = "") -> str:
    """``_row`` with a column span per cell."""
    tds = "".join(
        f'<td class="{c or "num"}"' + (f' colspan="{n}"' if n > 1 else "") + f">{v}</td>"
        for v, c, n in cells
    )
    return f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>"


def month_table(monthly: pd.DataFrame) -> str:
    """One row per month: customers, churn and retention (or when they will be known), money."""
    headers = [
        ("Month", "text"),
        ("Active customers at the start", ""),
        ("Active customers at the end", ""),
        ("Buying customers", ""),
        ("New customers", ""),
        ("Won back", ""),
        ("Churned (of those active at the start)", ""),
        ("Churn rate", ""),
        ("Retention rate", ""),
        ("Net revenue", ""),
        ("Gross profit", ""),
    ]
    rows = []
    for r in monthly.to_dict("records"):
        cls = "partial" if r["partial_month"] else "" if r["history_complete"] else "thin"
        churn = (
            [
                (fmt_count(float(r["churned"])), "", 1),
                (fmt_pct(r["churn_rate"]), "", 1),
                (fmt_pct(r["retention_rate"]), "", 1),
            ]
            if r["churn_final"]
            else [(*_pending(r), 3)]
        )
        cells = [
            (_month_cell(r), "month", 1),
            (fmt_count(r["active_start"]), "", 1),
            (fmt_count(r["active_end"]), "", 1),
            (fmt_count(r["buyers"]), "", 1),
            (fmt_count(r["new"]), "", 1),
            (fmt_count(r["won_back"]), "", 1),
            *churn,
            (fmt_money(r["revenue"]), "", 1),
            (fmt_money(r["gross_profit"]), "", 1),
        ]
        rows.append(_spanned_row(cells, cls))
    return _table(headers, rows)


def _segment_order(by_segment: pd.DataFrame) -> list[str]:
    from experiments.kpis import NO_HISTORY
    from features.segments import SCHEMES

    seen = list(dict.fromkeys(by_segment["segment"]))
    known = [s for scheme in ("abc_class", "lifecycle_stage") for s in SCHEMES[scheme] or ()]
    ordered = [s for s in known if s in seen] + sorted(s for s in seen if s not in known)
    return [s for s in ordered if s != NO_HISTORY] + ([NO_HISTORY] if NO_HISTORY in seen else [])


def segment_table(by_segment: pd.DataFrame, monthly: pd.DataFrame, measure: str) -> str:
    """Months (rows) x segments at the month's start (columns) for one measure."""
    from experiments.kpis import NO_HISTORY

    order = _segment_order(by_segment)
    if measure == "churn_rate":  # nobody without an order before the month is active at its start
        order = [s for s in order if s != NO_HISTORY]
    cells = by_segment.set_index(["month", "segment"])
    headers = [("Month", "text")] + [(_e(s), "") for s in order]
    rows = []
    for r in monthly.to_dict("records"):
        tds = [(_month_cell(r), "month")]
        for seg in order:
            key = (r["month"], seg)
            if key not in cells.index or (
                measure == "churn_rate" and cells.loc[key, "active_start"] == 0
            ):
                tds.append((DASH, ""))
            elif measure == "churn_rate" and not r["churn_final"]:
                tds.append(_pending(r))
            elif measure == "churn_rate":
                c = cells.loc[key]
                tds.append(
                    (
                        f"{fmt_pct(c['churn_rate'])}<br><small>of "
                        f"{fmt_count(float(c['active_start']))}</small>",
                        "",
                    )
                )
            else:
                tds.append((fmt_money(float(cells.loc[key, measure])), ""))
        rows.append(_row(tds, "partial" if r["partial_month"] else ""))
    return _table(headers, rows)


def _target_figure(t: dict[str, Any], which: str) -> str:
    value = t[which]
    if not _ok(value):
        return DASH
    if t["target"] == "churn_reduction":
        return fmt_pct(value) if which != "achieved" else f"{fmt_pct(value)} lower"
    if t["target"] == "profit_growth":
        return fmt_money(value) + " a month" if which != "achieved" else f"{fmt_pct(value)} more"
    if which == "baseline_value":
        return fmt_money(value) + " a month"
    if which == "evaluation_value":
        return fmt_money(value) + " so far"
    return f"{int(value)} months"


def targets_table(targets: list[dict[str, Any]]) -> str:
    """Each target: what it measures, its baseline and programme figures, achieved vs required,
    and the verdict."""
    what = {
        "churn_reduction": (
            "Churn rate of the programme's months (churned / active at the month's start, pooled)"
            " against the baseline's: relative reduction"
        ),
        "profit_growth": (
            "Mean monthly gross profit of the programme's months against the baseline's: "
            "relative growth"
        ),
        "payback_months": (
            "Months from the programme's start until the gross profit above the baseline's monthly"
            " mean adds up to the programme's cost"
        ),
    }
    required = {
        "churn_reduction": lambda v: f"at least {fmt_pct(v)} lower",
        "profit_growth": lambda v: f"at least {fmt_pct(v)} more",
        "payback_months": lambda v: f"within {int(v)} months",
    }
    headers = [
        ("Target", "text"),
        ("What is measured", "text"),
        ("Baseline", ""),
        ("Programme", ""),
        ("Achieved", ""),
        ("Required", ""),
        ("Verdict", "text"),
    ]
    rows = [
        _row(
            [
                (_e(t["title"]), "text"),
                (_e(what[t["target"]]), "reason"),
                (
                    f"{_target_figure(t, 'baseline_value')}<br><small>{_e(t['baseline'])}</small>",
                    "",
                ),
                (
                    f"{_target_figure(t, 'evaluation_value')}<br><small>"
                    f"{_e(t['evaluation'])}</small>",
                    "",
                ),
                (_target_figure(t, "achieved"), ""),
                (required[t["target"]](t["required"]), ""),
                (
                    _badge(t["verdict"])
                    + (f"<br><small>{_e(t['note'])}</small>" if t["note"] else ""),
                    "text",
                ),
            ]
        )
        for t in targets
    ]
    return _table(headers, rows)


# ---------------------------------------------------------------- charts


def _month_layout(title: str, y_title: str, monthly: pd.DataFrame) -> dict[str, Any]:
    """The house layout with months as categories in calendar order (none read as a date) and
    the legend below the chart, clear of the title however many series there are."""
    layout = _layout(title, y_title)
    months = list(monthly["month"])
    layout["xaxis"] = {"type": "category", "categoryorder": "array", "categoryarray": months}
    layout["legend"] = {"orientation": "h", "x": 0, "y": -0.18, "yanchor": "top"}
    layout["height"] = CHART_HEIGHT
    layout["margin"] = {**layout["margin"], "t": 50, "b": 130}
    return layout


def customers_chart(monthly: pd.DataFrame) -> Any:
    """Active customers at the month's end (line), buying, new and won-back customers (bars)."""
    import plotly.graph_objects as go

    x = list(monthly["month"])
    fig = go.Figure()
    fig.add_bar(x=x, y=monthly["buyers"], name="buying customers")
    fig.add_bar(x=x, y=monthly["new"], name="new")
    fig.add_bar(x=x, y=monthly["won_back"], name="won back")
    fig.add_scatter(
        x=x, y=monthly["active_end"], name="active at the month's end", mode="lines+markers"
    )
    layout = _month_layout("Customers per month", "customers", monthly)
    fig.update_layout(**layout)
    return fig


def churn_chart(monthly: pd.DataFrame, by_segment: pd.DataFrame) -> Any:
    """Churn rate per month, all customers and per segment; months not final are left out."""
    import plotly.graph_objects as go

    final = monthly[monthly["churn_final"]]
    fig = go.Figure()
    fig.add_scatter(
        x=list(final["month"]),
        y=final["churn_rate"],
        name="all customers",
        mode="lines+markers",
        line={"width": 3, "color": "#222"},
    )
    seg = by_segment[by_segment["churn_final"] & (by_segment["active_start"] > 0)]
    for name in _segment_order(seg):
        part = seg[seg["segment"] == name]
        fig.add_scatter(
            x=list(part["month"]), y=part["churn_rate"], name=str(name), mode="lines+markers"
        )
    layout = _month_layout(
        "Churn rate of the customers active at the month's start", "churn rate", monthly
    )
    layout["yaxis"] = {**layout["yaxis"], "tickformat": ".0%", "rangemode": "tozero"}
    fig.update_layout(**layout)
    return fig


def profit_chart(monthly: pd.DataFrame, by_segment: pd.DataFrame) -> Any:
    """Gross profit per month stacked by segment, net revenue as a line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name in _segment_order(by_segment):
        part = by_segment[by_segment["segment"] == name]
        fig.add_bar(x=list(part["month"]), y=part["gross_profit"], name=f"profit: {name}")
    fig.add_scatter(
        x=list(monthly["month"]), y=monthly["revenue"], name="net revenue", mode="lines+markers"
    )
    layout = _month_layout("Gross profit per segment and net revenue per month", "money", monthly)
    layout["barmode"] = "relative"

    fig.update_layout(**layout)
    return fig


# ---------------------------------------------------------------- the page


def _definitions(result: Any) -> str:
    job, f = result.job, result.facts
    n, h = job.active_days, job.churn_horizon_days
    margin = f"global {fmt_pct(job.margin.default)} of net revenue"
    if job.margin.by_category:
        cats = ", ".join(f"{k} {fmt_pct(v)}" for k, v in sorted(job.margin.by_category.items()))
        margin += f"; per category {cats}"
    segment = SEGMENT_TITLES.get(job.segment, job.segment)
    items = [
        ("Data", f"{result.dataset}: transactions {f['data_first_date']} to {f['data_last_date']}"),
        ("An order", "a transaction line that is not a return (amount ≥ 0, not flagged)"),
        ("Active", f"at least one order in the {n} days up to and including the day"),
        ("New", "the customer's first order in the data falls in the month"),
        ("Won back", f"an order in the month more than {h} days after the customer's previous one"),
        (
            "Churned",
            f"active on the day before the month and no order in the {h} days after it (the churn"
            f" label of the churn models at that cutoff); known {h} days after the month's start",
        ),
        ("Retention rate", "1 − churn rate, for the same customers"),
        ("Net revenue", "order value minus returns in the month"),
        ("Gross profit", f"net revenue × margin ({margin})"),
        (
            "Segment",
            f"{segment}, computed from the data before the month only; customers without an "
            "order before the month are shown apart",
        ),
    ]
    return (
        '<div class="scroll"><table>'
        + "".join(
            f'<tr><th class="text">{_e(k)}</th><td class="text">{_e(v)}</td></tr>' for k, v in items
        )
        + "</table></div>"
    )


def _in_words(result: Any) -> str:
    m = result.monthly
    final = m[m["churn_final"]]
    complete = m[~m["partial_month"]]
    parts = [
        f"{len(m)} months, {_e(result.first_month)} to {_e(result.last_month)}: "
        f"net revenue {fmt_money(float(m['revenue'].sum()))}, gross profit "
        f"{fmt_money(float(m['gross_profit'].sum()))}."
    ]
    if len(final):
        last = final.iloc[-1].to_dict()
        parts.append(
            f"In {_e(last['month'])}, the last month whose churn is known, "
            f"{fmt_count(float(last['churned']))} of {fmt_count(last['active_start'])} active "
            f"customers churned ({fmt_pct(last['churn_rate'])}; retention "
            f"{fmt_pct(last['retention_rate'])})."
        )
    pending = m[~m["churn_final"]]
    if len(pending):
        parts.append(
            f"The churn of {len(pending)} later month(s) is not known yet: their "
            f"{result.job.churn_horizon_days}-day horizon runs past the data."
        )
    if len(complete):
        last = complete.iloc[-1].to_dict()
        parts.append(
            f"{_e(last['month'])}: {fmt_count(last['active_end'])} active customers at its end, "
            f"{fmt_count(last['buyers'])} bought, {fmt_count(last['new'])} new, "
            f"{fmt_count(last['won_back'])} won back."
        )
    verdicts = [f"{t['title'].lower()}: {t['verdict']}" for t in result.targets]
    if verdicts:
        parts.append("Targets — " + "; ".join(verdicts) + ".")
    return f'<p class="words">{" ".join(parts)}</p>'


def render_kpis_page(result: Any) -> str:
    """The KPI page's HTML (self-contained; plotly.js embedded once in the head)."""
    m, seg = result.monthly, result.by_segment
    segment = SEGMENT_TITLES.get(result.job.segment, result.job.segment)
    parts = [
        f"<h1>Customer KPIs: {_e(result.dataset)}, {_e(result.first_month)} to "
        f"{_e(result.last_month)}</h1>",
        f'<p class="meta">Job <code>{_e(result.job.name)}</code>. Observed figures from the '
        "ingested transactions (no model).</p>",
        _in_words(result),
        "<h2>Definitions</h2>",
        _definitions(result),
    ]
    if result.targets:
        parts += [
            "<h2>Targets</h2>",
            targets_table(result.targets),
            '<p class="note">A before / after comparison of the data, not a controlled '
            "measurement: the campaign read-outs against control groups say what a programme "
            "caused. A verdict waits (not known yet) while a month it needs is partial or its "
            "churn horizon has not elapsed.</p>",
        ]
    parts += [
        "<h2>Month by month</h2>",
        month_table(m),
        '<p class="note">Churn and retention of a month are those of the customers active on '
        "the day before it; a month whose horizon runs past the data says when they will be "
        "known. Yellow: the data ends inside the month. Short history: the active window reaches "
        "before the data, so active, new and won-back customers are undercounted.</p>",
        f"<h2>Gross profit per segment ({_e(segment)} at the month's start)</h2>",
        segment_table(seg, m, "gross_profit"),
        f"<h2>Net revenue per segment ({_e(segment)} at the month's start)</h2>",
        segment_table(seg, m, "revenue"),
        f"<h2>Churn rate per segment ({_e(segment)} at the month's start)</h2>",
        segment_table(seg, m, "churn_rate"),
    ]
    charts = [
        ("chart-customers", customers_chart(m), "Customers: active, buying, new, won back."),
        ("chart-churn", churn_chart(m, seg), "Churn rate; months not known yet are left out."),
        ("chart-profit", profit_chart(m, seg), "Gross profit by segment and net revenue."),
    ]
    parts += [
        "<h2>Charts</h2>",
        '<div class="charts">'
        + "".join(figure(fig, div, _e(cap), CHART_HEIGHT) for div, fig, cap in charts)
        + "</div>",
    ]
    title = f"Customer KPIs — {result.dataset}, {result.first_month} to {result.last_month}"
    return page(title, "".join(parts), css=KPI_CSS)
