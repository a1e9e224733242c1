"""CLV job on synthetic data: XGBoost against BG/NBD + Gamma-Gamma, logged and registered."""

from __future__ import annotations

import numpy as np

from tests.conftest import ROOT
from training.clv import run_clv_training
from training.config import load_experiment


def test_clv_job_beats_random_and_logs(synthetic_pipeline):
    state = synthetic_pipeline["state"]
    cfg = load_experiment(ROOT / "experiments" / "clv" / "synthetic.yaml")
    result, logged = run_clv_training(cfg, state)
    preds = result.test_predictions
    assert (preds["score"] >= 0).all()
    assert np.isfinite(preds["baseline_score"]).all()
    # both rank spend far better than random (Gini 0); neither is perfect
    assert 0.3 < result.metrics["gini"] < 1.0
    assert 0.3 < result.baseline_metrics["gini"] < 1.0
    assert result.grade in {"A", "B", "C"}
    assert logged["decision"]["promote"] == (
        result.metrics["gini"] > result.baseline_metrics["gini"]
    )
    assert set(result.baseline_params) >= {"bgnbd_r", "bgnbd_alpha", "gg_p", "gg_q"}
