"""Tuning: seeded, nested MLflow runs per trial, best parameters within the search space."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from training.config import SearchParam, TuningSpec
from training.run import build_frame
from training.tune import search

SPACE = {
    "max_depth": SearchParam(type="int", low=2, high=5),
    "learning_rate": SearchParam(type="float", low=0.03, high=0.3, log=True),
    "n_estimators": SearchParam(type="int", low=30, high=80),
}


def test_search_is_seeded_and_logs_nested_trials(synthetic_pipeline):
    state = synthetic_pipeline["state"]
    cfg = synthetic_pipeline["cfg"].model_copy(
        update={"tuning": TuningSpec(n_trials=4, search_space=SPACE), "experiment": "tuning-test"}
    )
    mf = build_frame(cfg, state)
    first = search(cfg, mf, state)
    second = search(cfg, mf, state)
    assert first.best_params == second.best_params
    assert first.best_valid_auc == second.best_valid_auc
    assert 2 <= first.best_params["max_depth"] <= 5
    assert 30 <= first.best_params["n_estimators"] <= 80
    assert first.best_valid_auc >= 0.5
    client = MlflowClient(tracking_uri=state.tracking_uri)
    exp = client.get_experiment_by_name("tuning-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "tuning"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2
    assert len(children) == 8
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}
