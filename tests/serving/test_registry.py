"""Serving names its MLflow store on every call: two stores in one process, no process globals.

Each test builds its own state folders (a SQLite store and a toy snapshot each) and registers a
small ``ScoringModel`` around a logistic regression there. Logging uses MLflow's fluent API, which
only knows the process-wide tracking URI, so the set-up points it at one store for the logging
step and puts it back; everything serving does afterwards must work without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.store import StateDirs
from serving.registry import Registry
from serving.settings import ServedModel, ServingSettings
from serving.state import FeatureSetMismatch, build_state
from tests.serving.conftest import fluent_logging_to

DATASET = "toy"
NAME = "toy-churn"
KEY = "toy_v1"
AS_OF = "2024-06-30"


@pytest.fixture(autouse=True)
def _no_uri_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start without $MLFLOW_TRACKING_URI (monkeypatch puts back whatever was there)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def toy_model(sign: float, spec: dict[str, Any] | None) -> Any:
    """A ScoringModel whose score rises with x (sign +1) or falls with it (sign -1)."""
    from sklearn.linear_model import LogisticRegression

    from models.pyfunc import ScoringModel

    rng = np.random.default_rng(7)
    x = pd.DataFrame({"x": rng.normal(size=300)})
    y = (sign * x["x"] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    wrapper = ScoringModel(LogisticRegression().fit(x, y), ["x"], "churn")
    if spec is None:
        del wrapper.info  # what a model pickled before models recorded their feature set holds
    else:
        wrapper.info = {"feature_set_spec": spec}
    return wrapper


def spec_of(key: str, fingerprint: str) -> dict[str, Any]:
    return {"name": key.split("@")[0], "key": key, "rfm": None, "fingerprint": fingerprint}


def publish(state: StateDirs, model: Any, metric: float, name: str = NAME) -> str:
    """Log ``model`` to the state's own store, register it and make it champion."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = state.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name("toy")
    if found is None:
        state.mlflow_dir.mkdir(parents=True, exist_ok=True)
        location = (state.artifact_root / "toy").as_uri()
        exp_id = client.create_experiment("toy", artifact_location=location)
    else:
        exp_id = found.experiment_id
    with fluent_logging_to(uri), mlflow.start_run(experiment_id=exp_id):
        mlflow.log_metric("test_roc_auc", metric)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            registered_model_name=name,
            pip_requirements=["scikit-learn"],
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, "champion", version)
    return version


def write_snapshot(state: StateDirs, key: str, fingerprint: str | None) -> Path:
    """A toy snapshot (20 customers, one feature x), with its feature_set.json when given."""
    folder = state.snapshots(DATASET, key)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"C{i:03d}" for i in range(20)]
    frame = pd.DataFrame({"customer_id": ids, "x": np.linspace(-2.0, 2.0, len(ids))})
    path = folder / f"as_of={AS_OF}.parquet"
    frame.to_parquet(path, index=False)
    if fingerprint is not None:
        (folder / "feature_set.json").write_text(json.dumps(spec_of(key, fingerprint)))
    return path


def settings_for(state: StateDirs, **model: Any) -> ServingSettings:
    """Serve NAME@champion of the state's own store (feature set: the model's, unless given)."""
    return ServingSettings(
        models={"churn": ServedModel.model_validate({"registered_model": NAME, **model})},
        home=str(state.home),
        tracking_uri=state.tracking_uri,
        reload_interval_s=0,
    )


def test_two_stores_in_one_process_each_serve_their_own_model(tmp_path):
    import mlflow

    a = StateDirs.resolve(tmp_path / "a")
    b = StateDirs.resolve(tmp_path / "b")
    assert a.tracking_uri != b.tracking_uri
    fp = "f" * 64
    # the same registered name and version number in both stores, models of opposite sign
    publish(a, toy_model(+1.0, spec_of(KEY, fp)), metric=0.71)
    publish(b, toy_model(-1.0, spec_of(KEY, fp)), metric=0.62)
    publish(b, toy_model(-1.0, spec_of(KEY, fp)), metric=0.5, name="only-in-b")
    for state in (a, b):
        write_snapshot(state, KEY, fp)
    uri_before = mlflow.get_tracking_uri()

    served_a = build_state(settings_for(a, dataset=DATASET), a).models["churn"]
    served_b = build_state(settings_for(b, dataset=DATASET), b).models["churn"]
    again_a = build_state(settings_for(a, dataset=DATASET), a).models["churn"]

    assert served_a.meta.version == served_b.meta.version == "1"
    assert served_a.meta.metrics == again_a.meta.metrics == {"test_roc_auc": 0.71}
    assert served_b.meta.metrics == {"test_roc_auc": 0.62}
    x = served_a.base.features["x"].to_numpy()
    assert np.all(np.diff(served_a.scores[np.argsort(x)]) > 0)  # A's model: rises with x
    assert np.all(np.diff(served_b.scores[np.argsort(x)]) < 0)  # B's model: falls with x
    np.testing.assert_array_equal(served_a.scores, again_a.scores)
    # the feature set came from the model's record
    assert served_a.base.feature_set == KEY and served_a.base.snapshot_path.is_relative_to(a.home)
    assert served_b.base.snapshot_path.is_relative_to(b.home)
    registry_a, registry_b = Registry(a.tracking_uri), Registry(b.tracking_uri)
    assert registry_b.version("only-in-b", "champion")[0] == "1"
    with pytest.raises(Exception, match="only-in-b"):
        registry_a.version("only-in-b", "champion")
    assert registry_a.feature_set(NAME, "1") == spec_of(KEY, fp)

    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() == uri_before


def test_a_snapshot_built_from_another_definition_is_refused(tmp_path):
    state = StateDirs.resolve(tmp_path / "home")
    model_fp, snapshot_fp = "a" * 64, "b" * 64
    publish(state, toy_model(+1.0, spec_of(KEY, model_fp)), metric=0.7)
    write_snapshot(state, KEY, snapshot_fp)
    with pytest.raises(FeatureSetMismatch) as err:
        build_state(settings_for(state, dataset=DATASET), state)
    message = str(err.value)
    assert "'churn'" in message and NAME in message
    assert model_fp in message and snapshot_fp in message
    # rebuilt with the model's definition: served
    write_snapshot(state, KEY, model_fp)
    assert build_state(settings_for(state, dataset=DATASET), state).models["churn"].base.size == 20


def test_models_without_a_record_serve_churn_v1_or_the_named_set(tmp_path):
    state = StateDirs.resolve(tmp_path / "home")
    publish(state, toy_model(+1.0, None), metric=0.7)
    write_snapshot(state, "churn_v1", None)  # an older snapshot: no feature_set.json either
    write_snapshot(state, "custom_v1", "c" * 64)
    served = build_state(settings_for(state, dataset=DATASET), state).models["churn"]
    assert served.base.feature_set == "churn_v1" and served.base.feature_set_spec is None
    named = build_state(settings_for(state, dataset=DATASET, feature_set="custom_v1"), state)
    assert named.models["churn"].base.feature_set == "custom_v1"  # no record: nothing to refuse


def test_the_experiment_field_is_gone():
    with pytest.raises(ValueError, match="experiment"):
        ServedModel.model_validate(
            {"registered_model": NAME, "dataset": DATASET, "experiment": "x.yaml"}
        )
