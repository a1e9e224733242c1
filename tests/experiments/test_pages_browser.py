"""The campaign, campaign-evaluation, segment and value pages in headless Chromium at 1,400 px
(one browser for all): nothing wider than the page, every chart drawn, no console error, nothing
fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.campaign_page import render_campaign_page
from tests.experiments.page_browser import browser_fixture
from tests.experiments.test_campaign_page import _readout, _record

browser = browser_fixture()


def test_the_check_catches_a_broken_page(browser, tmp_path: Path) -> None:
    """A page that overflows, logs an error, throws and fetches from the network fails."""
    path = tmp_path / "broken.html"
    path.write_text(
        '<!DOCTYPE html><html><body><div style="width:2000px">wide</div>'
        '<img src="http://127.0.0.1:9/nothing.png">'
        "<script>console.error('boom'); null.x;</script></body></html>"
    )
    check = browser.check(path, tmp_path / "broken.png")
    assert check.scroll_width > check.client_width == 1400
    assert any("boom" in e for e in check.console_errors)
    assert any("TypeError" in e for e in check.console_errors)
    assert check.requests == ["http://127.0.0.1:9/nothing.png"]
    assert check.images and not check.images[0]["width"]
    with pytest.raises(AssertionError):
        check.assert_readable()


def test_campaign_page_in_chromium(browser, tmp_path: Path) -> None:
    path = tmp_path / "campaign.html"
    path.write_text(render_campaign_page(_record(), _readout()))
    check = browser.check(path, tmp_path / "campaign_page.png")
    check.assert_readable(min_charts=2)
    assert {c["id"] for c in check.charts} == {"chart-actual-vs-expected", "chart-expected-profit"}


def test_campaign_evaluation_page_in_chromium(browser, tmp_path: Path) -> None:
    """``patron campaign evaluate --html``'s page: formatted tables with word headers, two
    interactive charts, nothing written beside it."""
    import pandas as pd

    from experiments.campaigns import evaluate_campaigns, write_report
    from tests.experiments.test_campaigns import contacts

    a = contacts(
        "CMP_A_WITH_A_LONG_NAME",
        "RET_01",
        "2024-03-01",
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 0, 0, 0],
        reasons=[None, None, None, "price", "price", "no need", "", None],
    )
    b = contacts("CMP_B", "XS_01", "2024-04-01", [1] * 30 + [0] * 70, [1] * 20 + [0] * 80)
    offers = pd.DataFrame(
        {"offer_id": ["RET_01", "XS_01"], "value": [50.0, 10000.0], "cost": [2.0, 0.5]}
    )
    report = evaluate_campaigns(pd.concat([a, b]), offers=offers)
    folder = tmp_path / "out"
    folder.mkdir()
    path = write_report(report, folder / "campaigns.html", "Campaign evaluation: toy")
    assert sorted(p.name for p in folder.iterdir()) == ["campaigns.html"]  # no stray file
    text = path.read_text()
    assert "<img" not in text and "Newcombe" in text
    assert "<th>Response, contacted</th>" not in text  # headers carry their class
    assert ">Response, contacted</th>" in text and "response_rate_treatment" not in text
    assert "30.0 %" in text and "+10.00 pp" in text and "+100,000" in text  # formatted
    check = browser.check(path, tmp_path / "campaign_evaluation_page.png")
    check.assert_readable(min_charts=2)
    assert {c["id"] for c in check.charts} == {"chart-uplift", "chart-declines"}


def test_segment_page_in_chromium(browser, tmp_path: Path) -> None:
    from features.segments import lifecycle_flow, pareto_curve, segment_summary
    from features.segments_report import REPORT_CHARTS, render_segments_report
    from tests.features.test_segments_report import CFG, LAST, _transactions, segments_of

    seg = segments_of(_transactions(), LAST)  # with demographic and needs segments
    out = render_segments_report(  # one cutoff: the flow is the diagonal, enough to draw
        seg,
        segment_summary(seg, CFG),
        lifecycle_flow(seg, seg),
        pareto_curve(seg),
        tmp_path / "segments.html",
    )
    check = browser.check(out, tmp_path / "segments_page.png")
    # interactive charts: one sizes chart per scheme, then the Pareto, RFM, flow, demographic
    # and needs charts
    check.assert_readable(min_charts=len(REPORT_CHARTS))
    assert not check.images
    ids = [c["id"] for c in check.charts]
    assert all(any(i.startswith(prefix) for i in ids) for prefix in REPORT_CHARTS)


def test_value_page_in_chromium(browser, tmp_path: Path) -> None:
    """The value page of test_value.py's toy data (the KPI page has its own Chromium test)."""
    import duckdb

    from experiments.value import ValueJob, compute_value
    from experiments.value_page import render_value_page
    from tests.experiments import test_value

    con = duckdb.connect()
    try:
        con.register("tx", test_value._transactions())
        job = ValueJob.model_validate(test_value.JOB)
        value = compute_value(con, "tx", None, "toy", test_value.LAST, job)
    finally:
        con.close()
    path = tmp_path / "value.html"
    path.write_text(render_value_page(value))
    check = browser.check(path, tmp_path / "value_page.png")
    check.assert_readable(min_charts=3)
