"""The promotion gate on evidence: paired-bootstrap intervals against the baseline and the
champion on the same rows, guards that must not be significantly worse, readiness gates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.evaluate import binary_metrics, fast_binary_metric
from training.promote import Champion, PromotionPolicy, Readiness, decide_promotion

METRICS = ("roc_auc", "brier", "ece", "lift_top_decile", "log_loss", "precision_top_decile")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def rows() -> dict[str, np.ndarray]:
    """2,000 customers whose churn follows a known signal; scorers of known quality."""
    rng = np.random.default_rng(7)
    n = 2000
    signal = rng.normal(size=n)
    y = (rng.random(n) < _sigmoid(1.5 * signal - 0.5)).astype(int)
    truth = _sigmoid(1.5 * signal - 0.5)
    return {
        "y": y,
        "good": truth,
        # two scorers of the same true quality (independent noise of the same size)
        "twin_a": _sigmoid(1.5 * (signal + rng.normal(0, 0.8, n)) - 0.5),
        "twin_b": _sigmoid(1.5 * (signal + rng.normal(0, 0.8, n)) - 0.5),
        "weak": _sigmoid(0.6 * (signal + rng.normal(0, 1.0, n)) - 0.5),
        # the truth's ranking, probabilities pushed far from the observed rates
        "miscalibrated": _sigmoid(4.0 * (1.5 * signal - 0.5)),
    }


def _metric_of(y: np.ndarray, names: list[str]) -> dict:
    return {m: fast_binary_metric(m, y) for m in names}


def _decide(rows, challenger, baseline, champion=None, **policy):
    p = PromotionPolicy(**{"guards": ["ece", "brier", "lift_top_decile"], **policy})
    names = [p.metric, *(p.guards or []), *(r.metric for r in p.readiness)]
    return decide_promotion(p, _metric_of(rows["y"], names), challenger, baseline, champion)


def test_fast_metrics_equal_binary_metrics_on_all_rows(rows):
    every = np.arange(len(rows["y"]))
    for scorer in ("good", "weak", "miscalibrated"):
        full = binary_metrics(rows["y"], rows[scorer])
        for m in METRICS:
            fast = fast_binary_metric(m, rows["y"])
            assert fast is not None
            assert fast(every, rows[scorer]) == pytest.approx(full[m], rel=1e-9, abs=1e-12), m


def test_fast_auc_counts_ties_half_on_resampled_rows():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)  # many ties
    idx = rng.integers(0, 300, 300)  # duplicated rows
    assert fast_binary_metric("roc_auc", y)(idx, s) == pytest.approx(roc_auc_score(y[idx], s[idx]))


def test_better_within_noise_is_not_promoted(rows):
    """Equal true quality: the one with the higher point estimate by chance is not promoted,
    the interval of the difference holds 0."""
    auc = {k: binary_metrics(rows["y"], rows[k])["roc_auc"] for k in ("twin_a", "twin_b")}
    better, worse = sorted(auc, key=auc.__getitem__, reverse=True)
    d = _decide(rows, rows[better], rows[worse])
    primary = d.comparisons[0].difference
    assert primary.improvement > 0 and primary.lower <= 0 < primary.upper
    assert not d.promote
    assert "no evidence it beats the baseline" in d.reason


def test_clearly_better_is_promoted(rows):
    d = _decide(rows, rows["good"], rows["weak"])
    assert d.promote, d.reason
    assert d.comparisons[0].difference.lower > 0
    assert "beats the baseline beyond noise" in d.reason


def test_better_auc_but_significantly_worse_calibration_is_not_promoted(rows):
    d = _decide(rows, rows["miscalibrated"], rows["weak"])
    by = {(c.role, c.difference.metric): c for c in d.comparisons}
    assert by[("primary", "roc_auc")].difference.lower > 0  # ranks clearly better
    assert by[("guard", "ece")].significantly_worse
    assert not d.promote
    assert "significantly worse than the baseline on ece" in d.reason


def test_the_margin_applies_to_the_lower_bound(rows):
    d = _decide(rows, rows["good"], rows["weak"], margin=0.5)
    assert not d.promote and "by more than 0.5" in d.reason


def test_the_champion_is_beaten_on_the_same_rows(rows):
    champion = Champion("3", rows["good"].copy())
    d = _decide(rows, rows["good"], rows["weak"], champion)
    vs = {c.against for c in d.comparisons}
    assert vs == {"baseline", "champion"}
    tie = next(c for c in d.comparisons if c.against == "champion" and c.role == "primary")
    # the same scores again: exactly no improvement in every resample
    assert tie.difference.improvement == tie.difference.lower == tie.difference.upper == 0
    assert not d.promote and "no evidence it beats the champion" in d.reason
    assert d.champion == pytest.approx(binary_metrics(rows["y"], rows["good"])["roc_auc"])
    assert d.champion_scored and d.champion_version == "3"


def test_a_champion_that_cannot_score_the_rows_is_not_replaced(rows):
    champion = Champion("2", None, logged_metric=0.5, error="KeyError: 'x'")
    d = _decide(rows, rows["good"], rows["weak"], champion)
    assert not d.promote
    assert "cannot score these test rows" in d.reason and "not replaced" in d.reason
    assert d.champion == 0.5 and not d.champion_scored


def test_failing_readiness_blocks(rows):
    gate = Readiness(metric="precision_top_decile", min=0.95)
    d = _decide(rows, rows["good"], rows["weak"], readiness=[gate])
    assert d.comparisons[0].difference.lower > 0  # it beats the baseline, but is not ready
    assert not d.promote and "not ready: readiness precision_top_decile >= 0.95" in d.reason
    check = d.readiness[0]
    assert check.estimate.lower < 0.95 and not check.passed


def test_passing_readiness_on_the_lower_bound(rows):
    value = binary_metrics(rows["y"], rows["good"])["precision_top_decile"]
    ok = _decide(
        rows, rows["good"], rows["weak"], readiness=[{"metric": "precision_at_10pct", "min": 0.5}]
    )
    assert ok.promote, ok.reason
    # a threshold just under the point estimate fails: the lower bound must reach it
    near = Readiness(metric="precision_top_decile", min=value - 0.005)
    assert not _decide(rows, rows["good"], rows["weak"], readiness=[near]).promote


def test_readiness_needs_exactly_one_bound():
    with pytest.raises(ValueError, match="exactly one of min or max"):
        Readiness(metric="roc_auc")
    assert Readiness(metric="ece", max=0.05).max == 0.05


def test_graded_a_against_a_bad_baseline_is_blocked_by_readiness():
    """Regression: a model graded A (AUC 0.586) over its logistic baseline (0.484) became
    champion. Beating a bad baseline is evidence against the baseline, not of readiness."""
    rng = np.random.default_rng(3)
    n = 4000
    signal = rng.normal(size=n)
    y = (rng.random(n) < _sigmoid(signal - 1.0)).astype(int)
    model = _sigmoid(signal - 1.0 + rng.normal(0, 2.5, n))
    baseline = _sigmoid(-0.1 * signal + rng.normal(0, 1.0, n) - 1.0)
    auc_m = binary_metrics(y, model)["roc_auc"]
    auc_b = binary_metrics(y, baseline)["roc_auc"]
    assert 0.56 < auc_m < 0.62 and 0.46 < auc_b < 0.51  # the reported situation
    policy = {"guards": []}
    assert _decide({"y": y}, model, baseline, **policy).promote  # what happened
    gated = _decide(
        {"y": y}, model, baseline, readiness=[Readiness(metric="roc_auc", min=0.70)], **policy
    )
    assert not gated.promote and "not ready: readiness roc_auc >= 0.7" in gated.reason


def test_the_decision_json_carries_every_interval(rows):
    champion = Champion("1", rows["weak"])
    d = _decide(
        rows,
        rows["good"],
        rows["weak"],
        champion,
        readiness=[Readiness(metric="precision_top_decile", min=0.5)],
        n_boot=200,
    )
    doc = json.loads(json.dumps(d.to_dict()))
    assert doc["promote"] and doc["confidence"] == 0.90 and doc["n_boot"] == 200
    assert len(doc["comparisons"]) == 2 * 4  # primary + 3 guards, against baseline and champion
    for c in doc["comparisons"]:
        assert {
            "against",
            "role",
            "metric",
            "improvement",
            "lower",
            "upper",
            "level",
            "n_boot",
        } <= set(c)
        assert c["lower"] <= c["improvement"] <= c["upper"] and c["n_boot"] == 200
    assert (
        doc["readiness"][0]["passed"]
        and doc["readiness"][0]["lower"] <= doc["readiness"][0]["value"]
    )
    flat = d.evidence_metrics()
    assert "promotion_roc_auc_vs_baseline_lower" in flat
    assert "promotion_ece_vs_champion_upper" in flat
    assert "readiness_precision_top_decile_lower" in flat


def test_an_unknown_guard_blocks_with_its_name(rows):
    p = PromotionPolicy(guards=["no_such_metric"])
    d = decide_promotion(p, _metric_of(rows["y"], ["roc_auc"]), rows["good"], rows["weak"], None)
    assert not d.promote and "no_such_metric" in d.reason


def test_lower_is_better_primary_metric(rows):
    d = _decide(rows, rows["good"], rows["weak"], metric="brier", higher_is_better=False, guards=[])
    assert d.promote, d.reason
    assert d.challenger < d.baseline  # Brier values; the improvement is signed "better"
    assert d.comparisons[0].difference.improvement > 0


def test_the_gate_is_fast_on_20k_rows():
    import time

    rng = np.random.default_rng(0)
    n = 20_000
    s = rng.normal(size=n)
    y = (rng.random(n) < _sigmoid(s)).astype(int)
    a, b = _sigmoid(s + rng.normal(0, 0.5, n)), _sigmoid(s + rng.normal(0, 0.6, n))
    t0 = time.perf_counter()
    d = _decide({"y": y}, a, b, Champion("1", b), n_boot=500)
    elapsed = time.perf_counter() - t0
    assert len(d.comparisons) == 8
    assert elapsed < 20, elapsed  # 8 comparisons × 500 resamples (about 3 s on one core)
