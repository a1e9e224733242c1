"""Tuning: seeded, nested MLflow runs per trial; out-of-time folds that never hold a test row or a
label window still open at the validation cutoff; tuned parameters kept only on evidence."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from training.config import ModelSpec, SearchParam, TuningSpec, experiment_config
from training.families.base import Frame
from training.frames import AS_OF, ID, LABEL, SPLIT
from training.run import build_frame
from training.tune import rank_auc, search, tuning_folds

SPACE = {
    "max_depth": SearchParam(type="int", low=2, high=5),
    "learning_rate": SearchParam(type="float", low=0.03, high=0.3, log=True),
    "n_estimators": SearchParam(type="int", low=30, high=80),
}
FEATURES = ["x1", "x2", "x3", "x4"]


def cutoff_cfg(train: list[date], test: date, horizon: int = 90, **extra):
    return experiment_config(
        {
            "name": "tune_unit",
            "family": "churn",
            "dataset": "synthetic",
            "registered_model": "tune-unit",
            "horizon_days": horizon,
            "cutoffs": {"train": train, "test": test},
            **extra,
        }
    )


def cutoff_frame(train: list[date], test: date, n: int, label_of, seed: int = 0) -> Frame:
    """n customers at every cutoff with four standard-normal features and label_of(x, rng)."""
    rng = np.random.default_rng(seed)
    parts = []
    for as_of in [*train, test]:
        x = rng.standard_normal((n, len(FEATURES)))
        part = pd.DataFrame(x, columns=FEATURES)
        part.insert(0, ID, [f"C{i}" for i in range(n)])
        part.insert(1, AS_OF, pd.Timestamp(as_of))
        part[LABEL] = label_of(x, rng).astype(int)
        part[SPLIT] = "test" if as_of == test else ("valid" if as_of == train[-1] else "fit")
        parts.append(part)
    return Frame(pd.concat(parts, ignore_index=True), list(FEATURES))


def noise(x, rng):
    return rng.random(len(x)) < 0.4


def interaction(x, rng):
    """Depends on the sign of x1 * x2 only: one split per tree cannot see it."""
    return (x[:, 0] * x[:, 1] > 0) ^ (rng.random(len(x)) < 0.1)


def test_rank_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.3
    s = np.round(rng.random(500), 1)  # many ties
    assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError):
        rank_auc(np.zeros(5), s[:5])


def test_rolling_origin_folds_never_fit_on_open_label_windows():
    # monthly cutoffs with a 90-day horizon: a row at c is labelled up to c + 90 days, so the
    # validation cutoff v may only be fitted on cutoffs at least 90 days before it
    train = [date(2023, m, 1) for m in range(1, 9)]
    test = date(2023, 12, 1)
    cfg = cutoff_cfg(train, test, tuning=TuningSpec(folds=3))
    mf = cutoff_frame(train, test, 60, noise)
    plan = tuning_folds(cfg, mf)
    assert plan.scheme == "rolling_origin"
    assert len(plan.folds) == 3
    when = mf.frame[AS_OF]
    test_rows = set(np.flatnonzero(mf.frame[SPLIT] == "test"))
    valid_cutoffs = []
    for fold in plan.folds:
        v = when.iloc[fold.valid].unique()
        assert len(v) == 1
        v = pd.Timestamp(v[0]).date()
        valid_cutoffs.append(v)
        fit_when = when.iloc[fold.fit]
        assert (fit_when + timedelta(days=90) <= pd.Timestamp(v)).all()
        assert set(fit_when.dt.date) == {c for c in train if c + timedelta(days=90) <= v}
        assert not test_rows & (set(fold.fit) | set(fold.valid))
    assert valid_cutoffs == train[-3:]


def test_rolling_origin_is_capped_and_single_cutoff_falls_back():
    train = [date(2023, 1, 1), date(2023, 4, 1), date(2023, 7, 1)]
    cfg = cutoff_cfg(train, date(2023, 10, 1), tuning=TuningSpec(folds=5))
    plan = tuning_folds(cfg, cutoff_frame(train, date(2023, 10, 1), 60, noise))
    assert [f.name.split(" (")[0] for f in plan.folds] == ["cutoff 2023-04-01", "cutoff 2023-07-01"]
    one = cutoff_cfg([date(2023, 1, 1)], date(2023, 6, 1))
    mf = cutoff_frame([date(2023, 1, 1)], date(2023, 6, 1), 80, noise)
    mf.frame.loc[mf.frame[SPLIT] == "valid", SPLIT] = "fit"
    mf.frame.loc[mf.frame.index[:20], SPLIT] = "valid"
    plan = tuning_folds(one, mf)
    assert plan.scheme == "single_split"
    assert "one training cutoff" in plan.note
    assert len(plan.folds[0].valid) == 20 and len(plan.folds[0].fit) == 60
    mf.frame[SPLIT] = mf.frame[SPLIT].replace("valid", "fit")
    with pytest.raises(ValueError, match="no usable validation rows"):
        tuning_folds(one, mf)


def test_labelled_folds_cover_the_non_test_rows_once_and_no_test_row():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.standard_normal((400, 4)), columns=FEATURES)
    frame[ID] = [f"C{i}" for i in range(400)]
    frame[LABEL] = (rng.random(400) < 0.3).astype(int)
    frame[SPLIT] = np.where(np.arange(400) % 4 == 0, "test", "fit")
    for kind in ("stratified", "ordered"):
        cfg = experiment_config(
            {
                "name": "t",
                "family": "labelled",
                "dataset": "telco_churn",
                "registered_model": "t",
                "split": {"kind": kind},
                "tuning": {"folds": 4},
            }
        )
        plan = tuning_folds(cfg, Frame(frame, list(FEATURES)))
        valid = np.concatenate([f.valid for f in plan.folds])
        test = set(np.flatnonzero(frame[SPLIT] == "test"))
        assert not test & set(valid)
        assert not test & set(np.concatenate([f.fit for f in plan.folds]))
        if kind == "stratified":
            assert plan.scheme == "stratified_folds"
            assert sorted(valid) == sorted(set(range(400)) - test)
        else:
            assert plan.scheme == "forward_chaining"
            for f in plan.folds:  # fitted on earlier rows only
                assert f.fit.max() < f.valid.min()


TRAIN = [date(2023, 1, 1), date(2023, 4, 1), date(2023, 7, 1), date(2023, 10, 1)]
TEST = date(2024, 1, 1)
SMALL = {"params": {"n_estimators": 40, "max_depth": 3}}  # fast defaults


def test_search_never_reads_test_rows(state):
    cfg = cutoff_cfg(
        TRAIN,
        TEST,
        model=SMALL,
        tuning=TuningSpec(n_trials=3, folds=2, search_space=SPACE),
        promotion={"n_boot": 100},
    )
    mf = cutoff_frame(TRAIN, TEST, 200, interaction)
    first = search(cfg, mf, state)
    test = mf.frame[SPLIT] == "test"
    rng = np.random.default_rng(9)
    mf.frame.loc[test, LABEL] = 1 - mf.frame.loc[test, LABEL]
    mf.frame.loc[test, FEATURES] = rng.standard_normal((int(test.sum()), len(FEATURES)))
    second = search(cfg, mf, state)
    assert first.best_params == second.best_params
    assert first.evidence == second.evidence
    assert first.kept == second.kept


def test_tuned_params_not_kept_on_noise(state):
    cfg = cutoff_cfg(
        TRAIN,
        TEST,
        model=SMALL,
        tuning=TuningSpec(n_trials=3, folds=3, search_space=SPACE),
        promotion={"n_boot": 200},
    )
    result = search(cfg, cutoff_frame(TRAIN, TEST, 250, noise), state)
    assert not result.kept
    assert result.final_params == {}
    assert result.reason.startswith("tuned parameters not kept")
    assert result.evidence is not None and result.evidence.lower <= cfg.promotion.margin


def test_tuned_params_kept_when_defaults_are_crippled(state):
    cfg = cutoff_cfg(
        TRAIN,
        TEST,
        model={"params": {"max_depth": 1, "n_estimators": 5}},
        tuning=TuningSpec(
            n_trials=3,
            folds=3,
            search_space={
                "max_depth": SearchParam(type="int", low=3, high=5),
                "n_estimators": SearchParam(type="int", low=40, high=80),
            },
        ),
        promotion={"n_boot": 200},
    )
    result = search(cfg, cutoff_frame(TRAIN, TEST, 250, interaction), state)
    assert result.kept, result.reason
    assert result.final_params == result.best_params
    assert result.best_valid_auc > result.default_valid_auc + 0.1
    assert result.evidence is not None and result.evidence.lower > 0
    client = MlflowClient(tracking_uri=state.tracking_uri)
    exp = client.get_experiment_by_name("tune_unit")
    parent = next(
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "tuning"
    )
    assert parent.data.tags["tuning.kept"] == "true"
    assert parent.data.metrics["tuned_improvement_lower"] == pytest.approx(result.evidence.lower)


FAST_MODEL = ModelSpec(params={"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1})


def test_search_is_seeded_and_logs_nested_trials(synthetic_pipeline):
    state = synthetic_pipeline["state"]
    cfg = synthetic_pipeline["cfg"].model_copy(
        update={
            "tuning": TuningSpec(n_trials=4, search_space=SPACE),
            "experiment": "tuning-test",
            "model": FAST_MODEL,
        }
    )
    mf = build_frame(cfg, state)
    first = search(cfg, mf, state)
    second = search(cfg, mf, state)
    assert first.best_params == second.best_params
    assert first.best_valid_auc == second.best_valid_auc
    assert first.plan is not None and first.plan.scheme == "rolling_origin"
    assert len(first.plan.folds) == 3
    assert 2 <= first.best_params["max_depth"] <= 5
    assert 30 <= first.best_params["n_estimators"] <= 80
    assert first.best_valid_auc >= 0.5
    client = MlflowClient(tracking_uri=state.tracking_uri)
    exp = client.get_experiment_by_name("tuning-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "tuning"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2
    assert len(children) == 8
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}


def test_tuned_run_lands_beside_its_trials_and_pruned_trials_are_not_failures(synthetic_pipeline):
    from training.tune import run_tuning

    state = synthetic_pipeline["state"]
    cfg = synthetic_pipeline["cfg"].model_copy(
        update={
            "name": "tune_placement",
            "registered_model": "churn-tune-placement",  # leaves the pipeline's champion alone
            "tuning": TuningSpec(n_trials=7, search_space=SPACE),
            "model": FAST_MODEL,
        }
    )
    ticks = []
    result = run_tuning(
        cfg, state, progress=lambda done, total, best: ticks.append((done, total, best))
    )
    assert ticks[-1][:2] == (7, 7)
    bests = [b for _, _, b in ticks if b is not None]  # the best value so far never falls
    assert bests and all(a <= b for a, b in zip(bests, bests[1:], strict=False))
    client = MlflowClient(tracking_uri=state.tracking_uri)
    exp = client.get_experiment_by_name("tune_placement")
    assert result.tuned_logged and result.tuned_logged["experiment_id"] == exp.experiment_id
    assert client.get_experiment_by_name("tune_placement-tuned") is None
    final = client.get_run(result.tuned_logged["run_id"])
    assert final.data.tags["tuning.kept"] == str(result.kept).lower()
    trials = [
        r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]
    assert len(trials) == 7
    for run in trials:
        pruned = run.data.tags.get("pruned") == "true"
        assert run.info.status == ("KILLED" if pruned else "FINISHED")
    assert sum(r.data.tags.get("pruned") == "true" for r in trials) == result.n_pruned
