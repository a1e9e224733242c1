"""The HTML comparison of three real training runs, rendered by headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
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
# added to a copy of the page only: records whether each chart decoded in the browser
PROBE = """<script>window.addEventListener('load', () => {
  for (const img of document.images) {
    img.setAttribute('data-natural-width', String(img.naturalWidth));
    img.setAttribute('data-complete', String(img.complete));
  }
  document.body.setAttribute('data-probed', 'yes');
});</script>"""

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"headless Chromium not found at {CHROMIUM} (install it: apt-get install -y chromium)",
)


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


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


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


@needs_chromium
def test_page_renders_in_headless_chromium(comparison, tmp_path):
    result, page, _ = comparison
    shot = tmp_path / "comparison.png"
    done = _chromium(["--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert shot.exists(), done.stderr[-2000:]
    if os.environ.get("PATRON_TEST_ARTIFACTS"):
        out = Path(os.environ["PATRON_TEST_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "compare_report.png")
        shutil.copy(page, out / "compare_report.html")
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 2000)
        # charts make for many colours; a blank or text-only page has a handful
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 200

    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], tmp_path).stdout
    assert 'data-probed="yes"' in dom, dom[-2000:]
    imgs = re.findall(r"<img [^>]*>", dom)
    assert len(imgs) == 3
    for tag in imgs:
        assert 'src="data:image/png;base64,' in tag
        width = re.search(r'data-natural-width="(\d+)"', tag)
        assert width and int(width.group(1)) > 100, tag[:200] + tag[-200:]
    table = dom.split('<table id="comparison">')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + len(result.table)
    assert dom.count('class="decile"') == len(result.table)
    for label in result.labels.values():
        assert label in dom
