"""A saved campaign plan (and its read-out, once read) as one self-contained HTML page.

``render_campaign_page(record, readout)`` is pure: the plan's ``plan.json`` record and the
``readout.json`` of ``patron campaign read`` (or None) in, the page's HTML out. It says the plan's
totals in words, the exclusions per reason (adding up to the base), the expected figures per arm,
and, once read, the measured incremental response against the expected one, the profit per
contact, the declines by reason against control and the gate's decision per arm; two interactive
Plotly charts (actual vs expected response, expected profit per arm coloured by the gate). The
page works offline: plotly.js is embedded once, in the head. ``write_campaign_page`` reads the
plan folder and writes the page atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.plans import READOUT_FILE, RECORD_FILE, plans_dir
from features.pages import (
    DASH,
    fmt_count,
    fmt_money,
    fmt_pct,
    fmt_pp,
    fmt_time,
    page,
)
from features.pages import esc as _e
from features.pages import finite as _finite
from features.pages import humanise as _humanise
from features.pages import interval as _interval
from features.pages import layout as _layout
from features.pages import plotly_div as _plotly_div
from features.pages import row as _row
from features.pages import table as _table
from features.store import atomic_path

DECISION_COLOURS = {
    "rolled out": "#2e7d32",
    "dropped": "#c62828",
    "held": "#ef6c00",
    "not read yet": "#78909c",
}
EXCLUSION_LABELS = {
    "duplicate_record": "Duplicate record of a customer",
    "no_consent": "No consent for any channel",
    "not_eligible": "Not eligible for any offer",
    "contact_policy": "Contact policy (contacted recently or quiet days)",
    "not_profitable": "No profitable offer",
    "household": "Another member of the household chosen",
    "budget_or_capacity": "Left out by the budget or a channel's capacity",
}


# ---------------------------------------------------------------- the gate


def decision_of(gate: dict[str, Any] | None) -> str:
    """``rolled out`` / ``dropped`` / ``held`` from a gate decision (``not read yet`` without)."""
    if gate is None:
        return "not read yet"
    if gate.get("roll_out"):
        return "rolled out"
    return "held" if str(gate.get("reason", "")).startswith("held") else "dropped"


def _badge(decision: str) -> str:
    return f'<span class="badge {decision.replace(" ", "-")}">{_e(decision)}</span>'


# ---------------------------------------------------------------- tables


def _constraint_label(name: str) -> tuple[str, Any]:
    """A constraint's name (``budget.money``, ``channels.phone.capacity``,
    ``offers.<id>.budget.contacts``) in words, and how its figures read."""
    parts = name.split(".")
    fmt = fmt_count if parts[-1] in ("contacts", "capacity") else fmt_money
    if parts[0] == "channels" and parts[-1] == "capacity" and len(parts) == 3:
        return f"Capacity of the {parts[1]} channel", fmt
    if parts[0] == "budget" and len(parts) == 2:
        return ("Money budget" if parts[1] == "money" else "Contact budget"), fmt
    if parts[0] == "offers" and len(parts) == 4 and parts[2] == "budget":
        kind = "money" if parts[3] == "money" else "contact"
        return f"The {kind} budget of offer {parts[1]}", fmt
    return _humanise(name), fmt


def _figure_key(summary: dict[str, Any]) -> str:
    if "expected_incremental_profit_selected" in summary:
        return "expected_incremental_profit"
    return "non_causal_ranking_value"


def _plan_in_words(record: dict[str, Any]) -> str:
    s = record.get("summary", {})
    key = _figure_key(s)
    incremental = key == "expected_incremental_profit"
    what = "incremental profit" if incremental else "ranking value (not an incremental effect)"
    words = (
        f"Of <b>{fmt_count(s.get('base'))}</b> customer records, "
        f"<b>{fmt_count(s.get('selected'))}</b> were selected: "
        f"<b>{fmt_count(s.get('contacted'))}</b> to be contacted "
        f"({fmt_count(s.get('test_cell'))} in the test cell first, "
        f"{fmt_count(s.get('rollout'))} in the roll-out) and "
        f"<b>{fmt_count(s.get('control'))}</b> held out as the control group. "
        f"The contacted customers are expected to bring <b>{fmt_money(s.get(key + '_contacted'))}"
        f"</b> of {what} for an expected spend of "
        f"<b>{fmt_money(s.get('expected_spend_contacted'))}</b> "
        f"({fmt_money(s.get(key + '_selected'))} and "
        f"{fmt_money(s.get('expected_spend_selected'))} if the control group were contacted too)."
    )
    totals = [
        ("Customer records (base)", fmt_count(s.get("base"))),
        ("Selected", fmt_count(s.get("selected"))),
        ("To be contacted", fmt_count(s.get("contacted"))),
        ("— in the test cell", fmt_count(s.get("test_cell"))),
        ("— in the roll-out", fmt_count(s.get("rollout"))),
        ("Control group (not contacted)", fmt_count(s.get("control"))),
        (f"Expected {what}, contacted", fmt_money(s.get(key + "_contacted"))),
        ("Expected spend, contacted", fmt_money(s.get("expected_spend_contacted"))),
    ]
    for name, c in sorted((s.get("constraints") or {}).items()):
        limit, used = c.get("limit"), c.get("used_by_selected")
        share = fmt_pct(used / limit) if _finite(used) and _finite(limit) and limit else DASH
        label, fmt = _constraint_label(name)
        totals.append((f"{label}: used of the limit", f"{fmt(used)} of {fmt(limit)} ({share})"))
    table = _table(
        [("Total", "text"), ("Figure", "")],
        [_row([(_e(label), "text"), (value, "")]) for label, value in totals],
    )
    return f'<p class="words">{words}</p>{table}'


def _exclusions(record: dict[str, Any]) -> str:
    s = record.get("summary", {})
    base = s.get("base")
    excluded = s.get("excluded") or {}
    rows = []
    for reason, n in excluded.items():
        share = fmt_pct(n / base) if _finite(base) and base else DASH
        label = EXCLUSION_LABELS.get(reason, _humanise(reason))
        rows.append(_row([(_e(label), "text"), (fmt_count(n), ""), (share, "")]))
    selected = s.get("selected", 0)
    share = fmt_pct(selected / base) if _finite(base) and base else DASH
    rows.append(_row([("Selected", "text"), (fmt_count(selected), ""), (share, "")]))
    total = sum(excluded.values()) + selected
    rows.append(
        _row([("Base (all records)", "text"), (fmt_count(total), ""), (fmt_pct(1.0), "")], "total")
    )
    note = ""
    if total != base:
        note = (
            f'<p class="warning">The reasons and the selected add up to {fmt_count(total)}, '
            f"not the base of {fmt_count(base)}.</p>"
        )
    table = _table([("Reason", "text"), ("Customers", ""), ("Share of base", "")], rows)
    return table + note


def _arm_order(record: dict[str, Any], readout: dict[str, Any] | None) -> list[str]:
    """Arms by expected incremental profit, highest first; read-only arms after them."""
    by_arm = sorted(
        record.get("by_arm", []), key=lambda a: -(a.get("expected_incremental_profit") or 0)
    )
    names = [a["arm"] for a in by_arm]
    extra = [a["arm"] for a in (readout or {}).get("arms", []) if a["arm"] not in names]
    return names + extra


def _expected_table(
    record: dict[str, Any], order: list[str], gates: dict[str, dict[str, Any]] | None
) -> str:
    arms = {a["arm"]: a for a in record.get("by_arm", [])}
    headers = [
        ("Arm", "text"),
        ("Offer", "text"),
        ("Channel", "text"),
        ("Contacts", ""),
        ("In the test cell", ""),
        ("Expected incremental responses<br><small>± sd, response noise only</small>", ""),
        ("Expected incremental profit", ""),
    ]
    if gates is not None:
        headers.append(("Gate", "text"))
    rows = []
    for name in order:
        a = arms.get(name)
        if a is None:
            continue
        resp = a.get("expected_incremental_responses")
        sd = a.get("expected_incremental_responses_sd")
        resp_text = f"{resp:,.1f} ± {sd:,.1f}" if _finite(resp) and _finite(sd) else DASH
        cells = [
            (f"<code>{_e(name)}</code>", "text"),
            (f"<code>{_e(a.get('offer', ''))}</code>", "text"),
            (_e(a.get("channel", "")), "text"),
            (fmt_count(a.get("contacts")), ""),
            (fmt_count(a.get("test_cell")), ""),
            (resp_text, ""),
            (fmt_money(a.get("expected_incremental_profit")), ""),
        ]
        if gates is not None:
            cells.append((_badge(decision_of(gates.get(name))), "text"))
        rows.append(_row(cells))
    return _table(headers, rows)


def _readout_tables(readout: dict[str, Any], order: list[str]) -> str:
    arms = {a["arm"]: a for a in readout.get("arms", [])}
    level = readout.get("confidence")
    level_text = fmt_pct(level, 0) if _finite(level) else "the configured"
    headers = [
        ("Arm", "text"),
        ("Contacts read", ""),
        ("Controls read (its plan segment)", ""),
        ("Response rate", ""),
        ("Control response rate", ""),
        (f"Incremental response (measured)<br><small>{_e(level_text)} interval</small>", ""),
        ("Expected by the plan", ""),
        ("Model check", "text"),
        (f"Profit per contact<br><small>{_e(level_text)} interval</small>", ""),
        ("Incremental profit of the wave", ""),
    ]
    rows = []
    for name in order:
        a = arms.get(name)
        if a is None:
            continue
        contradicts = a.get("contradicts_model")
        check = (
            '<span class="flag">contradicts the model</span>'
            if contradicts
            else (DASH if contradicts is None else '<span class="ok">consistent</span>')
        )
        rows.append(
            _row(
                [
                    (f"<code>{_e(name)}</code>", "text"),
                    (fmt_count(a.get("contacts")), ""),
                    (fmt_count(a.get("control")), ""),
                    (fmt_pct(a.get("response_rate")), ""),
                    (fmt_pct(a.get("control_rate")), ""),
                    (
                        f"{fmt_pp(a.get('incremental_response'))}<br><small>"
                        f"{_interval(a.get('incremental_response_ci'), fmt_pp, 'pp')}</small>",
                        "",
                    ),
                    (fmt_pp(a.get("expected_incremental_response")), ""),
                    (check, "text"),
                    (
                        f"{fmt_money(a.get('profit_per_contact'), signed=True)}<br><small>"
                        + _interval(
                            a.get("profit_per_contact_ci"), lambda x: fmt_money(x, signed=True)
                        )
                        + "</small>",
                        "",
                    ),
                    (fmt_money(a.get("incremental_profit"), signed=True), ""),
                ]
            )
        )
    measured = _table(headers, rows)

    decline_rows = []
    for name in order:
        a = arms.get(name)
        for reason, shares in sorted(((a or {}).get("declined") or {}).items()):
            arm_share, ctrl_share = (list(shares) + [None, None])[:2]
            diff = (
                fmt_pp(arm_share - ctrl_share)
                if _finite(arm_share) and _finite(ctrl_share)
                else DASH
            )
            decline_rows.append(
                _row(
                    [
                        (f"<code>{_e(name)}</code>", "text"),
                        (_e(reason), "text"),
                        (fmt_pct(arm_share), ""),
                        (fmt_pct(ctrl_share), ""),
                        (diff, ""),
                    ]
                )
            )
    if decline_rows:
        declines = _table(
            [
                ("Arm", "text"),
                ("Reason given", "text"),
                ("Share of the arm's contacts", ""),
                ("Share of its segment's controls", ""),
                ("Difference", ""),
            ],
            decline_rows,
        )
    else:
        declines = '<p class="note">No negative response came with a reason.</p>'
    return (
        f"{measured}<p class='note'>pp: percentage points. An arm contradicts the model when the "
        f"plan's expected incremental response lies outside the measured interval.</p>"
        f"<h3>Negative responses by reason, against control</h3>{declines}"
    )


def _gate_table(readout: dict[str, Any], order: list[str]) -> str:
    gates = {g["arm"]: g for g in readout.get("gate", [])}
    # a dropped arm with re-priced terms: re-priced (re-tested) or dropped, and why
    priced = {d["arm"]: d for d in readout.get("repricing", [])}
    rows = []
    for name in order:
        g = gates.get(name)
        if g is None:
            continue
        why = _e(g.get("reason", ""))
        if name in priced:
            why += f"<br><b>{_e(priced[name]['action'])}:</b> {_e(priced[name]['reason'])}"
        rows.append(
            _row(
                [
                    (f"<code>{_e(name)}</code>", "text"),
                    (_badge(decision_of(g)), "text"),
                    (why, "reason"),
                ],
                cls=decision_of(g).replace(" ", "-"),
            )
        )
    return _table([("Arm", "text"), ("Decision", "text"), ("Why", "text")], rows)


# ---------------------------------------------------------------- charts


def actual_vs_expected_chart(readout: dict[str, Any], order: list[str]) -> Any:
    """Measured incremental response per arm with its interval, the plan's expectation as a
    marker (percentage points)."""
    import plotly.graph_objects as go

    arms = [a for name in order for a in readout.get("arms", []) if a["arm"] == name]
    level = readout.get("confidence")
    level_text = fmt_pct(level, 0) if _finite(level) else ""

    def pp(x: Any) -> float | None:
        return x * 100 if _finite(x) else None

    x = [a["arm"] for a in arms]
    y = [pp(a.get("incremental_response")) for a in arms]
    ci = [a.get("incremental_response_ci") or [None, None] for a in arms]
    plus = [
        pp(c[1] - a["incremental_response"]) if _finite(c[1]) else None
        for a, c in zip(arms, ci, strict=True)
    ]
    minus = [
        pp(a["incremental_response"] - c[0]) if _finite(c[0]) else None
        for a, c in zip(arms, ci, strict=True)
    ]
    hover = [
        f"<b>{_e(a['arm'])}</b><br>measured {fmt_pp(a.get('incremental_response'), 2)}"
        f"<br>{level_text} interval {_interval(c, lambda v: fmt_pp(v, 2), 'pp')}"
        f"<br>expected {fmt_pp(a.get('expected_incremental_response'), 2)}"
        f"<br>{fmt_count(a.get('contacts'))} contacts, {fmt_count(a.get('control'))} controls"
        + ("<br><b>contradicts the model</b>" if a.get("contradicts_model") else "")
        for a, c in zip(arms, ci, strict=True)
    ]
    colours = ["#c62828" if a.get("contradicts_model") else "#1f5fa8" for a in arms]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="markers",
            name=f"Measured, with its {level_text} interval",
            marker={"size": 11, "color": colours},
            error_y={"type": "data", "array": plus, "arrayminus": minus, "color": "#555"},
            hovertext=hover,
            hoverinfo="text",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[pp(a.get("expected_incremental_response")) for a in arms],
            mode="markers",
            name="Expected by the plan",
            marker={"symbol": "diamond-open", "size": 14, "color": "#222", "line": {"width": 2}},
            hovertext=hover,
            hoverinfo="text",
        )
    )
    fig.update_layout(**_layout("Incremental response: measured vs expected", "Percentage points"))
    return fig


def expected_profit_chart(
    record: dict[str, Any], order: list[str], gates: dict[str, dict[str, Any]] | None
) -> Any:
    """Expected incremental profit per arm, coloured by the gate's decision once read."""
    import plotly.graph_objects as go

    arms = {a["arm"]: a for a in record.get("by_arm", [])}
    names = [n for n in order if n in arms]
    fig = go.Figure()
    groups = ["rolled out", "dropped", "held", "not read yet"] if gates is not None else ["planned"]
    for group in groups:
        members = [n for n in names if gates is None or decision_of(gates.get(n)) == group]
        if not members:
            continue
        hover = []
        for n in members:
            a = arms[n]
            text = (
                f"<b>{_e(n)}</b><br>expected incremental profit "
                f"{fmt_money(a.get('expected_incremental_profit'))}"
                f"<br>{fmt_count(a.get('contacts'))} contacts "
                f"({fmt_count(a.get('test_cell'))} in the test cell)"
                f"<br>expected incremental responses "
                f"{a.get('expected_incremental_responses', float('nan')):,.1f} ± "
                f"{a.get('expected_incremental_responses_sd', float('nan')):,.1f}"
            )
            if gates is not None:
                g = gates.get(n)
                text += f"<br>gate: {group}" + (f"<br>{_e(g['reason'])}" if g else "")
            hover.append(text)
        fig.add_trace(
            go.Bar(
                x=members,
                y=[arms[n].get("expected_incremental_profit") for n in members],
                name="Expected incremental profit" if gates is None else f"Gate: {group}",
                marker={"color": DECISION_COLOURS.get(group, "#1f5fa8")},
                hovertext=hover,
                hoverinfo="text",
            )
        )
    fig.update_layout(
        **_layout("Expected incremental profit per arm", "Expected incremental profit"),
        barmode="relative",
        showlegend=True,
    )
    fig.update_xaxes(categoryorder="array", categoryarray=names)
    return fig


# ---------------------------------------------------------------- the page


def render_campaign_page(record: dict[str, Any], readout: dict[str, Any] | None) -> str:
    """The campaign page's HTML: the plan, its read-out if any, the gate and the charts."""
    s = record.get("summary", {})
    campaign_id = (record.get("campaign") or {}).get("campaign_id") or s.get("campaign_id", "")
    plan_id = record.get("plan_id", "")
    gates = {g["arm"]: g for g in readout.get("gate", [])} if readout else None
    order = _arm_order(record, readout)
    read_text = (
        f"read {_e(fmt_time(readout.get('read_at')))}"
        if readout
        else "not read yet (<code>patron campaign read</code>)"
    )
    meta = [
        f"Plan <code>{_e(plan_id)}</code> · as of {_e(record.get('as_of', DASH))} · "
        f"made {_e(fmt_time(record.get('created_at')))} · {read_text}",
        f"Figures: <b>{_e(s.get('basis', DASH))}</b>"
        + (
            f" · solved by {_e((s.get('solver') or {}).get('method', DASH))} "
            f"in {(s.get('solver') or {}).get('seconds', float('nan')):.2f} s, "
            f"{_e((s.get('solver') or {}).get('status', ''))}"
            if s.get("solver")
            else ""
        ),
    ]
    inputs = record.get("inputs") or {}
    if inputs:
        meta.append(
            "Made from: "
            + ", ".join(
                f"{_e(_humanise(str(k)).lower())} <code>{_e(v)}</code>"
                for k, v in sorted(inputs.items())
                if isinstance(v, str | int | float)
            )
        )
    warning = f'<p class="warning">{_e(s["warning"])}</p>' if s.get("warning") else ""

    parts = [
        f"<h1>Campaign <code>{_e(campaign_id)}</code></h1>",
        *(f'<p class="meta">{m}</p>' for m in meta),
        warning,
        "<h2>The plan</h2>",
        '<div class="grid"><div>',
        _plan_in_words(record),
        "</div><div><h3>Who was left out, and why</h3>",
        _exclusions(record),
        "</div></div>",
        "<h2>Expected per arm</h2>",
        _expected_table(record, order, gates),
        '<p class="note">The ± is the spread of the response count from response noise only '
        "(not the model's own error).</p>",
    ]
    charts = []
    if readout:
        level = readout.get("confidence")
        parts += [
            "<h2>Read-out of the test cell</h2>",
            f'<p class="meta">{fmt_count(readout.get("read"))} responses read, '
            f"{fmt_count(readout.get('rejected'))} rejected (kept in the plan folder), "
            f"{fmt_count(readout.get('wave_without_response'))} of the wave without a response; "
            f"intervals at {fmt_pct(level, 0)}.</p>",
            _readout_tables(readout, order),
            f"<h2>Roll-out gate ({fmt_pct(level, 0)} confidence)</h2>",
            _gate_table(readout, order),
        ]
        charts.append(
            "<figure>"
            + _plotly_div(actual_vs_expected_chart(readout, order), "chart-actual-vs-expected")
            + "<figcaption>Dots: measured incremental response with its interval (red: "
            "contradicts the model); open diamonds: the plan's expectation for the same "
            "contacts.</figcaption></figure>"
        )
    charts.append(
        "<figure>"
        + _plotly_div(expected_profit_chart(record, order, gates), "chart-expected-profit")
        + "<figcaption>"
        + ("Coloured by the gate's decision." if readout else "Before the read-out.")
        + "</figcaption></figure>"
    )
    parts += ["<h2>Charts</h2>"]
    if not readout:
        parts.append(
            '<p class="note">Measured vs expected response appears once the test cell is read '
            "(<code>patron campaign read</code>).</p>"
        )
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    title = f"Campaign {campaign_id} — plan {plan_id}"
    return page(title, "".join(parts))


def load_campaign(state: Any, plan_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A saved plan's record and its read-out (None before ``patron campaign read``)."""
    folder = plans_dir(state) / plan_id
    if not (folder / RECORD_FILE).is_file():
        known = sorted(p.name for p in plans_dir(state).glob("*") if (p / RECORD_FILE).exists())
        raise ValueError(f"--plan {plan_id!r}: no such plan (known: {known[-5:]})")
    record = json.loads((folder / RECORD_FILE).read_text())
    readout_path = folder / READOUT_FILE
    readout = json.loads(readout_path.read_text()) if readout_path.is_file() else None
    return record, readout


def write_campaign_page(state: Any, plan_id: str, path: Path) -> Path:
    """Render the plan ``plan_id`` (and its read-out, if read) to ``path``, atomically."""
    record, readout = load_campaign(state, plan_id)
    page = render_campaign_page(record, readout)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
