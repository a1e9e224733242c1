"""The uplift training job on synthetic campaigns with a known true uplift, logged to a temporary
MLflow store; and a campaign history that carries its own features, trained by configuration."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from features.sources import ingest, load_dataset
from features.store import StateDirs
from features.synthetic import CampaignSpec, SyntheticConfig, campaign_effects, generate
from training.config import experiment_config, load_experiment
from training.evaluate import grade
from training.families.base import RunContext
from training.families.uplift import read_contacts
from training.families.uplift import uplift_frame as _uplift_frame
from training.run import run_experiment, tracking


def run_uplift_training(cfg, state, progress=None):
    out = run_experiment(cfg, state, progress=progress)
    return out.trained.details, out.logged


def uplift_frame(cfg, state):
    return _uplift_frame(cfg, RunContext(state, load_dataset(cfg.dataset))), None


def _contacts(cfg, state, dataset):
    return read_contacts(
        cfg, RunContext(state, load_dataset(cfg.dataset).model_copy(update={"name": dataset}))
    )


ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "uplift" / "synthetic.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """PATRON_HOME in a temporary folder for the module; MLflow's URI from the state folder."""
    home = tmp_path_factory.mktemp("uplift") / "home"
    old = {k: os.environ.get(k) for k in ("PATRON_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["PATRON_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield StateDirs.resolve(home)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def trained(env: StateDirs):
    """The demo dataset's campaigns (its default 20 000 customers), ingested and trained once."""
    dataset = load_dataset("synthetic")
    generate(SyntheticConfig.model_validate(dataset.synthetic), env.synthetic(dataset.name))
    ingest(dataset, env)
    cfg = load_experiment(EXPERIMENT)
    stages: list[str] = []
    result, logged = run_uplift_training(cfg, env, progress=stages.append)
    return {"state": env, "cfg": cfg, "result": result, "logged": logged, "stages": stages}


def test_split_is_out_of_time_with_features_the_day_before_each_send(trained) -> None:
    result, cfg = trained["result"], trained["cfg"]
    assert trained["stages"] == ["features", "fit", "log"]
    assert result.split_kind == "out_of_time"
    campaigns = result.campaigns.set_index("campaign_id")
    assert list(campaigns.index) == cfg.uplift.campaign_ids  # the sorted send order
    assert campaigns["split"].tolist() == ["fit", "fit", "test"]
    assert (campaigns["as_of"] == campaigns["send_date"] - pd.Timedelta(days=1)).all()
    test_ids = set(result.test_predictions["campaign_id"])
    assert (
        test_ids == {"CMP_2024_06_RET"}
        and len(result.test_predictions) == (campaigns.loc["CMP_2024_06_RET", "contacts"])
    )
    assert (
        result.row_counts["fit_rows"]
        == campaigns.loc[campaigns["split"] == "fit", "contacts"].sum()
    )


def test_features_do_not_see_the_campaign(trained, tmp_path) -> None:
    """Deleting every transaction after the last campaign's cutoff changes no feature."""
    state, cfg = trained["state"], trained["cfg"]
    uf, _ = uplift_frame(cfg, state)
    cut = StateDirs.resolve(tmp_path / "home")
    shutil.copytree(state.data("synthetic"), cut.data("synthetic"))
    tx = pd.read_parquet(cut.data("synthetic") / "transactions.parquet")
    last_send = uf.campaigns["send_date"].max()
    tx[tx["ts"] < last_send].to_parquet(cut.data("synthetic") / "transactions.parquet")
    cut_frame, _ = uplift_frame(cfg, cut)
    pd.testing.assert_frame_equal(uf.frame, cut_frame.frame)


def test_the_truth_is_a_function_of_the_features_at_the_cutoff(trained) -> None:
    """The generator's recency and frequency at T are the engine's days_since_last_order and
    orders_count_365d at T: the true p_treatment follows from them exactly (retention offer)."""
    state, result = trained["state"], trained["result"]
    truth = pd.read_parquet(state.synthetic("synthetic") / "truth_uplift.parquet")
    rows = result.test_frame.merge(truth, on=["campaign_id", "customer_id"], validate="1:1")
    assert len(rows) == len(result.test_frame)
    spec = next(
        c
        for c in load_dataset("synthetic").synthetic["campaigns"]
        if c["campaign_id"] == "CMP_2024_06_RET"
    )
    campaign = CampaignSpec.model_validate(spec)
    q, s = campaign_effects(
        rows["days_since_last_order"],
        rows["orders_count_365d"],
        np.ones(len(rows)),
        campaign.max_uplift,
        campaign.sleeping_dog,
    )
    expected = (1 - s) * (1 - (1 - rows["p_control"]) * (1 - q))
    assert np.allclose(expected, rows["p_treatment"], rtol=0, atol=1e-12)


def test_model_finds_the_true_uplift_better_than_the_response_model(trained) -> None:
    result = trained["result"]
    m, base, rand, truth = (
        result.metrics,
        result.baseline_metrics,
        result.random_metrics,
        result.truth_metrics,
    )
    assert truth is not None
    # noise-free: ranked by the model, the top 20 % hold at least half of what the truth's top
    # 20 % gain over random targeting, and more than the response model's top 20 %
    gain = truth["true_uplift_at_20pct"] - rand["true_uplift_at_20pct"]
    assert m["true_uplift_at_20pct"] - rand["true_uplift_at_20pct"] > 0.5 * gain > 0
    assert m["true_uplift_at_20pct"] > base["true_uplift_at_20pct"]
    assert m["corr_true_uplift"] > 0.5 > base["corr_true_uplift"]
    # observed Qini: above random by more than its noise, above the response model, and not
    # above the truth beyond noise
    noise = rand["qini_sd"]
    assert m["qini"] > rand["qini"] + 2 * noise
    assert m["qini"] > base["qini"]
    assert m["qini"] < truth["qini"] + 2 * noise
    assert abs(rand["qini"]) < 2 * noise / np.sqrt(20) + 1e-9  # the mean of 20 random rankings
    assert result.grade == grade(m["qini"], base["qini"], trained["cfg"].grade.a_margin)


def test_run_is_logged_registered_and_serves_uplift(trained) -> None:
    state, cfg, logged, result = (trained[k] for k in ("state", "cfg", "logged", "result"))
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    run = client.get_run(logged["run_id"])
    for prefix in ("test", "baseline", "random", "truth"):
        assert f"{prefix}_qini" in run.data.metrics and f"{prefix}_auuc" in run.data.metrics
    assert run.data.metrics["test_uplift_at_10pct"] == pytest.approx(
        result.metrics["uplift_at_10pct"]
    )
    assert run.data.params["feature_set"] == "churn_v1" and run.data.params["learner"] == "x"
    assert run.data.params["test_campaigns"] == "CMP_2024_06_RET"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/qini.png",
        "evaluation/test_predictions.parquet",
        "evaluation/campaigns.csv",
        "evaluation/uplift_by_decile.csv",
    } <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "data_manifest.json"))
    manifest = json.loads(local.read_text())
    assert [c["feature_cutoff"] for c in manifest["campaigns"]] == [
        "2023-10-01",
        "2024-02-04",
        "2024-06-02",
    ]
    assert manifest["truth_file"]["sha256"] and manifest["features_from"] == "transactions"
    assert logged["champion"]  # the first model: it beats the response model
    with tracking(state.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}@champion")
    scores = model.predict(result.test_frame.head(20))["score"].to_numpy()
    assert scores == pytest.approx(result.test_predictions["uplift"].head(20).to_numpy())


def test_same_model_again_is_not_promoted_over_itself(trained) -> None:
    state, cfg = trained["state"], trained["cfg"]
    result, logged = run_uplift_training(cfg, state)
    decision = logged["decision"]
    assert decision["champion"] == pytest.approx(trained["result"].metrics["qini"])
    assert result.metrics["qini"] == pytest.approx(trained["result"].metrics["qini"])
    assert not logged["champion"]
    client = MlflowClient(state.tracking_uri)
    champion = client.get_model_version_by_alias(cfg.registered_model, "champion")
    assert str(champion.version) == trained["logged"]["version"]
    assert (
        str(client.get_model_version_by_alias(cfg.registered_model, "challenger").version)
        == (logged["version"])
    )


def test_one_campaign_is_split_by_group_and_response(trained) -> None:
    base = trained["cfg"]
    one = base.uplift.model_copy(update={"campaign_ids": ["CMP_2024_04_XS"]})
    cfg = base.model_copy(update={"uplift": one})
    uf, _ = uplift_frame(cfg, trained["state"])
    assert uf.split_kind == "stratified_by_group_and_response"
    frame = uf.frame
    assert abs((frame["split"] == "test").mean() - cfg.split.test_size) < 0.01
    cells = frame.groupby(["treatment", "label"])["split"].apply(lambda s: (s == "test").mean())
    assert (cells - cfg.split.test_size).abs().max() < 0.01


# --------------------------------------------------------------------------- by configuration


def mailing(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A prospect mailing whose contacts carry their own features, groups 'T' / 'C' and a known
    effect: the mailing works on mid-recency customers, response grows with visits."""
    rng = np.random.default_rng(seed)
    recency = rng.uniform(0, 365, n)
    visits = rng.poisson(3, n)
    band = rng.choice(["low", "mid", "high"], n)
    base = 0.05 + 0.04 * np.minimum(visits, 8)
    tau = 0.25 * np.exp(-0.5 * ((recency - 120) / 40) ** 2) - 0.05 * (band == "high")
    treated = rng.random(n) < 0.5
    responded = rng.random(n) < np.clip(base + treated * tau, 0, 1)
    ids = [f"P{i:05d}" for i in range(n)]
    contacts = pd.DataFrame(
        {
            "mailing": "M1",
            "prospect": ids,
            "sent": "2024-03-01 09:00:00",
            "arm": np.where(treated, "T", "C"),
            "converted": np.where(responded, "yes", "no"),
            "recency_days": recency.round(1),
            "visits": visits,
            "spend_band": band,
        }
    )
    truth = pd.DataFrame({"campaign_id": "M1", "customer_id": ids, "true_uplift": tau})
    return contacts, truth


def test_a_campaign_history_with_its_own_features_trains_by_configuration(env, tmp_path) -> None:
    contacts, truth = mailing(8000, 3)
    raw = tmp_path / "raw"
    raw.mkdir()
    contacts.to_csv(raw / "mailing.csv", index=False)
    truth.to_parquet(raw / "truth_uplift.parquet")
    (tmp_path / "mailing.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "mailing",
                "tables": {
                    "campaign_history": {
                        "sources": [
                            {
                                "path": "raw/mailing.csv",
                                "columns": {
                                    "campaign_id": "mailing",
                                    "customer_id": "prospect",
                                    "ts": "sent",
                                    "group": "arm",
                                    "responded": "converted",
                                },
                            }
                        ],
                        "types": {"recency_days": "double", "visits": "integer"},
                    }
                },
            }
        )
    )
    ingest(load_dataset(tmp_path / "mailing.yaml"), env)
    cfg = experiment_config(
        {
            "name": "uplift_mailing",
            "family": "uplift",
            "dataset": str(tmp_path / "mailing.yaml"),
            "registered_model": "uplift-mailing",
            "uplift": {"treatment_groups": ["T"], "control_groups": ["C"]},
            "model": {"params": {"n_estimators": 100}},
        }
    )
    result, logged = run_uplift_training(cfg, env)
    assert result.split_kind == "stratified_by_group_and_response"
    assert result.feature_names == ["recency_days", "visits", "spend_band"]
    assert result.truth_metrics is not None
    assert result.metrics["corr_true_uplift"] > 0.5
    assert result.metrics["true_uplift_at_20pct"] > result.baseline_metrics["true_uplift_at_20pct"]
    assert logged["registered_model"] == "uplift-mailing"

    wrong = cfg.model_copy(
        update={
            "uplift": cfg.uplift.model_copy(
                update={"treatment_groups": ["treatment"], "control_groups": ["control"]}
            )
        }
    )
    with pytest.raises(ValueError, match=r"\['c', 't'\] are neither treatment"):
        _contacts(wrong, env, "mailing")
    missing = cfg.model_copy(
        update={"uplift": cfg.uplift.model_copy(update={"campaign_ids": ["M2"]})}
    )
    with pytest.raises(ValueError, match="M2"):
        _contacts(missing, env, "mailing")
    with pytest.raises(FileNotFoundError, match="campaign_history"):
        _contacts(cfg, env, "no_such_dataset")


# --------------------------------------------------------------------------- selection before test


def three_mailings(seed: int = 5):
    """Three mailings on successive dates (two fit, the latest test) with the mailing() effect."""
    from training.families.uplift import UpliftFrame

    parts = []
    for i, send in enumerate(["2024-01-10", "2024-03-10", "2024-05-10"]):
        contacts, _ = mailing(1500, seed + i)
        parts.append(
            pd.DataFrame(
                {
                    "campaign_id": f"M{i + 1}",
                    "customer_id": contacts["prospect"] + f"_{i}",
                    "send_date": pd.Timestamp(send),
                    "as_of": pd.Timestamp(send) - pd.Timedelta(days=1),
                    "treatment": (contacts["arm"] == "T").astype(int),
                    "label": (contacts["converted"] == "yes").astype(int),
                    "recency_days": contacts["recency_days"],
                    "visits": contacts["visits"],
                    "split": "test" if i == 2 else "fit",
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    return UpliftFrame(frame, ["recency_days", "visits"], [], pd.DataFrame(), "out_of_time")


def test_auto_learner_is_chosen_on_the_latest_fit_campaign_never_on_test_rows() -> None:
    from training.families.uplift import choose_learner

    cfg = experiment_config(
        {
            "name": "uplift_auto",
            "family": "uplift",
            "dataset": "synthetic",
            "registered_model": "uplift-auto",
            "uplift": {"learner": "auto"},
        }
    )
    params = {"n_estimators": 40, "max_depth": 3}
    uf = three_mailings()
    choice = choose_learner(cfg, uf, params)
    assert choice.requested == "auto" and choice.learner in ("x", "t")
    assert set(choice.validation) == {"x", "t"}
    assert choice.learner == max(("x", "t"), key=lambda k: (choice.validation[k], k == "x"))
    assert "M2" in choice.validation_rows  # the latest fit campaign validates
    assert choice.fit_rows == choice.valid_rows == 1500
    # flipping every test label and scrambling the test features changes nothing
    test = uf.frame["split"] == "test"
    uf.frame.loc[test, "label"] = 1 - uf.frame.loc[test, "label"]
    uf.frame.loc[test, "recency_days"] = uf.frame.loc[test, "recency_days"].to_numpy()[::-1]
    assert choose_learner(cfg, uf, params) == choice
    fixed = cfg.model_copy(update={"uplift": cfg.uplift.model_copy(update={"learner": "t"})})
    assert choose_learner(fixed, uf, params).learner == "t"


def test_several_campaigns_on_one_send_date_are_read_apart_and_tested_together() -> None:
    """Two campaigns sent the same day (two arms of one test) are two campaigns: both are the
    out-of-time test when they are the latest, each keeps its own contacts; only a history whose
    campaigns all share one date has nothing earlier to learn from."""
    from training.families.uplift import CAMPAIGN, LABEL, SEND, TREATMENT, _split

    def campaign(name: str, day: str, n: int = 8) -> pd.DataFrame:
        return pd.DataFrame(
            {
                CAMPAIGN: name,
                "customer_id": [f"{name}-{i}" for i in range(n)],
                SEND: pd.Timestamp(day),
                TREATMENT: [i % 2 for i in range(n)],
                LABEL: [i % 3 == 0 for i in range(n)],
            }
        )

    contacts = pd.concat(
        [
            campaign("EARLY", "2024-01-10"),
            campaign("ARM_A", "2024-03-01"),
            campaign("ARM_B", "2024-03-01"),
        ],
        ignore_index=True,
    )
    split, kind = _split(contacts, 0.3, seed=0)
    assert kind == "out_of_time"
    assert set(contacts.loc[split == "test", CAMPAIGN]) == {"ARM_A", "ARM_B"}
    assert set(contacts.loc[split == "fit", CAMPAIGN]) == {"EARLY"}
    same_day = contacts[contacts[CAMPAIGN] != "EARLY"]
    with pytest.raises(ValueError, match="all campaigns share one send date"):
        _split(same_day, 0.3, seed=0)
