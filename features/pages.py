"""The house style of every HTML page Patron writes: one CSS, one set of number formats, table
and Plotly helpers and the page shell.

Pages are outputs an analyst asked for (campaign, compare, drift, value, KPI and segment pages):
self-contained files that open from a mail attachment or a shared drive, with plotly.js embedded
once in the head and no network access. The module sits in the lowest layer (``features``) so that
the segment page, which lives there, and the pages of ``experiments`` share it; it imports plotly
only inside the functions that draw.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

DASH = "–"

CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222;
  background: #fafbfc; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 1.5em; margin: 0 0 0.2em; } h2 { margin: 1.6em 0 0.4em; font-size: 1.2em; }
h3 { font-size: 1em; margin: 1em 0 0.3em; }
p.meta { color: #555; font-size: 0.9em; margin: 0.2em 0; }
p.note, ul.notes { color: #555; font-size: 0.85em; }
p.words { max-width: 60em; line-height: 1.5; }
.warning { background: #fff3e0; border-left: 4px solid #ef6c00; padding: 8px 12px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0 1em; background: #fff; }
th, td { border: 1px solid #d6d9de; padding: 4px 8px; text-align: right; }
th { background: #eef1f5; font-weight: 600; vertical-align: bottom; }
td.text, th.text { text-align: left; } td.reason { text-align: left; min-width: 24em; }
td.nowrap { white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid #999; }
.grid { display: flex; flex-wrap: wrap; gap: 16px 32px; align-items: flex-start; }
.grid > div { min-width: 0; max-width: 100%; }
.charts { display: grid; gap: 16px;
  grid-template-columns: repeat(auto-fill, minmax(min(460px, 100%), 1fr)); }
.charts.small { grid-template-columns: repeat(auto-fill, minmax(min(300px, 100%), 1fr)); }
.charts.wide { grid-template-columns: 1fr; }
.charts figure, figure.chart { margin: 0; min-width: 0; background: #fff;
  border: 1px solid #e0e3e8; padding: 8px; }
img { max-width: 100%; height: auto; }
td.num { white-space: nowrap; } td small, th small { color: #666; font-weight: normal; }
figcaption { font-size: 0.85em; color: #555; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 0.85em;
  font-weight: 600; color: #fff; white-space: nowrap; }
.badge.rolled-out, .badge.stable { background: #2e7d32; }
.badge.dropped, .badge.significant { background: #c62828; }
.badge.held, .badge.moderate { background: #ef6c00; }
.badge.not-read, .badge.not-read-yet, .badge.n-a { background: #78909c; }
.flag { color: #c62828; font-weight: 600; white-space: nowrap; } .ok { color: #2e7d32; }
code { font-size: 0.95em; }
"""

# each chart is drawn as its script is parsed: fit them to their final boxes once all are laid out
RESIZE = """<script>window.addEventListener('load', function () {
  document.querySelectorAll('.plotly-graph-div').forEach(function (d) { Plotly.Plots.resize(d); });
});</script>"""
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


# ---------------------------------------------------------------- number formatting


def finite(x: Any) -> bool:
    """A real, finite number (not a bool, None or NaN)."""
    try:
        return not isinstance(x, bool) and x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_count(x: Any) -> str:
    """A count with thousands separators."""
    return f"{round(float(x)):,}" if finite(x) else DASH


def fmt_money(x: Any, signed: bool = False) -> str:
    """Money: no decimals from 1,000 up, two below."""
    if not finite(x):
        return DASH
    x, sign = float(x), "+" if signed else ""
    return f"{x:{sign},.0f}" if abs(x) >= 1000 else f"{x:{sign},.2f}"


def fmt_pct(x: Any, digits: int = 1) -> str:
    """A rate as a percentage: 0.3574 -> 35.7 %."""
    return f"{float(x) * 100:.{digits}f} %" if finite(x) else DASH


def fmt_pp(x: Any, digits: int = 1) -> str:
    """A difference of rates in percentage points, signed."""
    return f"{float(x) * 100:+.{digits}f} pp" if finite(x) else DASH


def fmt_num(x: Any, digits: int = 3, signed: bool = False) -> str:
    """A plain figure (AUC, PSI, a mean) with thousands separators and fixed decimals."""
    return f"{float(x):{'+' if signed else ''},.{digits}f}" if finite(x) else DASH


def fmt_time(text: Any) -> str:
    """An ISO timestamp as ``2026-12-01 21:59 UTC``."""
    if not text:
        return DASH
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    offset = when.utcoffset()
    zone = "" if offset is None else (" UTC" if not offset else when.strftime(" UTC%z"))
    return when.strftime("%Y-%m-%d %H:%M") + zone


def interval(ci: Any, fmt: Any, unit: str = "") -> str:
    """``lo to hi unit`` (the unit once, at the end)."""
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return DASH
    lo, hi = fmt(ci[0]), fmt(ci[1])
    if unit:
        lo, hi = lo.removesuffix(unit).strip(), hi.removesuffix(unit).strip()
        return f"{lo} to {hi} {unit}"
    return f"{lo} to {hi}"


def esc(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value))


def humanise(name: str) -> str:
    """``channels.phone.capacity`` -> ``Channels phone capacity``: for keys without a label."""
    words = name.replace(".", " ").replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def badge(label: str) -> str:
    """A coloured label; its class is the label with hyphens (``not read`` -> ``not-read``)."""
    cls = label.replace(" ", "-").replace("/", "-")
    return f'<span class="badge {esc(cls)}">{esc(label)}</span>'


# ---------------------------------------------------------------- tables


def table(headers: list[tuple[str, str]], rows: list[str], caption: str = "", id_: str = "") -> str:
    """A table in a box that scrolls sideways when it is wider than the page (headers: HTML,
    class)."""
    head = "".join(f'<th class="{cls}">{label}</th>' for label, cls in headers)
    cap = f"<caption>{caption}</caption>" if caption else ""
    ident = f' id="{esc(id_)}"' if id_ else ""
    return (
        f'<div class="scroll"><table{ident}>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def row(cells: list[tuple[str, str]], cls: str = "", attrs: str = "") -> str:
    """A table row of (HTML, class) cells; an empty class means a number."""
    tds = "".join(f'<td class="{c or "num"}">{v}</td>' for v, c in cells)
    extra = f" {attrs}" if attrs else ""
    return f'<tr class="{cls}"{extra}>{tds}</tr>' if cls else f"<tr{extra}>{tds}</tr>"


# ---------------------------------------------------------------- charts


def plotly_div(fig: Any, div_id: str, height: int = 400) -> str:
    """A figure as a div and its script; plotly.js itself is embedded once, in the head."""
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            default_width="100%",
            default_height=f"{height}px",
            config=PLOTLY_CONFIG,
        )
    )


def layout(title: str, y_title: str) -> dict[str, Any]:
    """The house layout of a chart: white template, legend above the plot, left-aligned hover."""
    return {
        "title": {"text": title, "font": {"size": 14}},
        "template": "plotly_white",
        "autosize": True,
        "height": 400,
        "margin": {"l": 70, "r": 20, "t": 80, "b": 40},
        "yaxis": {"title": {"text": y_title}, "zeroline": True, "zerolinecolor": "#999"},
        "xaxis": {"automargin": True},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "hoverlabel": {"align": "left"},
    }


def figure(fig: Any, div_id: str, caption: str = "", height: int = 400) -> str:
    """A chart and its caption as one ``<figure>``."""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure>{plotly_div(fig, div_id, height)}{cap}</figure>"


def page(title: str, body: str, css: str = "", script: str = "", plotly: bool = True) -> str:
    """The whole page: the house CSS (plus ``css``), plotly.js once in the head, ``body`` in
    ``<main>``, then ``script`` (the page's own, inline)."""
    head_js = ""
    if plotly:
        from plotly.offline import get_plotlyjs

        head_js = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}{css}</style>{head_js}</head>"
        f"<body><main>{body}</main>{RESIZE if plotly else ''}{script}</body></html>\n"
    )
