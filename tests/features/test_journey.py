"""Journey stages and prospects at a cutoff: stages on a hand-made history, point in time."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pandas as pd
import pytest

from features.definitions import feature_set, feature_set_from_spec
from features.journey import JOURNEY_STAGES, JourneyConfig, journey_at, journey_stages
from features.labels import first_purchase_label_sql
from features.prospects import prospect_feature_set, prospects_sql
from features.segments import LifecycleConfig

T = date(2024, 6, 30)


def _tx(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """customer, order id, date -> canonical transaction lines (one 10.00 line per order)."""
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "ts"])
    return frame.assign(
        ts=pd.to_datetime(frame["ts"]),
        amount=10.0,
        quantity=1.0,
        is_return=False,
        category="a",
        product_id="p",
    )


TRANSACTIONS = _tx(
    [
        ("first", "o1", "2024-06-01"),  # one order 29 days ago
        ("repeat", "o2", "2024-05-01"),
        ("repeat", "o3", "2024-06-20"),
        ("lapsing", "o4", "2024-02-01"),  # 150 days ago
        ("lapsed", "o5", "2023-10-01"),  # 273 days ago
        ("wonback", "o6", "2022-06-01"),
        ("wonback", "o7", "2023-01-01"),
        ("wonback", "o8", "2024-06-10"),  # ended a gap of more than 180 days
        *[("loyal", f"l{i}", f"2023-{m:02d}-15") for i, m in enumerate((3, 7, 9, 11))],
        *[("loyal", f"m{i}", f"2024-{m:02d}-15") for i, m in enumerate((1, 3, 5, 6))],
        ("later", "o9", "2024-07-05"),  # first order after T: a prospect at T
    ]
)
EVENTS = pd.DataFrame(
    {
        "customer_id": ["visitor", "visitor", "reg", "later", "first", "future"],
        "ts": pd.to_datetime(
            ["2024-06-01", "2024-06-25", "2024-03-01", "2024-06-28", "2024-05-30", "2024-07-02"]
        ),
        "event_type": ["visit", "Visit", "visit", "visit", "visit", "visit"],
    }
)
CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["reg", "signs_later", "first", "no_date"],
        "signup_date": pd.to_datetime(["2024-04-01", "2024-07-10", "2024-06-01", None]),
        "age_band": ["25-34", "35-44", "45-54", "18-24"],
    }
)


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.register("tx", TRANSACTIONS)
    c.register("ev", EVENTS)
    c.register("cu", CUSTOMERS)
    yield c
    c.close()


def test_every_stage_on_a_hand_made_history(con) -> None:
    stages = journey_at(con, "tx", T, events="ev", customers="cu")
    got = dict(zip(stages["customer_id"], stages["journey_stage"].astype(str), strict=True))
    assert got == {
        "visitor": "visitor",
        "reg": "registered",
        "later": "visitor",  # buys after T: a visitor at T
        "first": "first purchase",
        "repeat": "repeat",
        "loyal": "loyal",
        "wonback": "won back",
        "lapsing": "lapsing",
        "lapsed": "lapsed",
    }
    assert list(stages["journey_stage"].cat.categories) == list(JOURNEY_STAGES)


def test_thresholds_come_from_the_config(con) -> None:
    cfg = JourneyConfig(lifecycle=LifecycleConfig(lapsing_days=20, lapsed_days=300))
    stages = journey_at(con, "tx", T, events="ev", customers="cu", cfg=cfg)
    got = dict(zip(stages["customer_id"], stages["journey_stage"].astype(str), strict=True))
    assert got["first"] == "lapsing"  # 29 days > 20
    assert got["lapsed"] == "lapsing"  # 273 days <= 300


def test_pure_stages_split_new_and_active_by_orders() -> None:
    buyers = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "days_since_last_order": [5, 5],
            "days_since_first_order": [10, 400],
            "orders_count_total": [1, 3],
            "orders_count_365d": [1, 2],
        }
    )
    prospects = pd.DataFrame({"customer_id": ["c", "d"], "registered": [0, 1]})
    out = journey_stages(buyers, prospects)
    assert list(out["journey_stage"].astype(str)) == [
        "first purchase",
        "repeat",
        "visitor",
        "registered",
    ]
    with pytest.raises(ValueError, match="both a buyer and a prospect"):
        journey_stages(buyers, prospects.assign(customer_id=["a", "e"]))


def _prospects(con: duckdb.DuckDBPyConnection, events: str = "ev", customers: str = "cu"):
    fs = prospect_feature_set()
    sql = prospects_sql(T, "tx", fs, events=events, customers=customers)
    return con.execute(sql).df().set_index("customer_id")


def test_prospect_features_at_the_cutoff(con) -> None:
    p = _prospects(con)
    assert sorted(p.index) == ["later", "reg", "visitor"]  # no_date, signs_later: not known at T
    assert p.loc["visitor", "visits_count_7d"] == 1 and p.loc["visitor", "visits_count_30d"] == 2
    assert p.loc["visitor", "days_since_last_visit"] == 5
    assert p.loc["visitor", "days_since_first_event"] == 29
    assert p.loc["visitor", "registered"] == 0 and pd.isna(p.loc["visitor", "age_band"])
    assert p.loc["reg", "registered"] == 1 and p.loc["reg", "days_since_registration"] == 90
    assert p.loc["reg", "age_band"] == "25-34"


def test_rows_after_the_cutoff_change_no_prospect_feature(con) -> None:
    before = _prospects(con)
    later = pd.concat(
        [
            EVENTS,
            pd.DataFrame(
                {
                    "customer_id": ["visitor", "reg", "brand_new"],
                    "ts": pd.to_datetime(["2024-07-01", "2024-08-01", "2024-07-01"]),
                    "event_type": ["visit", "click", "visit"],
                }
            ),
        ]
    )
    customers = pd.concat(
        [
            CUSTOMERS,
            pd.DataFrame(
                {
                    "customer_id": ["visitor"],
                    "signup_date": pd.to_datetime(["2024-07-01"]),
                    "age_band": ["65+"],
                }
            ),
        ]
    )
    con.register("ev2", later)
    con.register("cu2", customers)
    con.register("tx2", pd.concat([TRANSACTIONS, _tx([("reg", "z1", "2024-07-02")])]))
    after = con.execute(
        prospects_sql(T, "tx2", prospect_feature_set(), events="ev2", customers="cu2")
    ).df()
    pd.testing.assert_frame_equal(before, after.set_index("customer_id"))


def test_first_purchase_label_is_the_first_order_in_the_horizon(con) -> None:
    labels = con.execute(first_purchase_label_sql("tx", T, 30)).df()
    assert labels["customer_id"].tolist() == ["later"]  # bought 5 days after T, nothing before
    assert labels["value"].tolist() == [10.0]
    assert con.execute(first_purchase_label_sql("tx", T, 4)).df().empty


def test_the_prospect_set_is_rebuilt_from_its_spec_with_its_attributes() -> None:
    default = prospect_feature_set()
    assert default.spec()["attributes"] == ["age_band"] and default.key == "prospects_v1"
    assert feature_set("prospects_v1") == default == feature_set_from_spec(default.spec())
    other = prospect_feature_set(["age_band", "region"])
    assert other.key.startswith("prospects_v1@attrs-")  # its own snapshot folder
    rebuilt = feature_set_from_spec(json.loads(json.dumps(other.spec())))
    assert rebuilt == other and rebuilt.names[-1] == "region"
    # a spec recorded before attributes were: the default set, checked by its fingerprint
    old = {k: v for k, v in default.spec().items() if k != "attributes"}
    assert feature_set_from_spec(old) == default
    with pytest.raises(ValueError, match="fingerprint"):
        feature_set_from_spec({**other.spec(), "attributes": None})


def test_the_prospect_set_stands_alone() -> None:
    with pytest.raises(ValueError, match="combines with no set"):
        feature_set("churn_v1+prospects_v1")
    with pytest.raises(ValueError, match="takes no attributes"):
        feature_set("churn_v1", attributes=["age_band"])
    assert feature_set("churn_v1").attributes is None
    assert "attributes" not in feature_set("churn_v1").spec()
