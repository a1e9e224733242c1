"""The single customer view, applied (issue 13.3): a dataset's ``identity`` option resolves one
person's duplicate records to one master id at ingest, before features, labels and scores.

One synthetic person is written as two records (same e-mail, orders, events and contacts split
between the ids); after resolution they are featured once, under the master id, with features
equal to those of the same person written as one record. Consent is never widened by a merge;
the option off gives two rows; a bad option value is one line naming its key.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from features.build import (
    snapshot_sql,
    transactions_source,
    write_customer_links,
    write_snapshot,
)
from features.definitions import feature_set
from features.engine import churn_label_sql
from features.linkage import (
    SOURCE_ID,
    applied_merge_map,
    combine_customers,
)
from features.sources import ingest, load_dataset
from features.store import StateDirs

T = date(2024, 6, 30)
FS = feature_set(
    "crm_v1+crm_engagement_v1+crm_customer_v1+crm_household_v1+crm_contacts_v1",
)
PERSON, DUPLICATE = "101", "102"


def _customers(split: bool) -> pd.DataFrame:
    """The person (101, and as 102 when split), a household member (103) and a stranger (200)."""
    person = {
        "customer_id": PERSON,
        "first_name": "Ann",
        "last_name": "Smith",
        "email": "ann.smith@example.com",
        "address": "1 High Street",
        "postcode": "AB1 2CD",
        "country": "GB",
        "signup_date": "2021-03-01",
        "consent_email": "true",
        "consent_sms": "true",
        "consent_phone": "true",
    }
    rows = [person]
    if split:  # the same person registered again: later sign-up, no e-mail consent, sms unknown
        rows.append(
            {
                **person,
                "customer_id": DUPLICATE,
                "first_name": "ANN",
                "address": "1 High St",
                "country": "FR",
                "signup_date": "2022-07-15",
                "consent_email": "false",
                "consent_sms": "",
                "consent_phone": "true",
            }
        )
    rows.append(
        {
            **person,
            "customer_id": "103",
            "first_name": "Bob",
            "email": "bob.smith@example.com",
            "signup_date": "2020-01-10",
        }
    )
    rows.append(
        {
            "customer_id": "200",
            "first_name": "Carl",
            "last_name": "Jones",
            "email": "carl@example.org",
            "address": "9 Low Road",
            "postcode": "ZZ9 9ZZ",
            "country": "GB",
            "signup_date": "2019-05-05",
            "consent_email": "true",
            "consent_sms": "false",
            "consent_phone": "false",
        }
    )
    return pd.DataFrame(rows)


def _owner(n: int, split: bool) -> str:
    """Whose id the person's n-th row is under: alternate records when split."""
    return DUPLICATE if split and n % 2 else PERSON


def _transactions(split: bool) -> pd.DataFrame:
    rows = []
    days = ["2023-01-05", "2023-06-10", "2023-11-20", "2024-02-14", "2024-05-01", "2024-06-28"]
    for n, day in enumerate(days):
        for line, (cat, amount) in enumerate((("books", 20.0 + n), ("music", 5.5 * (n + 1)))):
            rows.append((_owner(n, split), f"{day} 1{line}:00:00", f"P{n}", cat, 1, amount))
    rows.append((_owner(1, split), "2023-06-20 09:00:00", "P1", "books", -1, -21.0))  # a return
    rows.append(("103", "2024-03-03 12:00:00", "B1", "books", 2, 40.0))
    rows.append(("200", "2024-01-01 12:00:00", "C1", "music", 1, 15.0))
    rows.append(("200", "2024-07-15 12:00:00", "C2", "music", 1, 15.0))  # after T
    return pd.DataFrame(
        rows, columns=["customer_id", "ts", "order_id", "category", "quantity", "amount"]
    )


def _events(split: bool) -> pd.DataFrame:
    days = ["2024-05-02", "2024-06-01", "2024-06-15", "2024-06-20", "2024-06-29"]
    kinds = ["visit", "email_open", "click", "visit", "complaint"]
    rows = [
        (_owner(n, split), f"{d} 08:00:00", k)
        for n, (d, k) in enumerate(zip(days, kinds, strict=True))
    ]
    rows.append(("200", "2024-06-01 08:00:00", "visit"))
    return pd.DataFrame(rows, columns=["customer_id", "ts", "event_type"])


def _contacts(split: bool) -> pd.DataFrame:
    rows = [
        ("CMP1", _owner(0, split), "2024-01-10 00:00:00", "treatment", True, ""),
        ("CMP2", _owner(1, split), "2024-04-01 00:00:00", "treatment", False, "price"),
        ("CMP3", _owner(1, split), "2024-06-25 00:00:00", "treatment", False, ""),
        ("CMP2", "200", "2024-04-01 00:00:00", "control", False, ""),
    ]
    return pd.DataFrame(
        rows, columns=["campaign_id", "customer_id", "ts", "group", "responded", "reason"]
    )


def _dataset(folder: Path, split: bool, identity: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (
        ("customers", _customers(split)),
        ("tx", _transactions(split)),
        ("events", _events(split)),
        ("contacts", _contacts(split)),
    ):
        frame.to_csv(folder / f"{name}.csv", index=False)
    ts = "%Y-%m-%d %H:%M:%S"
    config: dict[str, Any] = {
        "name": "scv",
        "tables": {
            "transactions": {"ts_format": ts, "sources": [{"path": "tx.csv"}]},
            "customers": {"sources": [{"path": "customers.csv"}]},
            "events": {"ts_format": ts, "sources": [{"path": "events.csv"}]},
            "campaign_history": {"ts_format": ts, "sources": [{"path": "contacts.csv"}]},
        },
    }
    if identity is not None:
        config["identity"] = identity
    (folder / "ds.yaml").write_text(yaml.safe_dump(config))
    return folder / "ds.yaml"


def _text(values: pd.Series) -> list[str]:
    """Keys as comparable text (timestamps parsed: parquet and CSV write them differently)."""
    if values.name == "ts":
        values = pd.to_datetime(values)
    return [str(v) for v in values]


def _features(state: StateDirs) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        frame = con.execute(snapshot_sql(state, "scv", FS, T)).df()
    finally:
        con.close()
    return frame.set_index("customer_id")


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> tuple[StateDirs, Any]:
    """The split person, ingested with the identity option on (merge map derived)."""
    root = tmp_path_factory.mktemp("resolved")
    state = StateDirs(root / "state")
    report = ingest(load_dataset(_dataset(root, True, {"resolve_duplicates": True})), state)
    return state, report


@pytest.fixture(scope="module")
def unsplit(tmp_path_factory: pytest.TempPathFactory) -> StateDirs:
    """The same person written as one record (households linked as `patron customers link`)."""
    root = tmp_path_factory.mktemp("unsplit")
    state = StateDirs(root / "state")
    ingest(load_dataset(_dataset(root, False)), state)
    write_customer_links(state, "scv")
    return state


def test_a_split_person_is_featured_once_with_the_unsplit_features(resolved, unsplit):
    state, report = resolved
    got, want = _features(state), _features(unsplit)
    assert list(got.index) == ["101", "103", "200"]  # 102 is featured under its master, once
    assert list(got.index) == list(want.index)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
    # the features read every table: orders, events, contacts, attributes and the household
    person = got.loc[PERSON]
    assert person["orders_count_total"] == 6
    assert person["visits_count_90d"] == 2 and person["contacts_count_total"] == 3
    assert person["country"] == "GB"  # the master record's, not the duplicate's
    assert person["household_customers_count"] == 2  # Ann and Bob: persons, not records
    # labels too: churn at T over 90 days, as the training families compute them
    labels = [
        duckdb.connect()
        .execute(churn_label_sql(transactions_source(s, "scv"), date(2024, 3, 31), 90, 365))
        .df()
        for s in (state, unsplit)
    ]
    pd.testing.assert_frame_equal(labels[0], labels[1])
    assert report.identity["merged_records"] == 1
    assert report.identity["merged_by_rule"] == {"email": 1}
    assert report.identity["customers"] == {"records": 4, "persons": 3}
    assert report.to_dict()["identity"]["persons"] == 3


def test_every_merge_is_explained_and_reversible(resolved, tmp_path):
    state, _ = resolved
    data = state.data("scv")
    identity = pd.read_parquet(data / "identity_map.parquet").set_index("customer_id")
    row = identity.loc[DUPLICATE]
    assert (row["master_id"], row["match_rule"], row["score"]) == (PERSON, "email", 1.0)
    assert "email same" in row["evidence"] and row["matched_to"] == PERSON
    assert identity.loc["200", "match_rule"] == "none" and identity.loc["200", "master_id"] == "200"
    # each re-keyed row keeps its own id: grouping by it gives back the split records exactly
    for table, key, written in (
        ("transactions", "order_id", _transactions),
        ("events", "ts", _events),
        ("campaign_history", "ts", _contacts),
    ):
        rekeyed = pd.read_parquet(data / f"{table}.parquet")
        assert set(rekeyed["customer_id"]) <= {"101", "103", "200"}
        original = written(True)
        back = sorted(zip(rekeyed[SOURCE_ID], _text(rekeyed[key]), strict=True))
        want = sorted(zip(original["customer_id"], _text(original[key]), strict=True))
        assert back == want, table
    # the snapshot keeps the applied map beside it
    snap = write_snapshot(duckdb.connect(), state, "scv", FS, T)
    assert pd.read_parquet(snap.parent / "identity_map.parquet").equals(
        pd.read_parquet(data / "identity_map.parquet")
    )
    # the option off restores the original keys: two rows for the person, no map beside
    off = tmp_path / "off"
    off_state = StateDirs(off / "state")
    ingest(load_dataset(_dataset(off, True)), off_state)
    write_customer_links(off_state, "scv")
    rows = _features(off_state)
    assert list(rows.index) == ["101", "102", "103", "200"]
    assert rows.loc[PERSON, "orders_count_total"] == 3
    assert rows.loc[DUPLICATE, "orders_count_total"] == 3
    assert not (off_state.data("scv") / "identity_map.parquet").exists()


def test_switching_the_option_off_and_reingesting_removes_the_map(tmp_path):
    state = StateDirs(tmp_path / "state")
    ingest(load_dataset(_dataset(tmp_path, True, {"resolve_duplicates": True})), state)
    snap = write_snapshot(duckdb.connect(), state, "scv", feature_set("crm_v1"), T)
    assert (snap.parent / "identity_map.parquet").exists()
    ingest(load_dataset(_dataset(tmp_path, True, {"resolve_duplicates": False})), state)
    tx = pd.read_parquet(state.data("scv") / "transactions.parquet")
    assert SOURCE_ID not in tx.columns and DUPLICATE in set(tx["customer_id"])
    snap = write_snapshot(duckdb.connect(), state, "scv", feature_set("crm_v1"), T)
    assert not (snap.parent / "identity_map.parquet").exists()
    assert len(pd.read_parquet(snap)) == 4


def test_consent_is_never_widened_by_a_merge(resolved):
    state, _ = resolved
    customers = pd.read_parquet(state.data("scv") / "customers.parquet").set_index("customer_id")
    assert list(customers.index) == ["101", "103", "200"]
    person = customers.loc[PERSON]
    assert not pd.isna(person["consent_email"]) and not person["consent_email"]  # one said no
    assert pd.isna(person["consent_sms"])  # one record unknown: not a yes
    assert bool(person["consent_phone"])  # both said yes
    assert str(person["signup_date"])[:10] == "2021-03-01"  # the earliest
    assert person["country"] == "GB"  # the master record's


@pytest.mark.parametrize(
    ("a", "b", "merged"),
    [
        (True, True, True),
        (True, False, False),
        (False, True, False),
        (True, None, None),
        (None, False, False),
        ("yes", "no", False),
        ("yes", "Y", True),
        ("maybe", True, None),
    ],
)
def test_combined_consent_is_the_most_restrictive(a, b, merged):
    customers = pd.DataFrame({"customer_id": ["1", "2"], "consent_email": [a, b]})
    mm = applied_merge_map(pd.DataFrame({"customer_id": ["1", "2"], "master_id": ["1", "1"]}))
    got = combine_customers(customers, mm)["consent_email"].iloc[0]
    assert (pd.isna(got) and merged is None) or got == merged


def test_attributes_come_from_the_master_then_the_others_in_order():
    customers = pd.DataFrame(
        {
            "customer_id": ["7", "3", "9"],
            "signup_date": pd.to_datetime(["2020-01-01", "2019-06-01", "2018-01-01"]),
            "country": [None, "FR", "DE"],
            "region": ["N", None, "S"],
        }
    )
    mm = applied_merge_map(pd.DataFrame({"customer_id": ["7", "3", "9"], "master_id": "7"}))
    out = combine_customers(customers, mm).iloc[0]
    # master 7 first (country missing there), then 9 (earlier sign-up than 3), then 3
    assert (out["customer_id"], out["country"], out["region"]) == ("7", "DE", "N")
    assert out["signup_date"] == pd.Timestamp("2018-01-01")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"customer_id": ["1"]}, "no column 'master_id'"),
        ({"customer_id": ["1", "1"], "master_id": ["1", "2"]}, "mapped to two master ids"),
        ({"customer_id": ["1", "2"], "master_id": ["2", "3"]}, "is itself mapped to"),
    ],
)
def test_a_bad_merge_map_is_refused(frame, message):
    with pytest.raises(ValueError, match=message):
        applied_merge_map(pd.DataFrame(frame))


def test_a_given_merge_map_file_is_applied_and_explained(tmp_path):
    pd.DataFrame({"customer_id": [DUPLICATE], "master_id": [PERSON]}).to_csv(
        tmp_path / "mm.csv", index=False
    )
    state = StateDirs(tmp_path / "state")
    cfg = load_dataset(
        _dataset(tmp_path, True, {"resolve_duplicates": True, "merge_map": "mm.csv"})
    )
    report = ingest(cfg, state)
    assert report.identity["merge_map"] == "mm.csv"
    identity = pd.read_parquet(state.data("scv") / "identity_map.parquet").set_index("customer_id")
    assert identity.loc[DUPLICATE, "match_rule"] == "given"
    assert identity.loc[PERSON, "master_id"] == PERSON  # the master added as itself
    assert len(pd.read_parquet(state.data("scv") / "customers.parquet")) == 3


@pytest.mark.parametrize(
    ("identity", "key"),
    [
        ({"resolve_duplicates": "maybe"}, "identity.resolve_duplicates"),
        ({"resolve_duplicates": True, "merge_map": ""}, "identity.merge_map"),
        ({"resolve_duplicates": True, "colour": "red"}, "identity.colour"),
        ({"resolve_duplicates": True, "linkage": {"first_name_min": 2}}, "identity.linkage"),
    ],
)
def test_a_bad_option_value_is_one_line_naming_the_key(tmp_path, identity, key):
    with pytest.raises(ValueError) as err:
        load_dataset(_dataset(tmp_path, True, identity))
    line = str(err.value)
    assert "\n" not in line and key in line and "ds.yaml" in line


def test_options_that_cannot_apply_are_refused_naming_the_key(tmp_path):
    path = _dataset(tmp_path, True, {"resolve_duplicates": True})
    config = yaml.safe_load(path.read_text())
    for change, key in (
        ({"engine": {"kind": "spark"}}, "identity.resolve_duplicates: not available on the Spark"),
        ({"tables": {"transactions": config["tables"]["transactions"]}}, "identity.merge_map"),
    ):
        path.write_text(yaml.safe_dump({**config, **change}))
        with pytest.raises(ValueError, match=key) as err:
            load_dataset(path)
        assert "\n" not in str(err.value)
    # a merge map file that is not there: the ingest names the key
    path.write_text(
        yaml.safe_dump({**config, "identity": {"resolve_duplicates": True, "merge_map": "no.csv"}})
    )
    with pytest.raises(ValueError, match="ds.yaml: identity.merge_map: no.csv: no such file"):
        ingest(load_dataset(path), StateDirs(tmp_path / "state"))


def test_the_served_base_carries_the_household_id(resolved):
    from serving.base import load_base

    state, _ = resolved
    write_snapshot(duckdb.connect(), state, "scv", FS, T)
    base = load_base(state, "scv", FS.key)
    assert base.size == 3
    assert base.positions([PERSON, DUPLICATE]).tolist()[1] == -1  # scored once, as the master
    households = dict(zip(base.features.index, base.household_id, strict=True))
    assert households[PERSON] == households["103"] != households["200"]
    assert bool(base.consent["email"][base.positions([PERSON])[0]]) is False


def test_the_cli_ingest_refuses_a_bad_option_in_one_line(tmp_path, monkeypatch, capsys):
    from patron.cli import main

    path = _dataset(tmp_path, True, {"resolve_duplicates": "sometimes"})
    monkeypatch.setattr("sys.argv", ["patron", "ingest", "-d", str(path), "--home", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("error:") and "identity.resolve_duplicates" in out
    assert len(out.splitlines()) == 1


def test_the_household_policy_reads_the_served_base_household_id(resolved):
    """One contact per household, the household taken from the base (no households map)."""
    from models.decisions import UpliftEstimate, parse_campaign, plan_campaign
    from serving.base import load_base

    state, _ = resolved
    write_snapshot(duckdb.connect(), state, "scv", FS, T)
    base = load_base(state, "scv", FS.key)
    campaign = parse_campaign(
        {
            "campaign_id": "c-hh",
            "offers": [{"id": "a", "kind": "retention", "value": 50.0}],
            "channels": [{"name": "email", "cost_per_contact": 0.2}],
        }
    )
    ids = list(base.features.index)
    customers = pd.DataFrame(
        {"customer_id": ids, "consent_email": True, "household_id": base.household_id}
    )
    uplift = [[0.3 if c == PERSON else 0.2] for c in ids]
    plan = plan_campaign(campaign, customers, UpliftEstimate(np.array(uplift)))
    t = plan.customers.set_index("customer_id")
    assert bool(t.loc[PERSON, "selected"]) and t.loc["103", "exclusion_reason"] == "household"
    assert t.loc[PERSON, "household_id"] == t.loc["103", "household_id"]
    assert bool(t.loc["200", "selected"])
    # without the column each customer is their own household: both are chosen
    alone = plan_campaign(
        campaign, customers.drop(columns="household_id"), UpliftEstimate(np.array(uplift))
    )
    assert bool(alone.customers.set_index("customer_id").loc["103", "selected"])


def test_the_cli_ingest_says_what_was_resolved(tmp_path, monkeypatch, capsys):
    from patron.cli import main

    path = _dataset(tmp_path, True, {"resolve_duplicates": True})
    monkeypatch.setattr("sys.argv", ["patron", "ingest", "-d", str(path), "--home", str(tmp_path)])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # the console may wrap the line anywhere
    assert "4 records -> 3 persons (1 merged: email 1)" in out
    assert "ann.smith" not in out  # counts only, no values
