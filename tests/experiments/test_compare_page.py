"""The comparison page with ten near-identical runs, in headless Chromium at 1,400 px: every run
numbered, coloured and selectable, nothing wider than the page, every chart drawn, no console
error, nothing fetched."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from experiments.compare import build_comparison
from experiments.compare_report import PALETTE, render_html, run_numbers, runs_of, write_html
from tests.experiments.page_browser import browser_fixture
from training.evaluate import binary_metrics

N_RUNS, N_ROWS = 10, 1_000
browser = browser_fixture()


@pytest.fixture(scope="module")
def ten_runs(tmp_path_factory):
    """Ten runs scoring the same test rows almost alike (a tuning sweep), compared in memory as
    ``compare_runs`` does after fetching them (the store itself is tested in test_compare.py)."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    rng = np.random.default_rng(11)
    ids = [f"C{i:05d}" for i in range(N_ROWS)]
    y = (rng.random(N_ROWS) < 0.25).astype(int)
    latent = y + rng.normal(scale=1.1, size=N_ROWS)
    runs, predictions = [], {}
    for i in range(N_RUNS):
        score = 1 / (1 + np.exp(-(latent + rng.normal(scale=0.15 + 0.02 * i, size=N_ROWS))))
        rid = f"{i:02d}" + "0123456789abcdef" * 2
        predictions[rid] = pd.DataFrame({"customer_id": ids, "label": y, "score": score})
        params = {
            "feature_set": "churn_v1+context_v1",
            "train_cutoffs": "2023-06-30,2023-09-30,2023-12-31,2024-03-31",
            "test_cutoff": "2024-06-30",
            "xgb.n_estimators": str(100 + 20 * i),
            "xgb.max_depth": str(3 + i % 3),
            "xgb.learning_rate": f"{0.05 + 0.01 * i:.2f}",
            "xgb.subsample": f"{0.7 + 0.03 * i:.2f}",
            "xgb.colsample_bytree": f"{0.9 - 0.02 * i:.2f}",
            "xgb.min_child_weight": str(1 + i),
        }
        name = f"churn xgb lr{0.05 + 0.01 * i:.2f} depth{3 + i % 3} sweep-{i}"
        info = RunInfo(rid, "1", "analyst", "FINISHED", 1_700_000_000_000 + i, None, "active")
        info._run_name = name
        data = RunData(
            metrics=[Metric(f"test_{k}", v, 0, 0) for k, v in binary_metrics(y, score).items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag("family", "churn"), RunTag("dataset", "synthetic")],
        )
        runs.append(Run(info, data))
    best = max(runs, key=lambda r: r.data.metrics["test_roc_auc"]).info.run_id
    result = build_comparison(runs, predictions, best, "best test_roc_auc", n_boot=200)
    path = write_html(result, tmp_path_factory.mktemp("compare_ten") / "comparison.html")
    return result, path


def test_ten_runs_are_numbered_coloured_and_pickable(ten_runs) -> None:
    result, path = ten_runs
    page = path.read_text()
    runs = runs_of(result)
    assert (
        len(runs) == N_RUNS
        and runs[0].champion
        and sorted(run_numbers(result).values()) == [*range(1, N_RUNS + 1)]
    )
    # ten colours, none twice: the champion near-black, the nine others from the palette
    assert len({r.colour for r in runs}) == N_RUNS
    assert {r.colour for r in runs[1:]} <= set(PALETTE)
    for run in runs:
        assert f'<input type="checkbox" value="{run.rid}">' in page
        assert page.count(f'data-run-id="{run.rid}"') == 3  # two table rows and a decile box
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1  # plotly.js embedded once
    assert 'src="http' not in page and "<link" not in page
    assert [p.name for p in path.parent.iterdir()] == ["comparison.html"]  # no stray files


def test_ten_runs_in_chromium_and_picking_runs_highlights_them(ten_runs, browser, tmp_path):
    result, path = ten_runs
    check = browser.check(path, tmp_path / "compare_10_runs.png", keep_open=True)
    session = check.session
    try:
        runs = runs_of(result)
        chosen = [runs[3].rid, runs[7].rid]
        browser.evaluate(f"window.patronPickRuns({chosen!r})", session)
        state = browser.evaluate(
            """[...document.querySelectorAll('.plotly-graph-div')].map(d => ({id: d.id,
                traces: d.data.filter(t => t.meta && t.meta.run).map(t => [t.meta.run,
                  t.opacity === undefined ? 1 : t.opacity])}))""",
            session,
        )
        rows = browser.evaluate(
            "[...document.querySelectorAll('#comparison tr.picked')].map(r => r.dataset.runId)",
            session,
        )
        ticked = browser.evaluate(
            "[...document.querySelectorAll('#run-picker label.on input')].map(i => i.value)",
            session,
        )
        browser.evaluate("document.getElementById('run-picker-clear').click()", session)
        cleared = browser.evaluate(
            "document.getElementById('chart-gains').data.every(t => t.opacity === undefined "
            "|| t.opacity === 1)",
            session,
        )
    finally:
        browser.close_tab(session)

    check.assert_readable(min_charts=6)
    charts = {c["id"]: c for c in check.charts}
    names = {"chart-auc", "chart-gains", "chart-gains-difference", "chart-calibration"}
    assert names | {"chart-reach", "chart-lift"} == set(charts)
    assert charts["chart-lift"]["traces"] == N_RUNS + (N_RUNS - 1)  # bars + champion's line
    from PIL import Image

    with Image.open(check.screenshot) as img:
        assert img.size[0] == 1400 and img.size[1] == check.height > 2000

    # the two chosen runs keep full colour in every chart, the eight others fade
    assert len(state) == 6
    for chart in state:
        assert chart["traces"], chart["id"]
        for rid, opacity in chart["traces"]:
            assert (opacity == 1) == (rid in chosen), (chart["id"], rid, opacity)
    assert sorted(rows) == sorted(chosen) and sorted(ticked) == sorted(chosen)
    assert cleared


def test_names_are_escaped_and_numbers_formatted(ten_runs) -> None:
    result, _ = ten_runs
    first = result.table["run_id"].iloc[1]
    result.labels[first] = "<script>alert(1)</script>"
    page = render_html(result)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    text = re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert "1,000" in text  # test rows with a thousands separator
    assert re.search(r">\d+\.\d %<", text)  # the positive rate as a percentage


def _tagged_run(rid: str, tags: dict[str, str], params: dict[str, str]) -> Any:
    from mlflow.entities import Param, Run, RunData, RunInfo, RunTag

    info = RunInfo(rid, "1", "analyst", "FINISHED", 1_700_000_000_000, None, "active")
    data = RunData(
        metrics=[],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    return Run(info, data)


def test_headings_say_which_split_the_metrics_are_on(ten_runs) -> None:
    """A labelled table's stratified split is never called out of time (issue 15): the heading
    is the split each run logged, its test cutoff for older runs, and says when runs differ."""
    from experiments.compare import split_heading

    result, path = ten_runs
    assert result.test_split == "test cutoff 2024-06-30"  # runs without the tag: their cutoff
    assert "Test metrics: test cutoff 2024-06-30" in path.read_text()
    telco = [_tagged_run(f"t{i}", {"test_split": "stratified split"}, {}) for i in range(2)]
    assert split_heading(telco) == "stratified split"
    mixed = [*telco, _tagged_run("c", {}, {"test_cutoff": "2024-06-30"})]
    assert split_heading(mixed) == "test splits differ: stratified split, test cutoff 2024-06-30"
    assert split_heading([_tagged_run("x", {}, {})]) == "test split"
