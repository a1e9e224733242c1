"""The value job: totals that add up, margins per category, the page, and ``patron value`` end to
end on a toy dataset (ingest, value, MLflow, the segment report with the value x risk grid)."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.value import ChurnRisk, ValueJob, compute_value, load_value_job
from experiments.value_page import render_value_page

LAST = date(2024, 12, 31)


def _transactions(n: int = 300, seed: int = 3) -> pd.DataFrame:
    """Order lines over two years: BG/NBD-like buyers (rate, dropout), two categories."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n):
        start = int(rng.integers(0, 600))
        rate = float(rng.choice([0.01, 0.03, 0.08]))
        stop = start + int(rng.exponential(500))
        drawn = {start, *rng.integers(start, 731, int(rng.poisson(rate * (730 - start))))}
        days = sorted(d for d in drawn if d == start or d <= stop)
        category = "toys" if c % 2 else "food"
        scale = float(rng.gamma(3.0, 10.0))  # each customer's own mean spend (Gamma-Gamma)
        for i, d in enumerate(days):
            ts = pd.Timestamp(LAST - timedelta(days=730 - int(d))) + pd.Timedelta(hours=10)
            amount = round(float(rng.gamma(4.0, scale / 4.0)), 2) + 0.01
            rows.append((f"c{c:03d}", ts, f"o{c}-{i}", "p1", category, 1.0, amount, False))
    frame = pd.DataFrame(
        rows,
        columns=[
            "customer_id",
            "ts",
            "order_id",
            "product_id",
            "category",
            "quantity",
            "amount",
            "is_return",
        ],
    )
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    return frame


JOB = {
    "name": "value_toy",
    "dataset": "toy",
    "value": {
        "years": 3,
        "annual_discount_rate": 0.1,
        "margin": {"default": 0.3, "by_category": {"toys": 0.5}},
        "retention": {"contact_cost": 2.0},
    },
    "segments": ["abc_class", "lifecycle_stage"],
}


@pytest.fixture(scope="module")
def result():
    con = duckdb.connect()
    con.register("tx", _transactions())
    try:
        return compute_value(con, "tx", None, "toy", LAST, ValueJob.model_validate(JOB))
    finally:
        con.close()


def test_totals_add_up_across_tables(result) -> None:
    c, overall = result.customers, result.overall
    assert len(c) == c["customer_id"].nunique() == overall["customers"].iloc[0]
    assert overall["cumulative_npv"].iloc[-1] == pytest.approx(c["npv"].sum())
    assert result.table["npv"].sum() == pytest.approx(c["npv"].sum())
    for frame in result.by_segment.values():
        last = frame[frame["year"] == 3]
        assert last["cumulative_npv"].sum() == pytest.approx(c["npv"].sum())
        assert last["customers"].sum() == len(c)
    assert result.grid["customers"].sum() == len(c)
    assert result.totals()["let_go"] + result.totals()["worth_a_contact"] == len(c)


def test_margin_follows_each_customers_category(result) -> None:
    c = result.customers.set_index("customer_id")
    toys = c.index.str[1:].astype(int) % 2 == 1
    assert np.allclose(c.loc[toys, "margin"], 0.5) and np.allclose(c.loc[~toys, "margin"], 0.3)
    assert result.facts["revenue_share_priced_by_category"] == pytest.approx(
        _share_of_toys(), rel=1e-9
    )
    table = result.table
    np.testing.assert_allclose(
        table["expected_gross_profit"],
        table["expected_revenue"] * table["customer_id"].map(c["margin"]),
    )


def _share_of_toys() -> float:
    tx = _transactions()
    return float(tx.loc[tx["category"] == "toys", "amount"].sum() / tx["amount"].sum())


def test_worthwhile_spend_is_risk_times_value_if_kept(result) -> None:
    c = result.customers
    np.testing.assert_allclose(c["max_retention_spend"], c["churn_risk"] * c["npv_if_retained"])
    assert (c["let_go"] == ~(c["max_retention_spend"] > 2.0)).all()
    assert c["value_decile"].between(1, 10).all() and c["risk_decile"].between(1, 10).all()


def test_value_page_is_self_contained_and_says_what_its_figures_are(result) -> None:
    page = render_value_page(result)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # plotly.js inline, nothing fetched (the bundle's own strings hold links: tags only)
    assert not re.search(r"<(script|img|link|iframe)\b[^>]*\b(src|href)=", page)
    assert page.count("<script") >= 4
    for div in ("chart-value-by-year", "chart-segment-abc_class", "chart-value-risk"):
        assert f'id="{div}"' in page
    assert "not observed amounts" in page
    assert "global margin 30.0 %" in page and "toys 50.0 %" in page
    assert "10.0 % a year, at the year end, over 3 years" in page


def test_bad_config_is_one_line_per_value_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({**JOB, "value": {"annual_discount_rate": 10, "years": 0}}))
    with pytest.raises(ValueError) as info:
        load_value_job(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("value.annual_discount_rate" in line for line in lines)
    assert any("value.years" in line for line in lines)
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_segment_report_section_shows_the_value_risk_grid(result) -> None:
    from features.segments_report import VALUE_RISK_SECTION, value_risk_chart, value_risk_section

    grid = result.grid
    texts = [t for row in value_risk_chart(grid).data[0].text for t in row if t]
    assert len(texts) == len(grid)  # one label per cell with customers
    assert sum("let go" in t for t in texts) == int(grid["let_go"].sum())
    text = value_risk_section(grid, "a <note>")
    assert text.startswith(f"<h2>{VALUE_RISK_SECTION}</h2>") and "a &lt;note&gt;" in text
    worth = int(grid.loc[~grid["let_go"], "customers"].sum())
    assert f"{worth:,} customers in cells where a retention contact pays" in text
    assert 'id="chart-value-risk"' in text and "<img" not in text


def test_patron_value_on_the_synthetic_data(synthetic_pipeline) -> None:
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from patron.cli import mount

    state = synthetic_pipeline["state"]
    config = Path(__file__).resolve().parents[2] / "experiments" / "value" / "synthetic.yaml"
    runner = CliRunner()
    home = ["--home", str(state.home)]
    app = mount()
    out = runner.invoke(app, ["value", "-c", str(config), "--no-segment-report", *home])
    assert out.exit_code == 0, out.output
    meta = json.loads(
        next((state.home / "value" / "synthetic").glob("as_of=*/value_meta.json")).read_text()
    )
    folder = state.home / "value" / "synthetic" / f"as_of={meta['as_of']}"
    for name in ("value_table.parquet", "customer_value.parquet", "value_report.html"):
        assert (folder / name).is_file()
    assert not list(folder.glob(".*.tmp"))
    client = MlflowClient(state.tracking_uri)
    exp = client.get_experiment_by_name("value")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["annual_discount_rate"] == "0.1"
    assert run.data.params["margin_default"] == "0.3"
    table = pd.read_parquet(folder / "customer_value.parquet")
    assert run.data.metrics["npv"] == pytest.approx(table["npv"].sum())
    assert meta["facts"]["revenue_share_priced_by_category"] > 0  # the generator's categories
    # a cutoff outside the data is refused with the option named, before any run is logged
    late = runner.invoke(app, ["value", "-c", str(config), "--as-of", "2031-01-01", *home])
    assert late.exit_code != 0 and str(late.exception).startswith("--as-of 2031-01-01")
    assert len(client.search_runs([exp.experiment_id])) == 1


def test_a_churn_models_probability_is_the_grids_risk_where_it_scored(result) -> None:
    """Risk from a churn model: its probability where it scored a customer (BG/NBD's kept beside
    it, and used, counted, for the customers it did not score); the economics follow it."""
    ids = result.customers["customer_id"].astype(str)
    scored = ids.iloc[::2]  # the model scored every other customer
    probability = pd.Series(np.linspace(0.05, 0.95, len(scored)), index=scored.to_numpy())
    risk = ChurnRisk(probability, "churn_toy", "7", "champion", "P(churn) by churn_toy version 7")
    con = duckdb.connect()
    con.register("tx", _transactions())
    try:
        job = ValueJob.model_validate(JOB)
        with_model = compute_value(con, "tx", None, "toy", LAST, job, risk)
    finally:
        con.close()
    c = with_model.customers.set_index("customer_id")
    assert np.allclose(c.loc[scored, "churn_risk"], probability[scored])
    rest = ids.iloc[1::2]
    assert np.allclose(c.loc[rest, "churn_risk"], c.loc[rest, "churn_risk_bgnbd"])
    assert (c.loc[scored, "churn_risk_source"] == "model").all()
    assert (c.loc[rest, "churn_risk_source"] == "bgnbd").all()
    assert np.allclose(c["max_retention_spend"], c["churn_risk"] * c["npv_if_retained"])
    facts = with_model.facts["risk"]
    assert facts["customers_scored"] == len(scored) and facts["customers_bgnbd"] == len(rest)
    assert result.facts["risk"]["source"] == "bgnbd"
    page = render_value_page(with_model)
    assert "P(churn) by churn_toy version 7" in page
    assert f"{len(rest):,} customers it did not score" in page


def test_risk_from_the_registered_churn_champion(synthetic_pipeline, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from patron.cli import mount

    state = synthetic_pipeline["state"]
    model = synthetic_pipeline["cfg"].registered_model
    root = Path(__file__).resolve().parents[2]
    job = yaml.safe_load((root / "experiments" / "value" / "synthetic.yaml").read_text())
    config = tmp_path / "value_risk.yaml"
    config.write_text(yaml.safe_dump({**job, "risk": {"model": model}}))
    home = ["--home", str(state.home)]
    runner = CliRunner()
    out = runner.invoke(mount(), ["value", "-c", str(config), "--no-segment-report", *home])
    assert out.exit_code == 0, out.output
    meta = json.loads(
        next((state.home / "value" / "synthetic").glob("as_of=*/value_meta.json")).read_text()
    )
    risk = meta["facts"]["risk"]
    assert risk["source"] == "model" and risk["model"] == model and risk["version"]
    assert risk["customers_scored"] > 0.9 * meta["totals"]["customers"]
    # a model that is not registered: one line naming the key, nothing logged
    client = MlflowClient(state.tracking_uri)
    experiment = client.get_experiment_by_name("value")
    assert experiment is not None
    runs = len(client.search_runs([experiment.experiment_id]))
    config.write_text(yaml.safe_dump({**job, "risk": {"model": "no_such_model"}}))
    bad = runner.invoke(mount(), ["value", "-c", str(config), "--no-segment-report", *home])
    assert bad.exit_code != 0
    assert str(bad.exception).startswith("risk.model: no registered model no_such_model@champion")
    assert len(client.search_runs([experiment.experiment_id])) == runs
