"""``patron demo`` tells the product's whole story (issue 15): five families trained against their
baselines and registered, all served from the serving YAML, a scored request with reasons, a
next-best offer and a campaign planned from the served uplift and CLV models, the server stopped.

On 2,000 synthetic customers (the demo's default is 20,000): what a family did not earn on so few
customers it is served as its challenger, and the demo must say so."""

from __future__ import annotations

import pytest

from features.store import StateDirs
from patron.cli import served_experiment
from patron.demo import DEMO_EXPERIMENTS, print_closing, run_demo

CUSTOMERS = 2000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("demo") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATRON_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))  # the YAMLs are read from the checkout
        state = StateDirs.resolve(home)
        yield state, run_demo(state, CUSTOMERS, served_experiment)


def test_five_families_trained_registered_and_said(demo, capsys) -> None:
    state, result = demo
    assert [t.family for t in result.trained] == [f for f, _ in DEMO_EXPERIMENTS]
    assert all(t.version == "1" and t.metric and t.model for t in result.trained)
    # a family without a champion is served as the challenger, and only such a family
    not_promoted = {t.family for t in result.trained if not t.promoted}
    assert {n.split(":", 1)[0] for n in result.served_notes} == not_promoted
    print_closing(state, result)
    out = capsys.readouterr().out
    for t in result.trained:
        assert f"{t.family} ({t.registered_model} v1, " in out
    assert f"--backend-store-uri {state.tracking_uri} --port 5000" in out  # one unbroken line
    names = [name for name, _ in result.timings.steps]
    assert names[0].startswith("1. generate") and names[-1].startswith("7. plan")
    assert all(seconds >= 0 for _, seconds in result.timings.steps)


def test_the_service_answered_scores_offers_and_a_plan(demo) -> None:
    _, result = demo
    score = result.answers["/score"]
    known = score["scores"]
    assert len(known) == 2 and all(len(s["reasons"]) == 3 for s in known)
    assert [u["customer_id"] for u in score["unknown"]] == ["NO-SUCH-CUSTOMER"]
    offers = result.answers["/next-best-offer"]
    assert len(offers["customers"]) == 1 and len(offers["customers"][0]["offers"]) == 2
    plan = result.answers["/campaigns/plan"]
    assert plan["source"] == "configured:retention" and plan["check"]["adds_up"]
    assert plan["summary"]["incremental"] and plan["summary"]["basis"].startswith("incremental")
    assert [(i["model"], i["estimate"]) for i in plan["inputs"]] == [("uplift", "uplift")]
    assert [(v["model"], v["estimate"]) for v in plan["value_model"]] == [("clv", "customer_value")]
    assert 0 < plan["summary"]["selected"] <= 3000  # the campaign's contact budget
    assert plan["summary"]["expected_incremental_profit_contacted"] is not None


def test_the_server_is_stopped_when_the_demo_returns(demo) -> None:
    import httpx

    _, result = demo
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{result.url}/readyz", timeout=5)


def test_a_family_not_promoted_keeps_an_earlier_champion_else_its_challenger_is_served() -> None:
    """A second demo in the same state folder: a model that does not beat the champion leaves
    the champion served; only a family without any champion is served as its challenger."""
    from patron.demo import DEMO_SERVING, ROOT, Trained, served_settings

    def trained(family: str, promoted: bool) -> Trained:
        return Trained(family, f"{family}-synthetic", "2", promoted, "m", "0.7", "", "t")

    runs = [trained("churn", True), trained("clv", False), trained("uplift", False)]
    champions = {"clv-synthetic": "1"}
    settings, notes = served_settings(ROOT / DEMO_SERVING, runs, champions.get)
    assert settings.models["churn"].alias == "champion"
    assert settings.models["clv"].alias == "champion"  # v1 kept
    assert settings.models["uplift"].alias == "challenger"
    said = {n.split(":")[0]: n for n in notes}
    assert set(said) == {"clv", "uplift"}
    assert "v1 is served" in said["clv"] and "no champion" in said["uplift"]
    assert [r.served for r in runs] == ["champion", "champion v1 kept", "challenger served"]
