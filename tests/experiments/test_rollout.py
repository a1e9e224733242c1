"""The roll-out of a read wave (experiments.rollout): the learning step of the loop simulator
on a real wave, and a roll-out that gives each arm only to the customers it was read on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.offpolicy import Arm
from experiments.rollout import learn_and_gate, only_where_read, rollout
from experiments.simulate import LoopSettings
from features.store import StateDirs
from models.decisions import load_campaign, parse_campaign
from models.decisions import plan_store as store
from models.decisions.readout import NO_ARM, rollout_by_population

ROOT = Path(__file__).resolve().parents[2]
FAST = LoopSettings(params={"n_estimators": 10, "max_depth": 2, "learning_rate": 0.1})


def test_the_rollout_plans_each_customer_only_on_the_arm_read_on_them() -> None:
    campaign = load_campaign(ROOT / "experiments" / "campaigns" / "arms_demo.yaml")
    labels = [f"{o.data_id}/{c.name}" for o in campaign.offers for c in campaign.channels]
    rng = np.random.default_rng(0)
    n = 500
    planned = rng.integers(-1, len(labels), n)  # the parent plan's arm of each customer
    passed = [0, 2]
    allowed = rollout_by_population(planned, passed)
    shape = (n, len(campaign.offers), len(campaign.channels))
    uplift = only_where_read(rng.uniform(0.01, 0.3, shape), allowed, campaign, labels)
    best = uplift.reshape(n, -1).argmax(axis=1)
    open_ = uplift.reshape(n, -1).max(axis=1) > -1.0
    # a customer can be planned only on their own plan arm, and only when it passed
    assert (np.isin(planned[open_], passed)).all()
    assert (best[open_] == planned[open_]).all()  # labels are offer-major like the arrays
    # a dropped arm's customers, and those the plan did not select, are held
    assert not open_[~np.isin(planned, passed)].any()
    assert (allowed[~np.isin(planned, passed)] == NO_ARM).all()


def _randomised(n: int, rng: np.random.Generator, effects: list[float], campaign: str):
    x = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n)})
    arm = rng.integers(-1, len(effects), n)
    p = 0.2 + np.where(arm >= 0, np.asarray(effects)[np.maximum(arm, 0)], 0.0)
    x["arm"], x["label"], x["campaign_id"] = arm, (rng.random(n) < p).astype(int), campaign
    return x


def test_learn_and_gate_reads_each_arm_on_its_segment_pooled_with_history() -> None:
    rng = np.random.default_rng(1)
    arms = [Arm("GOOD", "email", 40.0, 0.2), Arm("BAD", "email", 40.0, 5.0)]
    history = _randomised(4_000, rng, [0.15, 0.0], "BEFORE")
    # the wave: the plan gave every customer an arm (half each), 1/3 held out as control
    wave = pd.DataFrame({"f1": rng.normal(size=3_000), "f2": rng.normal(size=3_000)})
    wave["planned"] = rng.integers(0, 2, len(wave))
    control = rng.random(len(wave)) < 1 / 3
    wave["arm"] = np.where(control, NO_ARM, wave["planned"])
    p = 0.2 + np.where(wave["arm"] == 0, 0.15, 0.0)
    wave["label"] = (rng.random(len(wave)) < p).astype(int)
    model, model_arms, cal, decisions, reads = learn_and_gate(
        history, wave, arms, ["f1", "f2"], [], (0.1, 0.05), 0.9, FAST
    )
    assert model_arms == [0, 1] and cal is not None and len(cal.ate) == 2
    verdict = {d.arm: d.roll_out for d in decisions}
    assert verdict == {"GOOD/email": True, "BAD/email": False}
    # the segment read (the wave's ~1 000 contacts of GOOD on its half) is pooled with the
    # earlier campaign's read: more contacts than the wave alone gave it
    good = next(r for r in reads if r.arm == "GOOD/email")
    wave_contacts = int((wave["arm"] == 0).sum())
    assert good.contacts > wave_contacts


def test_the_cli_points_a_plan_saved_over_http_to_the_rollout_route(tmp_path) -> None:
    """`patron campaign rollout` refits the arm model of `patron campaign plan`; a plan saved
    over HTTP has none, and the refusal names the route that rolls it out."""
    campaign = parse_campaign(
        {
            "campaign_id": "http-plan",
            "offers": [{"id": "ret", "kind": "retention", "value": 40.0}],
            "channels": [{"name": "email", "cost_per_contact": 0.2}],
        }
    )
    inputs = {"made_by": "POST /campaigns/plan", "dataset": "x"}
    as_of = pd.Timestamp("2024-01-01").date()
    record = {
        "plan_id": store.plan_id_of(campaign, as_of, inputs),
        "campaign": campaign.model_dump(mode="json"),
        "as_of": str(as_of),
        "inputs": inputs,
        "summary": {},
        "by_arm": [],
    }
    state = StateDirs(tmp_path)
    frame = pd.DataFrame({"customer_id": ["C1"], "selected": [True], "group": ["rollout"]})
    saved = store.write_plan(store.plans_root(tmp_path), frame, record)
    (saved.folder / store.READOUT_FILE).write_text(json.dumps({"confidence": 0.9, "gate": []}))
    with pytest.raises(ValueError, match=f"POST /campaigns/{saved.plan_id}/rollout"):
        rollout(state, saved.plan_id)
