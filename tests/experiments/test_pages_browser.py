"""The campaign and segment pages in headless Chromium at 1,400 px (one browser for both):
nothing wider than the page, every chart drawn (the segment page's are PNG images), no console
error, nothing fetched."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from experiments.campaign_page import render_campaign_page
from tests.experiments.page_browser import browser_fixture
from tests.experiments.test_campaign_page import _readout, _record

browser = browser_fixture()


def test_campaign_page_in_chromium(browser, tmp_path: Path) -> None:
    path = tmp_path / "campaign.html"
    path.write_text(render_campaign_page(_record(), _readout()))
    check = browser.check(path, tmp_path / "campaign_page.png")
    check.assert_readable(min_charts=2)
    assert {c["id"] for c in check.charts} == {"chart-actual-vs-expected", "chart-expected-profit"}


def test_segment_page_in_chromium(browser, tmp_path: Path) -> None:
    import duckdb

    from features.build import compute_features
    from features.definitions import feature_set
    from features.segments import lifecycle_flow, pareto_curve, segment_customers, segment_summary
    from features.segments_report import REPORT_IMAGES, render_segments_report
    from tests.features.test_segments_report import CFG, LAST, _transactions

    con = duckdb.connect()
    con.register("tx", _transactions())
    fs = feature_set("churn_v1")
    seg = segment_customers(compute_features(con, "tx", LAST, fs), "tx", con, CFG, as_of=LAST)
    before = LAST - timedelta(days=90)
    seg0 = segment_customers(compute_features(con, "tx", before, fs), "tx", con, CFG, as_of=before)
    con.close()
    summary = segment_summary(seg, CFG)
    out = render_segments_report(
        seg, summary, lifecycle_flow(seg0, seg), pareto_curve(seg), tmp_path / "segments.html"
    )
    check = browser.check(out, tmp_path / "segments_page.png")
    check.assert_readable(min_charts=REPORT_IMAGES)  # its charts are inline PNG images
    assert len(check.images) == REPORT_IMAGES and not check.charts
