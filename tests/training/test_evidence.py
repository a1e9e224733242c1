"""The paired bootstrap: rows or whole groups, the same draws for both scorers, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from training.evidence import bootstrap_interval, paired_bootstrap, resamples


def _mean(idx: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean(scores[idx]))


def test_group_resamples_draw_whole_groups():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    for idx in resamples(len(groups), groups, n_boot=50, seed=1):
        drawn = groups[idx]
        for g in np.unique(drawn):
            members = np.flatnonzero(groups == g)
            # every row of a drawn group, the same number of times
            counts = np.bincount(idx, minlength=len(groups))[members]
            assert (counts == counts[0]).all() and counts[0] > 0
        assert len(np.unique(drawn)) <= 3


def test_row_resamples_have_n_rows_and_depend_on_the_seed_only():
    a = list(resamples(10, None, n_boot=5, seed=3))
    b = list(resamples(10, None, n_boot=5, seed=3))
    assert all(len(i) == 10 for i in a)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))


def test_identical_scorers_differ_by_exactly_zero():
    s = np.random.default_rng(0).random(200)
    d = paired_bootstrap("mean", _mean, s, s.copy(), n_boot=100)
    assert d.improvement == d.lower == d.upper == 0.0 and d.n_units == 200


def test_a_constant_shift_is_recovered_and_signed_by_direction():
    s = np.random.default_rng(0).random(300)
    up = paired_bootstrap("mean", _mean, s + 0.1, s, n_boot=100)
    assert up.lower == pytest.approx(0.1) and up.upper == pytest.approx(0.1)
    down = paired_bootstrap("mean", _mean, s + 0.1, s, higher_is_better=False, n_boot=100)
    assert down.improvement == pytest.approx(-0.1) and down.upper < 0


def test_groups_widen_the_interval_of_correlated_rows():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 25)  # 40 customers × 25 offer pairs
    effect = rng.normal(0, 1, 40)[groups]  # within-customer correlation
    a, b = effect + rng.normal(0, 0.1, 1000), np.zeros(1000)
    rows = paired_bootstrap("mean", _mean, a, b, n_boot=300)
    grouped = paired_bootstrap("mean", _mean, a, b, groups=groups, n_boot=300)
    assert grouped.n_units == 40
    assert (grouped.upper - grouped.lower) > 2 * (rows.upper - rows.lower)


def test_bootstrap_interval_of_one_scorer():
    s = np.random.default_rng(0).normal(0.5, 0.1, 2000)
    e = bootstrap_interval("mean", _mean, s, n_boot=300, level=0.9)
    assert e.lower < e.value < e.upper
    assert e.upper - e.lower == pytest.approx(2 * 1.645 * 0.1 / np.sqrt(2000), rel=0.25)
