"""A model family is one declared shape: a family defined only in this file trains, logs,
registers and scores through the ordinary paths, without editing any other module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from features.sources import ingest, load_dataset
from features.store import StateDirs
from models.pyfunc import ScoringModel
from training.config import ExperimentConfig, Split, load_experiment
from training.families import get_family, register
from training.families.base import Family, Frame, RunContext, Trained, split_counts
from training.frames import LABEL, SPLIT, split_labelled
from training.run import run_experiment, tracking


class MeanRegressor(RegressorMixin, BaseEstimator):
    """Predicts the mean label of the fit rows."""

    def fit(self, X: Any, y: Any) -> MeanRegressor:
        X, y = validate_data(self, X, y, y_numeric=True, dtype=None, ensure_all_finite=False)
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=None, ensure_all_finite=False)
        return np.full(len(X), self.mean_)


class MeanValueConfig(ExperimentConfig):
    family: Literal["mean_value"] = "mean_value"
    split: Split = Split(kind="random")


class MeanValue(Family):
    name = "mean_value"
    config = MeanValueConfig

    def build_frame(self, cfg: Any, ctx: RunContext) -> Frame:
        frame = ctx.catalog.read("labelled")
        frame[SPLIT] = split_labelled(frame, cfg.split, cfg.seed)
        names = [c for c in frame.columns if c not in ("customer_id", LABEL, SPLIT)]
        return Frame(frame, names)

    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        fit, test = frame.frame[frame.frame[SPLIT] != "test"], frame.part("test")
        model = MeanRegressor().fit(fit[frame.feature_names], fit[LABEL].astype(float))
        preds = pd.DataFrame(
            {
                "customer_id": test["customer_id"].astype(str),
                LABEL: test[LABEL].astype(float).to_numpy(),
                "score": model.predict(test[frame.feature_names]),
                "baseline_score": np.zeros(len(test)),  # per-row baseline: the gate's evidence
            }
        )
        trained = Trained(
            model,
            "zero",
            {},
            {},
            preds,
            test.reset_index(drop=True),
            "",
            {"kind": "mean"},
            frame.feature_names,
            split_counts(frame.frame),
        )
        trained.metrics = self.evaluate(cfg, trained, preds["score"].to_numpy())
        trained.baseline_metrics = self.evaluate(cfg, trained, np.zeros(len(preds)))
        better = trained.metrics["rmse"] < trained.baseline_metrics["rmse"]
        trained.grade = "B" if better else "C"
        return trained

    def evaluate(self, cfg: Any, trained: Trained, scores: np.ndarray) -> dict[str, float]:
        y = trained.test_predictions[LABEL].to_numpy()
        return {"rmse": float(np.sqrt(np.mean((y - scores) ** 2))), "n": float(len(y))}

    def promotion_metric(self, cfg: Any) -> tuple[str, bool]:
        return "rmse", False

    def wrap(self, cfg: Any, frame: Frame, trained: Trained) -> Any:
        return ScoringModel(trained.model, trained.feature_names, self.name)


def _dataset(folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = 400
    pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "x": rng.normal(size=n),
            "y": rng.choice([0, 1], n, p=[0.7, 0.3]),
        }
    ).to_csv(folder / "t.csv", index=False)
    (folder / "d.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "tables": {
                    "labelled": {
                        "types": {"x": "double"},
                        "sources": [
                            {
                                "path": "t.csv",
                                "columns": {
                                    "customer_id": "id",
                                    "label": {"from": "y", "values": {"1": 1, "0": 0}},
                                },
                            }
                        ],
                    }
                },
            }
        )
    )
    exp = folder / "exp.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "name": "tiny_mean",
                "family": "mean_value",
                "dataset": "d.yaml",
                "registered_model": "tiny-mean",
            }
        )
    )
    return exp


@pytest.fixture
def mean_family():
    family = register(MeanValue())
    yield family
    from training import families

    families._REGISTRY.pop("mean_value", None)


def test_a_family_defined_in_a_test_trains_logs_registers_and_scores(
    mean_family, tmp_path: Path, state: StateDirs
):
    exp = _dataset(tmp_path, 1)
    cfg = load_experiment(exp)
    assert isinstance(cfg, MeanValueConfig) and get_family("mean_value") is mean_family
    ingest(load_dataset(cfg.dataset), state)
    out = run_experiment(cfg, state)
    assert out.trained.metrics["rmse"] < out.trained.baseline_metrics["rmse"]
    assert out.logged["champion"]  # lower RMSE than the zero baseline: promoted
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    run = client.get_run(out.logged["run_id"])
    # the same complete record as every built-in family
    assert run.data.tags["family"] == "mean_value" and run.data.tags["git_sha"]
    assert run.data.tags["promotion_reason"] and run.data.tags["grade"] == "B"
    assert {"test_rmse", "baseline_rmse", "delta_baseline_rmse"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "data_manifest.json", "evaluation", "promotion.json"} <= artifacts
    resolved = json.loads(
        Path(client.download_artifacts(run.info.run_id, "config/resolved.json")).read_text()
    )
    assert resolved["family"] == "mean_value"
    champion = client.get_model_version_by_alias("tiny-mean", "champion")
    assert str(champion.version) == out.logged["version"]
    with tracking(state.tracking_uri):
        served = mlflow.pyfunc.load_model("models:/tiny-mean@champion")
    scores = served.predict(out.trained.test_frame[["x"]])["score"]
    assert np.allclose(scores, out.trained.model.mean_)
    # a second run is compared with the champion on the same rows, lower-is-better honoured
    again = run_experiment(cfg, state)
    assert again.logged["decision"]["champion"] == pytest.approx(out.trained.metrics["rmse"])
    assert not again.logged["champion"]  # equal RMSE does not beat the champion


def test_an_unknown_family_names_the_key(tmp_path: Path):
    exp = tmp_path / "e.yaml"
    exp.write_text("name: x\nfamily: no_such\ndataset: d\nregistered_model: r\n")
    with pytest.raises(ValueError, match="family: unknown family 'no_such'"):
        load_experiment(exp)


def test_a_block_of_another_family_is_refused(tmp_path: Path):
    """The config is a union discriminated by family: an nbo block in a churn config is an error."""
    from pydantic import ValidationError

    exp = tmp_path / "e.yaml"
    exp.write_text(
        "name: x\nfamily: churn\ndataset: d\nregistered_model: r\n"
        "cutoffs: {train: [2024-01-01], test: 2024-06-30}\nnbo: {k: [1]}\n"
    )
    with pytest.raises(ValidationError, match="nbo"):
        load_experiment(exp)


def test_two_state_folders_in_one_process_never_see_each_other(
    mean_family, tmp_path: Path, monkeypatch
):
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    states = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        state = StateDirs.resolve(folder / "home")
        cfg = load_experiment(_dataset(folder, 2), {"registered_model": f"model-{name}"})
        ingest(load_dataset(cfg.dataset), state)
        run_experiment(cfg, state)
        states.append(state)
    # nothing exported
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    for state, own, other in ((states[0], "model-a", "model-b"), (states[1], "model-b", "model-a")):
        client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
        names = {m.name for m in client.search_registered_models()}
        assert own in names and other not in names


def test_too_few_fit_rows_refuse_the_run_before_anything_is_logged(
    mean_family, tmp_path: Path, state: StateDirs
):
    exp = _dataset(tmp_path, 3)
    cfg = load_experiment(exp, {"min_rows": {"fit": 10_000}})
    ingest(load_dataset(cfg.dataset), state)
    with pytest.raises(ValueError, match=r"min_rows\.fit: the split leaves 2\d\d fit rows"):
        run_experiment(cfg, state)
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    assert not client.search_registered_models()  # nothing registered
