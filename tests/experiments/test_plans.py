"""A plan saved as an immutable tracked object, and the read-out of its test cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.planning import fit_arms, plan_inputs, plan_with_arms
from experiments.plans import REJECTED_FILE, load_plan, read_plan, save_plan
from models.decisions import load_campaign, parse_campaign

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "experiments" / "campaigns" / "arms_demo.yaml"
PARAMS = {"n_estimators": 30, "max_depth": 2, "learning_rate": 0.1}


@pytest.fixture(scope="module")
def saved(arms_state):
    model = fit_arms(arms_state, "synthetic_arms", ["ARMS_2023_09"], params=PARAMS)
    campaign = load_campaign(CAMPAIGN)
    plan, as_of = plan_with_arms(arms_state, "synthetic_arms", campaign, model)
    inputs = plan_inputs(model, "synthetic_arms", "x", PARAMS)
    return (
        arms_state,
        plan,
        campaign,
        as_of,
        inputs,
        save_plan(arms_state, plan, campaign, as_of, inputs),
    )


def test_plan_is_saved_once_and_never_overwritten(saved) -> None:
    state, plan, campaign, as_of, inputs, first = saved
    record, table = load_plan(state, first.plan_id)
    assert record["mlflow_run_id"] and record["summary"]["base"] == len(table)
    assert sum(a["contacts"] for a in record["by_arm"]) == record["summary"]["contacted"]
    # the test cell's sizing per arm: the gate's chance to pass it if the model is right
    power = {r["arm"]: r for r in record["test_cell_power"]}
    assert set(power) == {a["arm"] for a in record["by_arm"]}
    assert sum(r["test_contacts"] for r in power.values()) == record["summary"]["test_cell"]
    sized = [r for r in power.values() if r["gate_power"] is not None]
    assert sized and all(0 < r["gate_power"] < 1 for r in sized)
    assert all(
        (r["test_contacts_for_goal"] > r["test_contacts"]) == (r["gate_power"] < 0.8) for r in sized
    )
    again = save_plan(state, plan, campaign, as_of, inputs)
    assert again.plan_id == first.plan_id and not again.created
    # the same id with other contents (a tampered record) is refused
    path = first.folder / "plan.json"
    text = path.read_text()
    tampered = json.loads(text)
    tampered["by_arm"][0]["contacts"] += 1
    path.write_text(json.dumps(tampered))
    try:
        with pytest.raises(ValueError, match="immutable"):
            save_plan(state, plan, campaign, as_of, inputs)
    finally:
        path.write_text(text)
    other = parse_campaign({**campaign.model_dump(exclude_none=True), "campaign_id": "other"})
    assert save_plan(state, plan, other, as_of, inputs).plan_id != first.plan_id


def test_read_out_of_the_test_cell_and_the_gate(saved) -> None:
    state, *_, first = saved
    _, table = load_plan(state, first.plan_id)
    wave = table[table["selected"] & table["group"].isin(["test", "control"])]
    rng = np.random.default_rng(1)
    treated = (wave["group"] == "test").to_numpy()
    responses = pd.DataFrame(
        {
            "customer_id": wave["customer_id"],
            "responded": rng.random(len(wave)) < np.where(treated, 0.45, 0.2),
        }
    )
    extra = pd.DataFrame(
        {"customer_id": ["NOT-IN-PLAN", wave["customer_id"].iloc[0]], "responded": [True, "maybe"]}
    )
    out = read_plan(state, first.plan_id, pd.concat([responses, extra], ignore_index=True))
    assert out["rejected"] == 2 and out["read"] == len(wave) - 0
    rejected = pd.read_csv(first.folder / REJECTED_FILE)
    assert set(rejected["reason_rejected"]) == {
        "not in the plan's test cell or control group",
        "responded: not 0/1",
    }
    arms = {a["arm"]: a for a in out["arms"]}
    big = max(arms.values(), key=lambda a: a["contacts"])
    sd = np.sqrt(0.45 * 0.55 / big["contacts"] + 0.2 * 0.8 / big["control"])
    assert abs(big["incremental_response"] - 0.25) < 4 * sd  # the drawn effect, within 4 sd
    assert {d["arm"] for d in out["gate"]} == set(arms)
    assert any(d["roll_out"] for d in out["gate"])  # +25 pp on a 40-60 value pays
    with pytest.raises(ValueError, match="no such plan"):
        read_plan(state, "nope", responses)


def test_rollout_learns_from_the_wave_and_plans_the_rest_over_passed_arms(saved) -> None:
    from experiments.rollout import rollout

    state, plan, campaign, as_of, inputs, first = saved
    _, table = load_plan(state, first.plan_id)
    wave = table[table["selected"] & table["group"].isin(["test", "control"])]
    rng = np.random.default_rng(2)
    treated = (wave["group"] == "test").to_numpy()
    responses = pd.DataFrame(
        {
            "customer_id": wave["customer_id"],
            "responded": rng.random(len(wave)) < np.where(treated, 0.45, 0.2),
        }
    )
    out = read_plan(state, first.plan_id, responses)
    passed = {d["arm"] for d in out["gate"] if d["roll_out"]}
    assert passed
    follow, result, facts = rollout(state, first.plan_id)
    assert follow is not None and result is not None
    assert follow.plan_id != first.plan_id
    assert follow.record["inputs"]["parent_plan"] == first.plan_id
    assert facts["wave_rows"] == len(wave)
    # the fallback read of each dropped arm's customers is recorded with the plan; only
    # dropped arms' customers are held or fall back
    assert follow.record["inputs"]["fallback_gate"] == facts["fallback_gate"]
    moved = set(facts["held"]) | set(facts["fallback"])
    assert moved and not moved & set(facts["rolled_out_arms"])
    fell_back = {
        d["arm"].removesuffix(" as a fallback") for d in facts["fallback_gate"] if d["roll_out"]
    }
    assert {b for to in facts["fallback"].values() for b in to} <= fell_back
    new = result.customers
    assert not set(new["customer_id"]) & set(wave["customer_id"])  # the wave is done
    chosen = new[new["selected"]]
    data_id = {o.id: o.data_id for o in campaign.offers}
    arms = {f"{data_id[o]}/{c}" for o, c in zip(chosen["offer"], chosen["channel"], strict=True)}
    assert arms <= passed
    assert (new["group"] != "test").all()  # no second test cell
    spent = float(wave["expected_spend"].sum())
    assert facts["budget"]["money"] == pytest.approx(campaign.budget.money - spent)


def test_cli_writes_the_campaign_page(saved, tmp_path) -> None:
    from typer.testing import CliRunner

    from patron.cli import mount

    state, *_, first = saved
    page = tmp_path / "campaign.html"
    args = ["campaign", "report", "--plan", first.plan_id, "--html", str(page)]
    result = CliRunner().invoke(mount(), [*args, "--home", str(state.home)])
    assert result.exit_code == 0, result.output
    assert first.plan_id in page.read_text()


def _saved_with_reprice(state, campaign_id: str, reprice: dict[str, dict]):
    """The demo campaign under ``campaign_id`` with re-priced terms per offer id, planned from
    the arm model and saved: (campaign, saved plan, its table, its wave)."""
    definition = load_campaign(CAMPAIGN).model_dump(exclude_none=True)
    definition["campaign_id"] = campaign_id
    for offer in definition["offers"]:
        if offer["id"] in reprice:
            offer["reprice"] = reprice[offer["id"]]
    campaign = parse_campaign(definition)
    model = fit_arms(state, "synthetic_arms", ["ARMS_2023_09"], params=PARAMS)
    plan, as_of = plan_with_arms(state, "synthetic_arms", campaign, model)
    saved = save_plan(
        state, plan, campaign, as_of, plan_inputs(model, "synthetic_arms", "x", PARAMS)
    )
    _, table = load_plan(state, saved.plan_id)
    wave = table[table["selected"] & table["group"].isin(["test", "control"])]
    return campaign, saved, table, wave


def test_a_failed_arm_declined_on_price_is_re_priced_and_re_tested(arms_state, tmp_path) -> None:
    """The loop's third answer: an arm without effect whose contacts declined on price is
    re-priced; the roll-out re-tests its held customers at the new terms in a plan of its own,
    whose roll-out contacts the waiting customers only once the re-test passed."""
    from typer.testing import CliRunner

    from experiments.rollout import rollout
    from patron.cli import mount

    reprice = {"premium_upgrade": {"cost_per_acceptance": 8.0}}
    campaign, first, table, wave = _saved_with_reprice(arms_state, "reprice-demo", reprice)
    treated = (wave["group"] == "test").to_numpy()
    upgrade = (wave["offer"] == "premium_upgrade").to_numpy()
    rng = np.random.default_rng(3)
    # the voucher works (+25 pp); the upgrade does nothing, and its decliners say "price"
    responded = rng.random(len(wave)) < np.where(treated & ~upgrade, 0.45, 0.2)
    said = np.where(rng.random(len(wave)) < 0.8, "price", "no need")
    reason = np.where(treated & upgrade & ~responded, said, None)
    responses = pd.DataFrame(
        {"customer_id": wave["customer_id"], "responded": responded, "reason": reason}
    )
    responses.to_csv(tmp_path / "wave1.csv", index=False)
    # the CLI on the fixture's own MLflow store (the module's state was resolved before any
    # test's environment: a tracking URI in the environment then would be its store)
    runner = CliRunner(env={"MLFLOW_TRACKING_URI": arms_state.tracking_uri})
    home = ["--home", str(arms_state.home)]
    args = ["campaign", "read", "--plan", first.plan_id, "--responses", str(tmp_path / "wave1.csv")]
    said_cli = runner.invoke(mount(), [*args, *home])
    assert said_cli.exit_code == 0, said_cli.output
    assert "re-priced (cost_per_acceptance 5.0 → 8.0)" in " ".join(said_cli.output.split())
    out = json.loads((first.folder / "readout.json").read_text())
    dropped = {d["arm"] for d in out["gate"] if not d["roll_out"] and "dropped" in d["reason"]}
    priced = {d["arm"]: d for d in out["repricing"]}
    assert priced and set(priced) <= dropped and all(a.startswith("UP_T3/") for a in priced)
    assert {d["action"] for d in priced.values()} == {"re-price"}
    from serving.schemas import ReadoutResponse  # GET /readout answers the same read-out

    served = ReadoutResponse.model_validate({**out, "expected_by_arm": []})
    assert [d.action for d in served.repricing] == [d["action"] for d in out["repricing"]]
    page = tmp_path / "campaign.html"
    args = ["campaign", "report", "--plan", first.plan_id, "--html", str(page)]
    assert runner.invoke(mount(), [*args, *home]).exit_code == 0
    assert "<b>re-price:</b> re-priced (cost_per_acceptance 5.0 → 8.0)" in page.read_text()

    follow, result, facts = rollout(arms_state, first.plan_id)
    chosen = {d["arm"] for d in facts["repricing"] if d["action"] == "re-price"}
    assert chosen and facts["retest_plan"]
    record, retest = load_plan(arms_state, facts["retest_plan"])
    assert record["inputs"]["parent_plan"] == first.plan_id
    assert set(record["inputs"]["retest_of"].split(",")) <= chosen
    assert {o["id"] for o in record["campaign"]["offers"]} == {"premium_upgrade_repriced"}
    assert record["campaign"]["offers"][0]["cost_per_acceptance"] == 8.0
    # only customers the parent plan's roll-out group gave a re-priced arm, none of them
    # contacted by the roll-out plan, none of the wave
    parent = table[table["selected"] & (table["group"] == "rollout")]
    theirs = parent[
        [
            f"UP_T3/{c}" in chosen and o == "premium_upgrade"
            for o, c in zip(parent["offer"], parent["channel"], strict=True)
        ]
    ]
    assert set(retest["customer_id"]) <= set(theirs["customer_id"])
    if result is not None:
        contacted = result.customers[result.customers["selected"]]
        assert not set(retest["customer_id"]) & set(contacted["customer_id"])
    assert not set(retest["customer_id"]) & set(wave["customer_id"])
    groups = retest.loc[retest["selected"], "group"].value_counts()
    assert groups.get("test", 0) >= 1 and groups.get("control", 0) >= 1

    # the re-test works at the new price: read it, then roll it out from the CLI
    cell = retest[retest["selected"] & retest["group"].isin(["test", "control"])]
    hit = rng.random(len(cell)) < np.where((cell["group"] == "test").to_numpy(), 0.7, 0.05)
    again = read_plan(
        arms_state,
        facts["retest_plan"],
        pd.DataFrame({"customer_id": cell["customer_id"], "responded": hit}),
    )
    passed = {d["arm"] for d in again["gate"] if d["roll_out"]}
    ran = runner.invoke(mount(), ["campaign", "rollout", "--plan", facts["retest_plan"], *home])
    assert ran.exit_code == 0, ran.output
    assert "roll-out recorded" in ran.output
    rolled = pd.read_parquet(
        arms_state.home / "campaigns" / facts["retest_plan"] / "rollout.parquet"
    )
    waiting = retest[retest["selected"] & (retest["group"] == "rollout")]
    assert set(rolled["customer_id"]) == set(waiting["customer_id"])
    contact = rolled["decision"] == "contact"
    assert set(rolled.loc[contact, "arm"]) <= passed
    # +65 pp at 8 per acceptance on a 60 value pays on every re-test arm with 30 contacts
    assert passed and contact.any() == bool(passed & set(rolled["arm"]))
    assert (rolled.loc[~contact, "decision"] == "held").all()


def test_when_no_arm_passes_the_re_priced_arms_are_still_re_tested(arms_state) -> None:
    from experiments.rollout import rollout

    offers = load_campaign(CAMPAIGN).offers
    reprice = {o.id: {"cost_per_acceptance": 3.0 + o.cost_per_acceptance} for o in offers}
    campaign, first, table, wave = _saved_with_reprice(arms_state, "reprice-none-passes", reprice)
    treated = (wave["group"] == "test").to_numpy()
    rng = np.random.default_rng(4)
    responded = rng.random(len(wave)) < 0.2  # nothing works
    reason = np.where(treated & ~responded, "price", None)
    read_plan(
        arms_state,
        first.plan_id,
        pd.DataFrame(
            {"customer_id": wave["customer_id"], "responded": responded, "reason": reason}
        ),
    )
    follow, result, facts = rollout(arms_state, first.plan_id)
    assert follow is None and result is None and not facts["rolled_out_arms"]
    chosen = {d["arm"] for d in facts["repricing"] if d["action"] == "re-price"}
    assert chosen and facts["retest_plan"]
    record, retest = load_plan(arms_state, facts["retest_plan"])
    parent = table[table["selected"] & (table["group"] == "rollout")]
    data_id = {o.id: o.data_id for o in campaign.offers}
    theirs = {
        c
        for c, o, ch in zip(parent["customer_id"], parent["offer"], parent["channel"], strict=True)
        if f"{data_id[o]}/{ch}" in chosen
    }
    # every held customer of a re-priced arm, and no one else
    assert set(retest["customer_id"]) == theirs
    # the money left is the budget less the wave's expected spend, and the re-test stays in it
    spent = float(wave["expected_spend"].sum())
    contacted = retest[retest["selected"] & (retest["group"] != "control")]
    assert float(contacted["expected_spend"].sum()) <= campaign.budget.money - spent + 1e-6
