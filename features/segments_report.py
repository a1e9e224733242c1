"""Segment outputs at the edge: charts, the self-contained HTML report, the CLI's plain functions.

``features.segments`` computes; this module draws (Plotly for the page, matplotlib without pyplot
state for the PNG beside the segments) and writes files, always atomically. Layout under the
state folder::

    segments/<dataset>/as_of=<date>/segments.parquet, segment_summary.csv, segments_chart.png,
                                    segments_meta.json, segments_report.html

The demographic segments read the customers table as of the cutoff (``features.build``'s
``customers_as_of_sql``), the needs segments the category spend up to the cutoff. With an events
table the journey stages (``features.journey``) cover the buyers and the prospects at the cutoff:
the buyers' stage is a segments column, every known person's is counted in the summary.
"""

from __future__ import annotations

import html
import io
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.catalog import Catalog
from features.pages import DASH, layout, page, plotly_div
from features.segments import (
    JOURNEY_STAGES,
    RFM_SEGMENT_GRID,
    SegmentsConfig,
    category_spend,
    lifecycle_stages,
    order_gaps,
    segment_customers,
    segment_summary,
)
from features.segments import lifecycle_flow as compute_flow
from features.segments import pareto_curve as compute_pareto_curve
from features.store import StateDirs, atomic_path

#: Section headings of the report, in order (tests look for them).
REPORT_SECTIONS = (
    "Segment sizes and revenue",
    "Pareto curve",
    "RFM heat map",
    "Lifecycle flow",
    "Segment summary",
    "Behavioural clusters",
    "Demographic segments",
    "Needs segments",
)
#: Number of inline PNG images in the report: none, its charts are interactive (Plotly).
REPORT_IMAGES = 0
#: The ids of the report's Plotly charts (the first: one per segmentation scheme).
REPORT_CHARTS = (
    "chart-sizes-",
    "chart-pareto",
    "chart-rfm",
    "chart-flow",
    "chart-demographic",
    "chart-needs",
)
#: The optional section a value job adds (``value_risk``): value decile x churn-risk decile.
VALUE_RISK_SECTION = "Value × churn risk"

_SCHEME_TITLES = {
    "rfm_band": "RFM points band",
    "rfm_segment": "RFM named segment",
    "abc_class": "Pareto ABC",
    "pyramid_level": "Customer pyramid",
    "lifecycle_stage": "Lifecycle stage",
    "journey_stage": "Journey stage (buyers and prospects)",
    "cluster": "Behavioural cluster",
    "demographic_segment": "Demographic segment",
    "needs_segment": "Needs segment",
}


# --------------------------------------------------------------------------- charts


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def sizes_figure(summary: pd.DataFrame) -> Figure:
    """Share of customers and of revenue per segment, one panel per scheme."""
    schemes = list(dict.fromkeys(summary["scheme"]))
    ncols = 2
    nrows = max(1, -(-len(schemes) // ncols))
    fig = Figure(figsize=(12, 3.2 * nrows), dpi=90)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, scheme in zip(axes, schemes, strict=False):
        part = summary[summary["scheme"] == scheme]
        y = np.arange(len(part))
        ax.barh(y - 0.2, part["customer_share"] * 100, height=0.4, label="customers")
        ax.barh(y + 0.2, part["revenue_share"] * 100, height=0.4, label="revenue")
        ax.set_yticks(y, part["segment"].astype(str))
        ax.invert_yaxis()
        ax.set_xlabel("% of total")
        ax.set_title(_SCHEME_TITLES.get(scheme, scheme))
        ax.axvline(0, color="black", linewidth=0.5)
        ax.legend(loc="lower right", fontsize="small")
    for ax in axes[len(schemes) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def rfm_grid(segments: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers and mean revenue per (R score, F score): rows R 5..1, columns F 1..5."""
    grouped = segments.groupby(["r_score", "f_score"])["revenue"].agg(["size", "mean"])
    rows, cols = [5, 4, 3, 2, 1], [1, 2, 3, 4, 5]
    counts = grouped["size"].unstack().reindex(index=rows, columns=cols).fillna(0).astype(int)
    means = grouped["mean"].unstack().reindex(index=rows, columns=cols)
    counts.index.name, counts.columns.name = "R score", "F score"
    means.index.name, means.columns.name = "R score", "F score"
    return counts, means


# --------------------------------------------------------------------------- Plotly charts
# The page's charts: interactive (hover, zoom, legend toggling); the matplotlib figure above
# remains for the PNG written beside the segments (segments_chart.png).

CUSTOMER_COLOUR, REVENUE_COLOUR = "#4e79a7", "#f28e2b"


def sizes_chart(summary: pd.DataFrame, scheme: str) -> Any:
    """Share of customers and of revenue per segment of one scheme (horizontal bars)."""
    import plotly.graph_objects as go

    part = summary[summary["scheme"] == scheme]
    labels = part["segment"].astype(str).tolist()
    fig = go.Figure()
    for column, name, colour, count in (
        ("customer_share", "customers", CUSTOMER_COLOUR, "customers"),
        ("revenue_share", "revenue", REVENUE_COLOUR, "revenue"),
    ):
        fig.add_trace(
            go.Bar(
                y=labels,
                x=part[column] * 100,
                orientation="h",
                name=f"% of {name}",
                marker={"color": colour},
                customdata=part[count],
                hovertemplate="%{y}: %{x:.1f} % of " + name + " (%{customdata:,.0f})"
                "<extra></extra>",
            )
        )
    lay = layout(_SCHEME_TITLES.get(scheme, scheme), "")
    lay.update(
        height=110 + 42 * max(len(labels), 1),
        barmode="group",
        margin={"l": 10, "r": 20, "t": 70, "b": 40},
    )
    lay["xaxis"] = {"title": {"text": "% of total"}, "automargin": True}
    lay["yaxis"] = {"autorange": "reversed", "automargin": True, "type": "category"}
    fig.update_layout(**lay)
    return fig


def pareto_chart(curve: pd.DataFrame, a_share: float = 0.80) -> Any:
    """Cumulative revenue share against customer share, with the A line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=curve["customer_share"] * 100,
            y=curve["revenue_share"] * 100,
            mode="lines",
            name="customers by revenue",
            line={"color": CUSTOMER_COLOUR, "width": 2.5},
            hovertemplate="the top %{x:.1f} % of customers bring %{y:.1f} % of revenue"
            "<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 100],
            y=[0, 100],
            mode="lines",
            name="equal shares",
            line={"color": "#999", "dash": "dot", "width": 1},
            hoverinfo="skip",
        )
    )
    lay = layout("Pareto curve", "cumulative % of revenue")
    lay["xaxis"] = {"title": {"text": "% of customers (ranked by revenue)"}, "range": [0, 100]}
    lay["yaxis"]["range"] = [0, 102]
    shapes = [
        {
            "type": "line",
            "x0": 0,
            "x1": 100,
            "y0": a_share * 100,
            "y1": a_share * 100,
            "line": {"color": "#c62828", "dash": "dash", "width": 1},
        }
    ]
    annotations = []
    reach = curve.loc[curve["revenue_share"] >= a_share - 1e-12, "customer_share"]
    if len(reach):
        x = float(reach.iloc[0]) * 100
        shapes.append(
            {
                "type": "line",
                "x0": x,
                "x1": x,
                "y0": 0,
                "y1": a_share * 100,
                "line": {"color": "#c62828", "dash": "dot", "width": 1},
            }
        )
        annotations.append(
            {
                "x": x,
                "y": a_share * 100,
                "text": f"{x:.1f} % of customers bring {a_share:.0%} of revenue".replace(
                    "%", " %"
                ).replace("  %", " %"),
                "showarrow": True,
                "ax": 60,
                "ay": 40,
                "font": {"size": 11},
            }
        )
    lay.update(shapes=shapes, annotations=annotations)
    fig.update_layout(**lay)
    return fig


def rfm_chart(segments: pd.DataFrame) -> Any:
    """R score x F score: customers and mean revenue per cell, with the cell's named segment."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    counts, means = rfm_grid(segments)
    rows = [str(r) for r in counts.index]
    cols = [str(c) for c in counts.columns]
    names = [[RFM_SEGMENT_GRID[(int(r), int(f))] for f in counts.columns] for r in counts.index]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["customers", "mean revenue"],
        horizontal_spacing=0.12,
    )
    for k, (grid, what) in enumerate(((counts, "customers"), (means, "mean revenue")), start=1):
        values = grid.to_numpy(dtype=float)
        text = [
            [
                f"{'-' if np.isnan(v) else f'{v:,.0f}'}<br><sub>{n}</sub>"
                for v, n in zip(row_values, row_names, strict=True)
            ]
            for row_values, row_names in zip(values, names, strict=True)
        ]
        fig.add_trace(
            go.Heatmap(
                z=values,
                x=cols,
                y=rows,
                text=text,
                texttemplate="%{text}",
                textfont={"size": 10},
                customdata=names,
                colorscale="YlGnBu",
                colorbar={"x": 0.44 if k == 1 else 1.0, "len": 0.9, "thickness": 12},
                hovertemplate="R %{y}, F %{x} (%{customdata})<br>" + what + " %{z:,.0f}"
                "<extra></extra>",
            ),
            row=1,
            col=k,
        )
    fig.update_xaxes(title_text="F score (5 = most orders)", type="category")
    fig.update_yaxes(title_text="R score (5 = most recent)", type="category")
    fig.update_layout(
        template="plotly_white",
        height=460,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        title={"text": "RFM heat map", "font": {"size": 14}},
    )
    return fig


def flow_chart(flow: pd.DataFrame) -> Any:
    """Customers moving between lifecycle stages (rows: from, columns: to), colour on a log
    scale so that small flows show beside the large ones."""
    import plotly.graph_objects as go

    values = flow.to_numpy(dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=np.log1p(values),
            x=[str(c) for c in flow.columns],
            y=[str(i) for i in flow.index],
            text=[[f"{int(v):,}" for v in row_values] for row_values in values],
            texttemplate="%{text}",
            customdata=values,
            colorscale="Purples",
            showscale=False,
            hovertemplate="%{y} → %{x}: %{customdata:,.0f} customers<extra></extra>",
        )
    )
    lay = layout("Lifecycle flow", f"stage at the earlier cutoff ({flow.index.name or 'from'})")
    lay["xaxis"] = {
        "title": {"text": f"stage at the later cutoff ({flow.columns.name or 'to'})"},
        "type": "category",
    }
    lay["yaxis"]["type"] = "category"
    lay["yaxis"]["autorange"] = "reversed"
    lay.update(height=420, margin={"l": 110, "r": 20, "t": 50, "b": 60})
    fig.update_layout(**lay)
    return fig


def profile_chart(facts: dict[str, Any], key: str, title: str, x_title: str) -> Any:
    """Segments (rows) x attribute values or categories (columns): the share of the segment's
    customers with that value (demographic) or its mean category share (needs)."""
    import plotly.graph_objects as go

    profile = facts.get("profile", [])
    rows = [f"{p['segment']}: {p['name']}" for p in profile]
    columns = list(dict.fromkeys(c for p in profile for c in p.get(key, {})))
    z = np.array([[p.get(key, {}).get(c, 0.0) * 100 for c in columns] for p in profile])
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=rows,
            text=[[f"{v:.0f}" for v in row] for row in z],
            texttemplate="%{text}",
            textfont={"size": 10},
            colorscale="YlGnBu",
            zmin=0,
            zmax=100,
            colorbar={"title": {"text": "%"}, "thickness": 12},
            hovertemplate="%{y}<br>%{x}: %{z:.1f} %<extra></extra>",
        )
    )
    lay = layout(title, "segment")
    lay["xaxis"] = {"title": {"text": x_title}, "type": "category", "automargin": True}
    lay["yaxis"].update(type="category", autorange="reversed", automargin=True)
    lay.update(height=160 + 40 * max(len(rows), 1), margin={"l": 10, "r": 20, "t": 50, "b": 60})
    fig.update_layout(**lay)
    return fig


def value_risk_chart(grid: pd.DataFrame) -> Any:
    """The value x risk grid as an interactive heat map (cells: mean worthwhile spend,
    customers, "let go")."""
    import plotly.graph_objects as go

    spend = np.full((10, 10), np.nan)
    text = [["" for _ in range(10)] for _ in range(10)]
    for c in grid.to_dict("records"):
        i, j = 10 - int(c["value_decile"]), int(c["risk_decile"]) - 1
        spend[i, j] = c["max_retention_spend_mean"]
        text[i][j] = f"{c['max_retention_spend_mean']:,.0f}<br>{int(c['customers']):,}" + (
            "<br>let go" if c["let_go"] else ""
        )
    finite = spend[np.isfinite(spend)]
    top = float(np.percentile(finite, 90)) if finite.size else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=spend,
            x=[str(r) for r in range(1, 11)],
            y=[str(v) for v in range(10, 0, -1)],
            text=text,
            texttemplate="%{text}",
            textfont={"size": 9},
            colorscale="YlGn",
            zmin=0,
            zmax=top or 1.0,
            colorbar={"title": {"text": "spend"}, "thickness": 12},
            hovertemplate="value decile %{y}, risk decile %{x}<br>%{text}<extra></extra>",
        )
    )
    lay = layout("Value × churn risk", "value decile (10 = most valuable if kept)")
    lay["xaxis"] = {"title": {"text": "churn-risk decile (10 = highest risk)"}, "type": "category"}
    lay["yaxis"]["type"] = "category"
    lay.update(height=560, margin={"l": 70, "r": 20, "t": 50, "b": 50})
    fig.update_layout(**lay)
    return fig


def segments_chart(summary: pd.DataFrame, path: Path) -> Path:
    """Write the segment sizes / revenue shares chart as a PNG (atomically)."""
    path = Path(path)
    data = _png(sizes_figure(summary))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# --------------------------------------------------------------------------- HTML

# the house style (features.pages) plus what this page's pandas tables need
_CSS = """
table.dataframe td, table.dataframe th { text-align: right; }
table.dataframe td:first-child, table.dataframe th:first-child { text-align: left; }
table.meta th, table.meta td { text-align: left; }
main > img, main > p + img { background: #fff; border: 1px solid #e0e3e8; padding: 8px; }
"""


def _chart(fig: Any, div_id: str, wide: bool = False) -> str:
    height = int(fig.layout.height or 400)
    div = plotly_div(fig, div_id, height)
    return (
        f'<div class="charts wide"><figure>{div}</figure></div>'
        if wide
        else f"<figure>{div}</figure>"
    )


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    """A table in a box that scrolls sideways when it is wider than the page."""
    body = frame.to_html(index=index, border=0, escape=True, na_rep=DASH)
    return f'<div class="scroll">{body}</div>'


def _summary_display(part: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "segment": part["segment"].astype(str),
            "customers": part["customers"].map("{:,}".format),
            "% customers": (part["customer_share"] * 100).map("{:.1f}".format),
            "revenue": part["revenue"].map("{:,.0f}".format),
            "% revenue": (part["revenue_share"] * 100).map("{:.1f}".format),
        }
    )


def _cluster_profile(segments: pd.DataFrame) -> pd.DataFrame:
    cols = ["revenue", "days_since_last_order", "days_since_first_order", "orders_count_total"]
    prof = segments.groupby("cluster")[cols].mean().map("{:,.1f}".format)
    prof.insert(0, "customers", segments.groupby("cluster").size().map("{:,}".format))
    return prof.rename_axis("cluster").reset_index()


def _scheme_section(
    facts: dict[str, Any], chart_id: str, key: str, title: str, x_title: str
) -> list[str]:
    """A demographic or needs section: the k choice, the chart, the profile and silhouette
    tables; or the reason the scheme was skipped."""
    esc = html.escape
    if not facts or facts.get("skipped") or not facts.get("profile"):
        reason = facts.get("skipped") or "not computed"
        return [f'<p class="note">Skipped: {esc(str(reason))}.</p>']
    what = facts.get("attributes") or facts.get("categories") or facts.get("features", [])
    parts = [
        f'<p class="note">k = {esc(str(facts.get("k")))} chosen by '
        f"{esc(str(facts.get('criterion')))}; over {esc(', '.join(map(str, what)))}; "
        f"{int(facts.get('unassigned', 0)):,} customers not segmented.</p>",
        _chart(profile_chart(facts, key, title, x_title), chart_id, wide=True),
    ]
    if facts.get("k_at_k_max"):
        parts.insert(
            1,
            '<p class="note">The score is highest at k_max: more segments may fit (raise k_max '
            "in the config to look further).</p>",
        )
    rows = []
    for p in facts["profile"]:
        row = {
            "segment": f"{p['segment']}: {p['name']}",
            "customers": f"{p['customers']:,}",
            "% customers": f"{p['customer_share'] * 100:.1f}",
            "% revenue": f"{p['revenue_share'] * 100:.1f}",
        }
        if "modal" in p:
            row.update(
                {
                    f"modal {a}": str(v)
                    + (f" ({p['modal_share'][a]:.0%})" if a in p.get("modal_share", {}) else "")
                    for a, v in p["modal"].items()
                }
            )
        else:
            row.update({f"{c} %": f"{v * 100:.1f}" for c, v in p.get(key, {}).items()})
        rows.append(row)
    parts.append(_table(pd.DataFrame(rows)))
    sil = facts.get("silhouette", {})
    if sil:
        parts.append(
            _table(pd.DataFrame({"k": list(sil), "silhouette": [f"{v:.3f}" for v in sil.values()]}))
        )
    return parts


def value_risk_section(grid: pd.DataFrame, note: str = "") -> str:
    """The report's section for a value job's value x risk grid: heading, note, interactive heat
    map, the customers in cells where a contact pays."""
    worth = int(grid.loc[~grid["let_go"].astype(bool), "customers"].sum())
    rest = int(grid["customers"].sum()) - worth
    return "".join(
        [
            f"<h2>{VALUE_RISK_SECTION}</h2>",
            f'<p class="note">{html.escape(note)}</p>' if note else "",
            _chart(value_risk_chart(grid), "chart-value-risk", wide=True),
            f'<p class="note">{worth:,} customers in cells where a retention contact pays; '
            f"{rest:,} in cells let go.</p>",
        ]
    )


def journey_note(facts: dict[str, Any]) -> str:
    """One line on the journey stages: who they cover, or why there are none."""
    if not facts or facts.get("skipped"):
        return f"not computed: {facts.get('skipped', 'no journey')}"
    stages = facts.get("stages", {})
    return (
        f"{facts['people']:,} people: {facts['buyers']:,} buyers and {facts['prospects']:,} "
        f"prospects ({stages.get('visitor', 0):,} visitors, {stages.get('registered', 0):,} "
        "registered); shares of the journey rows are of all of them, a prospect's revenue is 0"
    )


def render_segments_report(
    segments: pd.DataFrame,
    summary: pd.DataFrame,
    flow: pd.DataFrame,
    pareto_curve: pd.DataFrame,
    out_path: Path,
    *,
    title: str = "Customer segments",
    meta: dict[str, Any] | None = None,
    a_share: float = 0.80,
    value_risk: pd.DataFrame | None = None,
    value_note: str = "",
) -> Path:
    """Write one self-contained HTML page (Plotly charts, plotly.js inline; tables) atomically;
    with ``value_risk`` (a value x risk grid from a value job) a last section shows it."""
    out_path = Path(out_path)
    esc = html.escape
    parts = [f"<h1>{esc(title)}</h1>"]
    facts = {"customers": f"{len(segments):,}", "revenue": f"{segments['revenue'].sum():,.0f}"}
    facts.update({k: str(v) for k, v in (meta or {}).items()})
    parts.append(
        '<div class="scroll"><table class="meta">'
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items())
        + "</table></div>"
    )

    parts.append(f"<h2>{REPORT_SECTIONS[0]}</h2>")
    parts.append(
        '<div class="charts">'
        + "".join(
            _chart(sizes_chart(summary, scheme), f"{REPORT_CHARTS[0]}{scheme}")
            for scheme in dict.fromkeys(summary["scheme"])
        )
        + "</div>"
    )

    parts.append(f"<h2>{REPORT_SECTIONS[1]}</h2>")
    abc = summary[summary["scheme"] == "abc_class"].set_index("segment")
    if len(abc):
        parts.append(
            '<p class="note">'
            + "; ".join(
                f"{esc(str(s))}: {r.customer_share:.1%} of customers, "
                f"{r.revenue_share:.1%} of revenue"
                for s, r in abc.iterrows()
            )
            + ". A ends with the customer who crosses "
            f"{a_share:.0%} of revenue; zero or negative revenue is C.</p>"
        )
    parts.append(_chart(pareto_chart(pareto_curve, a_share), REPORT_CHARTS[1], wide=True))

    parts.append(f"<h2>{REPORT_SECTIONS[2]}</h2>")
    parts.append(_chart(rfm_chart(segments), REPORT_CHARTS[2], wide=True))
    counts, _ = rfm_grid(segments)
    parts.append("<h3>Customers per R score and F score</h3>" + _table(counts, index=True))

    parts.append(f"<h2>{REPORT_SECTIONS[3]}</h2>")
    parts.append(_chart(flow_chart(flow), REPORT_CHARTS[3], wide=True))
    parts.append(_table(flow, index=True))

    parts.append(f"<h2>{REPORT_SECTIONS[4]}</h2>")
    for scheme in dict.fromkeys(summary["scheme"]):
        part = summary[summary["scheme"] == scheme]
        parts.append(f"<h3>{esc(_SCHEME_TITLES.get(scheme, scheme))}</h3>")
        parts.append(_table(_summary_display(part)))

    parts.append(f"<h2>{REPORT_SECTIONS[5]}</h2>")
    info = segments.attrs.get("clusters", {})
    if info:
        parts.append(
            f'<p class="note">k = {esc(str(info.get("k")))} chosen by '
            f"{esc(str(info.get('criterion')))}; features: "
            f"{esc(', '.join(info.get('features', [])))}.</p>"
        )
        sil = info.get("silhouette", {})
        if sil:
            parts.append(
                _table(
                    pd.DataFrame({"k": list(sil), "silhouette": [f"{v:.3f}" for v in sil.values()]})
                )
            )
    parts.append(_table(_cluster_profile(segments)))
    parts.append(f"<h2>{REPORT_SECTIONS[6]}</h2>")
    parts.extend(
        _scheme_section(
            segments.attrs.get("demographics", {}),
            REPORT_CHARTS[4],
            "value_shares",
            "Demographic segments: share of each attribute value",
            "attribute = value (% of the segment's customers)",
        )
    )
    parts.append(f"<h2>{REPORT_SECTIONS[7]}</h2>")
    parts.extend(
        _scheme_section(
            segments.attrs.get("needs", {}),
            REPORT_CHARTS[5],
            "mean_shares",
            "Needs segments: mean category share of revenue",
            "category (mean % of the segment's category revenue)",
        )
    )
    if value_risk is not None and len(value_risk):
        parts.append(value_risk_section(value_risk, value_note))
    with atomic_path(out_path) as tmp:
        tmp.write_text(page(title, "\n".join(parts), css=_CSS), encoding="utf-8")
    return out_path


# --------------------------------------------------------------------------- CLI functions


def load_segments_config(path: Path | str | None) -> SegmentsConfig:
    """A SegmentsConfig from a YAML file (its ``segments:`` mapping, or the whole file); None
    gives the defaults. A bad value is one line per error naming its key (segments.<key>)."""
    import yaml
    from pydantic import ValidationError

    if path is None:
        return SegmentsConfig()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segments config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if isinstance(data, dict) and "segments" in data:
        data = data["segments"] or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: segments config is a mapping of keys")
    try:
        return SegmentsConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"segments.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ValueError(f"{path}: " + "; ".join(lines)) from None


def segments_dir(state: StateDirs, dataset: str, as_of: date) -> Path:
    """Folder of a dataset's segments at a cutoff."""
    return state.home / "segments" / dataset / f"as_of={as_of.isoformat()}"


def _features_at(con: Any, source: str, as_of: date, cfg: SegmentsConfig) -> pd.DataFrame:
    from features.build import compute_features
    from features.definitions import feature_set

    return compute_features(con, source, as_of, feature_set("churn_v1", cfg.rfm))


def _open(state: StateDirs, dataset: str, as_of: date | None) -> tuple[Any, str, date]:
    from features.build import data_date_range
    from features.sources import connect

    source = Catalog(state, dataset).relation("transactions")
    con = connect(state)
    if as_of is None:
        try:
            as_of = data_date_range(con, source)[1]
        except Exception:
            con.close()
            raise
    return con, source, as_of


def customers_at(con: Any, state: StateDirs, dataset: str, as_of: date) -> tuple[Any, str]:
    """The dataset's customers table as of ``as_of`` (one row per customer; None without a
    table) and how the table carries history ("none": today's state is all there is)."""
    from features.build import customers_as_of_sql, customers_history

    relation = Catalog(state, dataset).relation_or_none("customers")
    if relation is None:
        return None, "no customers table"
    history = customers_history(relation, con)
    frame = con.execute(f"SELECT * FROM {customers_as_of_sql(relation, history, as_of)}").df()
    return frame.drop(columns=["__version"], errors="ignore"), history


def journey_of(
    con: Any,
    state: StateDirs,
    dataset: str,
    source: str,
    as_of: date,
    buyers: pd.DataFrame,
    cfg: SegmentsConfig,
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The journey stage of every known person at ``as_of`` (``features.journey``: the buyers'
    features with their order gaps, the prospects from the events and the customers table as of
    the cutoff) and its facts; None with the reason when off or the dataset has no events."""
    from features.build import customers_as_of_sql, customers_history
    from features.journey import JourneyConfig, journey_stages, prospects_at

    if not cfg.journey:
        return None, {"skipped": "disabled (segments.journey)"}
    catalog = Catalog(state, dataset)
    events = catalog.relation_or_none("events")
    if events is None:
        return None, {"skipped": "no events table"}
    customers = catalog.relation_or_none("customers")
    if customers is not None:
        customers = customers_as_of_sql(customers, customers_history(customers, con), as_of)
    prospects = prospects_at(con, source, as_of, events=events, customers=customers)
    stages = journey_stages(
        buyers, prospects, JourneyConfig(lifecycle=cfg.lifecycle), buyers["days_since_won_back"]
    )
    counts = stages["journey_stage"].value_counts(sort=False)
    facts = {
        "people": len(stages),
        "buyers": len(buyers),
        "prospects": 0 if prospects is None else len(prospects),
        "stages": {str(k): int(v) for k, v in counts.items()},
    }
    return stages, facts


def _segment_at(
    con: Any, state: StateDirs, dataset: str, source: str, as_of: date, cfg: SegmentsConfig
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Every scheme at ``as_of``: features, order gaps, attributes as of the cutoff, category
    spend up to it; and the journey stages of buyers and prospects (None: not computed; the
    buyers' stage is also the segments' ``journey_stage`` column)."""
    feats = _features_at(con, source, as_of, cfg)
    customers, history = (
        customers_at(con, state, dataset, as_of) if cfg.demographics.enabled else (None, "")
    )
    spend = category_spend(source, as_of, con) if cfg.needs.enabled else None
    segments = segment_customers(
        feats, source, con, cfg, as_of=as_of, customers=customers, category_spend=spend
    )
    if cfg.demographics.enabled:
        segments.attrs["demographics"]["customers_history"] = history
    buyers = feats.merge(
        segments[["customer_id", "days_since_won_back"]],
        on="customer_id",
        how="left",
        validate="one_to_one",
    )
    journey, facts = journey_of(con, state, dataset, source, as_of, buyers, cfg)
    if journey is not None:
        by_id = journey.set_index("customer_id")["journey_stage"]
        segments["journey_stage"] = pd.Categorical(
            segments["customer_id"].astype(str).map(by_id), categories=JOURNEY_STAGES
        )
    segments.attrs["journey"] = facts
    return segments, journey


def run_segments(
    state: StateDirs,
    dataset_name: str,
    as_of: date | None = None,
    cfg: SegmentsConfig | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Segment a dataset's customers at ``as_of`` (default: last data date) and write the outputs.

    Writes segments.parquet, segment_summary.csv, segments_chart.png and segments_meta.json into
    ``out_dir`` (default ``$PATRON_HOME/segments/<dataset>/as_of=<date>/``), each atomically.
    """
    cfg = cfg or SegmentsConfig()
    con, source, as_of = _open(state, dataset_name, as_of)
    try:
        segments, journey = _segment_at(con, state, dataset_name, source, as_of, cfg)
    finally:
        con.close()
    summary = segment_summary(segments, cfg, journey)
    out = Path(out_dir) if out_dir is not None else segments_dir(state, dataset_name, as_of)
    paths = {
        "segments": out / "segments.parquet",
        "summary": out / "segment_summary.csv",
        "chart": out / "segments_chart.png",
        "meta": out / "segments_meta.json",
    }
    clusters = dict(segments.attrs.get("clusters", {}))
    demographics = dict(segments.attrs.get("demographics", {}))
    needs = dict(segments.attrs.get("needs", {}))
    journey_facts = dict(segments.attrs.get("journey", {}))
    with atomic_path(paths["segments"]) as tmp:
        frame = segments.copy()
        frame.attrs = {}
        frame.to_parquet(tmp, index=False)
    with atomic_path(paths["summary"]) as tmp:
        summary.to_csv(tmp, index=False)
    segments_chart(summary, paths["chart"])
    meta = {
        "dataset": dataset_name,
        "as_of": as_of.isoformat(),
        "feature_set": "churn_v1",
        "customers": len(segments),
        "clusters": clusters,
        "demographics": demographics,
        "needs": needs,
        "journey": journey_facts,
        "config": cfg.model_dump(mode="json"),
    }
    with atomic_path(paths["meta"]) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return {
        "as_of": as_of,
        "customers": len(segments),
        "clusters_k": clusters.get("k"),
        "demographics_k": demographics.get("k"),
        "demographics_skipped": demographics.get("skipped"),
        "needs_k": needs.get("k"),
        "needs_skipped": needs.get("skipped"),
        "journey": journey_facts,
        **paths,
    }


def run_segments_report(
    state: StateDirs,
    dataset_name: str,
    as_of: date | None = None,
    previous_as_of: date | None = None,
    cfg: SegmentsConfig | None = None,
    out_path: Path | None = None,
    value_risk: pd.DataFrame | None = None,
    value_note: str = "",
) -> Path:
    """Write the HTML segment report at ``as_of`` with the lifecycle flow from ``previous_as_of``
    (and the value x risk grid of a value job, when given).

    ``as_of`` defaults to the last data date, ``previous_as_of`` to ``as_of`` - 90 days, the path to
    ``segments/<dataset>/as_of=<date>/segments_report.html`` under the state folder.
    """
    cfg = cfg or SegmentsConfig()
    con, source, as_of = _open(state, dataset_name, as_of)
    previous = previous_as_of or as_of - timedelta(days=90)
    try:
        if previous >= as_of:
            raise ValueError(f"previous_as_of {previous} must be before as_of {as_of}")
        segments, journey = _segment_at(con, state, dataset_name, source, as_of, cfg)
        before = _features_at(con, source, previous, cfg)
        gaps = order_gaps(source, previous, cfg.lifecycle.lapsed_days, con)
    finally:
        con.close()
    before = before.merge(gaps, on="customer_id", how="left", validate="one_to_one")
    stages_before = lifecycle_stages(before, cfg.lifecycle, before["days_since_won_back"])
    stages_before.index = before["customer_id"]
    flow = compute_flow(stages_before["lifecycle_stage"], segments)
    summary = segment_summary(segments, cfg, journey)
    out = (
        Path(out_path)
        if out_path is not None
        else (segments_dir(state, dataset_name, as_of) / "segments_report.html")
    )
    meta = {
        "dataset": dataset_name,
        "as_of": as_of.isoformat(),
        "lifecycle flow from": previous.isoformat(),
        "feature set": "churn_v1",
        "revenue definition": "net (order value minus returns)"
        if cfg.revenue == "net"
        else "gross (order value)",
    }
    meta["journey stages"] = journey_note(segments.attrs.get("journey", {}))
    history = segments.attrs.get("demographics", {}).get("customers_history")
    if history == "none":
        meta["customer attributes"] = "today's state (the customers table carries no history)"
    elif history and history != "no customers table":
        meta["customer attributes"] = f"as of {as_of.isoformat()} ({history})"
    return render_segments_report(
        segments,
        summary,
        flow,
        compute_pareto_curve(segments),
        out,
        title=f"Customer segments: {dataset_name} at {as_of.isoformat()}",
        meta=meta,
        a_share=cfg.abc_cumulative_shares[0],
        value_risk=value_risk,
        value_note=value_note,
    )
