"""Window and horizon boundaries, one customer at a time: what counts at T, T+1, T+H, T+H+1.

The convention (``features.definitions``): a row's ``days_ago`` is the number of calendar days from
its date to the cutoff T. Features see 0 <= days_ago (T and before); a window of N days holds
0 <= days_ago < N (T-N+1 .. T); "the window before" a 90-day window holds 90 <= days_ago < 180;
labels see -H <= days_ago < 0 (T+1 .. T+H); a lookback population of L days holds
0 <= days_ago < L. Each probe row sits at the second of its day nearest the boundary it tests
(T at 23:59:59, T+1 at 00:00:00, T-(N-1) at 00:00:00, T-N at 23:59:59, T+H at 23:59:59,
T+H+1 at 00:00:00), so a time-of-day leak shows up too. ``tests/mutation/run_boundary_mutants.py``
checks that every ±1-day change of these comparisons makes a test here fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

import duckdb
import pandas as pd
import pytest

from features.build import compute_churn_labels, compute_features
from features.definitions import (
    ENGAGEMENT_EVENTS,
    RELEASED_SETS,
    FeatureSet,
    RFMPointsConfig,
    category_share_features,
    feature_set,
)
from features.engine import churn_label_sql
from features.labels import campaign_response_label_sql, purchase_label_sql, spend_label_sql

T = date(2024, 3, 31)
#: days_ago of an order outside every window: keeps the customer in the feature population.
ANCHOR = 1000
PROBE = 100.0  # the amount of the row under test
TX_COLUMNS = ["customer_id", "ts", "order_id", "product_id", "category", "quantity", "amount"]


def at(days_ago: int, late: bool) -> pd.Timestamp:
    """The first (00:00:00) or last (23:59:59) second of the day ``days_ago`` days before T."""
    day = pd.Timestamp(T) - pd.Timedelta(days=days_ago)
    return day + pd.Timedelta(seconds=86_399) if late else day


def feature_positions(n: int) -> list[tuple[int, bool]]:
    """T, T-(N-1), T-N and T+1, for a window of N days."""
    # (days_ago, late): each at the second of its day nearest the boundary it tests
    return [(0, True), (n - 1, False), (n, True), (-1, False)]


def in_window(days_ago: int, n: int) -> bool:
    return 0 <= days_ago < n


def horizon_positions(h: int) -> list[int]:
    """Days after T: T, T+1, T+H, T+H+1."""
    return [0, 1, h, h + 1]


def tx_frame(rows: Iterable[tuple]) -> pd.DataFrame:
    """Transactions from (customer, ts, order, amount, is_return[, category]) rows."""
    out = []
    for row in rows:
        cid, ts, order, amount, is_return, *rest = row
        category = rest[0] if rest else "x"
        out.append((cid, ts, order, "p1", category, 1.0, amount, is_return))
    frame = pd.DataFrame(out, columns=[*TX_COLUMNS, "is_return"])
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    frame["is_return"] = frame["is_return"].astype("boolean")
    return frame


def anchor(category: str = "x") -> tuple:
    """Customer A's order far outside every window (keeps A in the feature population)."""
    return ("A", at(ANCHOR, False), "anchor", 1.0, False, category)


def probe(days_ago: int, late: bool, amount: float = PROBE, category: str = "x") -> tuple:
    """Customer A's row under test: an order (a return when ``amount`` < 0) on that day."""
    return ("A", at(days_ago, late), f"probe{days_ago}", amount, amount < 0, category)


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    """One in-memory database; each query runs on its own cursor with its own tables."""
    return duckdb.connect()


def pick(set_name: str, *names: str) -> FeatureSet:
    """The named features of a released set, as declared there (a small query per test)."""
    feats = tuple(f for f in feature_set(set_name).features if f.name in names)
    assert sorted(f.name for f in feats) == sorted(names)
    return FeatureSet(f"{set_name}[{','.join(names)}]", feats)


def features(
    con: duckdb.DuckDBPyConnection,
    rows: Iterable[tuple],
    fs: FeatureSet,
    **relations: pd.DataFrame,
) -> pd.DataFrame:
    """Features of ``fs`` at T on the given rows (and events, customers, households frames)."""
    cur = con.cursor()
    cur.register("tx", tx_frame(rows))
    for name, frame in relations.items():
        cur.register(name, frame)
    names = {name: name for name in relations}
    return compute_features(cur, "tx", T, fs, **names).set_index("customer_id")


def one(
    con: duckdb.DuckDBPyConnection, rows: Iterable[tuple], fs: FeatureSet, **relations: pd.DataFrame
) -> dict[str, Any]:
    """The features of the single customer ``A``; NULL as None (a comparison never raises)."""
    frame = features(con, rows, fs, **relations)
    assert list(frame.index) == ["A"]
    return {str(k): None if pd.isna(v) else v for k, v in frame.loc["A"].items()}


# --------------------------------------------------------------------------- labels

HORIZONS = [30, 60]
LOOKBACKS = [90, 365]
LABEL_IDS = ["T", "T+1", "T+H", "T+H+1"]
LOOKBACK_IDS = ["T", "T-(L-1)", "T-L", "T+1"]
#: A row in every lookback (T-5) for the horizon tests.
ACTIVE = ("A", at(5, False), "active", 1.0, False)


def label_probe(days_after: int, h: int, amount: float = PROBE, **kw) -> tuple:
    """A row ``days_after`` T, at the second of its day nearest the boundary it tests."""
    return probe(-days_after, days_after in (0, h), amount, **kw)


def in_horizon(days_after: int, h: int) -> bool:
    return 1 <= days_after <= h


def run(con: duckdb.DuckDBPyConnection, sql: str, **tables: pd.DataFrame) -> pd.DataFrame:
    """Run label SQL on its own cursor over the given frames, indexed by customer."""
    cur = con.cursor()
    for name, frame in tables.items():
        cur.register(name, frame)
    return cur.execute(sql).df().set_index("customer_id")


@pytest.mark.parametrize("h", HORIZONS)
@pytest.mark.parametrize("pos", range(4), ids=LABEL_IDS)
def test_churn_horizon(con, h, pos):
    days_after = horizon_positions(h)[pos]
    tx = tx_frame([ACTIVE, label_probe(days_after, h)])
    labels = run(con, churn_label_sql("tx", T, h, 365), tx=tx)["label"]
    assert labels.to_dict() == {"A": 0 if in_horizon(days_after, h) else 1}


@pytest.mark.parametrize("lookback", LOOKBACKS)
@pytest.mark.parametrize("pos", range(4), ids=LOOKBACK_IDS)
def test_churn_lookback_population(con, lookback, pos):
    days_ago, late = feature_positions(lookback)[pos]
    tx = tx_frame([probe(days_ago, late)])
    labels = run(con, churn_label_sql("tx", T, 30, lookback), tx=tx)["label"]
    assert labels.to_dict() == ({"A": 1} if in_window(days_ago, lookback) else {})


@pytest.mark.parametrize(("category", "probe_category"), [(None, "x"), ("x", "x"), ("x", "y")])
@pytest.mark.parametrize("h", HORIZONS)
@pytest.mark.parametrize("pos", range(4), ids=LABEL_IDS)
def test_purchase_horizon(con, category, probe_category, h, pos):
    """Any purchase (category None) or one of category x, in T+1 .. T+H."""
    days_after = horizon_positions(h)[pos]
    tx = tx_frame([ACTIVE, label_probe(days_after, h, category=probe_category)])
    out = run(con, purchase_label_sql("tx", T, h, 365, category), tx=tx)
    counted = in_horizon(days_after, h) and category in (None, probe_category)
    assert out["label"].to_dict() == {"A": int(counted)}
    assert out["value"].to_dict() == {"A": PROBE if counted else 0.0}


@pytest.mark.parametrize("category", [None, "x"])
@pytest.mark.parametrize("lookback", LOOKBACKS)
@pytest.mark.parametrize("pos", range(4), ids=LOOKBACK_IDS)
def test_purchase_lookback_population(con, category, lookback, pos):
    days_ago, late = feature_positions(lookback)[pos]
    tx = tx_frame([probe(days_ago, late)])
    out = run(con, purchase_label_sql("tx", T, 30, lookback, category), tx=tx)
    assert out["label"].to_dict() == ({"A": 0} if in_window(days_ago, lookback) else {})


@pytest.mark.parametrize("h", HORIZONS)
@pytest.mark.parametrize("pos", range(4), ids=LABEL_IDS)
@pytest.mark.parametrize("amount", [PROBE, -10.0], ids=["purchase", "return"])
def test_spend_horizon(con, h, pos, amount):
    """Purchases and returns both count in T+1 .. T+H; the label is floored at 0."""
    days_after = horizon_positions(h)[pos]
    tx = tx_frame([ACTIVE, label_probe(days_after, h, amount)])
    out = run(con, spend_label_sql("tx", T, h), tx=tx)
    value = amount if in_horizon(days_after, h) else 0.0
    assert out["value"].to_dict() == {"A": value}
    assert out["label"].to_dict() == {"A": max(value, 0.0)}


@pytest.mark.parametrize(
    ("days_ago", "late", "amount", "present"),
    [
        (0, True, PROBE, True),
        (ANCHOR, False, PROBE, True),
        (-1, False, PROBE, False),
        (0, True, -10.0, False),
    ],
    ids=["order-on-T", "order-long-before-T", "order-on-T+1", "return-on-T"],
)
def test_spend_population(con, days_ago, late, amount, present):
    """Every customer with a (non-return) order on or before T, whatever its age."""
    tx = tx_frame([probe(days_ago, late, amount)])
    out = run(con, spend_label_sql("tx", T, 30), tx=tx)
    assert list(out.index) == (["A"] if present else [])


@pytest.mark.parametrize("h", HORIZONS)
@pytest.mark.parametrize("pos", range(4), ids=LABEL_IDS)
def test_campaign_response_horizon(con, h, pos):
    """A treated contact counts when sent in T+1 .. T+H."""
    days_after = horizon_positions(h)[pos]
    campaigns = pd.DataFrame(
        {
            "campaign_id": ["K1"],
            "customer_id": ["A"],
            "ts": pd.Series([at(-days_after, days_after in (0, h))]).astype("datetime64[us]"),
            "group": ["treatment"],
            "responded": [True],
        }
    )
    out = run(con, campaign_response_label_sql("ch", T, h), ch=campaigns)
    assert out["label"].to_dict() == ({"A": 1} if in_horizon(days_after, h) else {})


@pytest.mark.parametrize(("last_day", "refused"), [(30, False), (29, True)], ids=["T+H", "T+H-1"])
def test_churn_labels_need_data_through_t_plus_h(con, last_day, refused):
    """``compute_churn_labels`` needs a row dated T+H: the whole horizon must be observed."""
    cur = con.cursor()
    cur.register("tx", tx_frame([ACTIVE, label_probe(last_day, 30)]))
    try:
        labels = compute_churn_labels(cur, "tx", T, 30, 365)["label"].tolist()
    except ValueError as exc:
        assert "runs past the last data date" in str(exc)
        labels = None
    assert labels == (None if refused else [0])


# --------------------------------------------------------------------------- feature windows

#: (set, N) of every declared ``orders_count_<N>d`` / ``spend_sum_<N>d`` pair of a released set.
WINDOWS = sorted(
    {
        (name, int(m.group(1)))
        for name in RELEASED_SETS
        for f in feature_set(name).features
        if (m := re.fullmatch(r"orders_count_(\d+)d", f.name))
    }
)
FEATURE_IDS = ["T", "T-(N-1)", "T-N", "T+1"]


def test_the_released_windows_are_all_here():
    """The parametrisation found the windows (a new set's windows join it by themselves)."""
    assert {("churn_v1", n) for n in (30, 90, 365, 730)} <= set(WINDOWS)
    assert {("crm_v1", n) for n in (7, 30, 90, 180, 365, 730)} <= set(WINDOWS)


@pytest.mark.parametrize(("set_name", "n"), WINDOWS)
@pytest.mark.parametrize("pos", range(4), ids=FEATURE_IDS)
def test_count_and_sum_windows(con, set_name, n, pos):
    days_ago, late = feature_positions(n)[pos]
    fs = pick(set_name, f"orders_count_{n}d", f"spend_sum_{n}d")
    row = one(con, [anchor(), probe(days_ago, late)], fs)
    inside = in_window(days_ago, n)
    assert row[f"orders_count_{n}d"] == int(inside)
    assert row[f"spend_sum_{n}d"] == (PROBE if inside else 0.0)


@pytest.mark.parametrize("set_name", ["churn_v1", "crm_v1"])
@pytest.mark.parametrize(
    ("days_ago", "late", "recency"),
    [(0, True, 0), (1, False, 1), (-1, False, ANCHOR)],
    ids=["T", "T-1", "T+1"],
)
def test_recency(con, set_name, days_ago, late, recency):
    fs = pick(set_name, "days_since_last_order", "orders_count_total")
    row = one(con, [anchor(), probe(days_ago, late)], fs)
    assert row["days_since_last_order"] == recency
    assert row["orders_count_total"] == (1 if days_ago < 0 else 2)


@pytest.mark.parametrize(
    ("days_ago", "late", "present"), [(0, True, True), (-1, False, False)], ids=["T", "T+1"]
)
def test_population_is_an_order_by_the_end_of_t(con, days_ago, late, present):
    frame = features(con, [probe(days_ago, late)], feature_set("churn_v1"))
    assert list(frame.index) == (["A"] if present else [])


def test_an_order_is_dated_by_its_first_line(con):
    """An order over two days belongs to the day of its first line; lines after T are unseen."""
    rows = [
        anchor(),
        ("A", at(30, True), "split", 10.0, False),  # first line on T-30: outside 30 days
        ("A", at(29, False), "split", 20.0, False),
        ("A", at(0, True), "straddle", 5.0, False),  # on T and on T+1
        ("A", at(-1, False), "straddle", 50.0, False),
    ]
    fs = pick(
        "crm_v1", "days_since_last_order", "spend_sum_30d", "orders_count_30d", "spend_sum_90d"
    )
    row = one(con, rows, fs)
    assert row["orders_count_30d"] == 1
    assert row["spend_sum_30d"] == 5.0
    assert row["spend_sum_90d"] == 35.0
    assert row["days_since_last_order"] == 0


#: (days_ago, late, orders in the last 90 days, orders in the 90 days before).
TREND_POSITIONS = [
    (0, True, 1, 0),
    (89, False, 1, 0),
    (90, True, 0, 1),
    (179, False, 0, 1),
    (180, True, 0, 0),
    (-1, False, 0, 0),
]


@pytest.mark.parametrize(
    ("days_ago", "late", "now", "before"),
    TREND_POSITIONS,
    ids=["T", "T-89", "T-90", "T-179", "T-180", "T+1"],
)
def test_trend_windows(con, days_ago, late, now, before):
    """The last 90 days (0 <= days_ago < 90) against the 90 before (90 <= days_ago < 180)."""
    fs = pick(
        "crm_v1",
        "orders_trend_diff_180d",
        "orders_trend_ratio_180d",
        "spend_trend_diff_180d",
        "spend_trend_ratio_180d",
    )
    row = one(con, [anchor(), probe(days_ago, late)], fs)
    assert row["orders_trend_diff_180d"] == now - before
    assert row["spend_trend_diff_180d"] == PROBE * (now - before)
    for ratio in ("orders_trend_ratio_180d", "spend_trend_ratio_180d"):
        assert row[ratio] == (0.0 if before else None), ratio


RFM = RFMPointsConfig()
#: days_since_last_order either side of each recency band's upper bound, and its R points.
RECENCY_BANDS = [
    (b + d, p if d < 0 else nxt)
    for b, p, nxt in zip(
        RFM.recency_bands_days,
        RFM.recency_points,
        (*RFM.recency_points[1:], RFM.recency_points_older),
        strict=True,
    )
    for d in (-1, 0)
]


@pytest.mark.parametrize(("days_ago", "points"), RECENCY_BANDS)
def test_rfm_recency_bands(con, days_ago, points):
    """A band "< 91 days" holds days_since_last_order 0 .. 90, like a 91-day window."""
    fs = pick("crm_v1", "days_since_last_order", "rfm_recency_points")
    row = one(con, [anchor(), probe(days_ago, False)], fs)
    assert row["days_since_last_order"] == days_ago
    assert row["rfm_recency_points"] == points


@pytest.mark.parametrize("pos", range(4), ids=FEATURE_IDS)
def test_basket_mean_order_365d(con, pos):
    days_ago, late = feature_positions(365)[pos]
    row = one(con, [anchor(), probe(days_ago, late)], pick("crm_v1", "spend_mean_order_365d"))
    assert row["spend_mean_order_365d"] == (PROBE if in_window(days_ago, 365) else None)


@pytest.mark.parametrize("pos", range(4), ids=FEATURE_IDS)
@pytest.mark.parametrize("moving", ["return", "purchase"])
def test_returns_share_365d(con, pos, moving):
    """One side at the probe day, the other on T: a share of 0.1 only when both are inside."""
    probe_day = feature_positions(365)[pos]
    on_t = (0, True)
    ret_day, buy_day = (probe_day, on_t) if moving == "return" else (on_t, probe_day)
    rows = [
        anchor(),
        ("A", at(*buy_day), "buy", PROBE, False),
        ("A", at(*ret_day), "buy-R", -10.0, True),
    ]
    row = one(con, rows, pick("crm_v1", "returns_share_365d"))
    expected = 0.1 if in_window(probe_day[0], 365) else 0.0
    assert row["returns_share_365d"] == pytest.approx(expected)


@pytest.mark.parametrize("pos", range(4), ids=FEATURE_IDS)
def test_household_windows(con, pos):
    days_ago, late = feature_positions(365)[pos]
    households = pd.DataFrame({"customer_id": ["A"], "household_id": ["H1"]})
    row = one(
        con,
        [anchor(), probe(days_ago, late)],
        feature_set("crm_household_v1"),
        households=households,
    )
    inside = in_window(days_ago, 365)
    assert row["household_orders_count_365d"] == int(inside)
    assert row["household_spend_sum_365d"] == (PROBE if inside else 0.0)
    assert row["household_days_since_last_order"] == (days_ago if days_ago >= 0 else ANCHOR)


def events_frame(rows: Iterable[tuple[str, int, bool]]) -> pd.DataFrame:
    """Events of customer A from (event_type, days_ago, late)."""
    frame = pd.DataFrame(
        [("A", at(d, late), etype) for etype, d, late in rows],
        columns=["customer_id", "ts", "event_type"],
    )
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    return frame


#: N of every declared ``visits_count_<N>d`` (each engagement event type has the same windows).
ENGAGEMENT_WINDOWS = sorted(
    {
        int(m.group(1))
        for f in feature_set("crm_engagement_v1").features
        if (m := re.fullmatch(r"visits_count_(\d+)d", f.name))
    }
)


def test_the_engagement_windows_are_all_here():
    assert {30, 90} <= set(ENGAGEMENT_WINDOWS)


@pytest.mark.parametrize("n", ENGAGEMENT_WINDOWS)
@pytest.mark.parametrize("pos", range(4), ids=FEATURE_IDS)
def test_engagement_count_windows(con, n, pos):
    days_ago, late = feature_positions(n)[pos]
    events = events_frame([(etype, days_ago, late) for etype, _ in ENGAGEMENT_EVENTS])
    names = [f"{what}_count_{n}d" for _, what in ENGAGEMENT_EVENTS]
    row = one(con, [anchor()], pick("crm_engagement_v1", *names), events=events)
    for name in names:
        assert row[name] == int(in_window(days_ago, n)), name


@pytest.mark.parametrize("pos", range(4), ids=["T", "T-89", "T-90", "T+1"])
@pytest.mark.parametrize("moving", ["click", "email_open"])
def test_clicks_per_open_90d(con, pos, moving):
    """One event type at the probe day, the other on T."""
    days_ago, late = feature_positions(90)[pos]
    fixed = "email_open" if moving == "click" else "click"
    events = events_frame([(moving, days_ago, late), (fixed, 0, True)])
    row = one(con, [anchor()], pick("crm_engagement_v1", "clicks_per_open_90d"), events=events)
    inside = in_window(days_ago, 90)
    # no click: 0 clicks per open; no open: NULL
    expected = 1.0 if inside else (0.0 if moving == "click" else None)
    assert row["clicks_per_open_90d"] == expected


@pytest.mark.parametrize(
    ("days_ago", "late", "recency"),
    [(0, True, 0), (1, False, 1), (-1, False, 5)],
    ids=["T", "T-1", "T+1"],
)
def test_event_recency(con, days_ago, late, recency):
    """The probe visit and a visit on T-5."""
    events = events_frame([("visit", days_ago, late), ("visit", 5, False)])
    fs = pick("crm_engagement_v1", "days_since_last_event", "days_since_last_visit")
    row = one(con, [anchor()], fs, events=events)
    assert row["days_since_last_event"] == recency
    assert row["days_since_last_visit"] == recency


@pytest.mark.parametrize(
    ("signup_days_ago", "tenure"), [(1, 1), (0, 0), (-1, None)], ids=["T-1", "T", "T+1"]
)
def test_signup_tenure(con, signup_days_ago, tenure):
    """A sign-up on T has tenure 0; one after T is unknown at T (NULL)."""
    customers = pd.DataFrame(
        {
            "customer_id": ["A"],
            "signup_date": [T - timedelta(days=signup_days_ago)],
            "country": ["GB"],
        }
    )
    fs = pick("crm_customer_v1", "signup_tenure_days")
    row = one(con, [anchor()], fs, customers=customers)
    assert row["signup_tenure_days"] == tenure


@pytest.mark.parametrize("pos", range(4), ids=["T", "T-29", "T-30", "T+1"])
def test_category_share_window(con, pos):
    """A configured 30-day share (``category_share_features``): 1 in the window, else 0."""
    days_ago, late = feature_positions(30)[pos]
    fs = FeatureSet("share_30d", tuple(category_share_features(["x"], 30)))
    row = one(con, [anchor(category="y"), probe(days_ago, late, category="x")], fs)
    assert row["spend_share_x_30d"] == (1.0 if in_window(days_ago, 30) else 0.0)


# --------------------------------------------------------------------------- contact history

CONTACT_COLUMNS = ["campaign_id", "customer_id", "offer_id", "ts", "group", "responded", "reason"]


def contacts_frame(rows: Iterable[tuple[int, bool, bool, str | None]]) -> pd.DataFrame:
    """Customer A's treated contacts from (days_ago, late, responded, reason) rows."""
    out = [
        (f"CMP{i}", "A", "RET_01", at(days_ago, late), "treatment", responded, reason)
        for i, (days_ago, late, responded, reason) in enumerate(rows)
    ]
    frame = pd.DataFrame(out, columns=CONTACT_COLUMNS)
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    return frame


#: N of every declared ``contacts_count_<N>d`` of crm_contacts_v1.
CONTACT_WINDOWS = sorted(
    {
        int(m.group(1))
        for f in feature_set("crm_contacts_v1").features
        if (m := re.fullmatch(r"contacts_count_(\d+)d", f.name))
    }
)


def test_the_contact_windows_are_all_here():
    assert {30, 90, 365} <= set(CONTACT_WINDOWS)


@pytest.mark.parametrize("n", CONTACT_WINDOWS)
@pytest.mark.parametrize("pos", range(4), ids=FEATURE_IDS)
def test_contact_count_windows(con, n, pos):
    days_ago, late = feature_positions(n)[pos]
    history = contacts_frame([(days_ago, late, False, None)])
    fs = pick("crm_contacts_v1", f"contacts_count_{n}d", "contacts_count_total")
    row = one(con, [anchor()], fs, campaign_history=history)
    assert row[f"contacts_count_{n}d"] == int(in_window(days_ago, n))
    assert row["contacts_count_total"] == int(days_ago >= 0)


@pytest.mark.parametrize(
    ("days_ago", "late", "recency"),
    [(0, True, 0), (1, False, 1), (-1, False, 5)],
    ids=["T", "T-1", "T+1"],
)
def test_contact_recency(con, days_ago, late, recency):
    """The probe contact and one on T-5."""
    history = contacts_frame([(days_ago, late, False, None), (5, False, False, None)])
    row = one(
        con,
        [anchor()],
        pick("crm_contacts_v1", "days_since_last_contact"),
        campaign_history=history,
    )
    assert row["days_since_last_contact"] == recency


RESPONSE_FEATURES = (
    "responses_count_total",
    "responses_count_365d",
    "negative_responses_count_total",
    "negative_responses_count_365d",
    "response_rate_365d",
    "days_since_last_response",
    "days_since_last_negative_response",
)
#: (days_ago, late) of the probe contact: T, T-29 (sent, outcome unknown), T-30 (known),
#: T-364 (in 365 days), T-365 (out), T+1.
RESPONSE_POSITIONS = [(0, True), (29, True), (30, False), (364, False), (365, True), (-1, False)]
RESPONSE_IDS = ["T", "T-29", "T-30", "T-364", "T-365", "T+1"]


@pytest.mark.parametrize("pos", range(len(RESPONSE_POSITIONS)), ids=RESPONSE_IDS)
@pytest.mark.parametrize("negative", [False, True], ids=["responded", "declined"])
def test_a_response_counts_once_known(con, pos, negative):
    """A contact's outcome counts at T only when send date + 30 days <= T, in its windows."""
    days_ago, late = RESPONSE_POSITIONS[pos]
    responded, reason = (False, "Price ") if negative else (True, None)
    history = contacts_frame([(days_ago, late, responded, reason)])
    row = one(
        con, [anchor()], pick("crm_contacts_v1", *RESPONSE_FEATURES), campaign_history=history
    )
    known = days_ago >= 30
    in_365 = known and days_ago < 365
    hit, other = (
        ("negative_responses", "responses") if negative else ("responses", "negative_responses")
    )
    assert row[f"{hit}_count_total"] == int(known)
    assert row[f"{hit}_count_365d"] == int(in_365)
    assert row[f"{other}_count_total"] == 0
    assert row["response_rate_365d"] == ((0.0 if negative else 1.0) if in_365 else None)
    last = "days_since_last_negative_response" if negative else "days_since_last_response"
    assert row[last] == (days_ago if known else None)


@pytest.mark.parametrize("pos", range(len(RESPONSE_POSITIONS)), ids=RESPONSE_IDS)
def test_a_response_by_offer_kind_counts_once_known(con, pos):
    days_ago, late = RESPONSE_POSITIONS[pos]
    history = contacts_frame([(days_ago, late, True, None)])
    offers = pd.DataFrame({"offer_id": ["RET_01"], "kind": ["retention"], "value": [1.0]})
    names = ("retention_contacts_count_total", "retention_responses_count_total")
    row = one(
        con,
        [anchor()],
        pick("crm_contact_offers_v1", *names),
        campaign_history=history,
        offers=offers,
    )
    assert row["retention_contacts_count_total"] == int(days_ago >= 0)
    assert row["retention_responses_count_total"] == int(days_ago >= 30)
