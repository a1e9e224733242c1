"""The first-purchase family on synthetic prospects: trained, logged and graded against the
generator's truth and the visit-recency baseline, on rows it never saw (the test cutoff)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from features.prospects import prospect_feature_set, prospects_sql
from features.sources import ingest, load_dataset
from features.store import StateDirs
from features.synthetic import SyntheticConfig, generate
from training.config import load_experiment
from training.families.first_purchase import FirstPurchaseConfig
from training.run import run_experiment

EXPERIMENT = Path(__file__).parents[2] / "experiments" / "first_purchase" / "synthetic.yaml"
DATASET = Path(__file__).parents[2] / "experiments" / "datasets" / "synthetic_prospects.yaml"
TEST_CUTOFF = date(2024, 9, 30)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic base with prospects, from the shipped dataset config's generator block."""
    out = tmp_path_factory.mktemp("prospects")
    spec = yaml.safe_load(DATASET.read_text())["synthetic"]
    spec["n_customers"] = 300
    spec["prospects"]["n_prospects"] = 7_000
    generate(SyntheticConfig.model_validate(spec), out)
    tables = yaml.safe_load(DATASET.read_text())["tables"]
    for table in tables.values():
        for src in table["sources"]:
            src["path"] = str(out / Path(src["path"]).name)
    (out / "dataset.yaml").write_text(yaml.safe_dump({"name": "prospects_small", "tables": tables}))
    return out


def test_the_model_beats_the_baseline_and_nears_the_truth_out_of_time(
    data: Path, state: StateDirs
) -> None:
    cfg = load_experiment(EXPERIMENT, {"dataset": str(data / "dataset.yaml")})
    ingest(load_dataset(cfg.dataset), state)
    out = run_experiment(cfg, state)
    m, b = out.trained.metrics, out.trained.baseline_metrics
    truth = out.trained.extra_metrics["truth"]
    assert out.trained.baseline_name == "visit recency"
    # test rows: the prospects at the test cutoff, never fitted on (the evaluated model)
    assert out.trained.row_counts["test_rows"] == truth["rows"] > 1_500
    assert m["roc_auc"] > b["roc_auc"] + 0.01
    assert m["pr_auc"] > b["pr_auc"]
    # the true probability bounds what any model can reach; the model comes close to it
    assert truth["roc_auc"] - 0.06 < m["roc_auc"] < truth["roc_auc"] + 0.01
    assert truth["model_abs_error"] < truth["baseline_abs_error"]
    assert out.logged["champion"]  # the paired-bootstrap lower bound over the baseline is > 0
    assert abs(out.trained.test_predictions["score"].mean() - truth["mean_true_probability"]) < 0.01
    run = MlflowClient(tracking_uri=state.tracking_uri).get_run(out.logged["run_id"])
    assert {"test_roc_auc", "baseline_roc_auc", "truth_roc_auc", "logistic_roc_auc"} <= set(
        run.data.metrics
    )
    assert run.data.tags["family"] == "first_purchase"


def test_prospect_features_read_no_event_after_the_cutoff(data: Path) -> None:
    con = duckdb.connect()
    try:
        events = f"read_csv('{data / 'events.csv'}', header = true)"
        tx = f"read_csv('{data / 'transactions.csv'}', header = true, all_varchar = true)"
        con.execute(
            f"CREATE VIEW tx AS SELECT customer_id, CAST(ts AS TIMESTAMP) AS ts, "
            f"TRY_CAST(amount AS DOUBLE) AS amount, is_return = 'true' AS is_return FROM {tx} "
            "WHERE TRY_CAST(ts AS TIMESTAMP) IS NOT NULL AND TRY_CAST(amount AS DOUBLE) IS NOT NULL"
        )
        con.execute(f"CREATE VIEW ev AS SELECT * FROM {events}")
        con.execute(
            "CREATE VIEW ev_before AS SELECT * FROM ev "
            f"WHERE CAST(ts AS DATE) <= DATE '{TEST_CUTOFF}'"
        )
        fs = prospect_feature_set(attributes=())
        fs = type(fs)(fs.name, tuple(f for f in fs.features if f.level == "events"))
        full = con.execute(prospects_sql(TEST_CUTOFF, "tx", fs, events="ev")).df()
        cut = con.execute(prospects_sql(TEST_CUTOFF, "tx", fs, events="ev_before")).df()
    finally:
        con.close()
    assert len(full) > 1_000
    pd.testing.assert_frame_equal(full, cut)


def test_the_config_pins_the_prospect_feature_set() -> None:
    base = yaml.safe_load(EXPERIMENT.read_text())
    with pytest.raises(ValidationError, match="prospects_v1"):
        FirstPurchaseConfig.model_validate({**base, "feature_set": "churn_v1"})
