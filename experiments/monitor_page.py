"""The drift report of one monitoring pass as one self-contained HTML page.

``render_monitor_page(report)`` is pure: a ``MonitorReport`` in, the page out. It says in words
how many features moved and how far the scores moved, then shows the PSI per feature against the
usual bands (below 0.1 stable, 0.1 to 0.25 moderate, above significant; the report's own
thresholds), score stability (score PSI, mean shift, KS with the two distribution functions,
the decile transitions of the customers on both dates) and, per feature, the reference and
current distributions in the bins the PSI was computed on. Plotly charts (hover, zoom, legend
toggling), plotly.js embedded once: the page works offline. ``write_monitor_page`` writes it
atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.pages import (
    DASH,
    badge,
    esc,
    figure,
    fmt_count,
    fmt_num,
    fmt_pct,
    fmt_pp,
    layout,
    page,
    plotly_div,
    row,
    table,
)
from features.store import atomic_path

FLAG_COLOURS = {
    "stable": "#2e7d32",
    "moderate": "#ef6c00",
    "significant": "#c62828",
    "n/a": "#78909c",
}
REFERENCE_COLOUR, CURRENT_COLOUR = "#8fa9c8", "#1f5fa8"
SMALL_POPULATION = 500  # below this many customers on a side, PSI is noisy: the page says so

MONITOR_CSS = """
figure.flag-moderate { border-top: 3px solid #ef6c00; }
figure.flag-significant { border-top: 3px solid #c62828; }
figure.flag-stable { border-top: 3px solid #2e7d32; }
td.feature { text-align: left; white-space: nowrap; }
"""


def _mean_text(x: Any) -> str:
    """A feature mean: thousands separators, decimals by size."""
    if x is None or not np.isfinite(x):
        return DASH
    return fmt_num(x, 0 if abs(x) >= 1000 else (2 if abs(x) >= 1 else 3))


def _score_is_probability(report: Any) -> bool:
    q = report.score_quantiles
    if q is None or q.empty:
        return False
    return bool(q[["reference", "current"]].min().min() >= 0 and q.max().max() <= 1)


# ---------------------------------------------------------------- words and facts


def in_words(report: Any) -> str:
    """The pass in two sentences: features per band, then the score."""
    f = report.features
    counts = f["flag"].value_counts()
    n = len(f)
    parts = [f"{counts.get(band, 0):,} {band}" for band in ("significant", "moderate", "stable")]
    words = (
        f"Between {esc(report.reference_as_of)} (reference) and {esc(report.current_as_of)} "
        f"(current), of {n:,} features {', '.join(parts)} by their PSI."
    )
    top = f[f["flag"].isin(["significant", "moderate"])]["feature"].tolist()
    if top:
        shown = ", ".join(f"<code>{esc(x)}</code>" for x in top[:5])
        words += f" Moved the most: {shown}{' and others' if len(top) > 5 else ''}."
    s, st = report.score, report.stability
    prob = _score_is_probability(report)
    shift = fmt_pp(s.mean_shift, 2) if prob else fmt_num(s.mean_shift, 4, signed=True)
    words += (
        f" The champion's scores: PSI {fmt_num(s.psi, 3)} ({esc(s.flag)}), mean "
        f"{_score_text(s.reference_mean, prob)} → {_score_text(s.current_mean, prob)} "
        f"({shift}), KS statistic {fmt_num(s.ks_statistic, 3)}. "
        f"{fmt_pct(st.change_share)} of the {fmt_count(st.n_common)} customers scored on both "
        "dates changed score decile."
    )
    return f'<p class="words">{words}</p>'


def _score_text(x: Any, prob: bool) -> str:
    return fmt_pct(x, 2) if prob else fmt_num(x, 4)


def score_facts(report: Any) -> str:
    """Score PSI, means, mean shift, KS, the populations and the decile stability."""
    s, st, th = report.score, report.stability, report.thresholds
    prob = _score_is_probability(report)
    shift = fmt_pp(s.mean_shift, 2) if prob else fmt_num(s.mean_shift, 4, signed=True)
    facts = [
        ("Score PSI", f"{fmt_num(s.psi, 3)} {badge(s.flag)}"),
        ("Mean score, reference", _score_text(s.reference_mean, prob)),
        ("Mean score, current", _score_text(s.current_mean, prob)),
        ("Mean shift (current − reference)", shift),
        (
            "Kolmogorov–Smirnov statistic<br><small>largest gap of the two distribution "
            "functions</small>",
            fmt_num(s.ks_statistic, 3),
        ),
        ("KS p-value", f"{s.ks_pvalue:.2g}" if np.isfinite(s.ks_pvalue) else DASH),
        ("Customers scored, reference", fmt_count(s.n_reference)),
        ("Customers scored, current", fmt_count(s.n_current)),
        ("Customers on both dates", fmt_count(st.n_common)),
        ("Of them, changed score decile", fmt_pct(st.change_share)),
        ("Mean number of deciles moved", fmt_num(st.mean_abs_move, 2)),
        (
            "PSI bands",
            f"stable &lt; {fmt_num(th.moderate, 2)} ≤ moderate ≤ "
            f"{fmt_num(th.significant, 2)} &lt; significant",
        ),
    ]
    return table(
        [("Measure", "text"), ("Value", "")],
        [row([(label, "text"), (value, "")]) for label, value in facts],
    )


def feature_table(report: Any) -> str:
    """PSI, band, means and missing shares per feature, most shifted first."""
    headers = [
        ("Feature", "text"),
        ("PSI", ""),
        ("Band", "text"),
        ("Mean, reference", ""),
        ("Mean, current", ""),
        ("Missing, reference", ""),
        ("Missing, current", ""),
    ]
    rows = []
    for r in report.features.to_dict("records"):
        rows.append(
            row(
                [
                    (
                        f'<a href="#dist-{esc(r["feature"])}"><code>{esc(r["feature"])}</code></a>',
                        "feature",
                    ),
                    (fmt_num(r["psi"], 3), ""),
                    (badge(str(r["flag"])), "text"),
                    (_mean_text(r["reference_mean"]), ""),
                    (_mean_text(r["current_mean"]), ""),
                    (fmt_pct(r["reference_missing"]), ""),
                    (fmt_pct(r["current_missing"]), ""),
                ]
            )
        )
    return table(headers, rows, id_="features")


# ---------------------------------------------------------------- charts


def psi_chart(report: Any) -> tuple[Any, int]:
    """PSI per feature as horizontal bars coloured by band, the bands shaded and labelled."""
    import plotly.graph_objects as go

    f = report.features
    th = report.thresholds
    # the axis stops near twice the significant threshold: a PSI of 4 would squeeze the bands
    # out of sight; longer bars run to the edge and carry their value
    largest = float(np.nanmax(f["psi"])) if len(f) and f["psi"].notna().any() else 0.0
    top = max(th.significant * 2, min(largest, 1.0)) * 1.1
    fig = go.Figure()
    for band in ("significant", "moderate", "stable", "n/a"):
        part = f[f["flag"] == band]
        if part.empty:
            continue
        fig.add_trace(
            go.Bar(
                x=part["psi"],
                y=part["feature"],
                orientation="h",
                name=band,
                marker={"color": FLAG_COLOURS[band]},
                text=[fmt_num(x, 3) for x in part["psi"]],
                textposition=["inside" if x > top * 0.5 else "outside" for x in part["psi"]],
                insidetextanchor="start",
                textfont={"size": 12},
                insidetextfont={"size": 12, "color": "#fff"},
                outsidetextfont={"size": 12, "color": "#222"},
                constraintext="none",
                cliponaxis=True,
                customdata=np.column_stack(
                    [
                        [_mean_text(x) for x in part["reference_mean"]],
                        [_mean_text(x) for x in part["current_mean"]],
                    ]
                ),
                hovertemplate="<b>%{y}</b><br>PSI %{x:.3f} (" + band + ")<br>mean "
                "%{customdata[0]} → %{customdata[1]}<extra></extra>",
            )
        )
    bands = [
        (0.0, th.moderate, "#e8f5e9", "stable"),
        (th.moderate, th.significant, "#fff3e0", "moderate"),
        (th.significant, top, "#ffebee", "significant"),
    ]
    shapes = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": lo,
            "x1": hi,
            "y0": 0,
            "y1": 1,
            "fillcolor": colour,
            "line": {"width": 0},
            "layer": "below",
        }
        for lo, hi, colour, _ in bands
    ]
    annotations = [
        {
            "x": (lo + hi) / 2,
            "y": 1.0,
            "xref": "x",
            "yref": "paper",
            "yanchor": "bottom",
            "showarrow": False,
            "text": f"{label}<br>&gt; {fmt_num(lo, 2)}"
            if label == "significant"
            else f"{label}<br>{fmt_num(lo, 2)} to {fmt_num(hi, 2)}",
            "font": {"size": 11, "color": FLAG_COLOURS[label]},
        }
        for lo, hi, _, label in bands
    ]
    height = 150 + 26 * len(f)
    lay = layout("PSI per feature", "")
    lay.update(
        height=height,
        shapes=shapes,
        annotations=annotations,
        barmode="overlay",
        margin={"l": 10, "r": 20, "t": 90, "b": 50},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": -60 / height},
    )
    lay["yaxis"] = {
        "automargin": True,
        "categoryorder": "array",
        "categoryarray": list(f["feature"])[::-1],
        "type": "category",
    }
    lay["xaxis"] = {"title": {"text": "PSI"}, "range": [0, top], "automargin": True}
    lay["title"]["y"] = 0.99
    lay["title"]["yanchor"] = "top"
    fig.update_layout(**lay)
    return fig, height


def distribution_chart(name: str, bins: pd.DataFrame, psi: float, flag: str) -> Any:
    """A feature's reference and current shares in the PSI's bins (the reference's deciles)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for side, colour, label in (
        ("reference_share", REFERENCE_COLOUR, "reference"),
        ("current_share", CURRENT_COLOUR, "current"),
    ):
        fig.add_trace(
            go.Bar(
                x=bins["bin"],
                y=bins[side] * 100,
                name=label,
                marker={"color": colour},
                customdata=bins["psi_part"],
                hovertemplate="%{x}<br>" + label + " %{y:.1f} %<br>this bin's part of the "
                "PSI %{customdata:.3f}<extra></extra>",
            )
        )
    lay = layout(f"<b>{esc(name)}</b> · PSI {fmt_num(psi, 3)} ({esc(flag)})", "share (%)")
    lay.update(
        height=300,
        barmode="group",
        bargap=0.15,
        margin={"l": 50, "r": 10, "t": 60, "b": 80},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
    )
    lay["title"]["font"] = {"size": 12}
    lay["title"]["x"] = 0.01
    lay["xaxis"] = {"type": "category", "tickangle": -35, "tickfont": {"size": 9}}
    fig.update_layout(**lay)
    return fig


def score_bins_chart(report: Any) -> Any:
    """The score's reference and current shares in the reference's score deciles."""
    bins = report.score_bins
    fig = distribution_chart("score", bins, report.score.psi, report.score.flag)
    fig.update_layout(
        height=400,
        title={
            "text": f"Score distribution · PSI {fmt_num(report.score.psi, 3)} "
            f"({esc(report.score.flag)})",
            "font": {"size": 14},
        },
        xaxis={"title": {"text": "score bin (the reference's deciles)"}},
    )
    return fig


def score_cdf_chart(report: Any) -> Any:
    """The two empirical distribution functions of the score, the KS gap marked."""
    import plotly.graph_objects as go

    q = report.score_quantiles
    prob = _score_is_probability(report)
    fig = go.Figure()
    for side, colour in (("reference", REFERENCE_COLOUR), ("current", CURRENT_COLOUR)):
        fig.add_trace(
            go.Scatter(
                x=q[side],
                y=q["level"] * 100,
                mode="lines",
                name=side,
                line={"color": colour, "width": 2.5},
                hovertemplate=f"{side}: %{{y:.1f}} %% of customers score at most "
                + ("%{x:.1%}" if prob else "%{x:.4f}")
                + "<extra></extra>",
            )
        )
    # the KS gap: the largest vertical distance of the two step functions, on a common grid
    grid = np.unique(np.concatenate([q["reference"], q["current"]]))
    f_ref = np.interp(grid, q["reference"], q["level"], left=0.0, right=1.0)
    f_cur = np.interp(grid, q["current"], q["level"], left=0.0, right=1.0)
    i = int(np.argmax(np.abs(f_ref - f_cur))) if len(grid) else 0
    if len(grid):
        fig.add_trace(
            go.Scatter(
                x=[grid[i], grid[i]],
                y=[f_ref[i] * 100, f_cur[i] * 100],
                mode="lines+markers",
                name=f"KS gap ≈ {fmt_num(report.score.ks_statistic, 3)}",
                line={"color": "#c62828", "width": 2, "dash": "dot"},
                hoverinfo="skip",
            )
        )
    lay = layout("Score distribution functions", "customers scoring at most x (%)")
    lay["xaxis"] = {"title": {"text": "score"}, "tickformat": ".0%" if prob else ""}
    fig.update_layout(**lay)
    return fig


def transitions_chart(report: Any) -> Any:
    """Where the customers of each reference score decile sit now (row shares)."""
    import plotly.graph_objects as go

    t = report.stability.transitions
    counts = t.to_numpy(dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0) * 100
    labels = [str(c) for c in t.columns]
    fig = go.Figure(
        go.Heatmap(
            z=shares,
            x=labels,
            y=[str(i) for i in t.index],
            colorscale="Blues",
            zmin=0,
            zmax=100,
            customdata=counts,
            colorbar={"title": {"text": "% of row"}},
            hovertemplate="decile %{y} at the reference → %{x} now<br>%{z:.1f} % of the row, "
            "%{customdata:,.0f} customers<extra></extra>",
        )
    )
    lay = layout("Score decile transitions (1 = highest scores)", "decile at the reference")
    lay["xaxis"] = {"title": {"text": "decile now"}, "type": "category", "side": "bottom"}
    lay["yaxis"] = {
        "title": {"text": "decile at the reference"},
        "type": "category",
        "autorange": "reversed",
    }
    lay["margin"] = {"l": 70, "r": 20, "t": 60, "b": 50}
    fig.update_layout(**lay)
    return fig


# ---------------------------------------------------------------- the page


def render_monitor_page(report: Any) -> str:
    """The drift page's HTML (self-contained; plotly.js embedded once in the head)."""
    f = report.features
    title = (
        f"Drift: {report.registered_model} (version {report.model_version}), "
        f"{report.current_as_of} against {report.reference_as_of}"
    )
    meta = (
        f"Dataset <code>{esc(report.dataset)}</code> · feature set "
        f"<code>{esc(report.feature_set)}</code> · model run <code>{esc(report.model_run_id)}"
        "</code>"
        + (
            f" · MLflow run <code>{esc(report.mlflow_run_id)}</code>"
            if report.mlflow_run_id
            else ""
        )
    )
    warning = ""
    small = min(report.score.n_reference, report.score.n_current)
    if small < SMALL_POPULATION:
        warning = (
            f'<p class="warning">Only {fmt_count(small)} customers on one side: PSI is noisy '
            "below a few hundred; read the means and missing shares as well.</p>"
        )
    psi_fig, psi_height = psi_chart(report)
    parts = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{meta}</p>',
        in_words(report),
        warning,
        "<h2>PSI per feature</h2>",
        '<p class="note">PSI (population stability index) compares the current share of '
        "customers in each bin of the reference's deciles with the reference's own; below "
        f"{fmt_num(report.thresholds.moderate, 2)} a feature is stable, up to "
        f"{fmt_num(report.thresholds.significant, 2)} it moved moderately (look at it: a new "
        "source, a promotion, a season?), above that significantly (the model scores a "
        "population it has not seen: retrain on recent cutoffs, check the pipeline). Context "
        "features (the snapshot's month) differ between any two dates by design and are left "
        "out.</p>",
        '<div class="charts wide">',
        figure(psi_fig, "chart-psi", height=psi_height),
        "</div>",
        feature_table(report),
        "<h2>Score stability</h2>",
        '<div class="grid"><div>',
        score_facts(report),
        "</div></div>",
    ]
    charts = []
    if report.score_bins is not None and len(report.score_bins):
        charts.append(
            figure(
                score_bins_chart(report),
                "chart-score-bins",
                "The share of customers in each of the reference's score deciles: ten equal "
                "bars when nothing moved.",
            )
        )
    if report.score_quantiles is not None and len(report.score_quantiles):
        charts.append(
            figure(
                score_cdf_chart(report),
                "chart-score-cdf",
                "Share of customers scoring at most x on each date; the dotted gap is the "
                "Kolmogorov–Smirnov statistic.",
            )
        )
    charts.append(
        figure(
            transitions_chart(report),
            "chart-transitions",
            "Each row: the customers of one reference decile (on both dates), by their decile "
            "now. A strong diagonal: the target list of a campaign would barely change.",
        )
    )
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    parts += [
        "<h2>Distributions per feature</h2>",
        '<p class="note">Each feature in the bins its PSI was computed on: the reference\'s '
        "deciles (ties merged; a constant reference split into below, equal and above; missing "
        "values a bin of their own; other values one bin each). Most shifted first. Hover a bar "
        "for its part of the PSI.</p>",
    ]
    small_charts = []
    for r in f.to_dict("records"):
        name = str(r["feature"])
        bins = report.distributions.get(name)
        if bins is None or bins.empty:
            continue
        flag = str(r["flag"])
        small_charts.append(
            f'<figure id="dist-{esc(name)}" class="flag-{esc(flag.replace("/", "-"))}">'
            + plotly_div(distribution_chart(name, bins, r["psi"], flag), f"chart-dist-{name}", 300)
            + "</figure>"
        )
    if small_charts:
        parts.append(f'<div class="charts small">{"".join(small_charts)}</div>')
    else:
        parts.append('<p class="note">No distributions were kept with this report.</p>')
    return page(title, "".join(parts), css=MONITOR_CSS)


def write_monitor_page(report: Any, path: Path) -> Path:
    """Write the drift page to ``path`` atomically (nothing else is written beside it)."""
    html = render_monitor_page(report)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
