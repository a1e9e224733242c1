"""The comparison as one self-contained HTML page: runs, metrics, interactive charts, deciles.

Readable with many runs: each run has a number (#1 is the champion), a colour and a line style
used everywhere; a run picker above the charts highlights the chosen runs in every chart and
table (the others fade); the AUC difference to the champion is drawn with its paired interval;
gains are also drawn as the difference to the champion's curve (near-identical runs overlap on
the plain curve, not on the difference); lift by decile is a small multiple per run with the
champion's as a reference. Plotly charts (hover, zoom, legend toggling), plotly.js embedded once:
the page works offline.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.compare import ComparisonResult, auc_interval_text
from features.pages import (
    DASH,
    esc,
    figure,
    fmt_count,
    fmt_num,
    fmt_pct,
    layout,
    page,
    row,
    table,
)
from features.store import atomic_path
from training.evaluate import decile_table

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile", "positive_rate", "n")
# ten colours that stay apart (Tableau 10 without the champion's near-black); after ten runs
# the line style changes, so runs 11-20 differ from 1-10 by dashes
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#17becf",
)
DASHES = ("solid", "dash", "dot", "dashdot")
CHAMPION_COLOUR = "#222222"
GRID = np.linspace(0.0, 1.0, 101)  # gains are drawn at every whole percent contacted
STEP = 5  # the difference to the champion at every 5 %: finer steps show ranking noise

COMPARE_CSS = """
.picker { position: sticky; top: 0; z-index: 10; background: #fafbfc; padding: 8px 0 6px;
  border-bottom: 1px solid #e0e3e8; display: flex; flex-wrap: wrap; gap: 4px 6px;
  align-items: center; }
.picker .label { font-size: 0.85em; color: #555; margin-right: 4px; }
.picker label { display: inline-flex; align-items: center; gap: 4px; font-size: 0.8em;
  border: 1px solid #d6d9de; border-radius: 12px; padding: 1px 8px 1px 4px; cursor: pointer;
  background: #fff; max-width: 22em; overflow: hidden; white-space: nowrap;
  text-overflow: ellipsis; }
.picker label.on { border-color: #222; box-shadow: 0 0 0 1px #222; }
.picker input { margin: 0; } .picker button { font-size: 0.8em; }
.swatch { display: inline-block; width: 14px; height: 4px; border-radius: 2px;
  flex: 0 0 auto; }
td.run { text-align: left; white-space: nowrap; max-width: 26em; overflow: hidden;
  text-overflow: ellipsis; }
tr.champion td { background: #fff6d6; font-weight: 600; }
#comparison th { min-width: 6em; } #comparison th:first-child { min-width: 0; }
tr.faded td { opacity: 0.35; } tr.picked td { background: #e8f0fe; }
span.delta { color: #777; font-size: 0.85em; font-weight: normal; }
.deciles { display: grid; gap: 8px 16px;
  grid-template-columns: repeat(auto-fill, minmax(min(420px, 100%), 1fr)); }
.deciles .decile { min-width: 0; } .deciles .decile.faded { opacity: 0.35; }
.deciles h3 { font-size: 0.95em; margin: 0.6em 0 0.2em; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.deciles table { font-size: 0.78em; } .deciles th, .deciles td { padding: 2px 6px; }
"""

# the run picker: chosen runs keep their colour in every chart, the others fade; none chosen =
# all shown. Traces carry their run id in ``meta``; table rows and decile boxes in data-run-id.
PICKER_JS = """<script>(function () {
  var boxes = Array.prototype.slice.call(document.querySelectorAll('#run-picker input'));
  function apply() {
    var picked = {}, any = false;
    boxes.forEach(function (b) {
      b.parentNode.classList.toggle('on', b.checked);
      if (b.checked) { picked[b.value] = true; any = true; }
    });
    document.querySelectorAll('.plotly-graph-div').forEach(function (div) {
      if (!div.data) { return; }
      var opacity = [], idx = [], width = [], lines = [];
      div.data.forEach(function (t, i) {
        var m = t.meta || {};
        if (!m.run) { return; }
        idx.push(i);
        opacity.push(!any || picked[m.run] ? 1 : 0.12);
        if (m.width) {
          lines.push(i);
          width.push(any && picked[m.run] ? m.width + 1.5 : m.width);
        }
      });
      if (idx.length) { Plotly.restyle(div, {opacity: opacity}, idx); }
      if (lines.length) { Plotly.restyle(div, {'line.width': width}, lines); }
    });
    document.querySelectorAll('[data-run-id]').forEach(function (el) {
      var on = !!picked[el.getAttribute('data-run-id')];
      el.classList.toggle('picked', any && on && el.tagName === 'TR');
      el.classList.toggle('faded', any && !on);
    });
  }
  boxes.forEach(function (b) { b.addEventListener('change', apply); });
  var clear = document.getElementById('run-picker-clear');
  if (clear) {
    clear.addEventListener('click', function () {
      boxes.forEach(function (b) { b.checked = false; }); apply();
    });
  }
  window.patronPickRuns = function (ids) {
    boxes.forEach(function (b) { b.checked = ids.indexOf(b.value) >= 0; }); apply();
  };
})();</script>"""


# ---------------------------------------------------------------- curves


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


class Run:
    """One compared run as the page draws it: number, label, colour, line style, predictions."""

    def __init__(self, number: int, rid: str, label: str, champion: bool, k: int) -> None:
        self.number, self.rid, self.label, self.champion = number, rid, label, champion
        # the champion is #1 and near-black; the others (k = 0, 1, ...) take the palette in order
        self.colour = CHAMPION_COLOUR if champion else PALETTE[k % len(PALETTE)]
        self.dash = "solid" if champion else DASHES[(k // len(PALETTE)) % len(DASHES)]
        self.width = 3.0 if champion else 1.8
        self.y: np.ndarray | None = None
        self.score: np.ndarray | None = None
        self.distinct = label  # the label less the leading words all runs share

    @property
    def name(self) -> str:
        """``#3 label`` (★ for the champion), escaped for Plotly's text."""
        return f"#{self.number} " + ("★ " if self.champion else "") + esc(self.label)

    @property
    def legend(self) -> str:
        """The name cut short enough for a legend beside a chart."""
        return self.short(24)

    def short(self, width: int = 34) -> str:
        """The name without the words every run's name starts with, cut to ``width``
        characters: for legends and small-multiple titles, where the differences must show."""
        text = f"#{self.number} " + ("★ " if self.champion else "") + self.distinct
        return esc(text if len(text) <= width else text[: width - 1] + "…")

    def meta(self, line: bool = True) -> dict[str, Any]:
        """What the run picker reads from a trace: the run, and the line width to restore."""
        return {"run": self.rid, "width": self.width} if line else {"run": self.rid}

    def line(self) -> dict[str, Any]:
        return {"color": self.colour, "dash": self.dash, "width": self.width}


def runs_of(result: ComparisonResult) -> list[Run]:
    """The runs in table order (champion first), numbered from 1, with their predictions."""
    out: list[Run] = []
    for i, (rid, champion) in enumerate(
        zip(result.table["run_id"], result.table["champion"], strict=True), start=1
    ):
        k = sum(not r.champion for r in out)
        run = Run(i, str(rid), result.labels.get(rid, str(rid)), bool(champion), k)
        preds = result.predictions.get(rid)
        if preds is not None:
            run.y = preds["label"].to_numpy(dtype=float)
            run.score = preds["score"].to_numpy(dtype=float)
        out.append(run)
    common = _common_words([r.label for r in out])
    for run in out:
        run.distinct = run.label[len(common) :].strip() or run.label
    return out


def _common_words(labels: list[str]) -> str:
    """The leading whole words all labels share (``churn xgb `` of ``churn xgb lr0.05 …``)."""
    if len(labels) < 2:
        return ""
    prefix = labels[0]
    for label in labels[1:]:
        while not label.startswith(prefix):
            prefix = prefix[:-1]
    cut = prefix.rfind(" ")
    return prefix[: cut + 1] if cut >= 0 else ""


def rows_by_run(result: ComparisonResult) -> dict[str, dict[str, Any]]:
    """The comparison table's rows as dicts, by run id."""
    return {
        str(r["run_id"]): {str(k): v for k, v in r.items()} for r in result.table.to_dict("records")
    }


def _gains_at_grid(run: Run) -> np.ndarray:
    assert run.y is not None and run.score is not None
    x, g = gains_curve(run.y, run.score)
    return np.interp(GRID, x, g)


# ---------------------------------------------------------------- charts


def _house(title: str, y_title: str, x_title: str, height: int = 440) -> dict[str, Any]:
    lay = layout(title, y_title)
    lay["xaxis"] = {"title": {"text": x_title}, "automargin": True}
    lay["height"] = height
    lay["legend"] = {"orientation": "v", "x": 1.01, "y": 1, "font": {"size": 11}}
    lay["margin"] = {"l": 70, "r": 10, "t": 50, "b": 50}
    return lay


def auc_chart(result: ComparisonResult, runs: list[Run]) -> Any:
    """Each run's ROC AUC difference to the champion with its paired 95 % interval."""
    import plotly.graph_objects as go

    t = rows_by_run(result)
    fig = go.Figure()
    for run in runs:
        r = t[run.rid]
        diff = r.get("auc_diff")
        auc = r.get("test_roc_auc")
        if run.champion:
            x, lo, hi = 0.0, 0.0, 0.0
        elif pd.notna(diff):
            x, lo, hi = float(diff), float(r["auc_diff_lo"]), float(r["auc_diff_hi"])
        else:
            continue
        hover = (
            f"<b>{run.name}</b><br>ROC AUC {fmt_num(auc, 4)}"
            + ("<br>the champion" if run.champion else f"<br>{esc(auc_interval_text(r))}")
            + f"<br>paired rows {fmt_count(r.get('paired_rows'))}"
        )
        fig.add_trace(
            go.Scatter(
                x=[x],
                y=[run.name],
                mode="markers",
                name=run.name,
                meta=run.meta(line=False),
                marker={"color": run.colour, "size": 11, "symbol": "star" if run.champion else 0},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [hi - x],
                    "arrayminus": [x - lo],
                    "color": run.colour,
                    "thickness": 2,
                },
                hovertext=[hover],
                hoverinfo="text",
                showlegend=False,
            )
        )
    lay = _house(
        "ROC AUC minus the champion's, paired bootstrap 95 % interval",
        "",
        "difference in ROC AUC (right of 0: better than the champion)",
        height=max(200, 120 + 30 * len(runs)),  # one run: still a readable chart
    )
    lay["yaxis"] = {"autorange": "reversed", "automargin": True, "type": "category"}
    lay["shapes"] = [
        {
            "type": "line",
            "x0": 0,
            "x1": 0,
            "yref": "paper",
            "y0": 0,
            "y1": 1,
            "line": {"color": "#999", "dash": "dash"},
        }
    ]
    fig.update_layout(**lay)
    return fig


def gains_chart(runs: list[Run]) -> Any:
    """Cumulative gains of every run, overlaid, with the random line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for run in runs:
        if run.y is None:
            continue
        g = _gains_at_grid(run)
        fig.add_trace(
            go.Scatter(
                x=GRID * 100,
                y=g * 100,
                mode="lines",
                name=run.legend,
                meta=run.meta(),
                line=run.line(),
                hovertemplate=f"{run.name}<br>contact %{{x:.0f}} %% → %{{y:.1f}} %% of "
                "positives<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 100],
            y=[0, 100],
            mode="lines",
            name="random",
            line={"color": "#999", "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    fig.update_layout(
        **_house(
            "Cumulative gains",
            "positives captured (%)",
            "customers contacted (%, highest score first)",
        )
    )
    return fig


def gains_difference_chart(runs: list[Run]) -> Any:
    """Each run's gains minus the champion's, in percentage points: where near-identical curves
    overlap on the gains chart, this one pulls them apart."""
    import plotly.graph_objects as go

    champ = next((r for r in runs if r.champion and r.y is not None), None)
    fig = go.Figure()
    if champ is not None:
        base = _gains_at_grid(champ)
        for run in runs:
            if run.y is None:
                continue
            diff = (_gains_at_grid(run) - base)[::STEP] * 100
            fig.add_trace(
                go.Scatter(
                    x=GRID[::STEP] * 100,
                    y=diff,
                    mode="lines+markers",
                    marker={"size": 5},
                    name=run.legend,
                    meta=run.meta(),
                    line=run.line(),
                    hovertemplate=f"{run.name}<br>contact %{{x:.0f}} %%: %{{y:+.2f}} pp "
                    "against the champion<extra></extra>",
                )
            )
    fig.update_layout(
        **_house(
            "Gains minus the champion's",
            "percentage points of all positives",
            "customers contacted (%, highest score first)",
        )
    )
    return fig


def calibration_chart(runs: list[Run]) -> Any:
    """Mean predicted probability against the observed rate, ten equal-count bins per run."""
    import plotly.graph_objects as go

    fig = go.Figure()
    top = 0.0
    for run in runs:
        if run.y is None or run.score is None:
            continue
        p, o = reliability_curve(run.y, run.score)
        top = max(top, float(p.max()), float(o.max()))
        fig.add_trace(
            go.Scatter(
                x=p,
                y=o,
                mode="lines+markers",
                name=run.legend,
                meta=run.meta(),
                line=run.line(),
                marker={"size": 6},
                hovertemplate=f"{run.name}<br>predicted %{{x:.1%}}, observed %{{y:.1%}}"
                "<extra></extra>",
            )
        )
    top = min(1.0, top * 1.05) or 1.0
    fig.add_trace(
        go.Scatter(
            x=[0, top],
            y=[0, top],
            mode="lines",
            name="perfectly calibrated",
            line={"color": "#999", "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    lay = _house(
        "Calibration (reliability)",
        "observed positive rate",
        "mean predicted probability (10 equal-count bins)",
    )
    lay["xaxis"]["tickformat"] = ".0%"
    lay["yaxis"]["tickformat"] = ".0%"
    fig.update_layout(**lay)
    return fig


REACH_AT = (0.1, 0.2, 0.3)


def reach_chart(runs: list[Run]) -> Any:
    """Share of all positives reached when contacting the top 10, 20 and 30 %: one bar per run,
    grouped by depth, the axis zoomed to where the runs differ."""
    import plotly.graph_objects as go

    fig = go.Figure()
    values: list[float] = []
    groups = [f"top {at:.0%}".replace("%", " %") for at in REACH_AT]
    for run in runs:
        if run.y is None:
            continue
        g = _gains_at_grid(run)
        reach = [float(np.interp(at, GRID, g)) * 100 for at in REACH_AT]
        values += reach
        fig.add_trace(
            go.Bar(
                x=groups,
                y=reach,
                name=run.legend,
                meta=run.meta(line=False),
                marker={"color": run.colour},
                hovertemplate=f"{run.name}<br>contacting the %{{x}}: %{{y:.1f}} %% of all "
                "positives<extra></extra>",
            )
        )
    lay = _house(
        "Positives reached at the top 10, 20, 30 %",
        "positives captured (%)",
        "customers contacted (highest score first)",
    )
    if values:
        lo, hi = min(values), max(values)
        pad = max((hi - lo) * 0.15, 0.5)
        lay["yaxis"]["range"] = [max(0.0, lo - pad), min(100.0, hi + pad)]
    fig.update_layout(**lay, barmode="group", bargap=0.2, bargroupgap=0.05)
    return fig


LIFT_COLUMNS = 5


def lift_multiples(runs: list[Run]) -> tuple[Any, int]:
    """Lift by decile as a small multiple per run (bars), the champion's as a line in each; the
    figure and its height."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    drawn = [r for r in runs if r.y is not None and r.score is not None]
    cols = max(1, min(LIFT_COLUMNS, len(drawn)))
    rows = max(1, -(-len(drawn) // cols))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        shared_yaxes=True,
        subplot_titles=[r.short() for r in drawn],
        horizontal_spacing=0.02,
        vertical_spacing=0.14 / max(rows - 1, 1) if rows > 1 else 0.1,
    )
    champ = next((r for r in drawn if r.champion), None)
    champ_lift = (
        decile_table(champ.y, champ.score)["lift"].to_numpy()
        if champ is not None and champ.y is not None and champ.score is not None
        else None
    )
    for i, run in enumerate(drawn):
        assert run.y is not None and run.score is not None
        d = decile_table(run.y, run.score)
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Bar(
                x=d["decile"],
                y=d["lift"],
                name=run.name,
                meta=run.meta(line=False),
                marker={"color": run.colour},
                customdata=np.column_stack([d["rate"] * 100, d["customers"]]),
                hovertemplate=f"{run.name}<br>decile %{{x}}: lift %{{y:.2f}}<br>rate "
                "%{customdata[0]:.1f} %, %{customdata[1]:,} customers<extra></extra>",
                showlegend=False,
            ),
            row=r,
            col=c,
        )
        if champ_lift is not None and not run.champion:
            fig.add_trace(
                go.Scatter(
                    x=d["decile"],
                    y=champ_lift,
                    mode="lines",
                    name="champion",
                    line={"color": CHAMPION_COLOUR, "width": 1.5, "dash": "dot"},
                    hovertemplate="champion: decile %{x}, lift %{y:.2f}<extra></extra>",
                    showlegend=False,
                ),
                row=r,
                col=c,
            )
    height = 120 + 230 * rows
    fig.update_layout(
        template="plotly_white",
        height=height,
        autosize=True,
        margin={"l": 60, "r": 10, "t": 70, "b": 40},
        title={
            "text": "Lift by score decile per run (dotted: the champion's)",
            "font": {"size": 14},
        },
        bargap=0.15,
        hoverlabel={"align": "left"},
    )
    fig.update_xaxes(tickmode="array", tickvals=list(range(1, 11)), tickfont={"size": 9})
    fig.update_yaxes(title_text="lift", col=1)
    fig.update_annotations(font_size=11)
    return fig, height


# ---------------------------------------------------------------- tables


METRIC_HEADERS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "log_loss": "Log loss",
    "brier": "Brier score",
    "lift_top_decile": "Lift of the top 10 %",
    "positive_rate": "Positive rate",
    "n": "Test rows",
    "ece": "Expected calibration error",
    "precision_top_decile": "Precision of the top 10 %",
}


def _metric_text(metric: str, value: Any) -> str:
    if metric == "n":
        return fmt_count(value)
    if metric == "positive_rate":
        return fmt_pct(value)
    if metric == "lift_top_decile":
        return fmt_num(value, 2)
    return fmt_num(value, 4)


def _delta_text(metric: str, value: Any) -> str:
    if metric == "lift_top_decile":
        return fmt_num(value, 2, signed=True)
    return fmt_num(value, 4, signed=True)


def _plain(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return DASH
    return esc(value)


def _param_header(column: str) -> str:
    """``param.xgb.n_estimators`` → ``N estimators`` (full name in the tooltip)."""
    words = column.removeprefix("param.").removeprefix("xgb.").replace("_", " ").replace(".", " ")
    return words[:1].upper() + words[1:]


def _run_cell(run: Run) -> tuple[str, str]:
    text = (
        f'<span class="swatch" style="background:{run.colour}"></span> '
        f"#{run.number} {'★ ' if run.champion else ''}{esc(run.label)}"
    )
    return f'<span title="{esc(run.rid)}">{text}</span>', "run"


def _row_attrs(run: Run) -> str:
    return f'data-run-id="{esc(run.rid)}"'


def runs_table(result: ComparisonResult, runs: list[Run]) -> str:
    """What each run is: family, data, feature set, window and the params that matter."""
    t = rows_by_run(result)
    text_cols = {
        "family": "Family",
        "dataset": "Dataset",
        "feature_set": "Feature set",
        "data_window": "Data window<br><small>train cutoffs → test cutoff</small>",
    }
    # a column the same for every run is said once, above the table
    same = {
        c: str(result.table[c].iloc[0])
        for c in text_cols
        if len(runs) > 1 and result.table[c].astype(str).nunique() == 1
    }
    text_cols = {c: h for c, h in text_cols.items() if c not in same}
    headers = [("Run", "text"), *((h, "text") for h in text_cols.values())]
    headers += [
        (f'<span title="{esc(c)}">{esc(_param_header(c))}</span>', "") for c in result.param_columns
    ]
    rows = []
    for run in runs:
        r = t[run.rid]
        cells = [_run_cell(run)]
        cells += [(_plain(r[c]), "text nowrap") for c in text_cols]
        cells += [(_plain(r[c]), "") for c in result.param_columns]
        rows.append(row(cells, "champion" if run.champion else "", _row_attrs(run)))
    words = {
        "family": "family",
        "dataset": "dataset",
        "feature_set": "feature set",
        "data_window": "data window",
    }
    said = "; ".join(f"{words[c]} <b>{esc(v) or DASH}</b>" for c, v in same.items())
    common = f'<p class="meta">All runs: {said}.</p>' if said else ""
    return common + table(headers, rows, id_="runs")


def metrics_table(result: ComparisonResult, runs: list[Run]) -> str:
    """Logged test metrics, each with its difference to the champion, and the paired AUC CI."""
    t = result.table.columns
    by_run = rows_by_run(result)
    head_metrics = [m for m in ("roc_auc",) if f"test_{m}" in t]
    metrics = [m for m in METRICS if f"test_{m}" in t and m not in head_metrics]
    extra = [
        c.removeprefix("test_")
        for c in result.metric_columns
        if c.startswith("test_") and c.removeprefix("test_") not in METRICS
    ]
    baselines = [c for c in ("baseline_roc_auc", "baseline_lift_top_decile") if c in t]
    baseline_headers = {
        "baseline_roc_auc": "Baseline ROC AUC",
        "baseline_lift_top_decile": "Baseline lift of the top 10 %",
    }
    headers = [("Run", "text")]
    headers += [(esc(METRIC_HEADERS[m]), "") for m in head_metrics]
    headers.append(("Δ ROC AUC vs champion<br><small>paired bootstrap, 95 % interval</small>", ""))
    headers += [
        (esc(METRIC_HEADERS.get(m, m.replace("_", " ").capitalize())), "")
        for m in [*metrics, *extra]
    ]
    headers += [(esc(baseline_headers[c]), "") for c in baselines]
    headers.append(("Paired test rows", "text"))

    def metric_cell(r: Any, metric: str, champion: bool) -> tuple[str, str]:
        text = _metric_text(metric, r.get(f"test_{metric}"))
        delta = r.get(f"delta_test_{metric}")
        if not champion and delta is not None and pd.notna(delta):
            text += f'<br><span class="delta">{_delta_text(metric, delta)}</span>'
        return text, ""

    rows = []
    for run in runs:
        r = by_run[run.rid]
        cells = [_run_cell(run)]
        cells += [metric_cell(r, m, run.champion) for m in head_metrics]
        cells.append((esc(auc_interval_text(r)), ""))
        cells += [metric_cell(r, m, run.champion) for m in [*metrics, *extra]]
        cells += [(_metric_text(c.removeprefix("baseline_"), r[c]), "") for c in baselines]
        note = fmt_count(r["paired_rows"]) if r["paired_rows"] else DASH
        if not run.champion and r["paired_note"] != "same test rows":
            note += f" ({esc(r['paired_note'])})"
        cells.append((note, "text"))
        rows.append(row(cells, "champion" if run.champion else "", _row_attrs(run)))
    return table(headers, rows, id_="comparison")


DECILE_HEADERS = {
    "decile": "Decile",
    "customers": "Customers",
    "mean_score": "Mean score",
    "positives": "Positives",
    "rate": "Positive rate",
    "lift": "Lift",
    "cumulative_gain": "Cumulative gain",
}


def _decile_cell(column: Hashable, value: Any) -> str:
    if column in ("decile", "customers", "positives"):
        return fmt_count(value)
    if column in ("rate", "cumulative_gain"):
        return fmt_pct(value)
    if column == "lift":
        return fmt_num(value, 2)
    return fmt_num(value, 3)


def decile_tables(runs: list[Run]) -> str:
    """Customers, mean score, positives, rate, lift and cumulative gain per decile, per run."""
    parts = []
    for run in runs:
        if run.y is None or run.score is None:
            continue
        s = run.score
        d = decile_table(run.y, s)
        order = np.argsort(-s, kind="stable")
        d.insert(
            2,
            "mean_score",
            [float(s[idx].mean()) if len(idx) else np.nan for idx in np.array_split(order, len(d))],
        )
        headers = [(esc(DECILE_HEADERS.get(str(c), str(c))), "") for c in d.columns]
        rows = [row([(_decile_cell(c, v), "") for c, v in r.items()]) for _, r in d.iterrows()]
        title = f'<span class="swatch" style="background:{run.colour}"></span> {run.name}'
        parts.append(
            f'<div class="decile" data-run-id="{esc(run.rid)}"><h3 title="{esc(run.rid)}">'
            f"{title}</h3>{table(headers, rows)}</div>"
        )
    return f'<div class="deciles">{"".join(parts)}</div>'


def run_picker(runs: list[Run]) -> str:
    """Checkboxes, one per run: the chosen runs are highlighted in every chart and table."""
    boxes = "".join(
        f'<label title="{esc(r.label)}"><input type="checkbox" value="{esc(r.rid)}">'
        f'<span class="swatch" style="background:{r.colour}"></span>{r.short(40)}</label>'
        for r in runs
        if r.y is not None
    )
    return (
        '<div class="picker" id="run-picker"><span class="label">Highlight runs:</span>'
        f'{boxes}<button type="button" id="run-picker-clear">show all</button></div>'
    )


# ---------------------------------------------------------------- the page


def render_html(result: ComparisonResult) -> str:
    """The whole report as one HTML string (plotly.js and CSS inline, no network)."""
    runs = runs_of(result)
    drawn = [r for r in runs if r.y is not None]
    notes = [
        *result.notes,
        f"paired bootstrap: {result.n_boot:,} resamples of the test rows both "
        f"runs scored, seed {result.seed}",
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    source = esc(result.tracking_uri or "the current MLflow tracking URI")
    parts = [
        "<h1>Run comparison</h1>",
        f'<p class="meta">{len(runs):,} runs from {source}; generated {generated}. '
        f"Metrics are on each run's test rows ({esc(result.test_split)}). #1 is the "
        "champion.</p>",
        f'<ul class="notes">{"".join(f"<li>{esc(n)}</li>" for n in notes)}</ul>',
        "<h2>Runs</h2>",
        runs_table(result, runs),
        f"<h2>Test metrics: {esc(result.test_split)}</h2>",
        "<p class=\"note\">Small grey figures: the run's metric minus the champion's (each on "
        "its own test rows). The interval compares both runs on the test rows they share.</p>",
        metrics_table(result, runs),
        "<h2>Charts</h2>",
    ]
    if drawn:
        lift_fig, lift_height = lift_multiples(runs)
        parts += [
            run_picker(runs),
            '<p class="note">Tick runs to highlight them in every chart and table; the others '
            "fade. In a chart, hover for the figures, drag to zoom (double-click to reset), "
            "click a legend entry to hide that run, double-click it to show it alone.</p>",
            '<div class="charts wide">',
            figure(
                auc_chart(result, runs),
                "chart-auc",
                "Dot: the run's ROC AUC minus the champion's; bar: the paired 95 % interval. "
                "A bar that crosses the dashed line: not distinguishable from the champion.",
                height=max(200, 120 + 30 * len(runs)),  # one run: still a readable chart
            ),
            "</div>",
            '<div class="charts">',
            figure(
                gains_chart(runs),
                "chart-gains",
                "Share of all positives reached when contacting the top x % by score.",
                height=440,
            ),
            figure(
                gains_difference_chart(runs),
                "chart-gains-difference",
                "The same curves minus the champion's: above 0, the run reaches more positives "
                "than the champion when contacting that share.",
                height=440,
            ),
            figure(
                calibration_chart(runs),
                "chart-calibration",
                "Observed rate against predicted probability; on the diagonal = calibrated.",
                height=440,
            ),
            figure(
                reach_chart(runs),
                "chart-reach",
                'The campaign question "if we contact 20 %, how many of the positives do we '
                'reach?" per run; the axis starts near the lowest bar.',
                height=440,
            ),
            "</div>",
            '<div class="charts wide">',
            figure(
                lift_fig,
                "chart-lift",
                "Positive rate of each score decile divided by the overall rate (decile 1 = "
                "highest scores).",
                height=lift_height,
            ),
            "</div>",
            "<h2>Deciles per run</h2>",
            decile_tables(runs),
        ]
    else:
        parts.append('<p class="note">No run logged test predictions.</p>')
    script = PICKER_JS if drawn else ""
    return page("Patron run comparison", "".join(parts), css=COMPARE_CSS, script=script)


def write_html(result: ComparisonResult, path: Path) -> Path:
    """Write the report atomically; the page needs nothing but itself."""
    page_html = render_html(result)
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(page_html, encoding="utf-8")
    return Path(path)


def run_numbers(result: ComparisonResult) -> dict[str, int]:
    """Run id -> the number the page shows (#1 = the champion)."""
    return {r.rid: r.number for r in runs_of(result)}
