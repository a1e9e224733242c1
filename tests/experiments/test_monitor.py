"""Drift monitoring: PSI by hand, PSI on shifted and resampled snapshots, the logged report."""

from __future__ import annotations

import json
import os
import shutil
from datetime import date

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from experiments.monitor import (
    EPSILON,
    PSIThresholds,
    decile_stability,
    feature_psi,
    psi,
    run_monitor,
    score_shift,
)
from features.definitions import context_feature_names
from tests.experiments.page_browser import browser_fixture

REFERENCE, CURRENT = date(2024, 6, 30), date(2024, 9, 30)


# ---------------------------------------------------------------- PSI by hand


def test_psi_of_identical_arrays_is_zero():
    rng = np.random.default_rng(0)
    continuous = rng.lognormal(size=2000)
    ties = rng.poisson(1.2, size=2000).astype(float)
    with_nan = np.where(rng.random(2000) < 0.1, np.nan, continuous)
    for x in (continuous, ties, with_nan, np.full(50, 3.0)):
        assert psi(x, x.copy()) == 0.0


def test_psi_by_hand_on_a_tiny_example():
    """Reference 1..10 in two bins (cut at the median 5.5): shares 0.5 / 0.5 against 0.3 / 0.7."""
    expected = np.arange(1, 11)
    actual = [1, 2, 3, 8, 9, 10, 10, 10, 10, 10]
    by_hand = (0.3 - 0.5) * np.log(0.3 / 0.5) + (0.7 - 0.5) * np.log(0.7 / 0.5)
    assert psi(expected, actual, bins=2) == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx(0.16946, abs=1e-5)


def test_missing_values_are_a_bin_of_their_own():
    """Two missing of ten where the reference had none: that bin gets EPSILON on the left."""
    actual = [1, 2, 3, 4, 5, 6, 7, 8, np.nan, np.nan]
    by_hand = (
        (0.5 - 0.5) * np.log(0.5 / 0.5)
        + (0.3 - 0.5) * np.log(0.3 / 0.5)
        + (0.2 - EPSILON) * np.log(0.2 / EPSILON)
    )
    assert psi(np.arange(1, 11), actual, bins=2) == pytest.approx(by_hand, abs=1e-12)


def test_constant_reference_splits_below_equal_above():
    ref = np.zeros(100)
    assert psi(ref, np.zeros(40)) == 0.0
    moved = np.r_[np.zeros(50), np.ones(50)]  # half now above the constant
    by_hand = (0.5 - 1.0) * np.log(0.5 / 1.0) + (0.5 - EPSILON) * np.log(0.5 / EPSILON)
    assert psi(ref, moved) == pytest.approx(by_hand, abs=1e-12)


def test_categories_are_bins_and_a_new_category_counts():
    """Shares a .5 / b .5 / c none against a .25 / b .5 / c .25."""
    by_hand = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.25 - EPSILON) * np.log(0.25 / EPSILON)
    assert psi(list("aabb"), list("abbc")) == pytest.approx(by_hand, abs=1e-12)
    region = pd.Series(["north", "south", None, "north"])
    assert psi(region, region.copy()) == 0.0
    table = feature_psi(
        pd.DataFrame({"region": list("aabb")}), pd.DataFrame({"region": list("abbc")}), ["region"]
    )
    assert table.loc[0, "flag"] == "significant" and np.isnan(table.loc[0, "reference_mean"])


def test_thresholds_are_configurable_and_ordered():
    default = PSIThresholds()
    assert [default.flag(v) for v in (0.0, 0.099, 0.1, 0.25, 0.2501, np.nan)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "significant",
        "n/a",
    ]
    strict = PSIThresholds(moderate=0.02, significant=0.05)
    assert strict.flag(0.03) == "moderate" and strict.flag(0.06) == "significant"
    with pytest.raises(ValueError):
        PSIThresholds(moderate=0.3, significant=0.2)


def test_score_shift_and_decile_stability_by_hand():
    rng = np.random.default_rng(1)
    s = pd.Series(rng.random(1000), index=[f"C{i}" for i in range(1000)])
    same = score_shift(s, s)
    assert (same.psi, same.mean_shift, same.ks_statistic) == (0.0, 0.0, 0.0)
    grid = (np.arange(1000) + 0.5) / 1000  # evenly spread: any 0.1 window holds 100 scores
    up = score_shift(grid, grid + 0.1)
    assert up.mean_shift == pytest.approx(0.1) and up.ks_statistic == pytest.approx(0.1, abs=2e-3)
    assert up.flag == "significant"  # the lowest reference decile is emptied
    stable = decile_stability(s, s.sample(frac=1.0, random_state=3))  # same scores, other order
    assert stable.change_share == 0.0 and stable.n_common == 1000
    assert np.trace(stable.transitions.to_numpy()) == 1000
    flipped = decile_stability(s, 1 - s)
    assert flipped.change_share == 1.0  # decile d becomes 11 - d, never itself
    assert flipped.transitions.loc[1, 10] == 100
    # only customers in both runs count; deciles are each run's own
    part = decile_stability(s, s.iloc[:300])
    assert part.n_common == 300 and 0.0 < part.change_share < 1.0


# ---------------------------------------------------------------- on the synthetic snapshots


@pytest.fixture(scope="module")
def snapshots(synthetic_pipeline):
    """Feature snapshots of the synthetic data at the last training and the test cutoff."""
    from features.build import write_snapshot
    from features.definitions import feature_set
    from features.sources import connect

    state, cfg = synthetic_pipeline["state"], synthetic_pipeline["cfg"]
    fs = feature_set(cfg.feature_set)
    con = connect(state)
    try:
        paths = {d: write_snapshot(con, state, "synthetic", fs, d) for d in (REFERENCE, CURRENT)}
    finally:
        con.close()
    return synthetic_pipeline, fs, paths


def _halves(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    half = len(frame) // 2
    return frame.iloc[order[:half]], frame.iloc[order[half:]]


def test_resampled_halves_are_stable_and_the_shifted_feature_is_flagged(snapshots):
    _, fs, paths = snapshots
    snap = pd.read_parquet(paths[CURRENT])
    left, right = _halves(snap, seed=5)
    unchanged = feature_psi(left, right, fs.names)
    assert (unchanged["flag"] == "stable").all(), unchanged.head()
    shifted = right.copy()
    shifted["spend_sum_365d"] = shifted["spend_sum_365d"] * 1.5
    shifted["days_since_last_order"] = shifted["days_since_last_order"] + 60
    table = feature_psi(left, shifted, fs.names).set_index("feature")
    assert table.loc["days_since_last_order", "flag"] == "significant"
    assert table.loc["spend_sum_365d", "flag"] != "stable"
    others = table.drop(index=["spend_sum_365d", "days_since_last_order"])
    assert (others["flag"] == "stable").all()
    assert table.index[0] in {"spend_sum_365d", "days_since_last_order"}  # most shifted first


def test_monitor_run_is_logged_and_written_beside_the_snapshot(snapshots):
    pipeline, fs, paths = snapshots
    state, cfg = pipeline["state"], pipeline["cfg"]
    report = run_monitor(
        state, "synthetic", fs.name, REFERENCE, CURRENT, cfg.registered_model, state.tracking_uri
    )
    assert report.monitor_path == paths[CURRENT].parent / "monitor.json"
    saved = json.loads(report.monitor_path.read_text())
    assert saved["current_as_of"] == "2024-09-30" and saved["mlflow_run_id"]
    assert saved["score"]["psi"] == pytest.approx(report.score.psi)
    # context features (the snapshot date's month) differ between any two dates by design
    assert {f["feature"] for f in saved["features"]} == set(fs.names) - context_feature_names()
    assert "cutoff_month" in fs.names
    assert report.stability.n_common > 0.8 * len(pd.read_parquet(paths[CURRENT]))
    # the monitor leaves the process's MLflow settings as they were (it once left the global
    # tracking URI and MLFLOW_TRACKING_URI pointing at its store, which later commands of the
    # same process then read)
    assert os.environ.get("MLFLOW_TRACKING_URI") != state.tracking_uri
    client = MlflowClient(tracking_uri=state.tracking_uri)
    run = client.get_run(report.mlflow_run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == f"monitor-{cfg.registered_model}"
    assert {f"psi_{f}" for f in set(fs.names) - context_feature_names()} <= set(run.data.metrics)
    assert run.data.metrics["decile_change_share"] == pytest.approx(report.stability.change_share)
    assert run.data.metrics["score_psi"] == pytest.approx(report.score.psi)
    # the drift tag is the worst band among the features and the score ("stable" -> "none"),
    # and psi_significant names exactly the significant ones
    bands = ["n/a", "stable", "moderate", "significant"]
    flags = dict(zip(report.features["feature"], report.features["flag"], strict=True))
    flags["score"] = report.score.flag
    worst = max(flags.values(), key=bands.index)
    assert run.data.tags["drift"] == {"n/a": "none", "stable": "none"}.get(worst, worst)
    significant = {f for f, flag in flags.items() if flag == "significant"}
    assert set(filter(None, run.data.tags["psi_significant"].split(","))) == significant
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "monitor")}
    assert {"monitor/feature_psi.csv", "monitor/decile_transitions.csv"} <= arts
    champion = client.get_model_version_by_alias(cfg.registered_model, "champion")
    assert report.model_version == str(champion.version)


def test_monitor_tags_the_breached_features(snapshots):
    """A copy of the dataset whose current snapshot lapsed everyone by 60 days."""
    pipeline, fs, paths = snapshots
    state, cfg = pipeline["state"], pipeline["cfg"]
    folder = state.snapshots("synthetic_shifted", fs.name)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(paths[CURRENT], folder / f"as_of={REFERENCE.isoformat()}.parquet")
    snap = pd.read_parquet(paths[CURRENT])
    snap["days_since_last_order"] = snap["days_since_last_order"] + 60
    snap.to_parquet(folder / f"as_of={CURRENT.isoformat()}.parquet", index=False)
    report = run_monitor(
        state,
        "synthetic_shifted",
        fs.name,
        REFERENCE,
        CURRENT,
        cfg.registered_model,
        state.tracking_uri,
    )
    assert report.breached["significant"][:1] == ["days_since_last_order"]
    run = MlflowClient(state.tracking_uri).get_run(report.mlflow_run_id)
    assert "days_since_last_order" in run.data.tags["psi_significant"].split(",")
    assert run.data.tags["drift"] == "significant"
    # the same customers with one feature moved: scores shift, some customers change decile
    assert report.stability.n_common == len(snap)
    assert report.score.ks_statistic > 0 and report.stability.change_share > 0


browser = browser_fixture()


def test_patron_monitor_writes_the_drift_page(snapshots, browser, tmp_path):
    """``patron monitor --html``: the page beside nothing else, read in Chromium at 1,400 px."""
    from typer.testing import CliRunner

    from patron.cli import mount

    pipeline, fs, _ = snapshots
    state = pipeline["state"]
    out = tmp_path / "pages" / "drift.html"
    args = ["monitor", "-c", "experiments/churn/synthetic.yaml", "--home", str(state.home)]
    args += ["--reference", str(REFERENCE), "--current", str(CURRENT), "--html", str(out)]
    done = CliRunner().invoke(mount(), args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "HTML drift report written to" in done.output
    assert [p.name for p in out.parent.iterdir()] == ["drift.html"]
    page = out.read_text()
    names = set(fs.names) - context_feature_names()
    assert all(f'id="chart-dist-{n}"' in page for n in names)
    check = browser.check(out, tmp_path / "drift_synthetic.png")
    check.assert_readable(min_charts=4 + len(names))
