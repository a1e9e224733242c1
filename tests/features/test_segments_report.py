"""The segment report: one self-contained HTML page; the CLI functions write atomically."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.segments import (
    ClusterConfig,
    SegmentsConfig,
    category_spend,
    lifecycle_flow,
    pareto_curve,
    segment_customers,
    segment_summary,
)
from features.segments_report import (
    REPORT_CHARTS,
    REPORT_IMAGES,
    REPORT_SECTIONS,
    render_segments_report,
    run_segments,
    run_segments_report,
    segments_chart,
)
from features.store import StateDirs

LAST = date(2024, 12, 31)
CFG = SegmentsConfig(clusters=ClusterConfig(k_max=4, sample_size=200))


#: Planted needs: customer c buys mostly the categories of profile c % 3.
NEEDS = (("garden", "home"), ("toys",), ("books", "food"))
CATEGORIES = ("garden", "home", "toys", "books", "food")
#: Planted demographics: customer c is mostly (age band, region) c % 3.
PEOPLE = (("18-24", "north"), ("65+", "south"), ("35-44", "east"))


def _category(rng: np.random.Generator, c: int) -> str:
    planted = NEEDS[c % 3]
    return str(rng.choice(planted if rng.random() < 0.9 else CATEGORIES))


def _customers(n_customers: int = 150, seed: int = 0) -> pd.DataFrame:
    """Customer attributes with planted groups (85 % of each attribute follows the group)."""
    rng = np.random.default_rng(seed)
    ages, regions = ("18-24", "25-34", "35-44", "65+"), ("north", "south", "east", "west")
    rows = [
        (
            f"c{c:03d}",
            PEOPLE[c % 3][0] if rng.random() < 0.85 else str(rng.choice(ages)),
            PEOPLE[c % 3][1] if rng.random() < 0.85 else str(rng.choice(regions)),
        )
        for c in range(n_customers)
    ]
    return pd.DataFrame(rows, columns=["customer_id", "age_band", "region"])


def _transactions(seed: int = 0, n_customers: int = 150, categories: bool = True) -> pd.DataFrame:
    """Order lines over two years: customers of different frequency, spend and start date (and,
    with ``categories``, planted category needs, drawn from a separate generator)."""
    rng = np.random.default_rng(seed)
    cat_rng = np.random.default_rng(seed + 1)
    rows = []
    for c in range(n_customers):
        start = int(rng.integers(0, 730))
        rate = float(rng.choice([0.005, 0.02, 0.08]))
        days = sorted({start, *rng.integers(start, 731, int(rng.poisson(rate * (730 - start))))})
        for i, d in enumerate(days):
            ts = pd.Timestamp(LAST - timedelta(days=730 - int(d))) + pd.Timedelta(hours=10)
            amount = round(float(rng.lognormal(3.5, 1.0)), 2)
            category = _category(cat_rng, c) if categories else None
            rows.append((f"c{c:03d}", ts, f"o{c}-{i}", "p1", category, 1.0, amount, False))
            if rng.random() < 0.05:
                rows.append(
                    (
                        f"c{c:03d}",
                        ts + pd.Timedelta(days=3),
                        f"o{c}-{i}R",
                        "p1",
                        category,
                        -1.0,
                        -amount,
                        True,
                    )
                )
    frame = pd.DataFrame(
        rows,
        columns=[
            "customer_id",
            "ts",
            "order_id",
            "product_id",
            "category",
            "quantity",
            "amount",
            "is_return",
        ],
    )
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    return frame[frame["ts"].dt.date <= LAST]


@pytest.fixture
def ingested(state: StateDirs) -> StateDirs:
    """A state folder holding a small dataset's accepted transactions, as ingestion writes them."""
    path = state.data("toy") / "transactions.parquet"
    path.parent.mkdir(parents=True)
    _transactions().to_parquet(path, index=False)
    _customers().to_parquet(path.parent / "customers.parquet", index=False)
    return state


def segments_of(tx: pd.DataFrame, as_of: date, cfg: SegmentsConfig = CFG) -> pd.DataFrame:
    """Every scheme of the toy data at ``as_of``, with the customers and category spend."""
    import duckdb

    from features.build import compute_features
    from features.definitions import feature_set

    con = duckdb.connect()
    try:
        con.register("tx", tx)
        feats = compute_features(con, "tx", as_of, feature_set("churn_v1"))
        spend = category_spend("tx", as_of, con)
        return segment_customers(
            feats, "tx", con, cfg, as_of=as_of, customers=_customers(), category_spend=spend
        )
    finally:
        con.close()


def _check_report(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    images = re.findall(r"<img [^>]*>", text)
    assert len(images) == REPORT_IMAGES
    assert all('src="data:image/png;base64,' in img for img in images)
    # no external assets: no tag loads one (plotly.js inline carries URL strings in its source)
    outside_scripts = re.sub(r"<script\b[^>]*>.*?</script>", "<script></script>", text, flags=re.S)
    assert not re.search(r'(src|href)="(https?:)?//', outside_scripts)
    assert not re.search(r"<script[^>]+src=", text)
    for chart in REPORT_CHARTS:
        assert f'id="{chart}' in text
    for heading in REPORT_SECTIONS:
        assert f"<h2>{heading}</h2>" in text
    for table_heading in (
        "Pareto ABC",
        "Customer pyramid",
        "Lifecycle stage",
        "RFM named segment",
        "<th>% revenue</th>",
        "<th>silhouette</th>",
    ):
        assert table_heading in text
    return text


def test_render_report_from_frames(tmp_path: Path) -> None:
    tx = _transactions()
    as_of, before = LAST, LAST - timedelta(days=90)
    seg, seg0 = segments_of(tx, as_of), segments_of(tx, before)
    summary = segment_summary(seg, CFG)
    flow = lifecycle_flow(seg0, seg)
    out = render_segments_report(
        seg, summary, flow, pareto_curve(seg), tmp_path / "r" / "s.html", title="Toy <segments>"
    )
    assert out == tmp_path / "r" / "s.html" and out.is_file()
    text = _check_report(out)
    assert "Toy &lt;segments&gt;" in text  # escaped
    assert f"{len(seg):,}" in text
    # the planted needs and people are found and named
    needs = {p["name"] for p in seg.attrs["needs"]["profile"]}
    assert needs == {"garden + home", "toys", "books + food"}
    assert seg.attrs["demographics"]["k"] == 3
    for name in needs:
        assert f": {name}</td>" in text  # the profile table, in a scroll box
    assert [p.name for p in out.parent.iterdir()] == ["s.html"]  # no temporary file left


def test_segments_chart_is_a_png(tmp_path: Path) -> None:
    seg = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "revenue": [3.0, 1.0],
            "rfm_segment": ["Champions", "Lost"],
            "abc_class": ["A", "B"],
        }
    )
    path = segments_chart(segment_summary(seg), tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_segments_writes_outputs_under_the_state_folder(ingested: StateDirs) -> None:
    out = run_segments(ingested, "toy", None, CFG, None)
    folder = ingested.home / "segments" / "toy" / f"as_of={LAST.isoformat()}"
    assert out["as_of"] == LAST
    assert {out[k] for k in ("segments", "summary", "chart", "meta")} == {
        folder / "segments.parquet",
        folder / "segment_summary.csv",
        folder / "segments_chart.png",
        folder / "segments_meta.json",
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["segments.parquet", "segment_summary.csv", "segments_chart.png", "segments_meta.json"]
    )
    seg = pd.read_parquet(out["segments"])
    assert len(seg) == out["customers"] == _transactions()["customer_id"].nunique()
    meta = json.loads(out["meta"].read_text())
    assert meta["clusters"]["k"] == out["clusters_k"] and meta["config"]["revenue"] == "net"
    for scheme in ("demographics", "needs"):  # the criterion and the score of every k tried
        assert meta[scheme]["k"] == out[f"{scheme}_k"] == 3
        assert "silhouette" in meta[scheme]["criterion"]
        assert set(meta[scheme]["silhouette"]) == {"2", "3", "4", "5", "6", "7", "8"}
    assert meta["demographics"]["customers_history"] == "none"
    assert seg["needs_segment"].notna().all() and seg["demographic_segment"].notna().all()
    summary = pd.read_csv(out["summary"])
    assert summary.groupby("scheme")["customers"].sum().eq(len(seg)).all()


def test_run_segments_report_flow_from_previous_cutoff(ingested: StateDirs, tmp_path: Path) -> None:
    path = run_segments_report(ingested, "toy", None, None, CFG, None)
    assert path == (
        ingested.home / "segments" / "toy" / f"as_of={LAST.isoformat()}" / "segments_report.html"
    )
    text = _check_report(path)
    assert (LAST - timedelta(days=90)).isoformat() in text
    # a previous cutoff before the first order: everyone is "not yet a customer"
    early = run_segments_report(ingested, "toy", LAST, date(2000, 1, 1), CFG, tmp_path / "e.html")
    _check_report(early)
    with pytest.raises(ValueError, match="before as_of"):
        run_segments_report(ingested, "toy", LAST, LAST, CFG, tmp_path / "x.html")
