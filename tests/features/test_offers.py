"""Offers: eligibility and labels at a cutoff (SQL and pandas agree), profiles, derived offers,
the Online Retail offer-group rule."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.offers import (
    customer_profile_sql,
    derive_offers_sql,
    eligibility_matrix,
    offer_labels_sql,
    offers_relation_sql,
    products_relation_sql,
    profile_frame,
    recency_column,
    share_column,
    validate_offers,
)
from features.sources import load_dataset

T = date(2024, 3, 31)
H = 30
LOOKBACK = 365
CATEGORIES = ["W", "X", "Y", "Z"]


def _tx(rows: list[tuple]) -> pd.DataFrame:
    cols = ["customer_id", "ts", "order_id", "product_id", "category", "amount", "is_return"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["ts"] = pd.to_datetime(frame["ts"])
    return frame


def transactions() -> pd.DataFrame:
    """A: buys X and Y before T, Z and a tier-3 X in the horizon, W after it. B: Z (returned
    later: still bought) and X on T itself, Y one day after the horizon, a return of W in it.
    C: lapsed past the lookback. D: first order the day after T."""
    return _tx(
        [
            ("A", "2023-06-01 10:00", "o1", "pY2", "Y", 20.0, False),
            ("A", "2024-01-10 10:00", "o2", "pX1", "X", 10.0, False),
            ("A", "2024-04-10 10:00", "o3", "pZ1", "Z", 5.0, False),
            ("A", "2024-04-15 10:00", "o4", "pX3", "X", 30.0, False),
            ("A", "2024-06-01 10:00", "o5", "pW1", "W", 8.0, False),
            ("B", "2024-02-01 10:00", "o6", "pZ1", "Z", 5.0, False),
            ("B", "2024-02-03 10:00", "o6-R", "pZ1", "Z", -5.0, True),
            ("B", "2024-03-31 23:00", "o7", "pX1", "X", 10.0, False),
            ("B", "2024-04-05 10:00", "o8-R", "pW1", "W", -8.0, True),
            ("B", "2024-05-01 09:00", "o9", "pY2", "Y", 20.0, False),
            ("C", "2022-12-01 10:00", "o10", "pX1", "X", 10.0, False),
            ("C", "2024-04-02 10:00", "o11", "pZ1", "Z", 5.0, False),
            ("D", "2024-04-01 10:00", "o12", "pY2", "Y", 20.0, False),
        ]
    )


PRODUCTS = pd.DataFrame(
    {"product_id": ["pX1", "pX3", "pY2", "pZ1", "pW1"], "tier": [1, 3, 2, 1, 1]}
)
OFFERS = pd.DataFrame(
    {
        "offer_id": ["XS_W", "XS_X", "XS_Y", "XS_Z", "UP_1", "UP_2", "UP_3", "UP_Y3", "RET"],
        "category": ["W", "X", "Y", "Z", None, None, None, "Y", None],
        "kind": ["cross_sell"] * 4 + ["up_sell"] * 4 + ["retention"],
        "tier": [None] * 4 + [1, 2, 3, 3, None],
        "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        "cost": [0.1] * 9,
    }
)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.register("tx", transactions())
    c.register("products_raw", PRODUCTS)
    yield c
    c.close()


def labels(con, upsell_steps: int = 1, bought_within_days: int | None = None, tx: str = "tx"):
    offers = validate_offers(OFFERS)
    sql = offer_labels_sql(
        tx,
        offers_relation_sql(offers),
        T,
        H,
        LOOKBACK,
        products_relation_sql("products_raw"),
        upsell_steps,
        bought_within_days,
    )
    out = con.execute(sql).df()
    return {(r.customer_id, r.offer_id): int(r.taken) for r in out.itertuples()}


def test_labels_and_eligibility_on_a_hand_made_history(con):
    got = labels(con)
    assert got == {
        # A bought X, Y (tier 2 max): cross-sell W, Z; up-sell the next tier, 3; Y-tier-3 too
        ("A", "XS_W"): 0,  # bought after the horizon
        ("A", "XS_Z"): 1,
        ("A", "UP_3"): 1,  # a tier-3 product (pX3) in the horizon
        ("A", "UP_Y3"): 0,  # its tier-3 purchase was in X, not Y
        # B bought Z (a later return does not undo the purchase) and X on T itself, tier 1
        ("B", "XS_W"): 0,  # a return line is not a purchase
        ("B", "XS_Y"): 0,  # one day after the horizon
        ("B", "UP_2"): 0,
    }  # C lapsed before the lookback and D had no order by T: not in the population


def test_upsell_steps_and_lapsed_categories(con):
    more = labels(con, upsell_steps=2)
    assert ("B", "UP_3") in more and ("B", "UP_2") in more
    lapsed = labels(con, bought_within_days=200)  # A's Y is 304 days old: offered again
    assert lapsed[("A", "XS_Y")] == 0
    assert ("A", "UP_Y3") not in lapsed  # Y no longer "bought" within the window
    assert ("A", "XS_X") not in lapsed  # X bought 81 days before T


def test_labels_ignore_rows_after_the_horizon_and_features_rows_after_the_cutoff(con):
    base = labels(con)
    profile = con.execute(customer_profile_sql("tx", T, LOOKBACK)).df()
    later = transactions()
    later.loc[later["ts"] > pd.Timestamp("2024-04-30 23:59"), "category"] = "Z"
    extra = _tx([("A", "2024-05-15 10:00", "o99", "pZ1", "Z", 1.0, False)])
    con.register("tx2", pd.concat([later, extra], ignore_index=True))
    assert labels(con, tx="tx2") == base
    future = transactions()
    future.loc[future["ts"] > pd.Timestamp("2024-03-31 23:59"), "amount"] = 999.0
    con.register("tx3", future)
    pd.testing.assert_frame_equal(
        con.execute(customer_profile_sql("tx3", T, LOOKBACK)).df(), profile
    )


def test_profile_frame_shares_recency_and_tiers(con):
    long = con.execute(
        customer_profile_sql("tx", T, LOOKBACK, products_relation_sql("products_raw"))
    ).df()
    wide = profile_frame(long, CATEGORIES).set_index("customer_id")
    assert sorted(wide.index) == ["A", "B"]
    assert wide.loc["A", share_column("X")] == pytest.approx(0.5)
    assert wide.loc["A", share_column("Y")] == pytest.approx(0.5)
    assert wide.loc["B", share_column("X")] == pytest.approx(0.5)  # X and the kept Z line
    assert wide.loc["A", recency_column("X")] == 81  # 2024-01-10 .. 2024-03-31
    assert wide.loc["B", recency_column("X")] == 0
    assert np.isnan(wide.loc["A", recency_column("W")])
    assert wide.loc["A", "current_tier"] == 2 and wide.loc["A", "mean_tier"] == pytest.approx(1.5)


def test_pandas_eligibility_matches_sql(con):
    long = con.execute(
        customer_profile_sql("tx", T, LOOKBACK, products_relation_sql("products_raw"))
    ).df()
    wide = profile_frame(long, CATEGORIES)
    offers = validate_offers(OFFERS)
    for steps, within in ((1, None), (2, None), (1, 200)):
        rows, cols = np.nonzero(eligibility_matrix(wide, offers, steps, within))
        pandas_pairs = set(
            zip(
                wide["customer_id"].to_numpy()[rows],
                offers["offer_id"].to_numpy()[cols],
                strict=True,
            )
        )
        assert pandas_pairs == set(labels(con, steps, within)), (steps, within)


def test_validate_offers_rejects_what_would_rank_wrongly():
    offers = validate_offers(OFFERS)
    assert "RET" not in set(offers["offer_id"])  # retention is not a next-best offer
    assert list(offers["offer_id"]) == sorted(offers["offer_id"])
    bad = OFFERS.copy()
    bad.loc[1, "category"] = None
    with pytest.raises(ValueError, match="cross-sell offers need a category"):
        validate_offers(bad)
    bad = OFFERS.copy()
    bad.loc[5, "tier"] = None
    with pytest.raises(ValueError, match="up-sell offers need a tier"):
        validate_offers(bad)
    with pytest.raises(ValueError, match="duplicate offer ids"):
        validate_offers(pd.concat([OFFERS, OFFERS.head(1)]))


def test_derived_offers_one_per_group_valued_at_the_median_line(con):
    tx = _tx(
        [
            ("A", "2024-01-01", "o1", "p1", "BAGS", 10.0, False),
            ("A", "2024-01-02", "o2", "p1", "BAGS", 30.0, False),
            ("B", "2024-01-03", "o3", "p1", "BAGS", 2.0, False),
            ("B", "2024-01-03", "o3-R", "p1", "BAGS", -100.0, True),
            ("B", "2024-01-04", "o4", "p2", "MUGS", 4.0, False),
            ("B", "2024-01-04", "o4", "p3", "OTHER", 4.0, False),
            ("B", "2024-01-04", "o4", "POST", None, 18.0, False),
            ("C", "2024-06-01", "o5", "p2", "MUGS", 400.0, False),  # after `until`
        ]
    )
    con.register("groups", tx)
    out = con.execute(derive_offers_sql("groups", date(2024, 3, 31), 0.5, 1, ["OTHER"])).df()
    assert list(out["offer_id"]) == ["XS_BAGS", "XS_MUGS"]
    assert list(out["value"]) == [5.0, 2.0]  # 0.5 x median(10, 30, 2); 0.5 x 4
    assert list(out["kind"]) == ["cross_sell", "cross_sell"]
    few = con.execute(derive_offers_sql("groups", date(2024, 3, 31), 0.5, 2)).df()
    assert list(few["offer_id"]) == ["XS_BAGS"]


@pytest.mark.parametrize(
    ("stock_code", "description", "group"),
    [
        ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "LIGHTING"),
        ("85099B", "JUMBO BAG RED RETROSPOT", "BAGS"),
        ("22086", "PAPER CHAIN KIT 50'S CHRISTMAS ", "CHRISTMAS"),
        ("21212", "PACK OF 72 RETROSPOT CAKE CASES", "CAKE_BAKING"),
        ("22111", "SCOTTIE DOG HOT WATER BOTTLE", "BATH_WELLBEING"),
        ("84879", "ASSORTED COLOUR BIRD ORNAMENT", "HOME_DECOR"),
        ("90210", "SOMETHING UNHEARD OF", "OTHER"),
        ("POST", "POSTAGE", None),
        ("gift_0001_20", "Dotcomgiftshop Gift Voucher £20.00", None),
        ("BANK CHARGES", "Bank Charges", None),
        ("22423", None, None),
    ],
)
def test_online_retail_offer_groups_are_configuration(stock_code, description, group):
    dataset = load_dataset("online_retail_offers")
    sources = dataset.tables["transactions"].sources
    exprs = {src.columns["category"].expr for src in sources}
    assert len(exprs) == 1  # one rule for both files
    con = duckdb.connect()
    con.register("raw", pd.DataFrame({"StockCode": [stock_code], "Description": [description]}))
    got = con.execute(f"SELECT ({exprs.pop()}) FROM raw").fetchone()[0]
    assert got == group
