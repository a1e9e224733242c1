"""What a served score is comes from what the model recorded, the same on both campaign routes.

A labelled model's ``info["label_meaning"]`` (its experiment's ``label_meaning``) decides whether
its score is a churn or a response probability on /target and /campaigns/plan alike; no name
does (a churn table called "attrition" is churn, a response table called "churn" is not). A label
meaning ``other`` ranks no campaign: a 400 naming the model's field on both routes. Without a
server: the request functions over a ``ServingState`` holding hand-built served models.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.decisions import ChurnProbability, ResponseProbability
from models.decisions.campaign import parse_campaign
from models.pyfunc import ScoringModel
from serving.decisions import customer_values, offer_estimate, plan_request
from serving.errors import RequestError
from serving.handlers import score_records, target_customers
from serving.kinds import ScoreModel, campaign_score_kind, rank_stats
from serving.state import ServingState
from tests.serving.conftest import NON_CAUSAL


def served(
    name: str, family: str, info: dict[str, Any], base: Any, output: str = "probability"
) -> ScoreModel:
    """A served model over ``base`` as training would wrap it (scores drawn, seeded)."""
    ids = base.features.index
    scores = np.random.default_rng(7).uniform(0.05, 0.6, len(ids))
    ordered, percentile, decile = rank_stats(scores)
    meta = SimpleNamespace(
        family=name, kind="score", registered_model=f"{name}-reg", alias="champion", version="1"
    )
    return ScoreModel(
        meta=meta,  # type: ignore[arg-type]
        base=base,
        model=ScoringModel(None, ["x"], family, info=info),
        output=output,
        scores=scores,
        sorted_scores=ordered,
        percentile=percentile,
        decile=decile,
        explainer=None,
    )


def small_base(dataset: str = "attrition", n: int = 8) -> Any:
    index = pd.Index([f"C{i}" for i in range(n)], dtype=object, name="customer_id")
    return SimpleNamespace(dataset=dataset, features=pd.DataFrame(index=index))


def state_of(**models: ScoreModel) -> ServingState:
    return ServingState(models=models, shadows={}, bases={}, loaded_at="now")


def campaign(model: str, ranking: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "campaign_id": "score-kind-1",
        "offers": [{"id": "keep", "kind": "retention", "value": 40.0, "model": model}],
        "channels": [{"name": "email", "cost_per_contact": 0.2}],
    }
    if ranking is not None:
        out["ranking"] = ranking
    return out


def target(state: ServingState, model: str, ranking: dict[str, Any] | None = None) -> Any:
    return target_customers(
        state,
        campaign_id="score-kind-1",
        channel="email",
        model=model,
        value_per_conversion=40.0,
        cost_per_contact=0.2,
        budget={"max_contacts": 50},
        ranking=ranking,
    )


# --------------------------------------------------------------------------- the one rule


@pytest.mark.parametrize(
    ("family", "info", "kind"),
    [
        # a churn table named nothing like churn: its recorded meaning says churn
        ("labelled", {"dataset": "attrition", "label_meaning": "churn"}, "churn_probability"),
        # a response table on a dataset called churn: no name rule turns it into churn
        (
            "labelled",
            {"dataset": "telco_churn", "label_meaning": "response"},
            "response_probability",
        ),
        ("churn", {"dataset": "retail", "label_meaning": "churn"}, "churn_probability"),
        ("propensity", {"dataset": "churn", "label_meaning": "response"}, "response_probability"),
        # registered before meanings were recorded: the family's fixed meaning
        ("churn", {"dataset": "retail"}, "churn_probability"),
        ("propensity", {"dataset": "churners"}, "response_probability"),
    ],
)
def test_the_recorded_meaning_decides_the_score_kind(family, info, kind):
    model = served("m", family, info, small_base())
    assert campaign_score_kind(model, "probability", "m", "model") == kind


@pytest.mark.parametrize(
    "info",
    [
        {"dataset": "telco_churn", "label_meaning": "other"},
        {"dataset": "telco_churn"},  # an old labelled model: its label was never said
    ],
)
def test_a_labelled_model_without_churn_or_response_meaning_ranks_no_campaign(info):
    model = served("churn-telco", "labelled", info, small_base("telco_churn"))
    with pytest.raises(RequestError) as err:
        campaign_score_kind(model, "probability", "churn-telco", "offers.0.model")
    assert err.value.field == "offers.0.model" and err.value.status == 400
    assert "label_meaning is 'other'" in err.value.message
    assert "'churn-telco' is a labelled model" in err.value.message
    # an uplift stays an uplift whatever its label
    uplift = served("u", "uplift", {}, small_base(), output="uplift")
    assert campaign_score_kind(uplift, "uplift", "u", "model") == "uplift"


def test_a_recorded_meaning_serving_does_not_know_is_a_400_not_a_guess():
    model = served("m", "labelled", {"label_meaning": "attrition"}, small_base())
    with pytest.raises(RequestError) as err:
        campaign_score_kind(model, "probability", "m", "model")
    assert err.value.field == "model" and "label_meaning must be one of" in err.value.message


# --------------------------------------------------------------------------- /campaigns/plan


@pytest.mark.parametrize(
    ("meaning", "estimate", "kind"),
    [
        ("churn", ChurnProbability, "churn_probability"),
        ("response", ResponseProbability, "response_probability"),
    ],
)
def test_the_plan_reads_the_labelled_model_by_its_meaning(meaning, estimate, kind):
    base = small_base()
    state = state_of(attrition=served("attrition", "labelled", {"label_meaning": meaning}, base))
    plan = parse_campaign(campaign("attrition", NON_CAUSAL))
    got, got_base, used = offer_estimate(state, plan, "campaign")
    assert isinstance(got, estimate) and got_base is base
    assert used[0]["estimate"] == kind
    # ranked as an uplift, it is a 400 that says what it is
    with pytest.raises(RequestError) as err:
        offer_estimate(state, parse_campaign(campaign("attrition")), "campaign")
    assert err.value.field == "campaign.offers.0.model"
    assert ("a churn probability, not" in err.value.message) == (meaning == "churn")


@pytest.mark.parametrize("ranking", [None, NON_CAUSAL])
def test_the_plan_refuses_a_labelled_other_model_naming_the_offer(ranking):
    state = state_of(subs=served("subs", "labelled", {"label_meaning": "other"}, small_base()))
    with pytest.raises(RequestError) as err:
        offer_estimate(state, parse_campaign(campaign("subs", ranking)), "campaign")
    assert err.value.field == "campaign.offers.0.model" and err.value.status == 400
    assert "label_meaning" in err.value.message


# --------------------------------------------------------------------------- /target


@pytest.mark.parametrize(
    ("meaning", "says"),
    [("churn", "a churn probability"), ("response", "a response probability")],
)
def test_target_reads_the_labelled_model_by_its_meaning(meaning, says):
    """Ranked by default (as an uplift) the 400 says what the score is: the same kind the plan
    reads."""
    state = state_of(
        attrition=served("attrition", "labelled", {"label_meaning": meaning}, small_base())
    )
    with pytest.raises(RequestError) as err:
        target(state, "attrition")
    assert err.value.field == "model" and f"gives {says}" in err.value.message


@pytest.mark.parametrize("ranking", [None, NON_CAUSAL])
def test_target_refuses_a_labelled_other_model_naming_model(ranking):
    state = state_of(subs=served("subs", "labelled", {"label_meaning": "other"}, small_base()))
    with pytest.raises(RequestError) as err:
        target(state, "subs", ranking)
    assert err.value.field == "model" and err.value.status == 400
    assert "label_meaning" in err.value.message and "/score serves it" in err.value.message


# --------------------------------------------------------------------------- both, on a real base


def test_a_labelled_churn_model_is_a_churn_probability_on_both_routes(served_pipeline):
    """A labelled churn model on a dataset called "attrition" (no churn in any name) ranks as a
    churn probability on /target and is planned as a ``ChurnProbability``: value at risk, no
    responses counted."""
    from serving.base import load_base

    dirs, cfg = served_pipeline["state"], served_pipeline["cfg"]
    base = load_base(dirs, served_pipeline["dataset"].name, cfg.feature_set)
    info = {"dataset": "attrition", "label_meaning": "churn"}
    state = state_of(attrition=served("attrition", "labelled", info, base))

    body = target(state, "attrition", NON_CAUSAL)
    assert body["score_kind"] == "churn_probability"
    assert body["summary"]["expected_responses"] is None

    plan = plan_request(state, dirs, campaign=campaign("attrition", NON_CAUSAL), max_rows=5)
    assert plan["inputs"][0]["estimate"] == "churn_probability"
    assert plan["summary"]["incremental"] is False and plan["check"]["adds_up"]


# --------------------------------------------------------------------------- value models

ACCOUNTING = {"margin": 0.3, "annual_discount_rate": 0.1, "horizon_days": 180}


@pytest.mark.parametrize("recorded", [True, False])
def test_a_value_models_revenue_becomes_gross_profit_and_its_present_value(recorded):
    """/score and the plan read a CLV model's predicted revenue through the accounting it
    recorded (margin, rate, horizon); a model recording none stays revenue, said so."""
    base = small_base("shop")
    base.segment_arrays = None  # no segments: the records say null
    info = {"dataset": "shop", **({"value_accounting": ACCOUNTING} if recorded else {})}
    clv = served("clv", "clv", info, base, output="value")
    records = score_records(clv, np.arange(len(clv.scores)), with_reasons=False)
    factor = 1.0 / 1.1 ** (180 / 365.25)
    values = np.array([r["value"] for r in records])
    assert np.allclose(values, clv.scores)
    if recorded:
        assert np.allclose([r["gross_profit"] for r in records], 0.3 * values)
        assert np.allclose([r["npv"] for r in records], 0.3 * factor * values)
    else:
        assert all(r["gross_profit"] is None and r["npv"] is None for r in records)
    churn = served("churn", "churn", {"dataset": "shop"}, base)
    assert score_records(churn, np.arange(2), with_reasons=False)[0]["npv"] is None
    offer = {"id": "keep", "kind": "retention", "value_source": "customer_value", "model": "churn"}
    plan = parse_campaign(
        {
            "campaign_id": "value-1",
            "offers": [offer],
            "channels": [{"name": "email", "cost_per_contact": 0.2}],
        }
    )
    cv, used = customer_values(state_of(churn=churn, clv=clv), plan, None, base)
    assert cv is not None
    expected = clv.scores * (0.3 * factor if recorded else 1.0)
    assert np.allclose(cv, expected)
    assert used[0]["estimate"] == "customer_value"
    assert ("gross profit" in used[0]["basis"]) == recorded


def test_customers_the_value_model_did_not_score_are_valued_0_and_counted():
    """A planned base customer the value model has no score for is worth nothing to a
    customer-valued offer, and the answer says how many (never silently)."""
    base = small_base("shop", n=8)
    clv = served("clv", "clv", {"dataset": "shop"}, small_base("shop", n=5), output="value")
    offer = {"id": "keep", "kind": "retention", "value_source": "customer_value", "model": "x"}
    plan = parse_campaign(
        {
            "campaign_id": "value-2",
            "offers": [offer],
            "channels": [{"name": "email", "cost_per_contact": 0.2}],
        }
    )
    cv, used = customer_values(state_of(clv=clv), plan, None, base)
    assert cv is not None and np.allclose(cv[:5], clv.scores) and (cv[5:] == 0).all()
    assert "3 of 8 base customers the value model did not score are valued 0" in used[0]["basis"]
    full = served("clv", "clv", {"dataset": "shop"}, base, output="value")
    assert (
        "did not score" not in customer_values(state_of(clv=full), plan, None, base)[1][0]["basis"]
    )


def test_the_planner_reads_households_from_the_served_base(tmp_path):
    """The served base's household ids (the single customer view's) reach the planner's
    customers frame, where the one-contact-per-household policy reads them first."""
    from features.store import StateDirs
    from serving.decisions import planner_customers

    base = small_base("shop", n=4)
    base.consent = {"email": np.array([True, True, False, True])}
    base.segments = None
    base.household_id = np.array(["H1", "H1", None, "H2"], dtype=object)
    plan = parse_campaign(campaign("churn"))
    frame = planner_customers(base, plan, StateDirs.resolve(tmp_path), "campaign")
    households = frame["household_id"].tolist()
    assert households[:2] == ["H1", "H1"] and pd.isna(households[2]) and households[3] == "H2"
    base.household_id = None
    assert "household_id" not in planner_customers(base, plan, StateDirs.resolve(tmp_path), "c")
