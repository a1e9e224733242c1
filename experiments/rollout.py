"""Roll a read campaign out: learn from its test cell, re-plan the rest of the base over the
arms the gate passed, save the roll-out as a plan of its own (``patron campaign rollout``).

After ``patron campaign read`` (the wave's responses and the gate's decision are in the plan's
folder):

1. **learn**: the arm model is refitted on the contacts it was first fitted on plus the wave —
   the test cell (each contact with its arm) and the control group — with the features of the
   plan date (the wave's customers were planned on them);
2. **re-plan** the rest of the base (everyone but the wave: its customers were contacted or held
   out already) with the refitted model, over the arms the gate rolled out only — an arm that was
   dropped or held gets an uplift of −1 for everyone, so it is never chosen (and its pairs count as
   not profitable); no new test cell (the test was done); the control group continues at the
   campaign's control fraction;
3. **budgets**: the campaign's total contact and money budgets less what the wave used (its
   records, and its expected spend); per-offer budgets and channel capacities as defined (the wave
   was small, ~5 %: documented, not subtracted);
4. **save** the roll-out plan like any plan (immutable, MLflow), its inputs naming the parent plan
   and the arms rolled out.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from experiments.offpolicy import fit_arm_model
from experiments.planning import (
    ID,
    ArmModel,
    arm_estimate,
    arm_index,
    contact_frame,
    log_arms,
    plan_over,
    planning_base,
)
from experiments.plans import (
    READOUT_FILE,
    RESPONSES_FILE,
    SavedPlan,
    load_plan,
    plans_dir,
    save_plan,
)
from models.decisions import Campaign, Plan, UpliftEstimate, parse_campaign


def rollout(state: Any, plan_id: str) -> tuple[SavedPlan | None, Plan | None, dict[str, Any]]:
    """Refit with the wave, re-plan the rest over the arms the gate passed, save the plan.
    Returns (saved plan, plan, facts); the plan is None when no arm passed the gate."""
    record, table = load_plan(state, plan_id)
    folder = plans_dir(state) / plan_id
    if not (folder / READOUT_FILE).exists():
        raise ValueError(
            f"--plan {plan_id}: no read-out yet — read the test cell first "
            f"(patron campaign read --plan {plan_id} --responses <file>)"
        )
    readout = json.loads((folder / READOUT_FILE).read_text())
    passed = [g["arm"] for g in readout["gate"] if g["roll_out"]]
    facts: dict[str, Any] = {"parent_plan": plan_id, "rolled_out_arms": passed}
    if not passed:
        return None, None, facts
    campaign = Campaign.model_validate(record["campaign"])
    inputs = record["inputs"]
    lacking = sorted({"dataset", "feature_set", "learned_from"} - set(inputs))
    if lacking:
        raise ValueError(
            f"--plan {plan_id} was not made from an arm model (its inputs lack {lacking}): "
            "plan with patron campaign plan to roll out"
        )
    dataset, fs = inputs["dataset"], inputs["feature_set"]
    learned_from = [c for c in str(inputs["learned_from"]).split(",") if c]
    params = json.loads(inputs.get("model_params") or "{}") or None
    learner = inputs.get("learner", "x")

    # 1. learn: the first contacts plus the wave, with the plan date's features
    frame, features, categorical, _ = contact_frame(state, dataset, learned_from, fs)
    arms = log_arms(frame)
    frame["arm"] = arm_index(frame, arms)
    as_of = pd.Timestamp(record["as_of"]).date()
    base, _ = planning_base(state, dataset, fs, as_of)
    wave = pd.read_parquet(folder / RESPONSES_FILE)
    data_id = {o.id: o.data_id for o in campaign.offers}
    wave["arm"] = arm_index(
        pd.DataFrame(
            {
                "treatment": (wave["group"] == "test").to_numpy(),
                "offer_id": wave["offer"].map(lambda o: data_id.get(str(o), str(o))),
                "channel": wave["channel"],
            }
        ),
        arms,
    )
    wave["label"] = wave["responded"].astype(int)
    wave_rows = wave.merge(base[[ID, *features]], on=ID, how="inner")
    learn = pd.concat(
        [frame[[*features, "arm", "label"]], wave_rows[[*features, "arm", "label"]]],
        ignore_index=True,
    )
    pipe = fit_arm_model(learn, features, categorical, learner, params)
    model = ArmModel(pipe, arms, features, fs, [*learned_from, f"plan:{plan_id}"], len(learn))
    facts["learned_rows"] = len(learn)
    facts["wave_rows"] = len(wave_rows)

    # 2. re-plan the rest over the passed arms; 3. budgets less the wave's use
    rest = base[~base[ID].isin(set(wave[ID]))].reset_index(drop=True)
    estimate = arm_estimate(model, rest, campaign)
    assert estimate.p_accept is not None  # arm_estimate always gives P(accept | contacted)
    uplift = estimate.uplift.copy()
    for i, offer in enumerate(campaign.offers):
        for c, channel in enumerate(campaign.channels):
            if f"{offer.data_id}/{channel.name}" not in passed:
                uplift[:, i, c] = -1.0
    estimate = UpliftEstimate(np.minimum(uplift, estimate.p_accept.p), estimate.p_accept)
    used = table[table["selected"] & table["group"].isin(["test", "control"])]
    definition = campaign.model_dump(mode="json")
    budget = dict(definition.get("budget") or {})
    if budget.get("contacts") is not None:
        budget["contacts"] = max(int(budget["contacts"]) - len(used), 0)
    if budget.get("money") is not None:
        budget["money"] = max(float(budget["money"]) - float(used["expected_spend"].sum()), 0.0)
    definition.update(budget=budget, test_cell_fraction=0.0)
    follow = parse_campaign(definition)
    plan = plan_over(state, dataset, follow, rest, estimate, as_of)
    saved = save_plan(
        state,
        plan,
        follow,
        as_of,
        {
            **inputs,
            "learned_from": ",".join(model.campaign_ids),
            "model_contacts": model.contacts,
            "parent_plan": plan_id,
            "rolled_out_arms": ",".join(passed),
            "wave": "rollout",
        },
    )
    facts["budget"] = budget
    return saved, plan, facts
