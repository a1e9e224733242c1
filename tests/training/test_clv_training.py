"""CLV job on synthetic data: XGBoost against BG/NBD + Gamma-Gamma, logged and registered."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import ROOT
from training.config import load_experiment
from training.evaluate import grade
from training.families.clv import CLVConfig
from training.run import run_experiment


def test_clv_job_beats_random_and_logs(synthetic_pipeline):
    state = synthetic_pipeline["state"]
    cfg = load_experiment(ROOT / "experiments" / "clv" / "synthetic.yaml")
    out = run_experiment(cfg, state)
    result, logged = out.trained, out.logged
    preds = result.test_predictions
    # the logged test scores are the served model's predictions, floored at 0
    served = result.model.predict(result.test_frame[result.feature_names])
    np.testing.assert_allclose(preds["score"], np.clip(served, 0, None))
    assert np.isfinite(preds["baseline_score"]).all()
    # both rank spend far better than random (Gini 0); neither is perfect
    assert 0.3 < result.metrics["gini"] < 1.0
    assert 0.3 < result.baseline_metrics["gini"] < 1.0
    assert result.grade == grade(
        result.metrics["gini"], result.baseline_metrics["gini"], cfg.grade.a_margin
    )
    assert logged["decision"]["promote"] == (
        result.metrics["gini"] > result.baseline_metrics["gini"]
    )
    assert set(result.details.baseline_params) >= {"bgnbd_r", "bgnbd_alpha", "gg_p", "gg_q"}
    # the value table of the base at the test cutoff (issue 13): profit, discounted, per year
    value = result.details.value
    assert isinstance(cfg, CLVConfig)
    assert value is not None and len(value.by_year) == cfg.value.years
    assert value.by_year["cumulative_npv"].iloc[-1] == pytest.approx(value.customers["npv"].sum())
    assert (value.customers["npv"] <= value.customers["npv_if_retained"] + 1e-9).all()
