"""The churn training job on synthetic data with a known truth, logged to a temporary store."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from features.definitions import CurrentStateAttributes
from training.config import ExperimentConfig, load_experiment
from training.run import build_frame, tracking, train_frame


def test_model_recovers_much_of_the_oracles_discrimination(synthetic_pipeline):
    """The truth holds each customer's real churn probability: compare AUCs on the same rows."""
    state, cfg, result = (synthetic_pipeline[k] for k in ("state", "cfg", "result"))
    truth = pd.read_parquet(state.synthetic("synthetic") / "truth_churn.parquet")
    truth = truth[pd.to_datetime(truth["as_of"]) == pd.Timestamp(cfg.cutoffs.test)]
    rows = result.test_predictions.merge(truth, on="customer_id", validate="one_to_one")
    assert len(rows) == len(result.test_predictions)  # the truth covers every test customer
    oracle = roc_auc_score(rows["label"], rows["p_churn"])
    model = roc_auc_score(rows["label"], rows["score"])
    assert model <= oracle + 0.02  # nobody beats the truth beyond noise
    # at least half of the oracle's lift over random
    assert model - 0.5 >= 0.5 * (oracle - 0.5), (model, oracle)


def test_run_is_logged_with_manifest_chart_and_registered_model(synthetic_pipeline):
    state, cfg, logged = (synthetic_pipeline[k] for k in ("state", "cfg", "logged"))
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    run = client.get_run(logged["run_id"])
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile"):
        assert f"test_{key}" in run.data.metrics
        assert f"baseline_{key}" in run.data.metrics
    assert run.data.params["feature_set"] == cfg.feature_set == "churn_v1+context_v1"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "data_manifest.json", "evaluation", "promotion.json"} <= artifacts
    charts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/gains.png" in charts
    local = client.download_artifacts(run.info.run_id, "data_manifest.json")
    with open(local) as fh:
        manifest = json.load(fh)
    assert manifest["cutoffs"]["test"] == cfg.cutoffs.test.isoformat()
    assert all(len(f["sha256"]) == 64 for f in manifest["input_files"])
    assert manifest["row_counts"]["test_rows"] == len(synthetic_pipeline["result"].test_predictions)
    version = client.get_model_version_by_alias(cfg.registered_model, "challenger")
    assert str(version.version) == logged["version"]
    with tracking(state.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}/{logged['version']}")
    assert model.metadata.signature is not None
    result = synthetic_pipeline["result"]
    rows = result.test_frame.head(5)
    probs = model.predict(rows)["score"].to_numpy()
    # the registered model is the one refitted on every labelled row: it scores as the shipped
    # model does, and it carries the evaluated model that gave the run's out-of-time scores
    assert probs == pytest.approx(result.model.predict_proba(rows[result.feature_names])[:, 1])
    wrapper = model.unwrap_python_model()
    assert wrapper.score(rows, evaluated=True) == pytest.approx(
        result.test_predictions["score"].head(5).to_numpy()
    )
    fitted = result.details.fitted_rows
    assert fitted["shipped"] == sum(
        result.row_counts[f"{s}_rows"] for s in ("fit", "valid", "test")
    )
    assert fitted["evaluated"] == fitted["shipped"] - result.row_counts["test_rows"]


def test_the_run_reads_as_analysts_use_it(synthetic_pipeline):
    """Named by family settings and a short id; the job's whole duration; the inputs listed."""
    import re

    state, logged = synthetic_pipeline["state"], synthetic_pipeline["logged"]
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    run = client.get_run(logged["run_id"])
    assert re.fullmatch(r"churn_synthetic d\d+ n\d+ lr[0-9.e-]{1,8} [0-9a-f]{6}", run.info.run_name)
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert {"synthetic.transactions", "synthetic.customers"} <= set(inputs)
    assert all(len(d.digest) == 16 and d.source_type == "local" for d in inputs.values())
    # the run started with the job (frame and fit), not when logging began: the first metric
    # comes seconds after its start (before, the run opened a moment before logging)
    first_metric = min(
        m.timestamp
        for key in ("test_roc_auc", "baseline_roc_auc")
        for m in client.get_metric_history(run.info.run_id, key)
    )
    assert first_metric - run.info.start_time > 1000


def test_champion_alias_follows_the_decision(synthetic_pipeline):
    state, cfg, logged = (synthetic_pipeline[k] for k in ("state", "cfg", "logged"))
    decision = logged["decision"]
    # the rule on evidence: every primary comparison's lower bound above the margin, no guard
    # significantly worse (its whole interval on the worse side)
    comparisons = decision["comparisons"]
    earned = all(
        c["lower"] > decision["margin"] for c in comparisons if c["role"] == "primary"
    ) and not any(c["upper"] < 0 for c in comparisons if c["role"] == "guard")
    assert decision["promote"] == (earned and bool(comparisons))
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    try:
        champion = str(client.get_model_version_by_alias(cfg.registered_model, "champion").version)
    except MlflowException:
        champion = None
    run = client.get_run(logged["run_id"])
    assert run.data.tags["promoted_to_champion"] == str(decision["promote"]).lower()
    # promoted: it holds the alias; not promoted: it never does
    assert (champion == logged["version"]) == decision["promote"]


def test_same_config_same_data_same_metrics(synthetic_pipeline):
    cfg: ExperimentConfig = synthetic_pipeline["cfg"]
    result = synthetic_pipeline["result"]
    heard: list[tuple[int, int]] = []
    mf = build_frame(cfg, synthetic_pipeline["state"], on_cutoff=lambda *d: heard.append(d))
    again = train_frame(cfg, mf)
    assert again.metrics == result.metrics
    # the progress bar's counts: every cutoff of the stacked frame, in order, from 0 of n
    n = len(cfg.cutoffs.train) + 1
    assert heard == [(i, n) for i in range(n + 1)]


def test_cutoffs_that_leak_into_the_test_period_are_refused(tmp_path):
    text = tmp_path / "x.yaml"
    text.write_text(
        "name: x\ndataset: synthetic\nregistered_model: x\nhorizon_days: 90\n"
        "cutoffs: {train: [2024-08-01], test: 2024-09-30}\n"
    )
    with pytest.raises(ValueError, match="overlaps the test cutoff"):
        load_experiment(text)


def test_full_width_feature_set_with_customer_attributes_trains(synthetic_pipeline):
    """crm_v1 + customer attributes: a string attribute goes through the unseen-category policy."""
    cfg = synthetic_pipeline["cfg"].model_copy(
        update={
            "feature_set": "crm_v1+crm_customer_v1",
            "model": cfg_model(60),
            # the synthetic customers table has no history: country is opted in by name
            "current_state_attributes": CurrentStateAttributes(allow=("country",)),
        }
    )
    mf = build_frame(cfg, synthetic_pipeline["state"])
    assert mf.categorical and set(mf.categorical) <= set(mf.feature_names)
    result = train_frame(cfg, mf)
    assert 0.5 < result.metrics["roc_auc"] <= 1.0
    assert result.baseline_metrics["roc_auc"] > 0.5


def cfg_model(n_estimators: int):
    from training.config import ModelSpec

    return ModelSpec(params={"n_estimators": n_estimators})
