"""The drift page of a monitoring pass, from a hand-built report (no model, no MLflow): PSI per
feature with its bands, score stability, the distributions per feature in the PSI's own bins.
(The page of a real pass is read in headless Chromium in test_monitor.py.)"""

from __future__ import annotations

import re
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.monitor import (
    MonitorReport,
    PSIThresholds,
    _breaches,
    bin_shares,
    decile_stability,
    feature_distributions,
    feature_psi,
    psi,
    score_quantiles,
    score_shift,
)
from experiments.monitor_page import write_monitor_page

N = 2_000


def _snapshot(rng: np.random.Generator, shifted: bool) -> pd.DataFrame:
    days = rng.exponential(60, N).round()
    spend = rng.lognormal(5, 1, N)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(N)],
            "days_since_last_order": days + (60 if shifted else 0),
            "spend_sum_365d": spend * (1.5 if shifted else 1.0),
            "orders_count_365d": rng.poisson(4, N).astype(float),
            "returns_share_365d": np.where(rng.random(N) < 0.2, np.nan, rng.random(N)),
            "region": rng.choice(["north", "south", "east", "west"], N),
            "has_app": np.zeros(N),
        }
    )
    return frame


@pytest.fixture(scope="module")
def report() -> MonitorReport:
    rng = np.random.default_rng(3)
    ref, cur = _snapshot(rng, False), _snapshot(rng, True)
    names = [c for c in ref.columns if c != "customer_id"]

    def score(frame: pd.DataFrame) -> pd.Series:
        z = 0.02 * frame["days_since_last_order"] - 0.002 * frame["spend_sum_365d"] - 1.5
        return pd.Series(1 / (1 + np.exp(-z.to_numpy())), index=frame["customer_id"])

    ref_s, cur_s = score(ref), score(cur)
    th = PSIThresholds()
    features = feature_psi(ref, cur, names, th)
    shift = score_shift(ref_s.to_numpy(), cur_s.to_numpy(), th)
    out = MonitorReport(
        registered_model="churn-synthetic",
        model_version="3",
        model_run_id="0123456789abcdef",
        dataset="synthetic",
        feature_set="churn_v1+context_v1",
        reference_as_of=date(2024, 6, 30),
        current_as_of=date(2024, 9, 30),
        thresholds=th,
        features=features,
        score=shift,
        stability=decile_stability(ref_s, cur_s),
        distributions=feature_distributions(ref, cur, names),
        score_bins=bin_shares(ref_s.to_numpy(), cur_s.to_numpy()),
        score_quantiles=score_quantiles(ref_s.to_numpy(), cur_s.to_numpy()),
    )
    out.breached = _breaches(features, shift)
    return out


class _Text(HTMLParser):
    """The visible text (scripts and styles left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def test_bins_add_up_to_the_psi(report) -> None:
    for name, bins in report.distributions.items():
        row = report.features.set_index("feature").loc[name]
        assert bins["psi_part"].sum() == pytest.approx(row["psi"], abs=1e-12), name
        assert bins["reference_share"].sum() == pytest.approx(1.0)
        assert bins["current_share"].sum() == pytest.approx(1.0)
    assert list(report.distributions["returns_share_365d"]["bin"])[-1] == "missing"
    assert list(report.distributions["has_app"]["bin"]) == ["< 0", "= 0", "> 0"]
    assert set(report.distributions["region"]["bin"]) == {"east", "north", "south", "west"}
    assert report.score_bins["psi_part"].sum() == pytest.approx(report.score.psi, abs=1e-12)
    assert psi([1, 2, 3], [1, 2, 3]) == 0.0


def test_page_says_the_bands_and_formats_numbers(report, tmp_path: Path) -> None:
    flags = report.features.set_index("feature")["flag"]
    assert flags["days_since_last_order"] == "significant"
    assert flags["spend_sum_365d"] in ("moderate", "significant")
    assert flags["region"] == "stable"
    page = write_monitor_page(report, tmp_path / "out" / "drift.html").read_text()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["drift.html"]  # no stray files
    parser = _Text()
    parser.feed(page)
    text = " ".join(parser.parts)
    assert "stable" in text and "moderate" in text and "significant" in text
    assert "stable < 0.10 ≤ moderate ≤ 0.25 < significant" in text  # the bands, labelled
    assert "2,000" in text  # customers with a thousands separator
    assert re.search(r"\d+\.\d %", text)  # shares as percentages
    assert "Kolmogorov–Smirnov" in text and "changed score decile" in text
    for name in report.features["feature"]:
        assert f'id="chart-dist-{name}"' in page
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1
    assert 'src="http' not in page and "<link" not in page
