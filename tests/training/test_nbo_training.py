"""The next-best-offer job end to end: synthetic data (model vs popularity out of time, MLflow
logging, registry, champion / challenger, serving inputs) and Online Retail with derived groups."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.build import customer_inputs, data_date_range
from features.definitions import feature_set_from_spec
from features.offers import products_relation_sql
from features.sources import connect
from features.sql import sql_literal
from features.store import StateDirs
from tests.conftest import ROOT, require_dataset
from training.config import load_experiment
from training.evaluate import grade
from training.run import run_experiment, tracking


def run_nbo_training(cfg, state, params=None):
    out = run_experiment(cfg, state, params=params)
    return out.trained.details, out.logged


def scoring_inputs(cfg, state, model, as_of=None):
    """The NBO inputs of every customer at ``as_of``, rebuilt from what the model recorded."""
    from features.catalog import Catalog
    from features.sources import load_dataset

    catalog = Catalog(state, load_dataset(cfg.dataset).name)
    source = catalog.relation("transactions")
    path = (model.info.get("products") or {}).get("path")
    products = (
        products_relation_sql(
            f"read_csv({sql_literal(path)}, header = true, all_varchar = true)"
            if not path.endswith(".parquet")
            else f"read_parquet({sql_literal(path)})"
        )
        if path
        else None
    )
    con = connect(state)
    try:
        as_of = as_of or data_date_range(con, source)[1]
        fs = feature_set_from_spec(model.info["feature_set_spec"])
        return customer_inputs(con, source, as_of, fs, model.categories, products)
    finally:
        con.close()


SYNTHETIC_YAML = ROOT / "experiments" / "nbo" / "synthetic.yaml"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A state folder of its own: PATRON_HOME points at it, MLflow into it."""
    path = tmp_path_factory.mktemp("nbo") / "home"
    old = {k: os.environ.get(k) for k in ("PATRON_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["PATRON_HOME"] = str(path)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield StateDirs.resolve(path)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def synthetic_run(home: StateDirs):
    """3 000 synthetic customers generated, ingested, and the NBO job run once."""
    from features.sources import ingest, load_dataset
    from features.synthetic import SyntheticConfig, generate

    dataset = load_dataset("synthetic")
    syn = dict(dataset.synthetic or {})
    syn.pop("campaigns", None)  # not needed here; keeps the generator fast
    generate(
        SyntheticConfig.model_validate({**syn, "n_customers": 3000}), home.synthetic(dataset.name)
    )
    tables = {k: v for k, v in dataset.tables.items() if k in ("transactions", "offers")}
    ingest(dataset.model_copy(update={"tables": tables}), home)
    cfg = load_experiment(SYNTHETIC_YAML)
    result, logged = run_nbo_training(cfg, home)
    return {"cfg": cfg, "result": result, "logged": logged, "state": home}


def _table(result) -> str:
    keys = [f"{m}_at_{k}" for k in (1, 3, 5) for m in ("hit", "map", "ndcg")] + ["roc_auc"]
    return " ".join(f"{k}={result.metrics[k]:.3f}/{result.baseline_metrics[k]:.3f}" for k in keys)


def test_model_beats_popularity_out_of_time(synthetic_run):
    result = synthetic_run["result"]
    print("\nsynthetic model/popularity:", _table(result))
    assert result.metrics["n_customers"] > 300
    assert result.metrics["map_at_3"] > result.baseline_metrics["map_at_3"]
    assert result.metrics["ndcg_at_3"] > result.baseline_metrics["ndcg_at_3"]
    assert result.grade == grade(
        result.metrics["map_at_3"],
        result.baseline_metrics["map_at_3"],
        synthetic_run["cfg"].grade.a_margin,
    )
    kinds = set(result.test_pairs["kind"])
    assert kinds == {"cross_sell", "up_sell"}  # tiers came from the generated catalogue
    # every test pair is eligible: a cross-sell never offers a category bought in the window
    frame = result.test_frame
    days = np.array(
        [
            frame.at[i, f"cat_days__{c}"]
            for i, c in zip(frame.index, frame["offer_category"], strict=True)
            if isinstance(c, str)
        ]
    )
    assert not (days < 365).any()


def test_run_is_logged_and_registered(synthetic_run):
    import mlflow
    from mlflow.tracking import MlflowClient

    state, cfg, logged = (synthetic_run[k] for k in ("state", "cfg", "logged"))
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    run = client.get_run(logged["run_id"])
    assert run.data.params["family"] == "nbo"
    assert run.data.params["nbo.offers"] == "table"
    assert run.data.metrics["test_map_at_3"] == pytest.approx(
        synthetic_run["result"].metrics["map_at_3"]
    )
    assert "baseline_map_at_3" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(logged["run_id"])}
    assert {"data_manifest.json", "config", "evaluation", "promotion.json"} <= artifacts
    evaluation = {Path(a.path).name for a in client.list_artifacts(logged["run_id"], "evaluation")}
    assert {
        "ranking.png",
        "calibration.png",
        "offers.csv",
        "per_offer.csv",
        "test_predictions.parquet",
    } <= evaluation
    manifest = json.loads(
        Path(client.download_artifacts(logged["run_id"], "data_manifest.json")).read_text()
    )
    assert manifest["offers"]["count"] == len(synthetic_run["result"].offers)
    assert manifest["products"]["sha256"]
    assert manifest["row_counts"]["test_pairs"] == len(synthetic_run["result"].test_pairs)
    mv = client.get_model_version_by_alias(cfg.registered_model, "challenger")
    assert str(mv.version) == logged["version"]
    champion = client.get_model_version_by_alias(cfg.registered_model, "champion")
    assert str(champion.version) == logged["version"]  # beat popularity, no champion before
    with tracking(state.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}@challenger")
    wrapper = model.unwrap_python_model()
    inputs = scoring_inputs(cfg, state, wrapper).head(50)
    direct = synthetic_run["result"].model.rank(inputs, k=3)
    pd.testing.assert_frame_equal(wrapper.rank(inputs, k=3), direct)
    served = model.predict(inputs, params={"k": 3, "kind": "any", "by": "expected_value"})
    assert list(served["offer_id"]) == list(direct["offer_id"])


def test_serving_inputs_equal_the_training_inputs_at_a_cutoff(synthetic_run):
    state, cfg, result = (synthetic_run[k] for k in ("state", "cfg", "result"))
    inputs = scoring_inputs(cfg, state, result.model, cfg.cutoffs.test).set_index("customer_id")
    test = result.test_frame.drop_duplicates("customer_id").set_index("customer_id")
    cols = [c for c in result.model.input_columns if c != "customer_id"]
    pd.testing.assert_frame_equal(
        inputs.loc[test.index, cols], test[cols], check_dtype=False, check_names=False
    )


def test_next_run_is_judged_against_the_champion_on_the_same_pairs(synthetic_run):
    from mlflow.tracking import MlflowClient

    state, cfg, first = (synthetic_run[k] for k in ("state", "cfg", "result"))
    result, logged = run_nbo_training(cfg, state, params={"n_estimators": 40, "max_depth": 2})
    decision = logged["decision"]
    assert decision["champion"] == pytest.approx(first.metrics["map_at_3"])
    assert decision["promote"] == (
        result.metrics["map_at_3"]
        > max(first.metrics["map_at_3"], result.baseline_metrics["map_at_3"])
    )
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    champion = client.get_model_version_by_alias(cfg.registered_model, "champion")
    expected = logged["version"] if decision["promote"] else synthetic_run["logged"]["version"]
    assert str(champion.version) == expected


@pytest.mark.realdata
def test_online_retail_with_derived_offer_groups(home: StateDirs):
    require_dataset("online_retail_ii", "online_retail_i_2010_2011.csv.gz")
    from features.sources import ingest, load_dataset

    ingest(load_dataset("online_retail_offers"), home)
    cfg = load_experiment(ROOT / "experiments" / "nbo" / "online_retail.yaml")
    result, logged = run_nbo_training(cfg, home)
    print("\nonline retail model/popularity:", _table(result))
    offers = result.offers
    assert result.offers_source == "derived"
    assert "XS_OTHER" not in set(offers["offer_id"])
    assert len(offers) >= 10 and (offers["kind"] == "cross_sell").all()
    assert (offers["value"] > 0).all()
    assert result.metrics["n_customers"] > 500
    for key in ("hit_at_3", "map_at_3", "ndcg_at_3"):
        assert 0 < result.metrics[key] <= 1 and 0 < result.baseline_metrics[key] <= 1
    # personalised probabilities separate takers from non-takers better than offer popularity
    assert result.metrics["roc_auc"] > result.baseline_metrics["roc_auc"]
    assert logged["version"]


def test_auto_settings_are_chosen_on_validation_pairs_never_on_test_pairs(synthetic_run):
    """seasonal / rank_by auto pick on the validation cutoff's pairs: flipping every test label
    and scrambling the test pairs' features leaves the choice and its evidence unchanged."""
    from training.families.nbo import choose_rank_by, choose_seasonal
    from training.run import build_frame

    base, state = synthetic_run["cfg"], synthetic_run["state"]
    cfg = base.model_copy(
        update={"nbo": base.nbo.model_copy(update={"seasonal": "auto", "rank_by": "auto"})}
    )
    params = {"n_estimators": 40, "max_depth": 3}

    def choose(frame):
        nf = frame.details
        fit, valid = nf.part("fit"), nf.part("valid")
        clf, rule, scores = choose_seasonal(cfg, nf, params, fit, valid)
        by, by_rule, by_scores = choose_rank_by(cfg, valid, clf.predict_proba(valid)[:, 1])
        return clf.seasonal, rule, scores, by, by_rule, by_scores

    frame = build_frame(cfg, state)
    first = choose(frame)
    assert set(first[2]) == {"seasonal_on", "seasonal_off"}
    assert first[0] == (first[2]["seasonal_on"] >= first[2]["seasonal_off"])
    assert first[3] in ("expected_value", "probability") and first[1].startswith("auto")
    pairs = frame.details.pairs
    test = pairs["split"] == "test"
    pairs.loc[test, "taken"] = 1 - pairs.loc[test, "taken"]
    numeric = [c for c in frame.feature_names if pd.api.types.is_numeric_dtype(pairs[c])]
    pairs.loc[test, numeric] = pairs.loc[test, numeric].to_numpy()[::-1]
    assert choose(frame) == first


def test_promotion_evidence_resamples_whole_customers(synthetic_run):
    """The gate gets per-pair scores of model and popularity, the customer as bootstrap unit, and
    a metric that ranks each draw of a customer as a customer of its own."""
    from training.families import get_family
    from training.families.base import trained_from

    cfg, result = synthetic_run["cfg"], synthetic_run["result"]
    assert "no per-row scores" not in synthetic_run["logged"]["decision"]["reason"]
    family = get_family("nbo")
    trained = trained_from(result, result.test_pairs)
    scores = family.model_scores(cfg, trained)
    groups = family.bootstrap_groups(cfg, trained)
    every = np.arange(len(scores))
    for metric in ("map_at_3", "hit_at_1", "value_at_3", "roc_auc"):
        of = family.metric_of(cfg, trained, metric)
        assert of(every, scores) == pytest.approx(result.metrics[metric])
    # one customer drawn twice counts twice, as two customers with the same result
    one = np.flatnonzero(groups == groups[np.argmax(result.test_pairs["taken"].to_numpy())])
    twice = np.concatenate([one, one])
    of = family.metric_of(cfg, trained, "map_at_3")
    assert of(twice, scores) == pytest.approx(of(one, scores))
