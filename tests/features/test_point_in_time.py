"""Point in time: later rows change no feature, labels read only the horizon; hand values."""

from __future__ import annotations

import math
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.definitions import RELEASED_SETS, feature_set
from features.engine import churn_label_sql, features_sql

AS_OF = date(2024, 3, 31)  # a Sunday
ALL_CRM = "crm_v1+crm_engagement_v1+crm_customer_v1+crm_household_v1"
TX_COLUMNS = [
    "customer_id",
    "ts",
    "order_id",
    "product_id",
    "category",
    "quantity",
    "amount",
    "is_return",
    "channel",
]


def random_tables(
    seed: int = 0, n_customers: int = 40, as_of: date = AS_OF
) -> dict[str, pd.DataFrame]:
    """Small canonical tables with the awkward cases: ties, split orders, late returns, NULLs."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(as_of)
    tx = []
    n_order = 0
    for c in range(n_customers):
        cid = f"c{c:03d}"
        for _ in range(int(rng.integers(1, 9))):
            n_order += 1
            # mostly before the cutoff, some after; whole days plus a time of day
            day = pd.Timedelta(days=int(rng.integers(-120, 900)))
            when = t0 - day + pd.Timedelta(seconds=int(rng.integers(0, 86_400)))
            if rng.random() < 0.2 and tx:  # same day as the customer's previous order
                when = tx[-1][1]
            for line in range(int(rng.integers(1, 5))):
                ts = when + pd.Timedelta(days=1) if line == 3 else when  # an order over two days
                qty = float(rng.integers(1, 4))
                amount = 0.0 if rng.random() < 0.03 else round(float(rng.gamma(2.0, 12.0)) * qty, 2)
                cat = None if rng.random() < 0.05 else f"cat{int(rng.integers(0, 5))}"
                tx.append(
                    (
                        cid,
                        ts,
                        f"o{n_order}",
                        f"p{int(rng.integers(0, 30))}",
                        cat,
                        None if rng.random() < 0.05 else qty,
                        amount,
                        False,
                        "web",
                    )
                )
                if rng.random() < 0.12:  # returned 0..20 days later, sometimes across the cutoff
                    back = ts + pd.Timedelta(days=int(rng.integers(0, 21)))
                    flag = None if rng.random() < 0.3 else True  # negative amount alone marks it
                    tx.append(
                        (cid, back, f"o{n_order}-R", tx[-1][3], cat, -qty, -amount, flag, "web")
                    )
    tx.append(
        ("only_returns", t0 - pd.Timedelta(days=3), "r1", "p1", "cat1", -1.0, -5.0, True, "web")
    )
    transactions = pd.DataFrame(tx, columns=TX_COLUMNS)
    transactions["ts"] = transactions["ts"].astype("datetime64[us]")
    transactions["is_return"] = transactions["is_return"].astype("boolean")

    ids = sorted(transactions["customer_id"].unique())
    types = ["visit", "Visit", "email_open", "click", "complaint", "support"]
    ev = [
        (cid, t0 - pd.Timedelta(days=int(d), seconds=int(s)), str(rng.choice(types)))
        for cid in ids[: len(ids) * 3 // 4]
        for d, s in zip(
            rng.integers(-60, 200, int(rng.integers(0, 12))),
            rng.integers(0, 86_400, 12),
            strict=False,
        )
    ]
    events = pd.DataFrame(ev, columns=["customer_id", "ts", "event_type"])
    events["ts"] = events["ts"].astype("datetime64[us]")

    signup = [
        None if rng.random() < 0.1 else (t0 - pd.Timedelta(days=int(rng.integers(-30, 1200))))
        for _ in ids
    ]
    customers = pd.DataFrame(
        {
            "customer_id": ids + ["never_bought"],
            "signup_date": pd.to_datetime(signup + [t0]).date,
            "country": [rng.choice(["GB", "FR", "DE", None]) for _ in ids] + ["FR"],
        }
    )
    hh_ids = rng.integers(0, max(len(ids) // 2, 1), len(ids))
    keep = rng.random(len(ids)) < 0.7
    households = pd.DataFrame(
        {
            "customer_id": [i for i, k in zip(ids, keep, strict=True) if k] + ["never_bought"],
            "household_id": [f"HH-{h}" for h, k in zip(hh_ids, keep, strict=True) if k] + ["HH-0"],
        }
    )
    return {
        "transactions": transactions,
        "events": events,
        "customers": customers,
        "households": households,
        **campaign_tables(ids, t0, seed),
    }


OFFER_IDS = ["RET_01", "XS_1", "UP_1", "UNKNOWN"]


def campaign_tables(ids: list[str], t0: pd.Timestamp, seed: int) -> dict[str, pd.DataFrame]:
    """Contacts around the cutoff (both groups, responses, reasons in any case) and offers."""
    rng = np.random.default_rng([seed, 11])  # its own stream: the other tables do not move
    rows = []
    for cid in ids[: len(ids) * 4 // 5]:
        for d in rng.integers(-60, 500, int(rng.integers(1, 7))):
            responded = bool(rng.random() < 0.3)
            reason = None if responded else rng.choice([None, "Price", " no need ", "", "price"])
            rows.append(
                (
                    f"CMP{int(d) % 7}",
                    cid,
                    None if rng.random() < 0.05 else str(rng.choice(OFFER_IDS)),
                    t0 - pd.Timedelta(days=int(d), seconds=int(rng.integers(0, 86_400))),
                    str(rng.choice(["treatment", "Control", "treatment_b"])),
                    responded,
                    reason,
                )
            )
    history = pd.DataFrame(
        rows,
        columns=["campaign_id", "customer_id", "offer_id", "ts", "group", "responded", "reason"],
    )
    history["ts"] = history["ts"].astype("datetime64[us]")
    offers = pd.DataFrame(
        {
            "offer_id": OFFER_IDS[:3],
            "kind": ["retention", "Cross_Sell", "up_sell"],
            "value": [10.0, 20.0, 30.0],
        }
    )
    return {"campaign_history": history, "offers": offers}


def compute(tables: dict[str, pd.DataFrame], as_of: date, set_name: str) -> pd.DataFrame:
    """Features of a set on in-memory tables with DuckDB."""
    con = duckdb.connect()
    for name, frame in tables.items():
        con.register(name, frame)
    sql = features_sql(
        "transactions",
        as_of,
        feature_set(set_name),
        events="events",
        customers="customers",
        households="households",
        campaign_history="campaign_history",
        offers="offers",
    )
    return con.execute(sql).df()


def labels(tables: dict[str, pd.DataFrame], as_of: date, horizon: int, lookback: int) -> pd.Series:
    con = duckdb.connect()
    con.register("transactions", tables["transactions"])
    out = con.execute(churn_label_sql("transactions", as_of, horizon, lookback)).df()
    return out.set_index("customer_id")["label"]


def _future(ts: pd.Series, after: date) -> pd.Series:
    return ts.dt.normalize() > pd.Timestamp(after)


def perturb_after(
    tables: dict[str, pd.DataFrame], after: date, seed: int
) -> dict[str, pd.DataFrame]:
    """Change every row dated after ``after`` and add orders, returns, customers and events then."""
    rng = np.random.default_rng(seed)
    t1 = pd.Timestamp(after) + pd.Timedelta(days=1)
    tx = tables["transactions"].copy()
    late = _future(tx["ts"], after)
    assert late.any() and (~late).any()
    tx.loc[late, "amount"] = tx.loc[late, "amount"] * 7 + 1
    tx.loc[late, "quantity"] = 99.0
    tx.loc[late, "category"] = "cat_new"
    tx.loc[late, "is_return"] = rng.random(int(late.sum())) < 0.5
    old = tx[~late].sample(10, random_state=seed)
    extra = pd.concat(
        [
            old.assign(ts=t1 + pd.Timedelta(hours=1), amount=500.0),  # late lines, old orders
            old.assign(
                ts=t1, order_id=old["order_id"] + "-late-R", amount=-old["amount"], is_return=True
            ),  # returns of old orders
            old.assign(
                ts=t1 + pd.Timedelta(days=3), order_id="new-" + old["order_id"]
            ),  # new orders
            old.assign(ts=t1, customer_id="newcomer-" + old["customer_id"]),  # new customers
        ]
    )
    ev = tables["events"].copy()
    ev_late = _future(ev["ts"], after)
    ev.loc[ev_late, "event_type"] = "complaint"
    extra_ev = ev[~ev_late].head(8).assign(ts=t1)
    newcomers = sorted(set("newcomer-" + old["customer_id"]))
    cust = pd.concat(
        [
            tables["customers"],
            pd.DataFrame(
                {
                    "customer_id": newcomers,
                    "signup_date": [t1.date()] * len(newcomers),
                    "country": ["ZZ"] * len(newcomers),
                }
            ),
        ],
        ignore_index=True,
    )
    hh = pd.concat(
        [
            tables["households"],
            pd.DataFrame(
                {
                    "customer_id": newcomers,
                    "household_id": tables["households"]["household_id"]
                    .iloc[: len(newcomers)]
                    .to_list()
                    + ["HH-x"] * max(len(newcomers) - len(tables["households"]), 0),
                }
            ),
        ],
        ignore_index=True,
    )
    ch = tables["campaign_history"].copy()
    ch_late = _future(ch["ts"], after)
    ch.loc[ch_late, "responded"] = ~ch.loc[ch_late, "responded"]
    ch.loc[ch_late, "reason"] = "price"
    ch.loc[ch_late, "group"] = "treatment"
    extra_ch = ch[~ch_late].head(8).assign(ts=t1, responded=True)  # new contacts of old ones
    return {
        "transactions": pd.concat([tx, extra], ignore_index=True),
        "events": pd.concat([ev, extra_ev], ignore_index=True),
        "customers": cust,
        "households": hh,
        "campaign_history": pd.concat([ch, extra_ch], ignore_index=True),
        "offers": tables["offers"],
    }


@pytest.mark.parametrize("set_name", [*RELEASED_SETS, ALL_CRM])
@pytest.mark.parametrize("seed", [0, 1])
def test_rows_after_the_cutoff_change_no_feature(set_name, seed):
    tables = random_tables(seed)
    before = compute(tables, AS_OF, set_name)
    after = compute(perturb_after(tables, AS_OF, seed), AS_OF, set_name)
    assert len(before) > 20
    pd.testing.assert_frame_equal(before, after, check_exact=False, rtol=1e-12)


def test_the_perturbation_is_seen_by_a_later_cutoff():
    """The same perturbation does move features at a cutoff after it (the test above can fail)."""
    tables = random_tables(0)
    later = AS_OF + timedelta(days=10)
    before = compute(tables, later, ALL_CRM)
    after = compute(perturb_after(tables, AS_OF, 0), later, ALL_CRM)
    assert len(after) > len(before)  # the newcomers
    merged = before.merge(after, on="customer_id", suffixes=("", "_p"))
    numeric = [c for c in before.columns[1:] if before[c].dtype.kind in "if"]
    changed = [
        c
        for c in numeric
        if not np.allclose(
            merged[c].to_numpy(float, na_value=np.nan),
            merged[f"{c}_p"].to_numpy(float, na_value=np.nan),
            equal_nan=True,
        )
    ]
    assert {
        "spend_sum_7d",
        "orders_count_7d",
        "returns_share",
        "household_spend_sum_total",
        "complaints_count_30d",
    } <= set(changed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_read_only_the_horizon(seed):
    tables = random_tables(seed)
    horizon, lookback = 60, 365
    base = labels(tables, AS_OF, horizon, lookback)
    # changing anything after the horizon changes no label
    moved = labels(
        perturb_after(tables, AS_OF + timedelta(days=horizon), seed), AS_OF, horizon, lookback
    )
    pd.testing.assert_series_equal(base, moved)
    # the label is exactly "no non-return order in (as_of, as_of + H]", computed from that window
    tx = tables["transactions"]
    day = tx["ts"].dt.normalize()
    buying = tx[
        (day > pd.Timestamp(AS_OF))
        & (day <= pd.Timestamp(AS_OF + timedelta(days=horizon)))
        & ~(tx["is_return"].fillna(False).astype(bool) | (tx["amount"] < 0))
    ]
    expected = (~base.index.isin(buying["customer_id"])).astype(int)
    assert base.to_numpy().tolist() == expected.tolist()
    assert 0 < base.mean() < 1
    # dropping an active customer's orders inside the horizon makes them churn
    stayer = base.index[base == 0][0]
    later = (tx["customer_id"] == stayer) & (day > pd.Timestamp(AS_OF))
    gone = tables | {"transactions": tx[~later]}
    assert labels(gone, AS_OF, horizon, lookback)[stayer] == 1


# --------------------------------------------------------------------------- hand-computed values

HAND_TX = [
    # customer, ts, order, product, category, quantity, amount, is_return
    ("A", "2024-03-31 23:59:59", "O1", "p1", "x", 2.0, 30.0, False),  # Sunday, days_ago 0
    ("A", "2024-03-31 08:00:00", "O1", "p2", "y", 1.0, 10.0, False),
    ("A", "2024-03-02 10:00:00", "O2", "p1", "x", 1.0, 20.0, False),  # Saturday, 29
    ("A", "2023-12-15 10:00:00", "O3", "p3", "x", 1.0, 50.0, False),  # Friday in Dec, 107
    ("A", "2024-03-10 10:00:00", "R1", "p1", "x", -1.0, -10.0, True),  # a return, 21
    ("A", "2022-04-05 10:00:00", "O5", "p4", "z", 1.0, 100.0, False),  # Tuesday, 726
    ("A", "2024-04-01 00:00:00", "O4", "p1", "x", 9.0, 1000.0, False),  # after the cutoff
    *[("B", "2023-03-28 12:00:00", f"B{i}", "p1", "x", 1.0, 5.0, False) for i in range(6)],  # 369
    ("C", "2024-03-01 10:00:00", "C1", "p1", "x", -1.0, -5.0, None),  # only a return
    ("D", "2023-09-13 10:00:00", "D1", "p9", None, None, 0.0, False),  # 200 days, value 0
]
HAND_EVENTS = [
    ("A", "2024-03-31 12:00:00", "Visit"),
    ("A", "2024-02-20 12:00:00", "visit"),
    ("A", "2024-03-21 12:00:00", "email_open"),
    ("A", "2024-03-21 12:05:00", "click"),
    ("A", "2023-12-22 12:00:00", "complaint"),
    ("A", "2024-04-01 00:00:00", "visit"),
]
HAND_CUSTOMERS = [("A", "2022-01-01", "GB"), ("B", "2024-05-01", "FR"), ("E", "2020-01-01", "DE")]
HAND_HOUSEHOLDS = [("A", "H1"), ("B", "H1"), ("E", "H1")]


@pytest.fixture(scope="module")
def hand() -> pd.DataFrame:
    tx = pd.DataFrame(HAND_TX, columns=TX_COLUMNS[:-1])
    tx["ts"] = pd.to_datetime(tx["ts"]).astype("datetime64[us]")
    tx["is_return"] = tx["is_return"].astype("boolean")
    ev = pd.DataFrame(HAND_EVENTS, columns=["customer_id", "ts", "event_type"])
    ev["ts"] = pd.to_datetime(ev["ts"]).astype("datetime64[us]")
    cust = pd.DataFrame(HAND_CUSTOMERS, columns=["customer_id", "signup_date", "country"])
    cust["signup_date"] = pd.to_datetime(cust["signup_date"]).dt.date
    hh = pd.DataFrame(HAND_HOUSEHOLDS, columns=["customer_id", "household_id"])
    tables = {"transactions": tx, "events": ev, "customers": cust, "households": hh}
    return compute(tables, AS_OF, ALL_CRM).set_index("customer_id")


def _check(row: pd.Series, expected: dict[str, float | None]) -> None:
    for name, value in expected.items():
        if value is None:
            assert pd.isna(row[name]), name
        else:
            assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_population_is_customers_with_an_order_by_the_cutoff(hand):
    assert sorted(hand.index) == ["A", "B", "D"]


def test_recency_tenure_and_windows(hand):
    _check(
        hand.loc["A"],
        {
            "days_since_last_order": 0,
            "days_since_first_order": 726,
            "orders_count_total": 4,
            "spend_sum_total": 210.0,
            "spend_mean_order": 52.5,
            "orders_count_7d": 1,
            "spend_sum_7d": 40.0,
            "orders_count_30d": 2,
            "spend_sum_30d": 60.0,
            "orders_count_90d": 2,
            "orders_count_180d": 3,
            "spend_sum_180d": 110.0,
            "orders_count_365d": 3,
            "orders_count_730d": 4,
            "spend_sum_730d": 210.0,
        },
    )
    _check(
        hand.loc["B"],
        {
            "days_since_last_order": 369,
            "orders_count_365d": 0,
            "spend_sum_365d": 0.0,
            "orders_count_730d": 6,
        },
    )


def test_rfm_points_with_caps(hand):
    # A: 0 days -> R 20; 4 orders -> F 16; 10 % of 210 = 21 -> M capped at 20
    _check(
        hand.loc["A"],
        {
            "rfm_recency_points": 20,
            "rfm_frequency_points": 16,
            "rfm_monetary_points": 20,
            "rfm_points": 56,
        },
    )
    # B: 369 days -> R 1; 6 orders -> 24 capped at 20; 10 % of 30 -> 3
    _check(
        hand.loc["B"],
        {
            "rfm_recency_points": 1,
            "rfm_frequency_points": 20,
            "rfm_monetary_points": 3,
            "rfm_points": 24,
        },
    )
    # D: 200 days -> R 3; one order -> 4; spend 0 -> 0
    _check(
        hand.loc["D"],
        {
            "rfm_recency_points": 3,
            "rfm_frequency_points": 4,
            "rfm_monetary_points": 0,
            "rfm_points": 7,
        },
    )


def test_returns(hand):
    # A: returned 10 of 210 bought; 1 return line of 6 lines; 1 return order id of 5 order ids
    _check(
        hand.loc["A"],
        {
            "returns_share": 10 / 210,
            "returns_share_365d": 10 / 110,
            "returns_lines_share": 1 / 6,
            "returns_orders_share": 1 / 5,
        },
    )
    _check(hand.loc["D"], {"returns_share": 0.0, "returns_lines_share": 0.0})


def test_inter_purchase_time(hand):
    gaps = [726 - 107, 107 - 29, 29 - 0]
    mean = sum(gaps) / 3
    std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / 2)
    _check(
        hand.loc["A"],
        {"interpurchase_days_mean": mean, "interpurchase_days_std": std, "days_overdue": 0 - mean},
    )
    # six orders on one day: gaps of 0
    _check(
        hand.loc["B"],
        {"interpurchase_days_mean": 0.0, "interpurchase_days_std": 0.0, "days_overdue": 369.0},
    )
    _check(
        hand.loc["D"],
        {"interpurchase_days_mean": None, "interpurchase_days_std": None, "days_overdue": None},
    )


def test_trends(hand):
    # last 90 days: O1 40 + O2 20; the 90 days before: O3 50
    _check(
        hand.loc["A"],
        {
            "spend_trend_diff_180d": 10.0,
            "spend_trend_ratio_180d": 60 / 50,
            "orders_trend_diff_180d": 1,
            "orders_trend_ratio_180d": 2.0,
        },
    )
    _check(
        hand.loc["B"],
        {
            "spend_trend_diff_180d": 0.0,
            "spend_trend_ratio_180d": None,
            "orders_trend_ratio_180d": None,
        },
    )


def test_basket_category_and_season(hand):
    shares = [100 / 210, 10 / 210, 100 / 210]  # x: 30 + 20 + 50, y: 10, z: 100
    _check(
        hand.loc["A"],
        {
            "lines_mean_order": 5 / 4,
            "units_mean_order": 6 / 4,
            "spend_max_order": 100.0,
            "spend_mean_order_365d": 110 / 3,
            "categories_distinct": 3,
            "products_distinct": 4,
            "category_share_max": 100 / 210,
            "category_entropy": -sum(p * math.log(p) for p in shares),
            "orders_share_weekend": 2 / 4,
            "orders_share_novdec": 1 / 4,
        },
    )
    _check(
        hand.loc["B"],
        {"category_share_max": 1.0, "category_entropy": 0.0, "orders_share_weekend": 0.0},
    )  # 2023-03-28 was a Tuesday
    _check(
        hand.loc["D"],
        {
            "category_share_max": None,
            "category_entropy": None,
            "units_mean_order": None,
            "categories_distinct": 0,
        },
    )


def test_engagement_customer_and_household(hand):
    _check(
        hand.loc["A"],
        {
            "visits_count_30d": 1,
            "visits_count_90d": 2,
            "email_opens_count_30d": 1,
            "clicks_count_30d": 1,
            "complaints_count_30d": 0,
            "complaints_count_90d": 0,
            "days_since_last_event": 0,
            "days_since_last_visit": 0,
            "clicks_per_open_90d": 1.0,
            "signup_tenure_days": 820,
            "household_customers_count": 2,
            "household_orders_count_total": 10,
            "household_orders_count_365d": 3,
            "household_spend_sum_total": 240.0,
            "household_spend_sum_365d": 110.0,
            "household_days_since_last_order": 0,
        },
    )
    assert hand.loc["A", "country"] == "GB"
    _check(
        hand.loc["B"],
        {
            "visits_count_90d": 0,
            "days_since_last_event": None,
            "clicks_per_open_90d": None,
            "signup_tenure_days": None,
            "household_spend_sum_total": 240.0,
        },
    )
    _check(
        hand.loc["D"],
        {
            "signup_tenure_days": None,
            "household_customers_count": 1,
            "household_spend_sum_total": 0.0,
        },
    )
    assert pd.isna(hand.loc["D", "country"])
