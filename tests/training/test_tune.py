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


def test_tuned_run_lands_beside_its_trials_and_pruned_trials_are_not_failures(synthetic_pipeline):
    from training.tune import run_tuning

    state = synthetic_pipeline["state"]
    cfg = synthetic_pipeline["cfg"].model_copy(
        update={
            "name": "tune_placement",
            "registered_model": "churn-tune-placement",  # leaves the pipeline's champion alone
            "tuning": TuningSpec(n_trials=7, search_space=SPACE),
        }
    )
    result = run_tuning(cfg, state)
    client = MlflowClient(tracking_uri=state.tracking_uri)
    exp = client.get_experiment_by_name("tune_placement")
    assert result.tuned_logged and result.tuned_logged["experiment_id"] == exp.experiment_id
    assert client.get_experiment_by_name("tune_placement-tuned") is None
    trials = [
        r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]
    assert len(trials) == 7
    for run in trials:
        pruned = run.data.tags.get("pruned") == "true"
        assert run.info.status == ("KILLED" if pruned else "FINISHED")
    assert sum(r.data.tags.get("pruned") == "true" for r in trials) == result.n_pruned
