"""Behaviour layer fixtures: synthetic data with a fixed seed and the models trained on it once.

Training happens in ONE place, ``trained_models``: the training API is being refactored, so
only that fixture knows how a model is trained and served; the tests see a ``BehaviourModel``
(the served scoring function and the out-of-time rows it is checked on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.definitions import FeatureSet
from features.store import StateDirs

ROOT = Path(__file__).resolve().parents[2]
N_CUSTOMERS = 3000  # enough for stable averages; the whole layer stays well under 90 s
EXPERIMENTS = {  # family -> experiment, as configured (same data, cutoffs, params, seed)
    "churn": ROOT / "experiments" / "churn" / "synthetic.yaml",
    "clv": ROOT / "experiments" / "clv" / "synthetic.yaml",
}


@dataclass(frozen=True)
class BehaviourModel:
    """A trained model as the checks see it."""

    family: str
    score: Callable[[pd.DataFrame], np.ndarray]  # the served score of each row
    rows: pd.DataFrame  # the out-of-time test rows: customer_id, as_of, features, label
    feature_set: FeatureSet
    metrics: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="session")
def synthetic_state(tmp_path_factory: pytest.TempPathFactory) -> StateDirs:
    """The synthetic dataset (its own fixed seed), N_CUSTOMERS customers, ingested."""
    from features.sources import ingest, load_dataset
    from features.synthetic import SyntheticConfig, generate

    state = StateDirs.resolve(tmp_path_factory.mktemp("behaviour") / "home")
    dataset = load_dataset("synthetic")
    assert dataset.synthetic is not None
    syn = SyntheticConfig.model_validate({**dataset.synthetic, "n_customers": N_CUSTOMERS})
    generate(syn, state.synthetic(dataset.name))
    ingest(dataset, state)
    return state


@pytest.fixture(scope="session")
def trained_models(synthetic_state: StateDirs) -> dict[str, BehaviourModel]:
    """Every family of EXPERIMENTS trained on the synthetic data (no MLflow), as served."""
    # the one place that calls the training API: adapt here when it changes
    from training.config import load_experiment
    from training.families import get_family
    from training.run import build_frame, train_frame

    models = {}
    for family, path in EXPERIMENTS.items():
        cfg = load_experiment(path)
        frame = build_frame(cfg, synthetic_state)
        trained = train_frame(cfg, frame)
        served = get_family(cfg.family).wrap(cfg, frame, trained)
        assert frame.feature_set is not None
        models[family] = BehaviourModel(
            family, served.score, trained.test_frame, frame.feature_set, trained.metrics
        )
    return models


@pytest.fixture(scope="session")
def churn_model(trained_models: dict[str, BehaviourModel]) -> BehaviourModel:
    return trained_models["churn"]


@pytest.fixture(scope="session")
def clv_model(trained_models: dict[str, BehaviourModel]) -> BehaviourModel:
    return trained_models["clv"]
