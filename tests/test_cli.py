"""The patron command over the synthetic pipeline's state: each command runs, writes its files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from patron.cli import mount

app = mount()

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_ingest_prints_counts_by_reason(synthetic_pipeline):
    home = str(synthetic_pipeline["state"].home)
    out = _run("ingest", "--dataset", "synthetic", "--home", home)
    assert "no customer" in out and "read = accepted + quarantined" in out


def test_features_segments_report_and_links(synthetic_pipeline):
    state = synthetic_pipeline["state"]
    home = str(state.home)
    out = _run("features", "--dataset", "synthetic", "--as-of", "2024-06-30", "--home", home)
    assert Path(state.snapshots("synthetic", "churn_v1") / "as_of=2024-06-30.parquet").exists()
    assert "snapshot written" in out
    _run("segments", "--dataset", "synthetic", "--home", home)
    written = sorted((state.home / "segments" / "synthetic").glob("as_of=*/segments.parquet"))
    segs = pd.read_parquet(written[-1])
    assert set(segs["abc_class"]) == {"A", "B", "C"}
    assert segs["customer_id"].is_unique
    out = _run("report", "segments", "--dataset", "synthetic", "--home", home)
    assert "segments_report.html" in out.replace("\n", "")
    out = _run("customers", "link", "--dataset", "synthetic", "--home", home)
    merge_map = pd.read_parquet(state.data("synthetic") / "merge_map.parquet")
    customers = pd.read_parquet(state.data("synthetic") / "customers.parquet")
    assert sorted(merge_map["customer_id"]) == sorted(customers["customer_id"])  # nothing lost


def test_bad_date_is_a_clear_usage_error(synthetic_pipeline):
    home = str(synthetic_pipeline["state"].home)
    result = runner.invoke(app, ["segments", "--as-of", "31/12/2024", "--home", home])
    assert result.exit_code == 2
    assert "not a date" in result.output


def test_campaign_evaluate(synthetic_pipeline, tmp_path):
    home = str(synthetic_pipeline["state"].home)
    page = tmp_path / "campaigns.html"
    out = _run("campaign", "evaluate", "--home", home, "--html", str(page))
    assert "Newcombe" in out
    html = page.read_text()
    assert "CMP_" in html and 'id="chart-uplift"' in html


def test_bad_config_is_one_clear_line(tmp_path, monkeypatch, capsys):
    import pytest

    from patron.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: synthetic\nregistered_model: x\nhorizon_days: -3\n")
    monkeypatch.setattr("sys.argv", ["patron", "train", "-c", str(bad), "--home", str(tmp_path)])
    monkeypatch.delenv("PATRON_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "horizon_days" in out and "Traceback" not in out


# ---------------------------------------------------------------- bad input: one line, exit 1

TOY_CSV = (
    "cust,when,inv,sku,qty,price\n"
    "A1,2024-01-05 10:00:00,1,X,1,5.0\n"
    "A2,2024-01-06 10:00:00,2,X,1,5.0\n"
    ",2024-01-07 10:00:00,3,X,1,5.0\n"
)


def _toy_dataset(tmp_path: Path, ts_format: str, share: float = 0.5) -> Path:
    import yaml

    (tmp_path / "tx.csv").write_text(TOY_CSV)
    columns = {"customer_id": "cust", "ts": "when", "order_id": "inv", "product_id": "sku"}
    table = {
        "ts_format": ts_format,
        "max_quarantine_share": share,
        "sources": [{"path": "tx.csv", "columns": {**columns, "amount": "price"}}],
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({"name": "toy", "tables": {"transactions": table}}))
    return path


def test_ingest_with_a_wrong_ts_format_exits_1_naming_the_key(tmp_path, monkeypatch, capsys):
    import pytest

    from patron.cli import main

    config = _toy_dataset(tmp_path, "%d/%m/%Y")
    home = tmp_path / "home"
    monkeypatch.setattr("sys.argv", ["patron", "ingest", "-d", str(config), "--home", str(home)])
    monkeypatch.delenv("PATRON_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    out = " ".join(capsys.readouterr().out.split())  # the console wraps at its width
    assert (
        "error: tables.transactions: 3 of 3 rows quarantined (ts: not a valid timestamp 2, "
        'e.g. "2024-01-05 10:00:00") — check tables.transactions.ts_format ("%d/%m/%Y")' in out
    )
    assert "Traceback" not in out
    assert (home / "quarantine" / "toy" / "transactions.parquet").exists()
    assert (home / "data" / "toy" / "ingest_report.json").exists()
    assert not (home / "data" / "toy" / "transactions.parquet").exists()


def test_ingest_exit_code_follows_the_quarantine_share(tmp_path):
    """One of three rows has no customer (33 %): above a 25 % threshold, within 50 %."""
    home = str(tmp_path / "home")
    config = str(_toy_dataset(tmp_path, "%Y-%m-%d %H:%M:%S", share=0.25))
    failed = runner.invoke(app, ["ingest", "-d", config, "--home", home])
    assert failed.exit_code == 1 and isinstance(failed.exception, ValueError)
    assert "1 of 3 rows quarantined (33%, above" in str(failed.exception)
    config = str(_toy_dataset(tmp_path, "%Y-%m-%d %H:%M:%S", share=0.5))
    assert "no customer" in _run("ingest", "-d", config, "--home", home)


def test_features_as_of_beyond_the_data_is_refused_before_writing(synthetic_pipeline):
    state = synthetic_pipeline["state"]
    result = runner.invoke(app, ["features", "--as-of", "2031-01-01", "--home", str(state.home)])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    message = str(result.exception)
    assert message.startswith("--as-of 2031-01-01 is after the last data date")
    assert "runs 20" in message and "days without orders" in message
    assert not (state.snapshots("synthetic", "churn_v1") / "as_of=2031-01-01.parquet").exists()


def test_monitor_beyond_the_data_is_refused_before_logging(synthetic_pipeline):
    from mlflow.tracking import MlflowClient

    state = synthetic_pipeline["state"]
    client = MlflowClient(state.tracking_uri)

    def runs() -> int:
        ids = [e.experiment_id for e in client.search_experiments()]
        return len(client.search_runs(ids, max_results=10_000))

    before = runs()
    config = str(Path(__file__).resolve().parent.parent / "experiments/churn/synthetic.yaml")
    for dates, option in (
        (["--reference", "2024-06-30", "--current", "2031-01-01"], "--current 2031-01-01"),
        (["--reference", "2019-01-01"], "--reference 2019-01-01"),
    ):
        result = runner.invoke(app, ["monitor", "-c", config, *dates, "--home", str(state.home)])
        assert result.exit_code == 1 and isinstance(result.exception, ValueError)
        assert str(result.exception).startswith(option), result.exception
    assert runs() == before
    folder = state.snapshots("synthetic", "churn_v1")
    assert not {"as_of=2031-01-01.parquet", "as_of=2019-01-01.parquet"} & {
        p.name for p in folder.glob("*.parquet")
    }
