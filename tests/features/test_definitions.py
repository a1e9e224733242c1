"""Declarations: released sets frozen, consistent names, SQL that transpiles, the encoder."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlglot
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks
from sqlglot import exp

from features.definitions import (
    RELEASED_SETS,
    Feature,
    FeatureSet,
    RFMPointsConfig,
    UnseenCategoryEncoder,
    catalogue_markdown,
    category_share_features,
    feature_set,
)
from features.engine import check_feature_set, features_sql, to_spark_sql

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2024, 3, 31)
RELATIONS = {
    "events": "ev",
    "customers": "cu",
    "households": "hh",
    "campaign_history": "ch",
    "offers": "of",
}

#: sha256 of (name, level, sql, dtype, window, default) of each released set: never edit one,
#: declare a new version (churn_v2) instead.
FROZEN = {
    "churn_v1": "001af4af9334577004de26c2423ba38e735a207ad5c0532458254717d80b9602",
    "crm_v1": "c5d887a7f87f1814e26b42070d9eaf62e72c0ade268963d2d841af4881b0d276",
    "crm_engagement_v1": "d52cd8e7eaec4cb528780047fd455db26da7e08dfc3469817bf26ceea71680ed",
    "crm_customer_v1": "9d9935e17a927c1cb11fc553efea214bf00ff39a50edc7af659156274075c8ad",
    "crm_household_v1": "0706d448b6935fdd811de56d9d385a57f18ffde71000b310a561eaf1f0eed9e0",
    "context_v1": "009cd9da610d57f3b6333308e545d40354b54d9f85e406fa62f924236eb0bfa8",
    "crm_contacts_v1": "4bd19c5d0d2a353b2180df4b9f121a5f4557f80ed959de916b1cea8ac12abd40",
    "crm_contact_offers_v1": "c2ddfeb3f695daca26efc74acac2f780b5ee373cf81e1563d7651c6d7878bc95",
}


def _fingerprint(fs: FeatureSet) -> str:
    rows = [[f.name, f.level, f.sql, f.dtype, f.window_days, f.default] for f in fs.features]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@pytest.mark.parametrize("name", RELEASED_SETS)
def test_released_sets_are_never_edited(name):
    assert _fingerprint(feature_set(name)) == FROZEN[name], (
        f"{name} changed: released sets are frozen, declare a new version instead"
    )


def test_churn_v1_keeps_its_features_in_order():
    assert feature_set("churn_v1").names == [
        "days_since_last_order",
        "days_since_first_order",
        "orders_count_total",
        "spend_sum_total",
        "spend_mean_order",
        "orders_count_30d",
        "spend_sum_30d",
        "orders_count_90d",
        "spend_sum_90d",
        "orders_count_365d",
        "spend_sum_365d",
        "orders_count_730d",
        "spend_sum_730d",
        "returns_share",
        "categories_distinct",
        "rfm_points",
    ]


def test_crm_v1_covers_every_family_and_window():
    fs = feature_set("crm_v1")
    assert {f.family for f in fs.features} == {
        "rfm",
        "tenure",
        "trend",
        "interpurchase",
        "basket",
        "category",
        "returns",
        "season",
    }
    for w in (7, 30, 90, 180, 365):
        assert {f"orders_count_{w}d", f"spend_sum_{w}d"} <= set(fs.names)
    assert fs.inputs == ["transactions"]
    assert fs.categorical_names == []


@pytest.mark.parametrize("name", RELEASED_SETS)
def test_names_are_consistent_with_windows_and_unique(name):
    fs = feature_set(name)
    check_feature_set(fs)
    for f in fs.features:
        m = re.search(r"_(\d+)d$", f.name)
        if m:
            assert f.window_days == int(m.group(1)), f.name
        assert f.description, f.name


def test_a_name_means_the_same_feature_in_every_set():
    seen: dict[str, Feature] = {}
    for name in RELEASED_SETS:
        for f in feature_set(name).features:
            key = (f.name, f.level, f.sql, f.dtype, f.window_days)
            assert seen.setdefault(f.name, key) == key, f.name


def test_combined_sets_and_unknown_names():
    both = feature_set("crm_v1+crm_engagement_v1+crm_customer_v1+crm_household_v1")
    assert both.names[: len(feature_set("crm_v1").names)] == feature_set("crm_v1").names
    assert both.inputs == ["transactions", "customers", "events", "households"]
    assert both.categorical_names == ["country"]
    with pytest.raises(KeyError, match="unknown feature set"):
        feature_set("crm_v9")
    names = feature_set("churn_v1+crm_v1").names
    assert len(names) == len(set(names)) == len(feature_set("crm_v1").names)


def test_history_window_inside_the_windows_is_not_duplicated():
    fs = feature_set("crm_v1", RFMPointsConfig(history_days=365))
    check_feature_set(fs)
    assert fs.names.count("orders_count_365d") == 1


def test_derived_features_must_use_base_features_of_the_set():
    bad = FeatureSet("bad", (Feature("x", "derived", "spend_sum_total * 2"),))
    with pytest.raises(ValueError, match="spend_sum_total"):
        check_feature_set(bad)
    with pytest.raises(ValueError, match="unique"):
        check_feature_set(FeatureSet("dup", (Feature("a", "orders", "count(*)"),) * 2))


def test_a_set_needs_its_optional_relations():
    with pytest.raises(ValueError, match="'events' relation"):
        features_sql("tx", AS_OF, feature_set("crm_engagement_v1"))


def test_the_cheap_set_does_not_pay_for_window_functions():
    assert "lag(" not in features_sql("tx", AS_OF, feature_set("churn_v1"))
    assert "order_weekday" not in features_sql("tx", AS_OF, feature_set("churn_v1"))
    assert "lag(" in features_sql("tx", AS_OF, feature_set("crm_v1"))


def _date_args_only(sql: str) -> None:
    for node in sqlglot.parse_one(sql, read="duckdb").find_all(exp.DateDiff):
        for arg in (node.this, node.expression):
            is_date = (isinstance(arg, exp.Cast) and arg.to.this == exp.DataType.Type.DATE) or (
                isinstance(arg, exp.Cast | exp.Date | exp.Literal) and "DATE" in arg.sql().upper()
            )
            assert is_date, f"date_diff on a non-DATE argument: {node.sql()}"


@pytest.mark.parametrize(
    "name", [*RELEASED_SETS, "crm_v1+crm_engagement_v1+crm_customer_v1+crm_household_v1"]
)
def test_sql_transpiles_to_spark_without_the_known_traps(name):
    fs = feature_set(name)
    sql = features_sql("tx", AS_OF, fs, **RELATIONS)
    _date_args_only(sql)
    spark = to_spark_sql(sql)
    for trap in ("EXCLUDE", "EXCEPT", "MATERIALIZED", "DAYOFWEEK", "ISODOW"):
        assert trap not in spark.upper(), trap
    sqlglot.parse_one(spark, read="spark")  # valid Spark SQL
    for f in fs.features:  # every divisor guarded: Spark 4 raises on division by zero
        for div in sqlglot.parse_one(f.sql, read="duckdb").find_all(exp.Div):
            assert isinstance(div.expression, exp.Nullif), f"{f.name}: {div.sql()} unguarded"


def test_docs_catalogue_is_rendered_from_the_declarations():
    doc = (ROOT / "docs" / "features.md").read_text()
    assert catalogue_markdown() in doc, "regenerate: python -m features.definitions > catalogue"


def test_catalogue_lists_every_feature():
    text = catalogue_markdown()
    for name in RELEASED_SETS:
        for f in feature_set(name).features:
            assert f"| `{f.name}` |" in text


def test_columns_follow_the_declaration_order():
    from tests.features.test_point_in_time import compute, random_tables

    name = "crm_v1+crm_engagement_v1+crm_customer_v1+crm_household_v1"
    frame = compute(random_tables(0, n_customers=5), AS_OF, name)
    assert list(frame.columns) == ["customer_id", *feature_set(name).names]


def test_configured_category_shares():
    tx = pd.DataFrame(
        {
            "customer_id": ["A"] * 4,
            "order_id": ["o1", "o1", "o2", "o2-R"],
            "ts": pd.to_datetime(["2024-03-01"] * 2 + ["2024-03-05", "2024-03-06"]),
            "product_id": ["p"] * 4,
            "category": ["Home & Garden", "toys", "toys", "toys"],
            "quantity": [1.0, 1.0, 1.0, -1.0],
            "amount": [30.0, 10.0, 60.0, -60.0],
            "is_return": [False, False, False, True],
        }
    )
    extra = category_share_features(["Home & Garden", "toys", "o'brien"])
    assert [f.name for f in extra] == [
        "spend_share_home_garden_total",
        "spend_share_toys_total",
        "spend_share_o_brien_total",
    ]
    fs = FeatureSet("shop_v1", (*feature_set("churn_v1").features, *extra))
    con = duckdb.connect()
    con.register("tx", tx)
    row = con.execute(features_sql("tx", AS_OF, fs)).df().iloc[0]
    assert row["spend_share_home_garden_total"] == pytest.approx(0.3)
    assert row["spend_share_toys_total"] == pytest.approx(0.7)
    assert row["spend_share_o_brien_total"] == 0.0


# --------------------------------------------------------------------------- encoder


@parametrize_with_checks([UnseenCategoryEncoder(), UnseenCategoryEncoder(min_frequency=2)])
def test_encoder_follows_the_sklearn_contract(estimator, check):
    check(estimator)


def test_encoder_maps_unseen_and_rare_categories_to_other():
    train = pd.DataFrame({"country": ["GB", "GB", "FR", None, "NL"]})
    enc = UnseenCategoryEncoder(min_frequency=1).fit(train)
    assert enc.categories_[0].tolist() == ["FR", "GB", "NL", "__missing__", "__other__"]
    codes = enc.transform(pd.DataFrame({"country": ["GB", "DE", None, "FR", np.nan]}))
    assert codes.ravel().tolist() == [1, 4, 3, 0, 3]
    rare = clone(enc).set_params(min_frequency=2).fit(train)
    assert rare.categories_[0].tolist() == ["GB", "__other__"]
    assert rare.transform(train).ravel().tolist() == [0, 0, 1, 1, 1]
    assert rare.get_feature_names_out().tolist() == ["country"]
