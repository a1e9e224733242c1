"""Customer attributes at historical cutoffs: as of T when the customers table carries history;
left out (unless allowed by name) when it holds only today's state; the manifest says which."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from features.build import (
    attribute_plan,
    compute_features,
    input_relations,
    plan_attributes,
    write_snapshot,
)
from features.definitions import CurrentStateAttributes, Feature, FeatureSet, feature_set
from features.sources import ingest, load_dataset
from features.store import StateDirs

T = date(2024, 1, 15)
LATER = date(2024, 6, 30)
CUSTOMER = feature_set("crm_customer_v1")


def _tx() -> pd.DataFrame:
    rows = [(c, pd.Timestamp("2023-12-01"), f"o-{c}", 10.0) for c in ("c1", "c2", "c3")]
    frame = pd.DataFrame(rows, columns=["customer_id", "ts", "order_id", "amount"])
    for col in ("product_id", "category"):
        frame[col] = None
    frame["quantity"] = 1.0
    frame["is_return"] = False
    return frame


def _values(column: pd.Series) -> dict:
    return {k: None if pd.isna(v) else v for k, v in column.items()}


def _history() -> pd.DataFrame:
    """c1 moves FR -> DE after T (on T+1); c2 FR -> ES on T exactly; c3 appears after T."""
    ts = pd.Timestamp
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c2", "c3"],
            "signup_date": [ts("2020-01-01")] * 4 + [ts("2023-11-01")],
            "country": ["FR", "DE", "FR", "ES", "IT"],
            "valid_from": [
                ts("2020-01-01"),
                ts("2024-01-16"),
                None,
                ts("2024-01-15 18:00"),
                ts("2024-02-01"),
            ],
            "valid_to": [ts("2024-01-16"), None, ts("2024-01-15 18:00"), None, None],
        }
    )


def _features(
    customers: pd.DataFrame, as_of: date, fs: FeatureSet = CUSTOMER, **policy: object
) -> tuple[pd.DataFrame, dict]:
    con = duckdb.connect()
    con.register("tx", _tx())
    con.register("cust", customers)
    plan = plan_attributes(fs, {"customers": "cust"}, CurrentStateAttributes(**policy), con)
    feats = compute_features(con, "tx", as_of, fs, **plan.relations(as_of))
    feats = feats.set_index("customer_id").drop(columns=list(plan.dropped))
    return feats, plan.manifest


def test_validity_dates_give_the_version_valid_at_the_cutoff():
    feats, manifest = _features(_history(), T)
    assert _values(feats["country"]) == {"c1": "FR", "c2": "ES", "c3": None}
    assert manifest["customers_history"] == "valid_from/valid_to"
    assert manifest["attributes"]["country"] == {"how": "as_of", "features": ["country"]}
    assert manifest["dropped_features"] == []
    later, _ = _features(_history(), LATER)
    assert _values(later["country"]) == {"c1": "DE", "c2": "ES", "c3": "IT"}


def test_a_version_after_the_cutoff_changes_no_feature_at_the_cutoff():
    before, _ = _features(_history(), T)
    changed = _history()
    changed.loc[len(changed)] = [
        "c2",
        pd.Timestamp("2020-01-01"),
        "PT",
        pd.Timestamp("2024-01-16"),
        None,
    ]
    changed.loc[changed["country"] == "ES", "valid_to"] = pd.Timestamp("2024-01-16")
    changed.loc[changed["customer_id"] == "c3", "country"] = "NL"
    after, _ = _features(changed, T)
    pd.testing.assert_frame_equal(before, after)


def test_update_times_give_the_last_state_before_the_cutoff():
    ts = pd.Timestamp
    log = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c3"],
            "signup_date": [ts("2020-01-01")] * 4,
            "country": ["FR", "DE", "ES", "IT"],
            "updated_at": [
                ts("2021-05-01"),
                ts("2024-01-16 00:00"),
                ts("2024-01-15 23:59"),
                ts("2024-03-01"),
            ],
        }
    )
    country_only = FeatureSet("country", tuple(f for f in CUSTOMER.features if f.name == "country"))
    feats, manifest = _features(log, T, country_only)
    assert manifest["customers_history"] == "updated_at"
    assert _values(feats["country"]) == {"c1": "FR", "c2": "ES", "c3": None}


def _current() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3"],
            "signup_date": pd.to_datetime(["2020-01-01", "2020-01-01", "2023-11-01"]),
            "country": ["DE", "ES", "IT"],
        }
    )


def test_current_state_only_drops_what_can_change_unless_allowed():
    feats, manifest = _features(_current(), T)
    assert list(feats.columns) == ["signup_tenure_days"]
    assert manifest["customers_history"] == "none"
    assert manifest["attributes"]["country"]["how"] == "dropped"
    assert manifest["attributes"]["signup_date"] == {
        "how": "fixed",
        "features": ["signup_tenure_days"],
    }
    assert manifest["dropped_features"] == ["country"]
    feats, manifest = _features(_current(), T, allow=("country",))
    assert _values(feats["country"]) == {"c1": "DE", "c2": "ES", "c3": "IT"}
    assert manifest["attributes"]["country"]["how"] == "current_state_allowed"
    assert manifest["dropped_features"] == []


def test_a_derived_feature_over_a_dropped_one_is_dropped_too():
    derived = Feature("is_fr", "derived", "CASE WHEN country = 'FR' THEN 1 ELSE 0 END", "integer")
    fs = FeatureSet("with_derived", (*CUSTOMER.features, derived))
    feats, manifest = _features(_current(), T, fs)
    assert manifest["dropped_features"] == ["country", "is_fr"]
    feats, manifest = _features(_history(), T, fs)
    assert feats["is_fr"].to_dict() == {"c1": 1, "c2": 0, "c3": 0}


def test_household_membership_is_current_state_unless_allowed():
    fs = feature_set("crm_household_v1")
    con = duckdb.connect()
    con.register("hh", pd.DataFrame({"customer_id": ["c1", "c2"], "household_id": ["h", "h"]}))
    plan = plan_attributes(fs, {"households": "hh"}, None, con)
    assert set(plan.dropped) == set(fs.names)
    assert plan.manifest["attributes"]["household"]["how"] == "dropped"
    plan = plan_attributes(
        fs, {"households": "hh"}, CurrentStateAttributes(allow=("household",)), con
    )
    assert plan.dropped == ()
    assert plan.manifest["attributes"]["household"]["how"] == "current_state_allowed"


def test_an_allowed_name_the_set_does_not_read_is_refused():
    with pytest.raises(ValueError, match=r"\['contry'\].*reads \['country'\]"):
        _features(_current(), T, allow=("contry",))


# ------------------------------------------------------------------ through ingest and snapshots


def _dataset(tmp_path: Path) -> Path:
    tx = _tx().drop(columns=["product_id", "category", "is_return"])
    tx.to_csv(tmp_path / "tx.csv", index=False)
    hist = _history().rename(columns={"valid_from": "effective", "valid_to": "expires"})
    dup = hist.iloc[[0]].assign(country="XX")  # the same customer and start twice: quarantined
    pd.concat([hist, dup]).to_csv(tmp_path / "customers.csv", index=False)
    (tmp_path / "ds.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "asof",
                "tables": {
                    "transactions": {"sources": [{"path": "tx.csv"}]},
                    "customers": {
                        "sources": [
                            {
                                "path": "customers.csv",
                                "columns": {"valid_from": "effective", "valid_to": "expires"},
                            }
                        ]
                    },
                },
            }
        )
    )
    return tmp_path / "ds.yaml"


def test_ingested_history_is_read_as_of_the_cutoff(tmp_path):
    state = StateDirs(tmp_path / "state")
    report = ingest(load_dataset(_dataset(tmp_path)), state)
    customers = report.tables["customers"]
    assert customers.accepted == 5
    assert customers.quarantined_by_reason == {"customer_id/valid_from: duplicate key": 1}
    plan = attribute_plan(state, "asof", CUSTOMER)
    assert plan.manifest["customers_history"] == "valid_from/valid_to"
    assert plan.dropped == ()
    snap = pd.read_parquet(write_snapshot(duckdb.connect(), state, "asof", CUSTOMER, T))
    assert _values(snap.set_index("customer_id")["country"]) == {
        "c1": "FR",
        "c2": "ES",
        "c3": None,
    }
    # serving reads today's version: one row per customer
    con = duckdb.connect()
    now = con.execute(
        f"SELECT customer_id, country FROM {input_relations(state, 'asof', CUSTOMER)['customers']}"
        " ORDER BY 1"
    ).fetchall()
    assert now == [("c1", "DE"), ("c2", "ES"), ("c3", "IT")]
