"""Demographic and needs segments: planted structure recovered with k chosen by the criterion,
point in time (purchases after the cutoff; attributes as of the cutoff), skipped with a reason
when the data lack categories or attributes, a missing configured attribute is one line."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from features.segments import (
    DemographicConfig,
    NeedsConfig,
    SegmentsConfig,
    category_shares,
    category_spend,
    demographic_segments,
    distinct_silhouette,
    needs_segments,
    segment_summary,
)
from features.segments_report import (
    customers_at,
    load_segments_config,
    render_segments_report,
    run_segments,
)
from features.store import StateDirs
from tests.features.test_segments_report import CFG, LAST, _customers, _transactions, segments_of

CATS = ("garden", "home", "toys", "books", "food")
#: Three planted need profiles over CATS (Dirichlet means).
PROFILES = np.array(
    [[0.45, 0.45, 0.03, 0.04, 0.03], [0.05, 0.05, 0.80, 0.05, 0.05], [0.05, 0.05, 0.05, 0.45, 0.40]]
)


def _planted_spend(n: int = 600, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 3
    rows = []
    for c in range(n):
        share = rng.dirichlet(PROFILES[truth[c]] * 20)
        rows += [(f"c{c:04d}", cat, 100 * s) for cat, s in zip(CATS, share, strict=True) if s > 0]
    return pd.DataFrame(rows, columns=["customer_id", "category", "amount"]), truth


def test_needs_recover_three_planted_profiles_and_name_them() -> None:
    spend, truth = _planted_spend()
    shares = category_shares(spend)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    result = needs_segments(shares, NeedsConfig(k_max=6, sample_size=600))
    assert result.k == 3 and max(result.silhouette, key=result.silhouette.__getitem__) == 3
    assert adjusted_rand_score(truth, result.labels) > 0.95
    means = shares.groupby(result.labels).mean()
    from features.segments import needs_name

    assert {needs_name(means.loc[s]) for s in means.index} == {
        "garden + home",
        "toys",
        "books + food",
    }


def test_demographics_recover_three_planted_groups() -> None:
    rng = np.random.default_rng(2)
    n = 600
    truth = np.arange(n) % 3
    ages, regions = ("18-24", "25-34", "35-44", "45-54", "65+"), ("north", "south", "east", "west")
    planted = (("18-24", "north", 25.0), ("65+", "south", 70.0), ("35-44", "east", 45.0))
    attrs = pd.DataFrame(
        {
            "age_band": [
                planted[g][0] if rng.random() < 0.95 else str(rng.choice(ages)) for g in truth
            ],
            "region": [
                planted[g][1] if rng.random() < 0.95 else str(rng.choice(regions)) for g in truth
            ],
            "income": [planted[g][2] + rng.normal(0, 5) for g in truth],
        }
    )
    result, _ = demographic_segments(attrs, DemographicConfig(k_max=6, sample_size=600))
    assert result.k == 3
    assert adjusted_rand_score(truth, result.labels) > 0.9


def test_distinct_silhouette_is_the_silhouette_without_duplicates_and_resists_them() -> None:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.3, (60, 2)) for c in (0, 3, 6)])
    labels = KMeans(3, n_init=2, random_state=0).fit(X).labels_
    assert distinct_silhouette(X, labels) == pytest.approx(silhouette_score(X, labels))
    # two attributes, 3 planted profiles (85 %) and 16 in all: the ordinary silhouette climbs
    # towards 1 as clusters shrink to single profiles; the distinct one peaks at the planted k
    people = _customers(900)
    result, frame = demographic_segments(people[["age_band", "region"]], DemographicConfig())
    assert result.k == 3
    ordinary = {
        k: silhouette_score(Z, KMeans(k, n_init=2, random_state=0).fit(Z).labels_)
        for Z in [result.pipeline[:-1].transform(frame)]  # type: ignore[index]
        for k in (3, 8)
    }
    assert ordinary[8] > ordinary[3]


def test_toy_data_recover_planted_needs_and_people() -> None:
    seg = segments_of(_transactions(), LAST)
    truth = seg["customer_id"].str[1:].astype(int) % 3
    assert adjusted_rand_score(truth, seg["needs_segment"]) > 0.9
    modal = {tuple(p["modal"].values()) for p in seg.attrs["demographics"]["profile"]}
    assert modal == {("18-24", "north"), ("65+", "south"), ("35-44", "east")}
    profile = seg.attrs["needs"]["profile"]
    assert sum(p["customers"] for p in profile) == len(seg)
    assert sum(p["revenue_share"] for p in profile) == pytest.approx(1.0)
    summary = segment_summary(seg, CFG)
    needs = summary[summary["scheme"] == "needs_segment"]
    assert needs["segment"].str.contains(": ").all() and needs["customers"].sum() == len(seg)


def test_a_purchase_after_the_cutoff_changes_no_needs_share() -> None:
    tx = _transactions()
    cutoff = LAST - timedelta(days=120)
    late = tx.iloc[:40].copy()
    late["ts"] = pd.Timestamp(cutoff + timedelta(days=1)) + pd.Timedelta(hours=1)
    late["category"], late["order_id"] = "jewellery", late["order_id"] + "-late"
    on_day = tx.iloc[:1].copy()  # a row on the cutoff day itself is seen
    on_day["ts"] = pd.Timestamp(cutoff) + pd.Timedelta(hours=23)
    on_day["category"], on_day["order_id"] = "tea", "o-on-day"
    before = pd.concat([tx, on_day], ignore_index=True)
    after = pd.concat([before, late], ignore_index=True)
    spend = [category_spend(frame, cutoff) for frame in (before, after)]
    pd.testing.assert_frame_equal(spend[0], spend[1])
    assert "tea" in set(spend[0]["category"]) and "jewellery" not in set(spend[1]["category"])
    seg = [segments_of(frame, cutoff) for frame in (before, after)]
    cols = ["customer_id", "needs_segment", "needs_segment_name"]
    pd.testing.assert_frame_equal(seg[0][cols], seg[1][cols])
    assert seg[0].attrs["needs"] == seg[1].attrs["needs"]


def test_attributes_are_read_as_of_the_cutoff(state: StateDirs) -> None:
    folder = state.data("hist")
    folder.mkdir(parents=True)
    ts = pd.Timestamp
    history = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c3"],
            "region": ["north", "south", "east", "west"],
            "valid_from": [ts("2020-01-01"), ts("2024-07-01"), ts("2020-01-01"), ts("2024-08-01")],
            "valid_to": [ts("2024-07-01"), None, None, None],
        }
    )
    history.to_parquet(folder / "customers.parquet", index=False)
    con = duckdb.connect()
    try:
        frame, how = customers_at(con, state, "hist", date(2024, 6, 30))
        later, _ = customers_at(con, state, "hist", date(2024, 12, 31))
    finally:
        con.close()
    assert how == "valid_from/valid_to"
    assert dict(zip(frame["customer_id"], frame["region"], strict=True)) == {
        "c1": "north",
        "c2": "east",
    }  # c1 moves south after the cutoff; c3 appears after it
    assert dict(zip(later["customer_id"], later["region"], strict=True))["c1"] == "south"


def test_a_configured_attribute_that_does_not_exist_is_one_line() -> None:
    cfg = SegmentsConfig.model_validate(
        {**CFG.model_dump(), "demographics": {"attributes": ["age"]}}
    )
    with pytest.raises(ValueError) as info:
        segments_of(_transactions(n_customers=30), LAST, cfg)
    message = str(info.value)
    assert message == (
        "segments.demographics.attributes: 'age' is not a customers column; "
        "available: age_band, region"
    )
    assert "\n" not in message


def test_without_categories_or_attributes_both_schemes_are_skipped_with_a_reason(
    state: StateDirs, tmp_path: Path
) -> None:
    folder = state.data("bare")
    folder.mkdir(parents=True)
    _transactions(n_customers=40, categories=False).to_parquet(folder / "transactions.parquet")
    out = run_segments(state, "bare", None, CFG, None)
    meta = json.loads(out["meta"].read_text())
    assert meta["needs"]["skipped"] == "no transaction line up to the cutoff has a category"
    assert meta["demographics"]["skipped"] == "no customers table"
    assert out["needs_k"] is None and out["demographics_k"] is None
    seg = pd.read_parquet(out["segments"])
    assert seg["needs_segment"].isna().all() and seg["demographic_segment"].isna().all()
    summary = pd.read_csv(out["summary"])
    assert not summary["scheme"].isin(["needs_segment", "demographic_segment"]).any()
    # a customers table without any default attribute: skipped, and how to configure one
    pd.DataFrame({"customer_id": ["c000"], "country": ["FR"]}).to_parquet(
        folder / "customers.parquet"
    )
    meta = json.loads(run_segments(state, "bare", None, CFG, None)["meta"].read_text())
    assert meta["demographics"]["skipped"] == (
        "the customers table has none of the default attributes (age_band, region); "
        "set segments.demographics.attributes (available: country)"
    )
    seg = segments_of(_transactions(n_customers=40, categories=False), LAST)
    seg.attrs["demographics"] = {"skipped": "no customers table"}
    from features.segments import lifecycle_flow, pareto_curve

    page = render_segments_report(
        seg, segment_summary(seg, CFG), lifecycle_flow(seg, seg), pareto_curve(seg), tmp_path / "p"
    ).read_text()
    assert "Skipped: no customers table." in page
    assert "Skipped: no transaction line up to the cutoff has a category." in page


def test_segments_config_file_rejects_unknown_keys(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "segments:\n  demographics:\n    attributes: [region]\n  needs:\n    k_max: 5\n"
    )
    cfg = load_segments_config(good)
    assert cfg.demographics.attributes == ("region",) and cfg.needs.k_max == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments:\n  needs:\n    colour: red\n")
    with pytest.raises(ValueError, match=r"segments\.needs\.colour: Extra inputs"):
        load_segments_config(bad)
    with pytest.raises(ValueError, match="k_min must not exceed k_max"):
        NeedsConfig(k_min=5, k_max=3)
