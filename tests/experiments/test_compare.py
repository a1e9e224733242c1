"""Run comparison on a temporary MLflow store with hand-made runs: selection, champion, CI."""

from __future__ import annotations

import re
import shutil
import tempfile
from math import erf, sqrt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from sklearn.metrics import roc_auc_score

from experiments.compare import (
    compare_runs,
    pair_predictions,
    paired_auc_bootstrap,
    print_comparison,
    run_compare,
    select_runs,
    weighted_auc,
)
from experiments.compare_report import write_html
from training.evaluate import binary_metrics

N = 800


def _scores(rng: np.random.Generator, y: np.ndarray, noise: float) -> np.ndarray:
    """A scorer whose AUC is Phi(1 / (noise * sqrt 2)), squashed into (0, 1)."""
    return 1.0 / (1.0 + np.exp(-(y + rng.normal(scale=noise, size=len(y)) - 0.5)))


def _log_run(client, exp_id, name, preds, params, tags=None):
    run = client.create_run(exp_id, run_name=name, tags={"family": "churn", **(tags or {})})
    rid = run.info.run_id
    for k, v in {
        "feature_set": "churn_v1",
        "train_cutoffs": "2023-06-30,2023-09-30",
        "test_cutoff": "2024-09-30",
        **params,
    }.items():
        client.log_param(rid, k, v)
    if preds is not None:
        for k, v in binary_metrics(preds["label"].to_numpy(), preds["score"].to_numpy()).items():
            client.log_metric(rid, f"test_{k}", v)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "test_predictions.parquet"
            preds.to_parquet(path, index=False)
            client.log_artifact(rid, str(path), "evaluation")
    else:
        client.log_metric(rid, "test_roc_auc", 0.5)
    client.set_terminated(rid)
    return rid


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    """Five runs: strong (A), weak (B), partly other customers (C), disjoint (D), no predictions."""
    home = tmp_path_factory.mktemp("compare_store")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    exp = client.create_experiment("churn_cmp", artifact_location=(home / "art").as_uri())
    rng = np.random.default_rng(7)
    ids = np.array([f"C{i:05d}" for i in range(2 * N + 1000)])
    y_all = (rng.random(len(ids)) < 0.3).astype(int)

    def frame(sl, noise):
        y = y_all[sl]
        return pd.DataFrame(
            {
                "customer_id": ids[sl],
                "label": y,
                "score": _scores(rng, y, noise),
                "baseline_score": rng.random(len(y)),
            }
        )

    runs = {
        "A": _log_run(client, exp, "strong", frame(slice(0, N), 0.8), {"xgb.max_depth": "4"}),
        "B": _log_run(client, exp, "weak", frame(slice(0, N), 1.6), {"xgb.max_depth": "2"}),
        "C": _log_run(
            client, exp, "shifted", frame(slice(N // 2, N + N // 2), 1.0), {"xgb.max_depth": "3"}
        ),
        "D": _log_run(
            client,
            exp,
            "disjoint",
            frame(slice(2 * N, 2 * N + 500), 1.0),
            {"xgb.max_depth": "3"},
            tags={"family": "clv"},
        ),
        "E": _log_run(client, exp, "no-preds", None, {"xgb.max_depth": "5"}),
    }
    return home / "mlflow.db", runs


@pytest.fixture
def store(base_store, tmp_path):
    """A private copy of the store's database (artifacts are shared, read-only)."""
    db, runs = base_store
    shutil.copy(db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowClient(uri, uri), runs


def test_weighted_auc_equals_sklearn_with_ties_and_repeated_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(y + rng.normal(size=500), 1)  # many ties
    assert weighted_auc(y, s, np.ones((1, 500)))[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    w = rng.integers(0, 4, 500)
    expected = roc_auc_score(np.repeat(y, w), np.repeat(s, w))
    assert weighted_auc(y, s, w[None, :])[0] == pytest.approx(expected, abs=1e-12)


def test_paired_bootstrap_of_identical_scores_is_exactly_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = rng.random(300)
    assert paired_auc_bootstrap(y, s, s, n_boot=200, seed=3) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_interval_covers_the_true_difference():
    """Scores y + N(0, sd) have AUC Phi(1 / (sd sqrt 2)); the 95 % interval should cover it."""

    def phi(x: float) -> float:
        return 0.5 * (1 + erf(x / sqrt(2)))

    truth = phi(1 / (1.4 * sqrt(2))) - phi(1 / (1.0 * sqrt(2)))
    rng = np.random.default_rng(2024)
    covered, widths, reps = 0, [], 60
    for rep in range(reps):
        y = rng.integers(0, 2, 400).astype(float)
        a = y + rng.normal(scale=1.0, size=400)
        b = y + rng.normal(scale=1.4, size=400)
        diff, lo, hi = paired_auc_bootstrap(y, a, b, n_boot=300, seed=rep)
        assert lo <= diff <= hi
        covered += lo <= truth <= hi
        widths.append(hi - lo)
    assert covered >= 0.85 * reps, covered  # nominal 95 %: 57 of 60 expected
    assert 0.02 < np.mean(widths) < 0.2


def test_paired_bootstrap_depends_on_the_seed_only():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    a, b = y + rng.normal(size=300), y + rng.normal(size=300)
    assert paired_auc_bootstrap(y, a, b, 200, 5) == paired_auc_bootstrap(y, a, b, 200, 5)
    assert paired_auc_bootstrap(y, a, b, 200, 5) != paired_auc_bootstrap(y, a, b, 200, 6)


def test_pairing_uses_customer_and_label():
    champ = pd.DataFrame({"customer_id": list("abc"), "label": [1, 0, 1], "score": [0.9, 0.1, 0.8]})
    other = pd.DataFrame({"customer_id": list("bcd"), "label": [0, 0, 1], "score": [0.2, 0.3, 0.4]})
    joined, note = pair_predictions(champ, other)
    assert joined["customer_id"].tolist() == ["b"]
    assert "1 rows of 3" in note and "different labels" in note


def test_select_runs_by_experiment_tag_and_ids(store):
    uri, _, runs = store
    all_runs = select_runs(uri, "churn_cmp")
    assert {r.info.run_id for r in all_runs} == set(runs.values())
    churn = select_runs(uri, "churn_cmp", tag_filter={"family": "churn"})
    assert runs["D"] not in {r.info.run_id for r in churn} and len(churn) == 4
    assert [r.info.run_id for r in select_runs(uri, run_ids=[runs["B"], runs["A"]])] == [
        runs["B"],
        runs["A"],
    ]
    above = select_runs(uri, tag_filter="metrics.test_roc_auc > 0.6")
    assert {r.info.run_id for r in above} == set(runs.values()) - {runs["E"]}
    with pytest.raises(ValueError, match="churn_cmp"):
        select_runs(uri, "no-such-experiment")


def test_best_auc_is_the_champion_without_a_registry(store):
    uri, _, runs = store
    result = compare_runs(select_runs(uri, "churn_cmp"), n_boot=200, tracking_uri=uri)
    t = result.table.set_index("run_id")
    assert result.champion_run_id == runs["A"]
    assert "best test_roc_auc" in result.champion_reason
    assert result.table["run_id"].iloc[0] == runs["A"]
    # Δ columns are differences of the logged metrics
    assert t.loc[runs["B"], "delta_test_roc_auc"] == pytest.approx(
        t.loc[runs["B"], "test_roc_auc"] - t.loc[runs["A"], "test_roc_auc"]
    )
    assert t.loc[runs["B"], "paired_note"] == "same test rows"
    assert t.loc[runs["B"], "auc_diff_hi"] < 0  # the weak run is clearly worse
    assert t.loc[runs["B"], "data_window"] == "2023-06-30, 2023-09-30 → 2024-09-30"
    assert "param.xgb.max_depth" in result.param_columns


def test_different_test_rows_use_the_intersection_or_are_na(store):
    uri, client, runs = store
    result = compare_runs(select_runs(uri, "churn_cmp"), n_boot=200, seed=11, tracking_uri=uri)
    t = result.table.set_index("run_id")
    c = t.loc[runs["C"]]
    assert c["paired_rows"] == N // 2 and c["paired_note"].startswith("intersection: 400 rows")
    # the interval is the paired bootstrap on exactly those common rows
    preds = {
        k: pd.read_parquet(
            client.download_artifacts(
                runs[k], "evaluation/test_predictions.parquet", tempfile.mkdtemp()
            )
        )
        for k in "AC"
    }
    joined = preds["A"].merge(preds["C"], on=["customer_id", "label"], suffixes=("_a", "_c"))
    expected = paired_auc_bootstrap(joined["label"], joined["score_a"], joined["score_c"], 200, 11)
    assert (c["auc_diff"], c["auc_diff_lo"], c["auc_diff_hi"]) == pytest.approx(expected)
    assert t.loc[runs["D"], "paired_note"].startswith("n/a: no test rows in common")
    assert np.isnan(t.loc[runs["D"], "auc_diff"])
    assert "no test predictions" in t.loc[runs["E"], "paired_note"]
    assert any("no-preds" in n for n in result.notes)


def test_registry_champion_wins_over_the_best_auc(store):
    uri, client, runs = store
    client.create_registered_model("churn-cmp")
    mv = client.create_model_version("churn-cmp", source="file:///nowhere/model", run_id=runs["B"])
    client.set_registered_model_alias("churn-cmp", "champion", mv.version)
    result = compare_runs(select_runs(uri, "churn_cmp"), n_boot=200, tracking_uri=uri)
    assert result.champion_run_id == runs["B"]
    assert "churn-cmp@champion" in result.champion_reason
    a = result.table.set_index("run_id").loc[runs["A"]]
    assert a["auc_diff_lo"] > 0 and a["delta_test_roc_auc"] > 0


def test_terminal_and_html_output(store, tmp_path):
    uri, client, runs = store
    client.set_tag(runs["B"], "mlflow.runName", "<script>alert(1)</script>")
    console = Console(record=True, width=300)
    result = run_compare(
        "churn_cmp",
        None,
        {"family": "churn"},
        tmp_path / "r" / "cmp.html",
        uri,
        n_boot=100,
        console=console,
    )
    text = console.export_text()
    assert "★ strong" in text and "Δ AUC vs champion" in text and "[-" in text
    page = (tmp_path / "r" / "cmp.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert 'src="http' not in page and "<link" not in page  # self-contained
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1  # plotly.js inline, once
    charts = re.findall(r'<div id="(chart-[a-z-]+)" class="plotly-graph-div"', page)
    assert len(charts) == 6
    assert page.count('class="decile"') == 3  # A, B, C have predictions; E none
    table = page.split('<table id="comparison">')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + 4 and table.count('class="champion"') == 1
    assert not list((tmp_path / "r").glob(".*tmp"))  # atomic: no temporary left behind
    write_html(result, tmp_path / "again.html")
    assert (tmp_path / "again.html").stat().st_size > 10_000
    print_comparison(result, Console(record=True, width=200))
