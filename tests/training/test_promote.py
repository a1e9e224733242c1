"""Promotion rules: beat both the baseline and the champion by the margin."""

from __future__ import annotations

import pytest

from training.promote import PromotionPolicy, decide_promotion


@pytest.mark.parametrize(
    ("challenger", "baseline", "champion", "margin", "expected"),
    [
        (0.80, 0.70, None, 0.0, True),
        (0.80, 0.70, 0.79, 0.0, True),
        (0.80, 0.70, 0.79, 0.02, False),  # not enough over the champion
        (0.80, 0.81, None, 0.0, False),  # loses to the baseline
        (0.80, 0.80, None, 0.0, False),  # a tie is not a win
        (0.80, 0.70, 0.85, 0.0, False),
    ],
)
def test_decide_promotion(challenger, baseline, champion, margin, expected):
    decision = decide_promotion(PromotionPolicy(margin=margin), challenger, baseline, champion)
    assert decision.promote is expected
    assert decision.reason


def test_lower_is_better_metrics():
    policy = PromotionPolicy(metric="rmse", higher_is_better=False, margin=1.0)
    assert decide_promotion(policy, 10.0, 12.0, None).promote
    assert not decide_promotion(policy, 10.0, 10.5, None).promote
