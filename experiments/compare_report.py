"""The comparison as one self-contained HTML page: table, gains, lift, calibration, deciles."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.compare import ComparisonResult, auc_interval_text
from features.store import atomic_path
from training.evaluate import decile_table, pyplot

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; font-size: 1.2em; }
p.meta, ul.notes { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f2f5; } td.text, th.text { text-align: left; }
tr.champion td { background: #fff6d6; font-weight: 600; }
.scroll { overflow-x: auto; } td.nowrap { white-space: nowrap; }
span.delta { color: #777; font-size: 0.85em; font-weight: normal; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.charts figure { margin: 0; flex: 1 1 340px; max-width: 520px; }
.charts img { width: 100%; height: auto; } figcaption { font-size: 0.85em; color: #555; }
.deciles { display: flex; flex-wrap: wrap; gap: 8px 24px; }
.deciles h3 { font-size: 0.95em; margin: 0.6em 0 0.2em; }
.deciles table { font-size: 0.78em; } .deciles th, .deciles td { padding: 2px 6px; }
"""

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile", "positive_rate", "n")


def _png(draw: Callable[[Any], None], title: str) -> str:
    """A matplotlib chart drawn by ``draw(ax)`` as a base64 PNG data URI."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.0), dpi=100)
    try:
        draw(ax)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def gains_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of customers contacted (highest score first) and share of positives captured."""
    order = np.argsort(-score, kind="stable")
    gains = np.concatenate([[0.0], np.cumsum(y[order]) / max(float(y.sum()), 1.0)])
    return np.linspace(0.0, 1.0, len(gains)), gains


def reliability_curve(
    y: np.ndarray, score: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted probability and observed rate in equal-count score bins."""
    order = np.argsort(score, kind="stable")
    bins = [b for b in np.array_split(order, n_bins) if len(b)]
    return (np.array([score[b].mean() for b in bins]), np.array([y[b].mean() for b in bins]))


def _curves(result: ComparisonResult) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(run id, label, y, score) of the runs with predictions, in table order."""
    out = []
    for rid in result.table["run_id"]:
        preds = result.predictions.get(rid)
        if preds is None:
            continue
        label = ("★ " if rid == result.champion_run_id else "") + result.labels.get(rid, rid)
        out.append(
            (rid, label, preds["label"].to_numpy(dtype=float), preds["score"].to_numpy(dtype=float))
        )
    return out


def chart_uris(result: ComparisonResult) -> dict[str, str]:
    """The three overlaid charts as data URIs: gains, lift by decile, calibration."""
    curves = _curves(result)
    colors = {rid: f"C{i % 10}" for i, (rid, *_rest) in enumerate(curves)}

    def gains(ax: Any) -> None:
        for rid, label, y, s in curves:
            x, g = gains_curve(y, s)
            ax.plot(x * 100, g * 100, color=colors[rid], label=label)
        ax.plot([0, 100], [0, 100], ls="--", color="grey", label="random")
        ax.set_xlabel("customers contacted (%, highest score first)")
        ax.set_ylabel("positives captured (%)")

    def lift(ax: Any) -> None:
        for rid, label, y, s in curves:
            d = decile_table(y, s)
            ax.plot(d["decile"], d["lift"], marker="o", color=colors[rid], label=label)
        ax.axhline(1.0, ls="--", color="grey", label="random")
        ax.set_xticks(range(1, 11))
        ax.set_xlabel("score decile (1 = highest)")
        ax.set_ylabel("lift (decile rate / overall rate)")

    def calibration(ax: Any) -> None:
        top = 0.0
        for rid, label, y, s in curves:
            p, o = reliability_curve(y, s)
            top = max(top, float(p.max()), float(o.max()))
            ax.plot(p, o, marker="o", color=colors[rid], label=label)
        top = min(1.0, top * 1.05) or 1.0
        ax.plot([0, top], [0, top], ls="--", color="grey", label="perfectly calibrated")
        ax.set_xlabel("mean predicted probability (10 equal-count bins)")
        ax.set_ylabel("observed positive rate")

    return {
        "gains": _png(gains, "Cumulative gains (out-of-time test)"),
        "lift": _png(lift, "Lift by score decile"),
        "calibration": _png(calibration, "Calibration (reliability)"),
    }


def _cell(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else ""
    if isinstance(value, float | np.floating):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return html.escape(str(value))


METRIC_HEADERS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "log_loss": "log loss",
    "brier": "Brier",
    "lift_top_decile": "lift top 10 %",
    "positive_rate": "positive rate",
    "n": "test rows",
}


def _run_label(result: ComparisonResult, row: Any) -> str:
    return ("★ " if row["champion"] else "") + result.labels.get(row["run_id"], row["run_id"])


def _param_header(column: str) -> str:
    """``param.xgb.n_estimators`` → ``n estimators`` (full name in the tooltip)."""
    return column.removeprefix("param.").removeprefix("xgb.").replace("_", " ")


def _runs_table(result: ComparisonResult) -> str:
    """What each run is: family, data, feature set, window and the params that matter."""
    t = result.table
    text_cols = {
        "family": "family",
        "dataset": "dataset",
        "feature_set": "feature set",
        "data_window": "data window (train cutoffs → test cutoff)",
    }
    head = '<th class="text">run</th>'
    head += "".join(f'<th class="text">{html.escape(h)}</th>' for h in text_cols.values())
    head += "".join(
        f'<th title="{html.escape(c)}">{html.escape(_param_header(c))}</th>'
        for c in result.param_columns
    )
    body = []
    for _, row in t.iterrows():
        cls = ' class="champion"' if row["champion"] else ""
        cells = [
            f'<td class="text nowrap" title="{html.escape(row["run_id"])}">'
            f"{html.escape(_run_label(result, row))}</td>"
        ]
        cells += [f'<td class="text nowrap">{_cell(row[c])}</td>' for c in text_cols]
        cells += [f"<td>{_cell(row[c])}</td>" for c in result.param_columns]
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _metric_cell(row: Any, metric: str) -> str:
    """A logged test metric with, under it, its difference to the champion's."""
    value = row.get(f"test_{metric}")
    text = f"{int(value):,}" if metric == "n" and pd.notna(value) else _cell(value)
    delta = row.get(f"delta_test_{metric}")
    if not row["champion"] and delta is not None and pd.notna(delta):
        text += f'<br><span class="delta">{delta:+.4f}</span>'
    return f"<td>{text}</td>"


def _metrics_table(result: ComparisonResult) -> str:
    """Logged test metrics, each with its difference to the champion, and the paired AUC CI."""
    t = result.table
    head_metrics = [m for m in ("roc_auc",) if f"test_{m}" in t]
    metrics = [m for m in METRICS if f"test_{m}" in t and m not in head_metrics]
    extra = [
        c.removeprefix("test_")
        for c in result.metric_columns
        if c.startswith("test_") and c.removeprefix("test_") not in METRICS
    ]
    baselines = [c for c in ("baseline_roc_auc", "baseline_lift_top_decile") if c in t]
    head = '<th class="text">run</th>'
    head += "".join(f"<th>{html.escape(METRIC_HEADERS[m])}</th>" for m in head_metrics)
    head += "<th>Δ ROC AUC vs champion,<br>paired bootstrap [95 % CI]</th>"
    head += "".join(
        f"<th>{html.escape(METRIC_HEADERS.get(m, m.replace('_', ' ')))}</th>"
        for m in [*metrics, *extra]
    )
    head += "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in baselines)
    head += '<th class="text">paired test rows</th>'
    body = []
    for _, row in t.iterrows():
        cls = ' class="champion"' if row["champion"] else ""
        cells = [f'<td class="text nowrap">{html.escape(_run_label(result, row))}</td>']
        cells += [_metric_cell(row, m) for m in head_metrics]
        cells.append(f'<td class="nowrap">{html.escape(auc_interval_text(row))}</td>')
        cells += [_metric_cell(row, m) for m in [*metrics, *extra]]
        cells += [f"<td>{_cell(row[c])}</td>" for c in baselines]
        rows_note = f"{int(row['paired_rows']):,}" if row["paired_rows"] else "–"
        if not row["champion"] and row["paired_note"] != "same test rows":
            rows_note += f" ({html.escape(str(row['paired_note']))})"
        cells.append(f'<td class="text">{rows_note}</td>')
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<table id="comparison"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


DECILE_HEADERS = {
    "mean_score": "mean score",
    "rate": "positive rate",
    "cumulative_gain": "cum. gain",
}


def _decile_tables(result: ComparisonResult) -> str:
    parts = []
    for rid, label, y, s in _curves(result):
        d = decile_table(y, s)
        order = np.argsort(-s, kind="stable")
        d.insert(
            2,
            "mean_score",
            [float(s[idx].mean()) if len(idx) else np.nan for idx in np.array_split(order, len(d))],
        )
        head = "".join(f"<th>{html.escape(DECILE_HEADERS.get(c, c))}</th>" for c in d.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_decile_cell(c, v)}</td>" for c, v in r.items()) + "</tr>"
            for _, r in d.iterrows()
        )
        parts.append(
            f'<div class="decile" data-run-id="{html.escape(rid)}"><h3>{html.escape(label)}</h3>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
        )
    return f'<div class="deciles">{"".join(parts)}</div>'


def _decile_cell(column: Hashable, value: Any) -> str:
    if column in ("decile", "customers", "positives"):
        return f"{int(value):,}"
    if column in ("rate", "cumulative_gain"):
        return "–" if pd.isna(value) else f"{value:.1%}"
    return "–" if pd.isna(value) else f"{value:.3f}"


def render_html(result: ComparisonResult) -> str:
    """The whole report as one HTML string (charts inline as base64 PNG, CSS inline)."""
    charts = chart_uris(result) if result.predictions else {}
    captions = {
        "gains": "Share of all positives reached when contacting the top x % by score.",
        "lift": "Positive rate of each score decile divided by the overall rate.",
        "calibration": "Observed rate against predicted probability; on the diagonal = calibrated.",
    }
    figures = "".join(
        f'<figure><img src="{uri}" alt="{name} chart">'
        f"<figcaption>{captions[name]}</figcaption></figure>"
        for name, uri in charts.items()
    )
    notes = [
        *result.notes,
        f"paired bootstrap: {result.n_boot} resamples of the test rows both "
        f"runs scored, seed {result.seed}",
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    source = html.escape(result.tracking_uri or "the current MLflow tracking URI")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Patron run comparison</title><style>{CSS}</style></head>
<body>
<h1>Run comparison</h1>
<p class="meta">{len(result.table)} runs from {source}; generated {generated}.
Metrics are on each run's out-of-time test cutoff.</p>
<ul class="notes">{"".join(f"<li>{html.escape(n)}</li>" for n in notes)}</ul>
<h2>Runs</h2>
<div class="scroll">{_runs_table(result)}</div>
<h2>Out-of-time test metrics</h2>
<p class="meta">Small grey figures: the run's metric minus the champion's (each on its own
test rows). The interval compares both runs on the test rows they share.</p>
<div class="scroll">{_metrics_table(result)}</div>
<h2>Charts</h2>
<div class="charts">{figures or "<p>No run logged test predictions.</p>"}</div>
<h2>Deciles per run</h2>
{_decile_tables(result)}
</body></html>
"""


def write_html(result: ComparisonResult, path: Path) -> Path:
    """Write the report atomically; the page needs nothing but itself."""
    page = render_html(result)
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)
