"""Invariance checks on trained models: who a customer is called and where its row sits in the
batch change no score, per row and exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.behaviour.conftest import BehaviourModel
from tests.behaviour.counterfactuals import id_sensitivity, order_sensitivity

FAMILIES = ["churn", "clv"]


@pytest.mark.parametrize("family", FAMILIES)
def test_renaming_customer_ids_changes_no_score(
    trained_models: dict[str, BehaviourModel], family: str
) -> None:
    model = trained_models[family]
    assert id_sensitivity(model.score, model.rows) == 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_row_order_changes_no_score(trained_models: dict[str, BehaviourModel], family: str) -> None:
    model = trained_models[family]
    assert order_sensitivity(model.score, model.rows, seed=1) == 0.0


def test_the_invariance_checks_catch_a_model_that_reads_ids_or_positions(
    churn_model: BehaviourModel,
) -> None:
    rows = churn_model.rows

    def reads_ids(frame: pd.DataFrame) -> np.ndarray:  # e.g. an id leaked in as a feature
        salt = frame["customer_id"].astype(str).map(lambda s: hash(s) % 7).to_numpy()
        return churn_model.score(frame) + 1e-6 * salt

    def reads_positions(frame: pd.DataFrame) -> np.ndarray:  # e.g. a rank within the batch
        return churn_model.score(frame) + 1e-9 * np.arange(len(frame))

    assert id_sensitivity(reads_ids, rows) > 0.0
    assert order_sensitivity(reads_positions, rows) > 0.0
