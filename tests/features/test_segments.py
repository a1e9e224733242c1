"""Segments: hand-checked frames for every scheme, lifecycle from transactions, clusters, flow;
Pareto ABC on Online Retail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.build import compute_features
from features.definitions import feature_set
from features.segments import (
    ABC_CLASSES,
    JOURNEY_STAGES,
    LIFECYCLE_STAGES,
    NO_LONGER,
    NOT_YET,
    RFM_SEGMENT_GRID,
    RFM_SEGMENTS,
    SEGMENT_COLUMNS,
    ClusterConfig,
    DemographicConfig,
    LifecycleConfig,
    NeedsConfig,
    SegmentsConfig,
    abc_classes,
    cluster_customers,
    customer_pyramid,
    customer_revenue,
    lifecycle_flow,
    lifecycle_stages,
    order_gaps,
    pareto_curve,
    quintile_scores,
    rfm_bands,
    rfm_quintiles,
    segment_customers,
    segment_summary,
)
from features.store import StateDirs
from tests.conftest import require_dataset

AS_OF = date(2024, 6, 30)
TX_COLUMNS = [
    "customer_id",
    "ts",
    "order_id",
    "product_id",
    "category",
    "quantity",
    "amount",
    "is_return",
]


def _tx(rows: list[tuple[str, int, float]], as_of: date = AS_OF) -> pd.DataFrame:
    """Transactions from (customer, days before as_of, amount); negative amount = a return line."""
    out = []
    for i, (cid, days_ago, amount) in enumerate(rows):
        ts = pd.Timestamp(as_of - timedelta(days=days_ago)) + pd.Timedelta(hours=12)
        out.append(
            (cid, ts, f"o{i}", "p1", "cat", 1.0 if amount >= 0 else -1.0, amount, amount < 0)
        )
    frame = pd.DataFrame(out, columns=TX_COLUMNS)
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    return frame


def _features(tx: pd.DataFrame, as_of: date = AS_OF) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        con.register("tx", tx)
        return compute_features(con, "tx", as_of, feature_set("churn_v1"))
    finally:
        con.close()


def _ids(n: int) -> pd.Series:
    return pd.Series([f"c{i:04d}" for i in range(n)])


# --------------------------------------------------------------------------- Pareto ABC, pyramid


def test_abc_boundary_customer_crossing_80_percent_is_a() -> None:
    revenue = pd.Series([60.0, 30.0, 10.0])
    assert list(abc_classes(revenue, pd.Series(["a", "b", "c"]))) == ["A", "A", "B"]


def test_abc_exact_boundary_zero_and_negative_revenue() -> None:
    # 50 + 30 reach exactly 80 %: c starts at 80 % (B); d starts at 95 % (C); 0 and < 0 are C
    revenue = pd.Series([50.0, 30.0, 15.0, 4.0, 1.0, 0.0, -5.0])
    ids = pd.Series(list("abcdefg"))
    assert list(abc_classes(revenue, ids)) == ["A", "A", "B", "C", "C", "C", "C"]
    assert list(abc_classes(pd.Series([0.0, -1.0]), pd.Series(["a", "b"]))) == ["C", "C"]


def test_abc_ties_broken_by_customer_id_whatever_the_row_order() -> None:
    # d = 70 %; a, b, c tie at 10 %: a (by id) crosses 80 % -> A, b and c start at 80 / 90 % -> B
    frame = pd.DataFrame({"customer_id": ["d", "c", "b", "a"], "revenue": [70.0, 10.0, 10.0, 10.0]})
    expected = {"d": "A", "a": "A", "b": "B", "c": "B"}
    for seed in range(3):
        shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        got = abc_classes(shuffled["revenue"], shuffled["customer_id"])
        assert dict(zip(shuffled["customer_id"], got, strict=True)) == expected


def test_abc_a_holds_at_least_80_percent_and_less_than_80_plus_the_boundary_customer() -> None:
    rng = np.random.default_rng(3)
    revenue = pd.Series(rng.lognormal(5.0, 1.5, 1000))
    cls = abc_classes(revenue, _ids(1000))
    a = revenue[cls == "A"]
    share_a = a.sum() / revenue.sum()
    assert 0.80 <= share_a < 0.80 + a.min() / revenue.sum()
    assert revenue[cls == "A"].min() >= revenue[cls == "B"].max()
    assert revenue[cls == "B"].min() >= revenue[cls == "C"].max()
    share_ab = revenue[cls != "C"].sum() / revenue.sum()
    assert 0.95 <= share_ab < 0.95 + revenue[cls == "B"].min() / revenue.sum()


def test_customer_pyramid_shares() -> None:
    revenue = pd.Series(np.arange(200, 0, -1, dtype=float))  # distinct, first is the largest
    levels = customer_pyramid(revenue, _ids(200))
    assert levels.value_counts().to_dict() == {"top": 2, "big": 8, "medium": 30, "small": 160}
    assert list(levels[:2]) == ["top", "top"] and levels[2] == "big" and levels[199] == "small"


def test_customer_pyramid_small_population_and_non_positive_revenue() -> None:
    levels = customer_pyramid(pd.Series([5.0, 0.0, 9.0, -1.0]), pd.Series(list("abcd")))
    # rank 0 (c) is top; rank 1 (a) starts at 25 % of customers -> small; 0 / negative -> small
    assert list(levels) == ["small", "small", "top", "small"]


def test_pareto_curve_is_monotone_from_0_to_1() -> None:
    seg = pd.DataFrame({"customer_id": list("abcd"), "revenue": [10.0, 60.0, -5.0, 30.0]})
    curve = pareto_curve(seg)
    assert curve.iloc[0].tolist() == [0.0, 0.0] and curve.iloc[-1].tolist() == [1.0, 1.0]
    assert curve["revenue_share"].tolist() == [0.0, 0.6, 0.9, 1.0, 1.0]
    assert curve["revenue_share"].is_monotonic_increasing


def test_net_revenue_subtracts_returns() -> None:
    feats = pd.DataFrame({"spend_sum_total": [100.0, 50.0], "returns_share": [0.25, 1.5]})
    assert customer_revenue(feats).tolist() == [75.0, -25.0]
    assert customer_revenue(feats, "gross").tolist() == [100.0, 50.0]
    with pytest.raises(KeyError, match="returns_share"):
        customer_revenue(feats[["spend_sum_total"]])


# --------------------------------------------------------------------------- RFM


def test_rfm_point_bands_are_half_open() -> None:
    points = pd.Series([0.0, 19.9, 20.0, 39.99, 40.0, 60.0, np.nan])
    got = rfm_bands(points, (20.0, 40.0), ("low", "medium", "high"))
    assert got.tolist() == ["low", "low", "medium", "medium", "high", "high", "low"]


def test_quintile_scores_exact_without_ties_shared_with_ties() -> None:
    assert quintile_scores(pd.Series(range(10))).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert quintile_scores(pd.Series(range(10)), higher_is_better=False).tolist() == [
        5,
        5,
        4,
        4,
        3,
        3,
        2,
        2,
        1,
        1,
    ]
    # six tied values (mid-rank 3.5 of 10) share one score; row order cannot matter
    values = pd.Series([1, 1, 1, 1, 1, 1, 2, 3, 4, 5])
    scores = quintile_scores(values)
    assert scores[:6].nunique() == 1 and scores[0] == 2
    assert scores[6:].tolist() == [4, 4, 5, 5]
    perm = np.random.default_rng(0).permutation(10)
    assert quintile_scores(values.iloc[perm]).tolist() == scores.iloc[perm].tolist()


def test_rfm_quintile_codes_of_extreme_customers() -> None:
    n = 50
    rng = np.random.default_rng(1)
    feats = pd.DataFrame(
        {
            "days_since_last_order": rng.integers(5, 300, n),
            "orders_count_total": rng.integers(2, 20, n),
            "spend_sum_total": rng.uniform(10, 900, n),
        }
    )
    feats.loc[0] = [0, 100, 10_000.0]  # the most recent, most frequent, biggest spender
    feats.loc[1] = [900, 1, 1.0]  # the opposite
    q = rfm_quintiles(feats)
    assert q.loc[0, "rfm_code"] == "555" and q.loc[0, "rfm_segment"] == "Champions"
    assert q.loc[1, "rfm_code"] == "111" and q.loc[1, "rfm_segment"] == "Lost"
    # distinct spends: exact quintiles of 10 customers each
    assert q["m_score"].value_counts().to_dict() == {s: 10 for s in range(1, 6)}


@pytest.mark.parametrize(
    ("r", "f", "name"),
    [
        (5, 5, "Champions"),
        (5, 4, "Champions"),
        (4, 5, "Loyal"),
        (3, 4, "Loyal"),
        (5, 2, "Potential loyalist"),
        (4, 3, "Potential loyalist"),
        (5, 1, "New"),
        (4, 1, "Promising"),
        (3, 3, "Need attention"),
        (3, 1, "About to sleep"),
        (3, 2, "About to sleep"),
        (2, 3, "At risk"),
        (1, 4, "At risk"),
        (1, 5, "Can't lose them"),
        (2, 5, "Can't lose them"),
        (2, 2, "Hibernating"),
        (1, 2, "Hibernating"),
        (2, 1, "Hibernating"),
        (1, 1, "Lost"),
    ],
)
def test_named_segment_grid(r: int, f: int, name: str) -> None:
    assert RFM_SEGMENT_GRID[(r, f)] == name


def test_named_segment_grid_covers_every_cell_with_the_eleven_names() -> None:
    assert set(RFM_SEGMENT_GRID) == {(r, f) for r in range(1, 6) for f in range(1, 6)}
    assert set(RFM_SEGMENT_GRID.values()) == set(RFM_SEGMENTS) and len(RFM_SEGMENTS) == 11


# --------------------------------------------------------------------------- lifecycle

# customer -> (days before AS_OF of its order lines, amount 10 each unless negative), expected stage
LIFECYCLE_CASES: dict[str, tuple[list[tuple[int, float]], str, bool]] = {
    "new": ([(10, 10.0)], "new", False),
    "new_busy": ([(30, 10.0), (20, 10.0), (10, 10.0), (5, 10.0), (1, 10.0)], "new", False),
    "active": ([(200, 10.0), (30, 10.0)], "active", False),
    "loyal": ([(300, 10.0), (200, 10.0), (100, 10.0), (10, 10.0)], "loyal", False),
    "won_back": ([(400, 10.0), (20, 10.0)], "won back", False),
    "won_back_edge": ([(270, 10.0), (89, 10.0)], "won back", False),  # gap 181, 89 days ago
    "gap_180": ([(269, 10.0), (89, 10.0)], "active", False),  # gap 180 is not > 180
    "won_back_long_ago": ([(500, 10.0), (100, 10.0), (50, 10.0)], "active", False),
    "lapsing": ([(300, 10.0), (120, 10.0)], "lapsing", False),
    "lapsing_180": ([(400, 10.0), (180, 10.0)], "lapsing", False),
    "lapsed_181": ([(400, 10.0), (181, 10.0), (3, -10.0)], "lapsed", True),  # a return: no order
    "lapsed_187": ([(187, 10.0)], "lapsed", True),
    "lapsed_188": ([(188, 10.0)], "lapsed", False),
}


@pytest.fixture(scope="module")
def lifecycle_tx() -> pd.DataFrame:
    rows = [(cid, d, a) for cid, (lines, _, _) in LIFECYCLE_CASES.items() for d, a in lines]
    rows.append(("lapsed_181", -2, 10.0))  # after the cutoff: must change nothing
    return _tx(rows)


def test_order_gaps_hand_checked(lifecycle_tx: pd.DataFrame) -> None:
    extra = _tx([("same_day", 40, 5.0), ("same_day", 40, 5.0), ("same_day", 300, 5.0)])
    gaps = order_gaps(pd.concat([lifecycle_tx, extra]), AS_OF, 180).set_index("customer_id")
    # columns: last_gap_days, longest_gap_days, days_since_won_back
    assert gaps.loc["won_back_long_ago"].tolist() == [50, 400, 100]
    assert gaps.loc["won_back"].tolist() == [380, 380, 20]
    assert gaps.loc["loyal", "last_gap_days"] == 90 and gaps.loc["loyal", "longest_gap_days"] == 100
    assert pd.isna(gaps.loc["loyal", "days_since_won_back"])
    assert gaps.loc["new", ["last_gap_days", "longest_gap_days"]].isna().all()
    # two orders on one day are one order day: the gap before day 40 is 260, not 0
    assert gaps.loc["same_day", "last_gap_days"] == 260
    # the order after the cutoff is not seen
    assert gaps.loc["lapsed_181", "last_gap_days"] == 219


def test_each_lifecycle_stage_and_the_7_day_lapse_flag(lifecycle_tx: pd.DataFrame) -> None:
    feats = _features(lifecycle_tx)
    seg = segment_customers(
        feats, lifecycle_tx, cfg=SegmentsConfig(clusters=ClusterConfig(enabled=False)), as_of=AS_OF
    ).set_index("customer_id")
    got = {
        cid: (seg.loc[cid, "lifecycle_stage"], bool(seg.loc[cid, "lapsed_recently"]))
        for cid in LIFECYCLE_CASES
    }
    assert got == {cid: (stage, flag) for cid, (_, stage, flag) in LIFECYCLE_CASES.items()}
    assert set(seg["lifecycle_stage"]) == set(LIFECYCLE_STAGES)


def test_without_gaps_nobody_is_won_back(lifecycle_tx: pd.DataFrame) -> None:
    stages = lifecycle_stages(_features(lifecycle_tx))
    assert "won back" not in set(stages["lifecycle_stage"])


def test_lifecycle_thresholds_are_configurable(lifecycle_tx: pd.DataFrame) -> None:
    feats = _features(lifecycle_tx).set_index("customer_id")
    strict = lifecycle_stages(
        feats, LifecycleConfig(loyal_min_orders=2, lapsing_days=60, lapsed_days=100, new_days=15)
    )
    assert strict.loc["active", "lifecycle_stage"] == "loyal"  # 2 orders in the last year
    assert strict.loc["lapsing", "lifecycle_stage"] == "lapsed"  # 120 > 100
    assert strict.loc["new_busy", "lifecycle_stage"] == "loyal"  # first order 30 >= 15 days ago
    with pytest.raises(ValueError, match="lapsing_days"):
        LifecycleConfig(lapsing_days=200, lapsed_days=180)


# --------------------------------------------------------------------------- flow


def test_lifecycle_flow_counts_and_sums() -> None:
    t0 = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "x"],
            "lifecycle_stage": ["new", "active", "lapsing", "lapsed"],
        }
    )
    t1 = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "lifecycle_stage": ["active", "active", "lapsed", "new", "new"],
        }
    )
    flow = lifecycle_flow(t0, t1)
    assert list(flow.index) == [NOT_YET, *LIFECYCLE_STAGES]
    assert list(flow.columns) == [*LIFECYCLE_STAGES, NO_LONGER]
    assert int(flow.to_numpy().sum()) == 6  # a, b, c, d, e, x
    assert flow.loc[NOT_YET, "new"] == 2 and flow.loc[NOT_YET].sum() == 2
    assert flow.loc["new", "active"] == 1 and flow.loc["active", "active"] == 1
    assert flow.loc["lapsing", "lapsed"] == 1 and flow.loc["lapsed", NO_LONGER] == 1
    # row sums are the stages at t0 (plus newcomers), column sums the stages at t1
    assert flow.sum(axis=1).drop(NOT_YET).to_dict() == {
        s: int((t0["lifecycle_stage"] == s).sum()) for s in LIFECYCLE_STAGES
    }
    assert flow.sum(axis=0).drop(NO_LONGER).to_dict() == {
        s: int((t1["lifecycle_stage"] == s).sum()) for s in LIFECYCLE_STAGES
    }
    series_flow = lifecycle_flow(t0.set_index("customer_id")["lifecycle_stage"], t1)
    pd.testing.assert_frame_equal(series_flow, flow)


def test_lifecycle_flow_over_two_cutoffs_of_real_transactions(lifecycle_tx: pd.DataFrame) -> None:
    later = AS_OF + timedelta(days=30)
    tx = pd.concat([lifecycle_tx, _tx([("newcomer", 5, 10.0)], later)])
    cfg = SegmentsConfig(clusters=ClusterConfig(enabled=False))
    s0 = segment_customers(_features(tx, AS_OF), tx, cfg=cfg, as_of=AS_OF)
    s1 = segment_customers(_features(tx, later), tx, cfg=cfg, as_of=later)
    flow = lifecycle_flow(s0, s1)
    assert int(flow.to_numpy().sum()) == len(LIFECYCLE_CASES) + 1
    assert flow.loc[NOT_YET, "new"] == 1 and NO_LONGER not in flow.columns
    # lapsed_181 ordered 2 days after AS_OF, ending a 183-day gap: won back at the later cutoff
    assert flow.loc["lapsed", "won back"] == 1 and flow.loc["lapsed", "lapsed"] == 2
    assert flow.loc["lapsing", "lapsed"] == 1  # lapsing_180 is 210 days out at the later cutoff


# --------------------------------------------------------------------------- clusters


def _blobs(seed: int = 0, n: int = 600) -> pd.DataFrame:
    """Three well-separated groups of customers (in log space)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[5.0, 1.0, 3.0], [200.0, 3.0, 60.0], [20.0, 30.0, 3000.0]])
    group = rng.integers(0, 3, n)
    values = centres[group] * np.exp(rng.normal(0.0, 0.15, (n, 3)))
    return pd.DataFrame(
        values, columns=["days_since_last_order", "orders_count_total", "spend_sum_total"]
    ).assign(group=group)


def test_clusters_choose_k_by_silhouette_deterministically() -> None:
    feats = _blobs()
    cfg = ClusterConfig(sample_size=300, seed=7)
    one, two = cluster_customers(feats, cfg), cluster_customers(feats, cfg)
    assert one.k == 3 and max(one.silhouette, key=one.silhouette.get) == 3
    assert sorted(one.silhouette) == list(range(2, 9))
    assert one.features == ["days_since_last_order", "orders_count_total", "spend_sum_total"]
    np.testing.assert_array_equal(one.labels, two.labels)
    assert one.silhouette == two.silhouette
    # the clusters are the groups (up to numbering), numbered by size
    assert pd.crosstab(one.labels, feats["group"]).gt(0).sum(axis=1).eq(1).all()
    sizes = np.bincount(one.labels)
    assert (np.diff(sizes) <= 0).all()


def test_clusters_degenerate_input_gives_one_cluster() -> None:
    feats = pd.DataFrame({"days_since_last_order": [3.0] * 20, "orders_count_total": [1.0] * 20})
    result = cluster_customers(feats)
    assert result.k == 1 and (result.labels == 0).all() and result.silhouette == {}


# --------------------------------------------------------------------------- all together


def test_segment_customers_and_summary(lifecycle_tx: pd.DataFrame) -> None:
    feats = _features(lifecycle_tx)
    seg = segment_customers(
        feats, lifecycle_tx, as_of=AS_OF, cfg=SegmentsConfig(clusters=ClusterConfig(k_max=4))
    )
    assert list(seg.columns) == SEGMENT_COLUMNS and len(seg) == len(feats)
    clusters = seg.attrs["clusters"]  # describes the cluster column: k_min..k_max tried
    assert sorted(clusters["silhouette"]) == ["2", "3", "4"]
    assert clusters["k"] == int(max(clusters["silhouette"], key=clusters["silhouette"].get))
    assert seg["cluster"].nunique() == clusters["k"]
    summary = segment_summary(seg)
    assert set(summary["scheme"]) == {
        "rfm_band",
        "rfm_segment",
        "abc_class",
        "pyramid_level",
        "lifecycle_stage",
        "cluster",
    }
    for _, part in summary.groupby("scheme"):
        assert part["customers"].sum() == len(seg)
        assert part["customer_share"].sum() == pytest.approx(1.0)
        assert part["revenue"].sum() == pytest.approx(seg["revenue"].sum())
        assert part["revenue_share"].sum() == pytest.approx(1.0)
    abc = summary[summary["scheme"] == "abc_class"]
    assert list(abc["segment"]) == list(ABC_CLASSES)
    with pytest.raises(ValueError, match="as_of"):
        segment_customers(feats, lifecycle_tx)


def test_features_after_the_cutoff_change_no_segment(lifecycle_tx: pd.DataFrame) -> None:
    cfg = SegmentsConfig(clusters=ClusterConfig(enabled=False))
    base = segment_customers(_features(lifecycle_tx), lifecycle_tx, cfg=cfg, as_of=AS_OF)
    later = pd.concat([lifecycle_tx, _tx([("lapsed_187", -1, 99.0), ("new", -30, 5.0)])])
    again = segment_customers(_features(later), later, cfg=cfg, as_of=AS_OF)
    pd.testing.assert_frame_equal(base, again)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="one label more"):
        SegmentsConfig(rfm_band_edges=(20.0,), rfm_band_labels=("a", "b", "c"))
    with pytest.raises(ValueError, match="increasing"):
        SegmentsConfig(abc_cumulative_shares=(0.95, 0.8))


# --------------------------------------------------------------------------- Online Retail


@pytest.fixture(scope="module")
def online_retail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StateDirs, dict]]:
    require_dataset("online_retail_ii", "online_retail_i_2010_2011.csv.gz")
    from features.segments_report import run_segments
    from features.sources import ingest, load_dataset

    state = StateDirs.resolve(tmp_path_factory.mktemp("segments_or") / "home")
    ingest(load_dataset("online_retail"), state)
    yield state, run_segments(state, "online_retail", None, SegmentsConfig(), None)


@pytest.mark.realdata
def test_online_retail_pareto_abc(online_retail: tuple[StateDirs, dict]) -> None:
    state, out = online_retail
    assert out["as_of"] == date(2011, 12, 9)
    for key in ("segments", "summary", "chart", "meta"):
        assert Path(out[key]).is_file() and Path(out[key]).parent.name == "as_of=2011-12-09"
    seg = pd.read_parquet(out["segments"])
    assert len(seg) == out["customers"] > 5000
    positive = seg["revenue"].clip(lower=0.0)
    total = positive.sum()
    a = seg[seg["abc_class"] == "A"]
    share_a = a["revenue"].sum() / total
    boundary = a["revenue"].min() / total  # the customer who crosses 80 %
    assert 0.80 <= share_a < 0.80 + boundary
    assert (seg.loc[seg["revenue"] <= 0, "abc_class"] == "C").all()
    shares = seg["abc_class"].value_counts(normalize=True)
    print("Online Retail A/B/C customer shares:", shares.round(3).to_dict())
    # the Pareto shape: A is a minority of customers, C the largest class
    assert shares["A"] < shares["B"] < shares["C"]
    top = seg["pyramid_level"].value_counts()["top"]
    assert top == int(np.ceil(0.01 * len(seg)))
    summary = pd.read_csv(out["summary"])
    assert summary.groupby("scheme")["customers"].sum().eq(len(seg)).all()


# --------------------------------------------------------------------------- journey stages


def test_journey_rows_count_buyers_and_prospects() -> None:
    segments = pd.DataFrame({"customer_id": ["a", "b", "c"], "revenue": [60.0, 30.0, 10.0]})
    journey = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "p1", "p2", "p3", "p4"],
            "journey_stage": ["loyal", "repeat", "repeat", "visitor", "visitor", "registered"]
            + ["visitor"],
        }
    )
    summary = segment_summary(segments, journey=journey)
    rows = summary[summary["scheme"] == "journey_stage"].set_index("segment")
    assert list(rows.index) == list(JOURNEY_STAGES)  # every stage, in journey order
    assert rows["customers"].to_dict() == {
        "visitor": 3,
        "registered": 1,
        "first purchase": 0,
        "repeat": 2,
        "loyal": 1,
        "won back": 0,
        "lapsing": 0,
        "lapsed": 0,
    }
    assert rows.loc["visitor", "customer_share"] == pytest.approx(3 / 7)  # of every known person
    assert rows.loc["visitor", "revenue"] == 0.0
    assert rows.loc["repeat", "revenue_share"] == pytest.approx(0.4)
    # without the journey frame there are no journey rows (the buyers-only schemes are unchanged)
    assert "journey_stage" not in set(segment_summary(segments)["scheme"])


JOURNEY_CFG = SegmentsConfig(
    clusters=ClusterConfig(enabled=False),
    demographics=DemographicConfig(enabled=False),
    needs=NeedsConfig(enabled=False),
)


@pytest.fixture()
def with_events(state: StateDirs) -> StateDirs:
    """The hand-made history of tests/features/test_journey.py as an ingested dataset."""
    from tests.features.test_journey import CUSTOMERS, EVENTS, TRANSACTIONS

    folder = state.data("journey")
    folder.mkdir(parents=True)
    for name, frame in (("transactions", TRANSACTIONS), ("events", EVENTS)):
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    CUSTOMERS.to_parquet(folder / "customers.parquet", index=False)
    return state


def test_segments_and_report_count_journey_stages_where_events_exist(
    with_events: StateDirs, tmp_path: Path
) -> None:
    import json

    from features.segments_report import run_segments, run_segments_report
    from tests.features.test_journey import T

    out = run_segments(with_events, "journey", T, JOURNEY_CFG, tmp_path / "seg")
    seg = pd.read_parquet(out["segments"]).set_index("customer_id")
    # buyers carry their stage; "later" buys after T and "future" visits after T: not buyers
    assert seg["journey_stage"].astype(str).to_dict() == {
        "first": "first purchase",
        "repeat": "repeat",
        "loyal": "loyal",
        "wonback": "won back",
        "lapsing": "lapsing",
        "lapsed": "lapsed",
    }
    summary = pd.read_csv(out["summary"])
    journey = summary[summary["scheme"] == "journey_stage"].set_index("segment")["customers"]
    assert journey[["visitor", "registered"]].tolist() == [2, 1]  # visitor, later; reg
    assert journey.sum() == len(seg) + 3
    meta = json.loads(out["meta"].read_text())
    assert meta["journey"]["prospects"] == 3 and meta["journey"]["people"] == len(seg) + 3
    page = run_segments_report(with_events, "journey", T, None, JOURNEY_CFG, tmp_path / "r.html")
    text = page.read_text(encoding="utf-8")
    assert "Journey stage (buyers and prospects)" in text and "3 prospects (2 visitors" in text

    (with_events.data("journey") / "events.parquet").unlink()  # no events: no journey scheme
    out = run_segments(with_events, "journey", T, JOURNEY_CFG, tmp_path / "none")
    assert "journey_stage" not in pd.read_parquet(out["segments"]).columns
    assert "journey_stage" not in set(pd.read_csv(out["summary"])["scheme"])
    assert out["journey"] == {"skipped": "no events table"}
