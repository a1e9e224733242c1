"""A feature-set key pins its whole definition, RFM settings included: a model trained with
custom RFM settings is served from a snapshot computed with the same settings, never with the
defaults under the same name."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.build import snapshot_feature_set
from features.definitions import RFMPointsConfig, feature_set, feature_set_from_spec
from tests.conftest import ROOT
from training.config import load_experiment
from training.run import build_frame

CUSTOM_RFM = {
    "recency_bands_days": [30, 60, 120],
    "recency_points": [30, 15, 5],
    "points_per_order": 2.0,
}


def test_custom_rfm_gets_its_own_key_and_refuses_a_changed_definition():
    default, custom = (
        feature_set("churn_v1"),
        feature_set("churn_v1", RFMPointsConfig(**CUSTOM_RFM)),
    )
    assert default.key == "churn_v1" and custom.key.startswith("churn_v1@rfm-")
    assert default.fingerprint != custom.fingerprint
    assert feature_set_from_spec(custom.spec()).fingerprint == custom.fingerprint
    tampered = {**custom.spec(), "fingerprint": default.fingerprint}
    with pytest.raises(ValueError, match="fingerprint"):
        feature_set_from_spec(tampered)
    with pytest.raises(KeyError, match="custom settings"):
        feature_set(custom.key)


def test_served_features_equal_trained_features_with_custom_rfm(synthetic_pipeline, tmp_path):
    from features.cli import write_snapshot_at
    from patron.cli import served_experiment

    state = synthetic_pipeline["state"]
    text = (ROOT / "experiments" / "churn" / "synthetic.yaml").read_text()
    exp = tmp_path / "custom_rfm.yaml"
    exp.write_text(text + "rfm: " + json.dumps(CUSTOM_RFM) + "\n")
    cfg = load_experiment(exp)
    frame = build_frame(cfg, state)
    served = served_experiment(exp)  # what `patron serve -c` and `patron score -c` serve
    assert served.feature_set_key == frame.feature_set.key != "churn_v1"
    t = cfg.cutoffs.test
    path = write_snapshot_at(served.dataset, served.feature_set, t, state)
    assert path.parent.name == served.feature_set_key
    # the snapshot folder records the definition it was built with
    recorded = snapshot_feature_set(state, served.dataset, served.feature_set_key)
    assert recorded.fingerprint == frame.feature_set.fingerprint
    snapshot = pd.read_parquet(path).set_index("customer_id")
    trained = frame.part("test").set_index("customer_id")
    names = frame.feature_names
    pd.testing.assert_frame_equal(
        snapshot.loc[trained.index, names], trained[names], check_dtype=False
    )
    # the released name with default settings computes other values: the key is what pins them
    default = pd.read_parquet(
        write_snapshot_at(served.dataset, feature_set("churn_v1"), t, state)
    ).set_index("customer_id")
    assert (default.loc[trained.index, "rfm_points"] != trained["rfm_points"]).mean() > 0.1
