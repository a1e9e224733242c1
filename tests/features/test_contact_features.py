"""Contact-history features (crm_contacts_v1, crm_contact_offers_v1): hand values, the
response-time rule, point in time on outcomes that arrive after T, relations from the catalog."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pandas as pd
import pytest

from features.build import attribute_plan, compute_features, input_relations
from features.definitions import (
    CONTACT_RESPONSE_DAYS,
    FeatureSet,
    contact_reason_features,
    feature_set,
)
from features.engine import features_sql, to_spark_sql
from features.store import StateDirs
from tests.features.test_point_in_time import compute, random_tables

T = date(2024, 3, 31)
BOTH = "crm_contacts_v1+crm_contact_offers_v1"
TX = [
    ("A", "2020-01-01 10:00:00", "o1", 10.0),
    ("B", "2020-01-01 10:00:00", "o2", 10.0),
    ("C", "2024-03-31 23:59:59", "o3", 10.0),
]
# campaign, customer, offer, ts (send), group, responded, reason; days_ago in the comment
CONTACTS = [
    ("K1", "A", "RET_01", "2024-03-31 23:59:59", "treatment", True, None),  # 0: outcome unknown
    ("K2", "A", "XS_1", "2024-03-02 00:00:00", "Treatment_B ", False, "price"),  # 29: unknown
    ("K3", "A", "XS_1", "2024-03-01 23:59:59", "treatment", False, " Price "),  # 30: negative
    ("K4", "A", "RET_01", "2024-01-01 10:00:00", "treatment", True, None),  # 90: responded
    ("K5", "A", "UP_1", "2023-06-01 10:00:00", "treatment", False, ""),  # 304: no reason
    ("K6", "A", "RET_01", "2023-03-01 10:00:00", "treatment", False, "unsubscribed"),  # 396
    ("K7", "A", "GONE", "2024-02-01 10:00:00", "treatment", True, None),  # 59, unknown offer
    ("K8", "A", None, "2024-02-01 10:00:00", "treatment", False, "no need"),  # 59, no offer
    ("K9", "A", "RET_01", "2024-03-20 10:00:00", "CONTROL", True, None),  # control: ignored
    ("K10", "A", "RET_01", "2024-04-01 00:00:00", "treatment", True, None),  # after T
    ("K1", "B", "RET_01", "2024-03-20 10:00:00", "control", True, None),  # only control
    ("K1", "Z", "RET_01", "2024-03-20 10:00:00", "treatment", True, None),  # no order: no row
]
OFFERS = [("RET_01", "retention"), ("XS_1", " Cross_Sell"), ("UP_1", "up_sell")]


def tables() -> dict[str, pd.DataFrame]:
    tx = pd.DataFrame(TX, columns=["customer_id", "ts", "order_id", "amount"])
    tx["ts"] = pd.to_datetime(tx["ts"]).astype("datetime64[us]")
    tx = tx.assign(product_id="p", category="x", quantity=1.0, is_return=False)
    ch = pd.DataFrame(
        CONTACTS,
        columns=["campaign_id", "customer_id", "offer_id", "ts", "group", "responded", "reason"],
    )
    ch["ts"] = pd.to_datetime(ch["ts"]).astype("datetime64[us]")
    offers = pd.DataFrame(OFFERS, columns=["offer_id", "kind"]).assign(value=1.0)
    return {"transactions": tx, "campaign_history": ch, "offers": offers}


def run(frames: dict[str, pd.DataFrame], fs: FeatureSet, as_of: date = T) -> pd.DataFrame:
    con = duckdb.connect()
    for name, frame in frames.items():
        con.register(name, frame)
    sql = features_sql(
        "transactions", as_of, fs, campaign_history="campaign_history", offers="offers"
    )
    return con.execute(sql).df().set_index("customer_id")


def _check(row: pd.Series, expected: dict[str, float | None]) -> None:
    for name, value in expected.items():
        if value is None:
            assert pd.isna(row[name]), name
        else:
            assert row[name] == pytest.approx(value, abs=1e-12), name


def test_the_response_delay_is_thirty_days():
    assert CONTACT_RESPONSE_DAYS == 30
    for f in feature_set(BOTH).features:
        if "respon" in f.name:
            assert f"days_ago >= {CONTACT_RESPONSE_DAYS}" in f.sql, f.name
            assert "known 30 days after the send date" in f.description, f.name


def test_hand_computed_contact_features():
    out = run(tables(), feature_set(BOTH))
    assert sorted(out.index) == ["A", "B", "C"]  # the population: an order by T
    _check(
        out.loc["A"],
        {
            "days_since_last_contact": 0,
            "contacts_count_30d": 2,  # K1, K2
            "contacts_count_90d": 5,  # + K3, K7, K8 (K4 is T-90: out)
            "contacts_count_365d": 7,  # + K4, K5
            "contacts_count_total": 8,  # + K6; K9 control, K10 after T
            "responses_count_total": 2,  # K4, K7 (K1 too recent to be known)
            "responses_count_365d": 2,
            "negative_responses_count_total": 3,  # K3, K6, K8 (K2 unknown, K5 no reason)
            "negative_responses_count_365d": 2,  # K3, K8
            "response_rate_365d": 2 / 5,  # K4, K7 of K3, K4, K5, K7, K8
            "days_since_last_response": 59,
            "days_since_last_negative_response": 30,
            "retention_contacts_count_total": 3,  # K1, K4, K6
            "retention_responses_count_total": 1,
            "retention_negative_responses_count_total": 1,
            "days_since_last_retention_contact": 0,
            "cross_sell_contacts_count_total": 2,  # kind ' Cross_Sell' normalised
            "cross_sell_responses_count_total": 0,
            "cross_sell_negative_responses_count_total": 1,  # K3 only: K2 is unknown
            "days_since_last_cross_sell_contact": 29,
            "up_sell_contacts_count_total": 1,
            "up_sell_responses_count_total": 0,
            "up_sell_negative_responses_count_total": 0,  # an empty reason is no reason
            "days_since_last_up_sell_contact": 304,
        },
    )
    never = {
        "days_since_last_contact": None,
        "contacts_count_total": 0,
        "responses_count_total": 0,
        "response_rate_365d": None,
        "days_since_last_negative_response": None,
        "retention_contacts_count_total": 0,
        "days_since_last_retention_contact": None,
    }
    _check(out.loc["B"], never)  # a control row is not a contact
    _check(out.loc["C"], never)


def test_reason_features_for_a_configured_list():
    extra = contact_reason_features(["Price", "unsubscribed", "no need", "it's too much"])
    assert [f.name for f in extra] == [
        "negative_responses_price_count_total",
        "negative_responses_unsubscribed_count_total",
        "negative_responses_no_need_count_total",
        "negative_responses_it_s_too_much_count_total",
    ]
    fs = FeatureSet("shop_contacts_v1", (*feature_set("crm_contacts_v1").features, *extra))
    row = run(tables(), fs).loc["A"]
    _check(
        row,
        {
            "negative_responses_price_count_total": 1,  # K3 (' Price '); K2 not known yet
            "negative_responses_unsubscribed_count_total": 1,
            "negative_responses_no_need_count_total": 1,
            "negative_responses_it_s_too_much_count_total": 0,
        },
    )
    to_spark_sql(features_sql("tx", T, fs, campaign_history="ch"))  # transpiles


def test_sets_need_their_relations():
    with pytest.raises(ValueError, match="'campaign_history' relation"):
        features_sql("tx", T, feature_set("crm_contacts_v1"))
    with pytest.raises(ValueError, match="'offers' relation"):
        features_sql("tx", T, feature_set("crm_contact_offers_v1"), campaign_history="ch")
    assert feature_set(BOTH).inputs == ["transactions", "campaign_history", "offers"]
    assert feature_set("churn_v1+crm_contacts_v1").inputs == ["transactions", "campaign_history"]


@pytest.mark.parametrize("seed", [0, 1])
def test_outcomes_arriving_after_t_change_nothing(seed):
    """Responses and reasons of contacts sent T-29 .. T are not known at T: changing them moves
    no feature at T, and does at T+30 (so the check is not vacuous)."""
    base = random_tables(seed)
    ch = base["campaign_history"].copy()
    days = (pd.Timestamp(T) - ch["ts"].dt.normalize()).dt.days
    recent = (days >= 0) & (days < CONTACT_RESPONSE_DAYS)
    assert recent.sum() >= 3
    ch.loc[recent, "responded"] = ~ch.loc[recent, "responded"]
    ch.loc[recent, "reason"] = ch.loc[recent, "responded"].map({True: None, False: "price"})
    moved = base | {"campaign_history": ch}
    pd.testing.assert_frame_equal(compute(base, T, BOTH), compute(moved, T, BOTH))
    later = T + timedelta(days=CONTACT_RESPONSE_DAYS)
    assert not compute(base, later, BOTH).equals(compute(moved, later, BOTH))


def test_the_shared_point_in_time_data_exercise_the_contact_features():
    """tests/features/test_point_in_time.py perturbs rows after T for every released set: its
    data give these features values to lose (contacts, responses, negatives, every kind)."""
    out = compute(random_tables(0), T, BOTH)
    for name in (
        "contacts_count_30d",
        "responses_count_total",
        "negative_responses_count_total",
        "retention_responses_count_total",
        "cross_sell_negative_responses_count_total",
        "up_sell_contacts_count_total",
    ):
        assert out[name].gt(0).any(), name
    assert out["days_since_last_contact"].isna().any()
    assert out["response_rate_365d"].between(0, 1).any()


def test_build_reads_campaign_history_and_offers_from_the_catalog(tmp_path):
    state = StateDirs(tmp_path)
    folder = state.data("demo")
    folder.mkdir(parents=True)
    frames = tables()
    for name, frame in frames.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    fs = feature_set("churn_v1+" + BOTH)
    relations = input_relations(state, "demo", fs)
    assert sorted(relations) == ["campaign_history", "offers"]
    plan = attribute_plan(state, "demo", fs)
    assert plan.dropped == ()
    con = duckdb.connect()
    source = f"read_parquet('{folder / 'transactions.parquet'}')"
    out = compute_features(con, source, T, fs, **plan.relations(T)).set_index("customer_id")
    assert out.loc["A", "negative_responses_count_total"] == 3
    (folder / "offers.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="reads offers"):
        input_relations(state, "demo", fs)
