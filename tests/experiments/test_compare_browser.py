"""The HTML comparison of three real training runs, rendered by headless Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.experiments.page_browser import browser_fixture

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [  # test_kpis.py starts its own Chromium with these
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUICK_PARAMS = [  # small forests: seconds per run, and visibly different models
    {"n_estimators": 15, "max_depth": 2, "learning_rate": 0.1},
    {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.1},
    {"n_estimators": 60, "max_depth": 5, "learning_rate": 0.2},
]
browser = browser_fixture()


@pytest.fixture(scope="module")
def comparison(synthetic_pipeline, tmp_path_factory):
    """Three quick runs in their own experiment and registry name, compared with the report."""
    from experiments.compare import compare_runs, print_comparison, select_runs
    from experiments.compare_report import write_html
    from training.config import ModelSpec
    from training.run import run_experiment

    state, cfg = synthetic_pipeline["state"], synthetic_pipeline["cfg"]
    run_ids = []
    for i, params in enumerate(QUICK_PARAMS):
        quick = cfg.model_copy(
            update={
                "name": f"quick_{i}_depth{params['max_depth']}",
                "experiment": "churn_compare_browser",
                "registered_model": "churn-compare-browser",  # leaves the pipeline's champion alone
                "model": ModelSpec(params=params),
            }
        )
        logged = run_experiment(quick, state).logged
        run_ids.append(logged["run_id"])
    runs = select_runs(state.tracking_uri, "churn_compare_browser")
    result = compare_runs(runs, n_boot=500, seed=0, tracking_uri=state.tracking_uri)
    print_comparison(result)  # shown with -s: the figures behind the page
    page = write_html(result, tmp_path_factory.mktemp("report") / "comparison.html")
    return result, page, run_ids


def test_comparison_of_three_runs_has_paired_intervals(comparison):
    result, _, run_ids = comparison
    t = result.table
    assert set(t["run_id"]) == set(run_ids)
    assert t["champion"].sum() == 1 and "churn-compare-browser@champion" in result.champion_reason
    others = t[~t["champion"]]
    assert (others["paired_note"] == "same test rows").all()  # same data, same test cutoff
    assert (others["auc_diff_lo"] <= others["auc_diff"]).all()
    assert (others["auc_diff"] <= others["auc_diff_hi"]).all()
    assert np.allclose(others["auc_diff"], others["delta_test_roc_auc"], atol=1e-9)
    assert {"param.xgb.n_estimators", "param.xgb.max_depth"} <= set(result.param_columns)


def test_page_renders_in_headless_chromium(comparison, browser, tmp_path):
    result, page, _ = comparison
    check = browser.check(page, tmp_path / "compare_3_runs.png")
    if os.environ.get("PATRON_TEST_ARTIFACTS"):
        out = Path(os.environ["PATRON_TEST_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(check.screenshot, out / "compare_report.png")
        shutil.copy(page, out / "compare_report.html")
    check.assert_readable(min_charts=6)
    html = page.read_text()
    table = html.split('<table id="comparison">')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + len(result.table)
    assert html.count('class="decile"') == len(result.table)
    for label in result.labels.values():
        assert label in html
