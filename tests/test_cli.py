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
    assert "CMP_" in html and "<img" in html


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
