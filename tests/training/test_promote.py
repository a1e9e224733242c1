"""The promotion policy: its config shape, the metric directions and the family's guards."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.families import get_family
from training.promote import PromotionPolicy, Readiness, higher_is_better


def test_defaults_are_the_documented_ones():
    policy = PromotionPolicy()
    assert (policy.margin, policy.confidence, policy.n_boot) == (0.0, 0.90, 500)
    assert policy.guards is None  # the family's defaults
    assert policy.readiness == []  # no readiness gate unless configured


def test_readiness_reads_from_yaml_shape():
    policy = PromotionPolicy.model_validate(
        {
            "readiness": [
                {"metric": "precision_top_decile", "min": 0.7},
                {"metric": "ece", "max": 0.05},
            ]
        }
    )
    assert policy.readiness == [
        Readiness(metric="precision_top_decile", min=0.7),
        Readiness(metric="ece", max=0.05),
    ]
    with pytest.raises(ValidationError):
        PromotionPolicy.model_validate({"readiness": [{"metric": "roc_auc", "above": 0.7}]})


@pytest.mark.parametrize(
    ("metric", "higher"),
    [
        ("roc_auc", True),
        ("lift_top_decile", True),
        ("ece", False),
        ("brier", False),
        ("log_loss", False),
        ("rmse", False),
        ("gini", True),
    ],
)
def test_metric_directions(metric, higher):
    assert higher_is_better(metric) is higher


class _Cfg:
    def __init__(self, guards):
        self.promotion = PromotionPolicy(guards=guards)


@pytest.mark.parametrize(
    ("family", "defaults"),
    [
        ("churn", ["ece", "brier", "lift_top_decile"]),
        ("propensity", ["ece", "brier", "lift_top_decile"]),
        ("labelled", ["ece", "brier", "lift_top_decile"]),
        ("clv", ["rmse", "top_decile_capture"]),
    ],
)
def test_families_declare_their_guards_and_the_config_wins(family, defaults):
    f = get_family(family)
    assert f.promotion_guards(_Cfg(None)) == defaults
    assert f.promotion_guards(_Cfg([])) == []
    assert f.promotion_guards(_Cfg(["brier"])) == ["brier"]
