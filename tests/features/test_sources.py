"""Ingestion: every row read is accepted or quarantined with a reason; outputs are idempotent."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.catalog import Catalog
from features.sources import DatasetConfig, QuarantineError, ingest, load_dataset
from features.store import StateDirs
from tests.conftest import require_dataset

CSV = """cust,when,inv,sku,qty,price
A1,2024-01-05 10:00:00,1001,X,2,5.0
A1,2024-01-05 10:00:00,1001,Y,1,3.5
,2024-01-06 11:00:00,1002,X,1,5.0
B2,not a date,1003,X,1,5.0
B2,2024-02-30 09:00:00,1004,X,1,5.0
B2,2024-03-01 09:00:00,,X,1,5.0
C3,2024-03-02 09:00:00,C1005,X,-1,5.0
C3,2024-03-03 09:00:00,1006,X,abc,5.0
  D4  ,2024-03-04 09:00:00,1007,X,3,2.0
"""


def _dataset(
    tmp_path: Path,
    csv: str = CSV,
    ts_format: str = "%Y-%m-%d %H:%M:%S",
    max_quarantine_share: float = 0.9,  # the toy rows are mostly bad on purpose
    **extra: object,
) -> DatasetConfig:
    (tmp_path / "tx.csv").write_text(csv)
    spec = {
        "name": "toy",
        "tables": {
            "transactions": {
                "ts_format": ts_format,
                "max_quarantine_share": max_quarantine_share,
                "sources": [
                    {
                        "path": "tx.csv",
                        "columns": {
                            "customer_id": "cust",
                            "ts": "when",
                            "order_id": "inv",
                            "product_id": "sku",
                            "quantity": "qty",
                            "amount": {
                                "expr": "TRY_CAST(qty AS DOUBLE) * TRY_CAST(price AS DOUBLE)"
                            },
                            "is_return": {"expr": "starts_with(inv, 'C')"},
                        },
                        **extra,
                    }
                ],
            }
        },
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_dataset(path)


def test_every_row_is_accepted_or_quarantined_with_a_reason(tmp_path: Path, state: StateDirs):
    report = ingest(_dataset(tmp_path), state).tables["transactions"]
    assert report.read == 9
    assert report.read == report.accepted + report.quarantined
    assert report.quarantined_by_reason == {
        "no customer": 1,
        "ts: not a valid timestamp": 2,
        "order_id: missing": 1,
        "quantity: not a valid double": 1,
    }
    accepted = pd.read_parquet(report.accepted_path)
    assert sorted(accepted["customer_id"].unique()) == ["A1", "C3", "D4"]  # D4 trimmed
    assert accepted.loc[accepted["order_id"] == "C1005", "is_return"].item()
    assert accepted.loc[accepted["order_id"] == "C1005", "amount"].item() == -5.0
    quarantine = pd.read_parquet(report.quarantine_path)
    assert len(quarantine) == report.quarantined
    assert set(quarantine.columns) >= {"reason", "source_file", "source_row", "raw"}
    assert '"when":"not a date"' in " ".join(quarantine["raw"])


def test_a_wrong_ts_format_fails_naming_the_key_and_keeps_the_quarantine(
    tmp_path: Path, state: StateDirs
):
    """Every row quarantined: ingest raises one line naming ts_format and the top reason's
    count; the quarantine and the report are written, the accepted table (an older one too) not."""
    accepted_path = Catalog(state, "toy").path("transactions")
    ingest(_dataset(tmp_path), state)
    assert accepted_path.exists()
    with pytest.raises(QuarantineError) as failed:
        ingest(_dataset(tmp_path, ts_format="%d/%m/%Y"), state)
    message = str(failed.value)
    assert message == (
        "tables.transactions: 9 of 9 rows quarantined (ts: not a valid timestamp 8, "
        'e.g. "2024-01-05 10:00:00") — check tables.transactions.ts_format ("%d/%m/%Y")'
    )
    report = failed.value.report.tables["transactions"]
    assert (report.read, report.accepted, report.quarantined) == (9, 0, 9)
    assert not accepted_path.exists()  # a stale table must not pass for this ingest's
    assert len(pd.read_parquet(report.quarantine_path)) == 9
    saved = Catalog(state, "toy").ingest_report()["tables"]["transactions"]
    assert saved["failure"] == message and saved["accepted_path"] == ""


@pytest.mark.parametrize(("share", "fails"), [(0.5, True), (0.6, False)])
def test_quarantine_share_above_the_threshold_fails(
    tmp_path: Path, state: StateDirs, share: float, fails: bool
):
    """5 of 9 rows (56 %) quarantined: above a 50 % threshold, within a 60 % one."""
    cfg = _dataset(tmp_path, max_quarantine_share=share)
    if not fails:
        assert ingest(cfg, state).tables["transactions"].accepted == 4
        return
    with pytest.raises(
        QuarantineError,
        match=r"5 of 9 rows quarantined \(56%, above "
        r"tables\.transactions\.max_quarantine_share 50%; top reason ts: ",
    ):
        ingest(cfg, state)


_MAP = {"customer_id": "cust", "ts": "when", "order_id": "inv", "product_id": "sku"}


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({}, 'sources[0].columns.quantity (from "qty")'),
        (
            {"ts": {"from": "when", "format": "%d.%m.%Y"}},
            'sources[0].columns.ts.format ("%d.%m.%Y")',
        ),
        ({"customer_id": {"expr": "NULL"}}, 'sources[0].columns.customer_id (expr "NULL")'),
    ],
)
def test_the_key_named_follows_the_reason(
    tmp_path: Path, state: StateDirs, extra: dict[str, object], key: str
):
    csv = "cust,when,inv,sku,qty,price\n" + "A1,2024-01-05 10:00:00,1,X,two,5.0\n" * 3
    columns = {**_MAP, "quantity": "qty", "amount": "price", **extra}
    with pytest.raises(QuarantineError) as failed:
        ingest(_dataset(tmp_path, csv, columns=columns), state)
    assert str(failed.value).endswith(f"check tables.transactions.{key}"), str(failed.value)


def test_an_exclude_rule_that_takes_most_rows_is_named(tmp_path: Path, state: StateDirs):
    rule = {"when": "quantity > 0", "reason": "test order"}
    with pytest.raises(QuarantineError, match=r"test order 8, e\.g\. \{.*exclude\[0\]"):
        ingest(
            _dataset(tmp_path, CSV.replace("abc", "1"), max_quarantine_share=0.5, exclude=[rule]),
            state,
        )


def test_reingest_is_idempotent(tmp_path: Path, state: StateDirs):
    cfg = _dataset(tmp_path)
    first = ingest(cfg, state).tables["transactions"]
    bytes_1 = Path(first.accepted_path).read_bytes()
    second = ingest(cfg, state).tables["transactions"]
    assert Path(second.accepted_path).read_bytes() == bytes_1
    assert second.quarantined_by_reason == first.quarantined_by_reason
    leftovers = list(Path(first.accepted_path).parent.glob("*.tmp"))
    assert leftovers == []


def test_exclude_rule_quarantines_with_its_reason(tmp_path: Path, state: StateDirs):
    cfg = _dataset(
        tmp_path, exclude=[{"when": "CAST(ts AS DATE) < DATE '2024-02-01'", "reason": "overlap"}]
    )
    report = ingest(cfg, state).tables["transactions"]
    # exclusion rules are checked first: both A1 rows and the customer-less row of 2024-01-06
    assert report.quarantined_by_reason["overlap"] == 3
    assert "no customer" not in report.quarantined_by_reason
    assert report.read == report.accepted + report.quarantined


def test_missing_required_column_names_the_field(tmp_path: Path, state: StateDirs):
    csv = "cust,when\nA1,2024-01-05 10:00:00\n"
    (tmp_path / "tx.csv").write_text(csv)
    cfg = DatasetConfig.model_validate(
        {
            "name": "bad",
            "tables": {
                "transactions": {
                    "sources": [
                        {"path": "tx.csv", "columns": {"customer_id": "cust", "ts": "when"}}
                    ]
                }
            },
        }
    ).model_copy(update={"base_dir": tmp_path})
    with pytest.raises(
        ValueError, match=r"sources\[0\]\.columns: required order_id, amount are not mapped"
    ):
        ingest(cfg, state)


def test_unknown_table_is_rejected_by_the_config():
    with pytest.raises(ValueError, match="unknown tables"):
        DatasetConfig.model_validate({"name": "x", "tables": {"purchases": {"sources": []}}})


def test_duplicate_keys_are_quarantined_first_kept(tmp_path: Path, state: StateDirs):
    (tmp_path / "c.csv").write_text("id,consent\nK1,yes\nK2,no\nK1,no\nK3,maybe\n")
    cfg = DatasetConfig.model_validate(
        {
            "name": "cust",
            "tables": {
                "customers": {
                    "sources": [
                        {
                            "path": "c.csv",
                            "columns": {"customer_id": "id", "consent_email": "consent"},
                        }
                    ]
                }
            },
        }
    ).model_copy(update={"base_dir": tmp_path})
    report = ingest(cfg, state).tables["customers"]
    assert report.quarantined_by_reason == {
        "customer_id: duplicate key": 1,
        "consent_email: not a valid boolean": 1,
    }
    accepted = pd.read_parquet(report.accepted_path).set_index("customer_id")
    assert bool(accepted.loc["K1", "consent_email"]) is True


@pytest.mark.realdata
def test_online_retail_adapter(state: StateDirs):
    require_dataset("online_retail_ii", "online_retail_i_2010_2011.csv.gz")
    report = ingest(load_dataset("online_retail"), state).tables["transactions"]
    assert report.read == 525_461 + 541_909
    assert report.read == report.accepted + report.quarantined
    # the 2010-2011 file repeats 2010-12-01..09 of the first file: 22,523 rows (PROVENANCE.md)
    assert report.quarantined_by_reason["overlap: day already in the 2009-2010 file"] == 22_523
    assert report.quarantined_by_reason["no customer"] > 200_000
    accepted = pd.read_parquet(report.accepted_path)
    assert accepted["customer_id"].notna().all()
    cancels = accepted["order_id"].str.startswith("C")
    assert accepted.loc[cancels, "is_return"].all()
    assert (accepted.loc[cancels, "amount"] <= 0).all()
    assert accepted["ts"].min() >= pd.Timestamp("2009-12-01")
    assert len(report.source_files) == 2 and all(
        len(f["sha256"]) == 64 for f in report.source_files
    )


@pytest.mark.realdata
def test_telco_adapter_keeps_blank_total_charges_as_missing(state: StateDirs):
    path = require_dataset("telco_churn", "WA_Fn-UseC_-Telco-Customer-Churn.csv.gz")
    report = ingest(load_dataset("telco_churn"), state).tables["labelled"]
    assert report.read == report.accepted == 7043
    frame = pd.read_parquet(report.accepted_path)
    assert frame["label"].sum() == 1869
    assert frame["TotalCharges"].isna().sum() == 11
    assert (frame.loc[frame["TotalCharges"].isna(), "tenure"] == 0).all()
    with gzip.open(path, "rt") as fh:
        assert sum(1 for _ in fh) - 1 == report.read
