"""The read-out of past campaigns (``patron campaign evaluate --html``) as one offline page.

``render_evaluate_page(report, title)`` is pure: the table of
:func:`experiments.campaigns.evaluate_campaigns` (one row per campaign and offer) in, the page's
HTML out, in the house style of ``features.pages``: the method in words, two interactive charts
(uplift with its interval per campaign and offer; treated non-responders by reason) and three
tables with words for headers — response, value, declines by reason — with rates as
percentages, uplift in percentage points and money with thousands separators. Nothing else is
written beside the page.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from features.pages import (
    DASH,
    esc,
    figure,
    finite,
    fmt_count,
    fmt_money,
    fmt_num,
    fmt_pct,
    fmt_pp,
    layout,
    page,
    row,
    table,
)

METHOD = (
    "Uplift = response rate of the contacted minus that of the control group, with a "
    "{conf} Newcombe (hybrid score) interval; p-value from the pooled two-proportion z-test "
    "(Fisher's exact test when an expected cell is below 5). Incremental revenue comes from "
    "transactions in the response window when they are available, else from the offer's value "
    "× incremental responses. ROI = (incremental revenue − contact costs) / contact costs. "
    "These are randomised test-versus-control differences: causal for the contacted group of "
    "each campaign, not a forecast for another audience."
)

_NUMBER, _TEXT = "", "text"


def _records(report: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in report.to_dict("records")]


def _label(r: dict[str, Any]) -> str:
    return f"{r['campaign_id']} · {r['offer_id']}"


def _reason_columns(report: pd.DataFrame) -> list[str]:
    return [c for c in report.columns if c.startswith("declined_") and c != "declined"]


def _reason_name(column: str) -> str:
    return column.removeprefix("declined_").replace("_", " ")


def uplift_chart(report: pd.DataFrame) -> Any:
    """Uplift per campaign and offer in percentage points, with its interval (hover: rates,
    contacts, p-value)."""
    import plotly.graph_objects as go

    records = _records(report)
    labels = [_label(r) for r in records]
    uplift = [100 * float(r["uplift"]) for r in records]
    hover = [
        f"contacted {fmt_pct(r['response_rate_treatment'])} of {fmt_count(r['contacts'])}<br>"
        f"control {fmt_pct(r['response_rate_control'])} of {fmt_count(r['control'])}<br>"
        f"p = {fmt_num(r['p_value'])} ({esc(r['test'])})"
        for r in records
    ]
    fig = go.Figure(
        go.Scatter(
            x=uplift,
            y=labels,
            mode="markers",
            marker={"size": 9, "color": "#4e79a7"},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [100 * (r["uplift_ci_high"] - r["uplift"]) for r in records],
                "arrayminus": [100 * (r["uplift"] - r["uplift_ci_low"]) for r in records],
            },
            customdata=hover,
            hovertemplate="%{y}<br>uplift %{x:+.2f} pp<br>%{customdata}<extra></extra>",
            name="uplift",
        )
    )
    fig.add_vline(x=0, line_dash="dash", line_color="#888")
    lay = layout("Uplift per campaign and offer", "")
    lay["xaxis"] = {"title": {"text": "uplift, percentage points (with its interval)"}}
    lay["yaxis"] = {"autorange": "reversed", "type": "category", "automargin": True}
    lay.update(height=140 + 40 * len(records), showlegend=False)
    fig.update_layout(**lay)
    return fig


def declines_chart(report: pd.DataFrame) -> Any:
    """Treated non-responders by reason, as a share of the contacted (stacked; legend toggles)."""
    import plotly.graph_objects as go

    records = _records(report)
    labels = [_label(r) for r in records]
    fig = go.Figure()
    for column in [*_reason_columns(report)]:
        shares = [100 * r[column] / max(int(r["contacts"]), 1) for r in records]
        fig.add_trace(
            go.Bar(
                x=shares,
                y=labels,
                orientation="h",
                name=_reason_name(column),
                hovertemplate="%{y}<br>%{x:.1f} % of contacts<extra>%{fullData.name}</extra>",
            )
        )
    lay = layout("Treated non-responders by reason", "")
    lay["xaxis"] = {"title": {"text": "% of contacts"}}
    lay["yaxis"] = {"autorange": "reversed", "type": "category", "automargin": True}
    lay.update(height=160 + 40 * len(records), barmode="stack")
    fig.update_layout(**lay)
    return fig


def _interval(low: Any, high: Any, fmt: Any) -> str:
    if not (finite(low) and finite(high)):
        return DASH
    return f"{fmt(low)} to {fmt(high)}"


def _response_table(records: list[dict[str, Any]]) -> str:
    headers = [
        ("Campaign", _TEXT),
        ("Offer", _TEXT),
        ("Sent", _TEXT),
        ("Contacted", _NUMBER),
        ("Control", _NUMBER),
        ("Response, contacted", _NUMBER),
        ("Response, control", _NUMBER),
        ("Uplift", _NUMBER),
        ("Uplift interval", _NUMBER),
        ("p-value", _NUMBER),
        ("Test", _TEXT),
    ]
    rows = [
        row(
            [
                (esc(r["campaign_id"]), _TEXT),
                (esc(r["offer_id"]), _TEXT),
                (esc(r["send_date"]), _TEXT),
                (fmt_count(r["contacts"]), _NUMBER),
                (fmt_count(r["control"]), _NUMBER),
                (fmt_pct(r["response_rate_treatment"]), _NUMBER),
                (fmt_pct(r["response_rate_control"]), _NUMBER),
                (fmt_pp(r["uplift"], 2), _NUMBER),
                (_interval(r["uplift_ci_low"], r["uplift_ci_high"], lambda v: fmt_pp(v, 2)), ""),
                (fmt_num(r["p_value"]), _NUMBER),
                (esc(r["test"]), _TEXT),
            ]
        )
        for r in records
    ]
    return table(headers, rows, id_="response")


def _value_table(report: pd.DataFrame, records: list[dict[str, Any]]) -> str:
    expected = "expected_responses" in report
    headers = [
        ("Campaign", _TEXT),
        ("Offer", _TEXT),
        ("Incremental responses", _NUMBER),
        ("Interval", _NUMBER),
        ("Incremental revenue", _NUMBER),
        ("Interval", _NUMBER),
        ("Revenue from", _TEXT),
        ("Contact costs", _NUMBER),
        ("ROI", _NUMBER),
    ]
    if expected:
        headers += [("Expected responses", _NUMBER), ("Actual ÷ expected", _NUMBER)]
    rows = []
    for r in records:
        cells = [
            (esc(r["campaign_id"]), _TEXT),
            (esc(r["offer_id"]), _TEXT),
            (fmt_num(r["incremental_responses"], 1, signed=True), _NUMBER),
            (
                _interval(
                    r["incremental_responses_ci_low"],
                    r["incremental_responses_ci_high"],
                    lambda v: fmt_num(v, 1, signed=True),
                ),
                _NUMBER,
            ),
            (fmt_money(r["incremental_revenue"], signed=True), _NUMBER),
            (
                _interval(
                    r.get("incremental_revenue_ci_low"),
                    r.get("incremental_revenue_ci_high"),
                    lambda v: fmt_money(v, signed=True),
                ),
                _NUMBER,
            ),
            (esc(r["revenue_source"]), _TEXT),
            (fmt_money(r["contact_costs"]), _NUMBER),
            (fmt_pct(r["roi"]), _NUMBER),
        ]
        if expected:
            cells += [
                (fmt_num(r["expected_responses"], 1), _NUMBER),
                (fmt_num(r["actual_vs_expected"], 2), _NUMBER),
            ]
        rows.append(row(cells))
    return table(headers, rows, id_="value")


def _declines_table(report: pd.DataFrame, records: list[dict[str, Any]]) -> str:
    reasons = _reason_columns(report)
    headers = [("Campaign", _TEXT), ("Offer", _TEXT), ("Declined", _NUMBER)] + [
        (esc(_reason_name(c).capitalize()), _NUMBER) for c in reasons
    ]
    rows = []
    for r in records:
        declined = max(int(r["declined"]), 1)
        cells = [
            (esc(r["campaign_id"]), _TEXT),
            (esc(r["offer_id"]), _TEXT),
            (fmt_count(r["declined"]), _NUMBER),
        ] + [(f"{fmt_count(r[c])} ({fmt_pct(r[c] / declined)})", _NUMBER) for c in reasons]
        rows.append(row(cells))
    return table(headers, rows, id_="declines")


def render_evaluate_page(report: pd.DataFrame, title: str, confidence: float = 0.95) -> str:
    """The whole page of a campaign evaluation (``report`` as evaluate_campaigns returns it)."""
    records = _records(report)
    conf = f"{confidence:.0%}".replace("%", " %")
    significant = sum(
        1 for r in records if finite(r["uplift_ci_low"]) and float(r["uplift_ci_low"]) > 0
    )
    summary = (
        f"{fmt_count(len(records))} campaign × offer cells, "
        f"{fmt_count(int(report['contacts'].sum()))} customers contacted and "
        f"{fmt_count(int(report['control'].sum()))} held out as control; "
        f"{fmt_count(significant)} cells with an uplift whose {conf} interval lies above zero."
    )
    body = "".join(
        [
            f"<h1>{esc(title)}</h1>",
            f"<p>{esc(summary)}</p>",
            f'<p class="note">{esc(METHOD.format(conf=conf))}</p>',
            '<div class="charts">',
            figure(uplift_chart(report), "chart-uplift", height=140 + 40 * len(records)),
            figure(declines_chart(report), "chart-declines", height=160 + 40 * len(records))
            if _reason_columns(report)
            else "",
            "</div>",
            "<h2>Response: contacted against control</h2>",
            _response_table(records),
            "<h2>Value</h2>",
            _value_table(report, records),
            "<h2>Declines by reason (treated non-responders)</h2>",
            _declines_table(report, records),
        ]
    )
    return page(title, body)


__all__ = ["declines_chart", "render_evaluate_page", "uplift_chart"]
