"""Raw inputs of any kind by configuration (issue 15): an archive member, gzip, fixed-width and
whitespace text; a wrong mapping or an unreadable file is one line naming the YAML key."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import features.build  # noqa: F401  (imported once here, as the suite does anyway: not per test)
from features.readers import closest, pick_member
from features.sources import DatasetError, IngestStep, ingest, load_dataset, query_share
from features.store import StateDirs
from patron.cli import mount
from tests.conftest import cli_error_line

runner = CliRunner()

CSV = "cust,when,inv,price\nA1,2024-01-05 10:00:00,1,5.0\nA2,2024-01-06 10:00:00,2,7.5\n"

#: A fixed-width export: the header names sit at the columns' positions; amounts right-aligned.
FIXED = (
    "cust  when                 inv   price\n"
    "A1    2024-01-05 10:00:00  1       5.0\n"
    "\n"
    "B22   2024-01-06 10:00:00  2      17.5\n"
    "C3    2024-01-07 10:00:00  3     1234.25\n"
)
WIDTHS = [6, 21, 6, 8]
COLUMNS = {"customer_id": "cust", "ts": "when", "order_id": "inv", "amount": "price"}


def _config(tmp_path: Path, source: dict[str, Any], name: str = "toy", **table: Any) -> Path:
    spec = {
        "name": name,
        "tables": {
            "transactions": {
                "ts_format": "%Y-%m-%d %H:%M:%S",
                **table,
                "sources": [{"columns": COLUMNS, **source}],
            }
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _zip(tmp_path: Path) -> Path:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("export/readme.txt", "not data")
        zf.writestr("export/tx.csv", CSV)
        zf.writestr("__MACOSX/export/._tx.csv", "resource fork")
    return path


def _invoke(*args: str) -> Any:
    return runner.invoke(mount(), list(args))


# ------------------------------------------------------------------------ archives and gzip


def test_check_dataset_and_ingest_read_a_zip_member(tmp_path: Path):
    _zip(tmp_path)
    config = str(_config(tmp_path, {"path": "export.zip", "member": "tx.csv"}))
    home = str(tmp_path / "home")
    checked = _invoke("check-dataset", "-d", config, "--home", home)
    assert checked.exit_code == 0, checked.output
    out = " ".join(checked.output.split())
    assert "export.zip:export/tx.csv" in out and "2 would be accepted" in out
    assert "A1, A2" in out  # examples of customer_id
    assert not (tmp_path / "home" / "data" / "toy").exists()  # a dry run writes nothing
    ingested = _invoke("ingest", "-d", config, "--home", home)
    assert ingested.exit_code == 0, ingested.output
    frame = pd.read_parquet(tmp_path / "home" / "data" / "toy" / "transactions.parquet")
    assert frame["customer_id"].tolist() == ["A1", "A2"]
    assert frame["amount"].tolist() == [5.0, 7.5]
    assert not list((tmp_path / "home" / "tmp").glob("extract-*"))  # the copy is removed


def test_an_archive_with_one_file_needs_no_member_and_gzip_is_read_by_content(
    tmp_path: Path, state: StateDirs
):
    data = CSV.encode()
    with tarfile.open(tmp_path / "tx.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("dump/tx.csv")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (tmp_path / "gz_named.csv").write_bytes(gzip.compress(data))  # gzip without a .gz name
    for path in ("tx.tar.gz", "gz_named.csv"):
        cfg = load_dataset(_config(tmp_path, {"path": path}))
        report = ingest(cfg, state).tables["transactions"]
        assert (report.read, report.accepted) == (2, 2)
    assert report.source_files[0]["path"].endswith("gz_named.csv")


def test_a_wrong_member_names_the_key_and_the_closest_member(tmp_path: Path, state: StateDirs):
    _zip(tmp_path)
    cfg = load_dataset(_config(tmp_path, {"path": "export.zip", "member": "export/TX.cvs"}))
    with pytest.raises(DatasetError) as err:
        ingest(cfg, state)
    assert str(err.value) == (
        f"{tmp_path / 'toy.yaml'}: tables.transactions.sources[0].member: no member "
        '"export/TX.cvs" in export.zip (closest "export/tx.csv"; '
        "members: export/readme.txt, export/tx.csv)"
    )
    cfg = load_dataset(_config(tmp_path, {"path": "export.zip"}))
    with pytest.raises(DatasetError, match=r"\.member: export\.zip holds 2 files; name one"):
        ingest(cfg, state)


def test_pick_member_by_file_name_and_closest_ignores_case(tmp_path: Path):
    path = _zip(tmp_path)
    assert pick_member(path, "zip", "tx.csv") == "export/tx.csv"
    assert closest("customer id", ["Customer ID", "Country"]) == "Customer ID"
    assert closest("zzz", ["Customer ID"]) is None


# ------------------------------------------------------------------------ aligned text


def test_check_dataset_and_ingest_read_a_fixed_width_file(tmp_path: Path):
    (tmp_path / "tx.txt").write_text(FIXED)
    fmt = {"kind": "fixed_width", "widths": WIDTHS}
    config = str(_config(tmp_path, {"path": "tx.txt", "format": fmt}))
    home = str(tmp_path / "home")
    checked = _invoke("check-dataset", "-d", config, "--home", home)
    assert checked.exit_code == 0, checked.output
    out = " ".join(checked.output.split())
    assert "3 rows read, 3 would be accepted" in out
    assert "1234.25" in out  # the last column runs to the end of the line
    ingested = _invoke("ingest", "-d", config, "--home", home)
    assert ingested.exit_code == 0, ingested.output
    frame = pd.read_parquet(tmp_path / "home" / "data" / "toy" / "transactions.parquet")
    assert frame["customer_id"].tolist() == ["A1", "B22", "C3"]  # trimmed; blank line skipped
    assert frame["order_id"].tolist() == ["1", "2", "3"]
    assert frame["amount"].tolist() == [5.0, 17.5, 1234.25]
    assert str(frame["ts"].iloc[1]) == "2024-01-06 10:00:00"


def test_fixed_width_names_skip_and_gzip(tmp_path: Path, state: StateDirs):
    body = "\n".join(FIXED.splitlines()[1:]) + "\n"
    (tmp_path / "tx.txt.gz").write_bytes(gzip.compress(("preamble line\n" + body).encode()))
    fmt = {
        "kind": "fixed_width",
        "widths": WIDTHS,
        "header": False,
        "skip": 1,
        "names": ["cust", "when", "inv", "price"],
    }
    cfg = load_dataset(_config(tmp_path, {"path": "tx.txt.gz", "format": fmt}))
    report = ingest(cfg, state).tables["transactions"]
    assert (report.read, report.accepted) == (3, 3)


def test_whitespace_fields_and_a_shifted_line_is_quarantined(tmp_path: Path, state: StateDirs):
    text = (
        "cust day        time     inv price\n"
        "A1   2024-01-05 10:00:00 1   5.0\n"
        "A2   2024-01-06 10:00:00     7.5\n"  # a blank cell: the fields after it shift
        "A3\t2024-01-07 10:00:00 3   2.5\n"
    )
    (tmp_path / "tx.txt").write_text(text)
    columns = {**COLUMNS, "ts": {"expr": "day || ' ' || time"}}
    source = {"path": "tx.txt", "format": {"kind": "whitespace"}, "columns": columns}
    cfg = load_dataset(_config(tmp_path, source, max_quarantine_share=0.5))
    report = ingest(cfg, state).tables["transactions"]
    assert report.quarantined_by_reason == {"line: not 5 fields": 1}
    frame = pd.read_parquet(report.accepted_path)
    assert frame["customer_id"].tolist() == ["A1", "A3"]


def test_a_text_format_is_validated_by_the_config():
    from features.sources import SourceFile

    with pytest.raises(ValueError, match="needs 'names'"):
        SourceFile.model_validate({"path": "x", "format": {"kind": "whitespace", "header": False}})
    with pytest.raises(ValueError, match="2 names for 3 'widths'"):
        SourceFile.model_validate(
            {
                "path": "x",
                "format": {"kind": "fixed_width", "widths": [1, 2, 3], "names": ["a", "b"]},
            }
        )


# ------------------------------------------------------------------------ one clear line


def test_a_wrong_column_name_is_one_line_naming_the_key_and_the_closest_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / "tx.csv").write_text(CSV)
    source = {"path": "tx.csv", "columns": {**COLUMNS, "customer_id": "Cust_ID"}}
    config = str(_config(tmp_path, source))
    expected = (
        f"error: {config}: tables.transactions.sources[0].columns.customer_id: no raw column "
        '"Cust_ID" in tx.csv (closest "cust"; columns: cust, when, inv, price)'
    )
    home = str(tmp_path / "home")
    for command in ("check-dataset", "ingest"):
        assert (
            cli_error_line(monkeypatch, capsys, command, "-d", config, "--home", home) == expected
        )


def test_an_expression_or_exclusion_on_a_missing_column_names_its_key(
    tmp_path: Path, state: StateDirs
):
    (tmp_path / "tx.csv").write_text(CSV)
    amount = {"expr": "TRY_CAST(prce AS DOUBLE) * 2"}
    cfg = load_dataset(
        _config(tmp_path, {"path": "tx.csv", "columns": {**COLUMNS, "amount": amount}})
    )
    with pytest.raises(
        DatasetError, match=r'columns\.amount\.expr: no raw column "prce" in tx\.csv'
    ):
        ingest(cfg, state)
    rule = {"when": "amout > 5", "reason": "large"}
    cfg = load_dataset(_config(tmp_path, {"path": "tx.csv", "exclude": [rule]}))
    with pytest.raises(
        DatasetError, match=r'exclude\[0\]\.when: no column "amout" \(closest "amount"'
    ):
        ingest(cfg, state)


def test_a_value_duckdb_cannot_convert_names_the_source(tmp_path: Path, state: StateDirs):
    (tmp_path / "tx.csv").write_text(CSV)
    amount = {"expr": 'CAST("when" AS INTEGER)'}
    cfg = load_dataset(
        _config(tmp_path, {"path": "tx.csv", "columns": {**COLUMNS, "amount": amount}})
    )
    with pytest.raises(DatasetError) as err:
        ingest(cfg, state)
    message = str(err.value)
    assert "tables.transactions.sources[0]: reading tx.csv failed: Conversion Error:" in message
    assert "\n" not in message and "LINE 1" not in message


def test_a_duckdb_error_at_the_command_boundary_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """An ingested table that is not Parquet (damaged on disk): DuckDB's error, one line."""
    (tmp_path / "tx.csv").write_text(CSV)
    config = str(_config(tmp_path, {"path": "tx.csv"}))
    home = tmp_path / "home"
    assert _invoke("ingest", "-d", config, "--home", str(home)).exit_code == 0
    (home / "data" / "toy" / "transactions.parquet").write_text("not parquet")
    line = cli_error_line(monkeypatch, capsys, "features", "-d", config, "--home", str(home))
    assert line.startswith("error: DuckDB: ") and "transactions.parquet" in line
    assert line.endswith("(PATRON_DEBUG=1 shows the traceback)")


def test_check_dataset_exits_1_on_a_mapping_that_quarantines_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / "tx.csv").write_text(CSV)
    config = str(_config(tmp_path, {"path": "tx.csv"}, ts_format="%d/%m/%Y"))
    line = cli_error_line(
        monkeypatch, capsys, "check-dataset", "-d", config, "--home", str(tmp_path)
    )
    assert "tables.transactions: 2 of 2 rows quarantined (ts: not a valid timestamp 2" in line
    assert 'check tables.transactions.ts_format ("%d/%m/%Y")' in line
    assert line.endswith("(in the first 1,000 rows of each source)")


# ------------------------------------------------------------------------ treatment arms


def test_group_values_map_to_arms_with_the_control_named_once(tmp_path: Path, state: StateDirs):
    (tmp_path / "mail.csv").write_text(
        "id,segment,visit\n"
        "1,Mens E-Mail,1\n"
        "2,Womens E-Mail,0\n"
        "3,No E-Mail,0\n"
        "4,Mens E-Mail,0\n"
        "5,,1\n"
    )
    group = {"from": "segment", "control": "No E-Mail", "values": {"Mens E-Mail": "mens"}}
    columns = {
        "campaign_id": {"expr": "'MAIL_2008_03'"},
        "customer_id": "id",
        "ts": {"expr": "'2008-03-01 00:00:00'"},
        "group": group,
        "responded": "visit",
    }
    spec = {
        "name": "mail",
        "tables": {"campaign_history": {"sources": [{"path": "mail.csv", "columns": columns}]}},
    }
    (tmp_path / "mail.yaml").write_text(yaml.safe_dump(spec))
    report = ingest(load_dataset(tmp_path / "mail.yaml"), state).tables["campaign_history"]
    assert report.quarantined_by_reason == {"group: missing": 1}
    frame = pd.read_parquet(report.accepted_path)
    assert frame["group"].tolist() == ["treatment", "treatment", "control", "treatment"]
    assert frame["arm"].fillna("-").tolist() == ["mens", "Womens E-Mail", "-", "mens"]
    assert "segment" not in frame.columns  # read into group and arm, not passed through

    columns["responded"] = {"from": "visit", "control": "0"}
    (tmp_path / "mail.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(DatasetError, match=r"columns\.responded\.control: only campaign_history"):
        ingest(load_dataset(tmp_path / "mail.yaml"), state)


def test_an_invalid_dataset_yaml_is_one_line_at_its_keys(tmp_path: Path):
    source = {
        "path": "tx.txt",
        "format": {"kind": "fixed_width", "widths": [6, 21], "names": ["a"]},
    }
    config = _config(tmp_path, source, max_quarantine_share=2)
    with pytest.raises(ValueError) as err:
        load_dataset(config)
    assert str(err.value) == (
        f"{config}: tables.transactions.sources[0].format: 'names' has 1 names for 2 'widths'; "
        "tables.transactions.max_quarantine_share: Input should be less than or equal to 1"
    )


def test_ingest_reports_bytes_and_rows_as_it_goes(tmp_path: Path, state: StateDirs):
    (tmp_path / "tx.csv").write_text(CSV)
    steps: list[IngestStep] = []
    report = ingest(load_dataset(_config(tmp_path, {"path": "tx.csv"})), state, steps.append)
    size = (tmp_path / "tx.csv").stat().st_size
    assert steps[0] == IngestStep("transactions", 0, size, 0)
    assert steps[-1] == IngestStep("transactions", size, size, report.tables["transactions"].read)
    done = [s.bytes_done for s in steps]
    assert done == sorted(done) and all(s.bytes_total == size for s in steps)


def test_query_share_hears_a_running_query_and_never_goes_back():
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS i FROM range(20000000)")
    shares: list[float] = []
    with query_share(con, shares.append, every_s=0.01):
        con.execute("SELECT sum(hash(i + r)::DOUBLE) FROM t, range(4) AS x(r)").fetchall()
    assert shares, "no progress heard during a query of several seconds"
    assert shares == sorted(shares) and shares[0] > 0 and shares[-1] < 1
