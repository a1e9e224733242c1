"""First-purchase scores served like any score: a small synthetic base with prospects, the
first_purchase family trained on it, the prospects_v1 snapshot written by `patron features`, and
/score answered by the service's own request functions (no server).

One module fixture builds it all once (~200 customers + 2 000 prospects, a cut-down experiment:
two training cutoffs, small trees, no calibration, a short bootstrap)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from features.build import snapshot_sql, write_snapshot
from features.catalog import Catalog
from features.definitions import feature_set, feature_set_from_spec
from features.prospects import PROSPECT_SET
from features.sources import connect, ingest, load_dataset
from features.store import StateDirs
from features.synthetic import SyntheticConfig, generate
from serving.handlers import score_customers
from serving.registry import Registry
from serving.settings import ServingSettings
from serving.state import build_state

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "experiments" / "datasets" / "synthetic_prospects.yaml"
EXPERIMENT = ROOT / "experiments" / "first_purchase" / "synthetic.yaml"
NAME = "prospects_small"
MODEL = "first-purchase-serving-test"
CUTOFF = date(2024, 9, 30)  # the experiment's test cutoff


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Generated, ingested, trained, snapshot written (by the CLI) and served in process."""
    from patron.cli import mount
    from training.config import load_experiment
    from training.run import run_experiment

    root = tmp_path_factory.mktemp("prospects_serving")
    spec = yaml.safe_load(DATASET.read_text())["synthetic"]
    spec["n_customers"] = 200
    spec["prospects"].update(n_prospects=2_000, truth_cutoffs=[CUTOFF.isoformat()])
    generate(SyntheticConfig.model_validate(spec), root / "raw")
    tables = yaml.safe_load(DATASET.read_text())["tables"]
    for table in tables.values():
        for src in table["sources"]:
            src["path"] = str(root / "raw" / Path(src["path"]).name)
    dataset_yaml = root / "dataset.yaml"
    dataset_yaml.write_text(yaml.safe_dump({"name": NAME, "tables": tables}))
    state = StateDirs(root / "home")
    ingest(load_dataset(str(dataset_yaml)), state)
    cfg = load_experiment(
        EXPERIMENT,
        {
            "dataset": str(dataset_yaml),
            "registered_model": MODEL,
            "cutoffs": {"train": ["2024-03-31", "2024-06-30"], "test": CUTOFF.isoformat()},
            "refit": False,
            "calibration": {"method": "none"},
            "promotion": {"n_boot": 50},
            "model": {"kind": "xgboost", "params": {"n_estimators": 30, "max_depth": 3}},
        },
    )
    out = run_experiment(cfg, state)
    result = CliRunner().invoke(
        mount(),
        ["features", "--dataset", str(dataset_yaml), "--feature-set", PROSPECT_SET]
        + ["--home", str(state.home)],
    )
    assert result.exit_code == 0, result.output
    settings = ServingSettings.model_validate(
        {
            "home": str(state.home),
            # the challenger alias is set on every run (champion only when it beats the baseline)
            "models": {
                "first_purchase": {
                    "registered_model": MODEL,
                    "alias": "challenger",
                    "dataset": NAME,
                }
            },
            "reload_interval_s": 0,
        }
    )
    return {
        "root": root,
        "state": state,
        "run": out,
        "serving": build_state(settings, state),
        "version": out.logged["version"],
    }


def _snapshot(state: StateDirs) -> tuple[date, pd.DataFrame]:
    as_of, path = Catalog(state, NAME).latest_snapshot(PROSPECT_SET)
    frame = pd.read_parquet(path)
    frame["customer_id"] = frame["customer_id"].astype(str)
    return as_of, frame


def _buyers(state: StateDirs, as_of: date) -> set[str]:
    tx = Catalog(state, NAME).read("transactions")
    tx = tx[pd.to_datetime(tx["ts"]).dt.date <= as_of]
    return set(tx["customer_id"].astype(str))


def test_a_prospect_with_no_order_gets_a_first_purchase_probability(world):
    state, serving = world["state"], world["serving"]
    as_of, snap = _snapshot(state)
    served = serving.models["first_purchase"]
    assert served.base.feature_set == PROSPECT_SET and served.base.as_of == as_of
    # the snapshot holds prospects only: nobody with an order by its date
    assert len(snap) > 100 and not set(snap["customer_id"]) & _buyers(state, as_of)
    visitor = snap.loc[snap["visits_count_total"] > 0, "customer_id"].iloc[0]
    buyer = sorted(_buyers(state, as_of))[0]
    body = score_customers(serving, "first_purchase", [visitor, buyer], max_batch=100)
    assert body["version"] == world["version"]
    [record] = body["scores"]
    assert record["customer_id"] == visitor
    assert 0.0 < record["probability"] < 1.0 and record["probability"] == record["score"]
    assert 1 <= record["decile"] <= 10 and record["segment"] is None  # RFM segments: buyers'
    assert body["unknown"] == [{"customer_id": buyer, "reason": "not in the feature snapshot"}]


def test_the_served_scores_equal_the_models_own_predict_on_the_snapshot(world):
    state, serving = world["state"], world["serving"]
    _, snap = _snapshot(state)
    ids = snap["customer_id"].sample(300, random_state=0).tolist()
    body = score_customers(serving, "first_purchase", ids, max_batch=1_000, with_reasons=False)
    served = {r["customer_id"]: r["score"] for r in body["scores"]}
    assert sorted(served) == sorted(ids)
    model = Registry(state.tracking_uri).load(MODEL, world["version"])
    own = model.predict(None, snap.set_index("customer_id").loc[ids].reset_index())["score"]
    np.testing.assert_allclose([served[i] for i in ids], own, rtol=0, atol=1e-12)


def test_the_snapshot_rebuilds_the_models_feature_set_and_its_training_rows(world):
    state = world["state"]
    recorded = world["run"].frame.feature_set.spec()
    assert recorded["attributes"] == ["age_band"]
    assert feature_set_from_spec(recorded) == feature_set(PROSPECT_SET)
    # the snapshot at the test cutoff holds the family's own test rows, value for value
    con = connect(state)
    try:
        at_cutoff = con.execute(snapshot_sql(state, NAME, feature_set(PROSPECT_SET), CUTOFF)).df()
    finally:
        con.close()
    table = world["run"].frame.frame
    test = table[table["as_of"] == pd.Timestamp(CUTOFF)].reset_index(drop=True)
    names = feature_set(PROSPECT_SET).names
    assert len(test) == len(at_cutoff) > 100
    at_cutoff["customer_id"] = at_cutoff["customer_id"].astype(str)
    test = test.astype({"customer_id": str}).sort_values("customer_id", ignore_index=True)
    for name in names:
        left, right = test[name], at_cutoff[name]
        if left.dtype == object or str(right.dtype) in ("object", "str", "string"):
            assert left.astype(object).where(left.notna(), None).tolist() == (
                right.astype(object).where(right.notna(), None).tolist()
            ), name
        else:
            np.testing.assert_allclose(left.to_numpy(float), right.to_numpy(float), err_msg=name)


def _written(state: StateDirs) -> pd.DataFrame:
    """The prospects_v1 snapshot at the cutoff, written and read back."""
    con = duckdb.connect()
    try:
        return pd.read_parquet(write_snapshot(con, state, NAME, feature_set(PROSPECT_SET), CUTOFF))
    finally:
        con.close()


def test_rows_after_the_cutoff_change_no_prospect_snapshot(world, tmp_path: Path):
    """Events, sign-ups and first orders dated after T, appended to a copy of the ingested
    tables, change neither who is a prospect at T nor any feature."""
    state = StateDirs(tmp_path / "home")
    shutil.copytree(world["state"].data(NAME), state.data(NAME))
    frame = _written(state)
    catalog = Catalog(state, NAME)
    prospect = str(frame["customer_id"].iloc[0])
    later = pd.Timestamp(CUTOFF) + pd.Timedelta(days=1, hours=3)

    def append(table: str, row: dict[str, Any]) -> None:
        rows = catalog.read(table)
        new = pd.DataFrame([{c: row.get(c, rows[c].iloc[0]) for c in rows.columns}])
        pd.concat([rows, new.astype(rows.dtypes.to_dict())], ignore_index=True).to_parquet(
            catalog.path(table), index=False
        )

    append("events", {"customer_id": prospect, "ts": later, "event_type": "visit"})
    append("events", {"customer_id": "NEW-VISITOR", "ts": later, "event_type": "visit"})
    append("customers", {"customer_id": "NEW-SIGNUP", "signup_date": later})
    append(
        "transactions",
        {"customer_id": prospect, "ts": later, "order_id": "LATE-1", "amount": 10.0}
        | {"is_return": False},
    )
    pd.testing.assert_frame_equal(frame, _written(state))
    # the same rows dated on T do count: the check above is not vacuous
    append(
        "events", {"customer_id": "NEW-VISITOR", "ts": pd.Timestamp(CUTOFF), "event_type": "visit"}
    )
    on_t = _written(state)
    assert "NEW-VISITOR" in set(on_t["customer_id"]) and len(on_t) == len(frame) + 1
