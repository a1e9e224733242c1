"""Roll a read campaign out: learn from its test cell, re-plan the rest of the base over the
arms the gate passed — each only on the customers it was read on — and save the roll-out as a
plan of its own (``patron campaign rollout``).

After ``patron campaign read`` (the wave's responses are in the plan's folder), with the
learning step of the loop simulator (the same functions: ``experiments.simulate``,
``models.decisions.learning``, ``models.decisions.readout``; docs/campaign_loop.md §4, §5):

1. **learn**: the arm model is refitted on the randomised campaigns it was first fitted on plus
   the wave — the test cell (each contact with its arm) and the control group — with the
   features of the plan date, and **calibrated**: cross-fitted (each half planned by a model
   fitted on the other half), each arm's best linear predictor on those randomised rows (the
   wave's design: the plan's arm with the test-cell share, else control), shrunk across the
   arms by empirical Bayes;
2. **gate**: each arm the test cell tried is **read on its segment** (its contacts against the
   control customers the plan gave the same arm), pooled with the earlier randomised campaigns
   read the same way on cross-fitted plans, with a **random effect** between them (the
   uncertainty of the next roll-out), and rolled out when positive with the read-out's
   confidence, one-sided;
3. **re-plan** the rest of the base (everyone but the wave) with the calibrated model: a
   customer may get only the arm the plan gave them, and only when that arm passed — that is
   the population it was read on (the plan gave the test cell, the control group and the rest
   the same way: groups are a hash of the customer). A dropped arm's customers may get their
   best passed arm ``b`` (by the calibrated estimate) only where ``b`` was **read on them and
   passed there** (the simulator's fallback read, docs/campaign_loop.md §5 step 5): ``b`` read
   on the earlier randomised campaigns on the same rule — the rows whose cross-fitted plan gives
   a dropped arm and whose best passed arm is ``b``, each campaign against its own controls —
   pooled like the gate's reads and gated at the same confidence ("``b`` as a fallback",
   ``facts["fallback_gate"]``); else they are **held** (not contacted: they are re-tested in
   the campaign's next plan; ``facts["held"]``), never moved to an arm not read on them;
   customers the plan did not select stay uncontacted. The re-estimate may still leave out a
   customer whose arm is no longer profitable for them. No new test cell; the control group
   continues at the campaign's control fraction;
4. **budgets**: the campaign's total contact and money budgets less what the wave used (its
   records, and its expected spend); per-offer budgets and channel capacities as defined (the wave
   was small, ~5 %: documented, not subtracted);
5. **save** the roll-out plan like any plan (immutable, MLflow), its inputs naming the parent plan
   and the arms rolled out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from experiments.offpolicy import Arm, arms_of
from experiments.planning import (
    ID,
    ArmModel,
    arm_estimate,
    contact_frame,
    plan_over,
    planning_base,
)
from experiments.planning import arm_index as pair_index
from experiments.plans import (
    READOUT_FILE,
    RESPONSES_FILE,
    SavedPlan,
    load_plan,
    plans_dir,
    save_plan,
)
from experiments.simulate import (
    CAMPAIGN,
    P_CONTROL,
    LoopSettings,
    arm_calibration,
    arm_terms,
    best_passed_arm,
    crossfit,
    design_column,
    estimated_profit,
    fallback_key,
    fallback_pool,
    fit_known,
    gate_pool,
    history_design,
    history_fallback_reads,
    history_readouts,
    oof_profit,
    shifted_segment_reads,
)
from models.decisions import Campaign, Plan, UpliftEstimate, parse_campaign
from models.decisions import plan_store as store
from models.decisions.allocate import consent_matrix
from models.decisions.learning import Calibration
from models.decisions.readout import (
    NO_ARM,
    ArmReadout,
    GateDecision,
    gate,
    read_population,
    rollout_by_population,
)
from models.decisions.repricing import (
    REPRICE,
    Left,
    RepriceDecision,
    budget_left,
    build_retest,
    repricing_of,
)


def _arm_of(offers: pd.Series, channels: pd.Series, labels: list[str]) -> np.ndarray:
    """Per row the index of its ``offer/channel`` in ``labels``, ``NO_ARM`` where none."""
    index = {a: j for j, a in enumerate(labels)}
    return np.array(
        [
            index.get(f"{o}/{c}", NO_ARM) if isinstance(o, str) and isinstance(c, str) else NO_ARM
            for o, c in zip(offers, channels, strict=True)
        ],
        dtype=np.int64,
    )


def wave_segment_reads(wave: pd.DataFrame, arms: list[Arm], confidence: float) -> list[ArmReadout]:
    """Each arm the wave's test cell tried, read on its segment: its contacts against the
    control customers the plan gave the same arm (``wave``: ``arm`` what they got, -1 control;
    ``planned`` the plan's arm; ``label`` the response)."""
    terms = arm_terms(arms)
    given = [arms[a].label if a != NO_ARM else None for a in wave["arm"]]
    control = (wave["arm"] == NO_ARM).to_numpy()
    y = wave["label"].to_numpy()
    reads = []
    for j in sorted(set(wave.loc[~control, "arm"])):
        r = read_population(
            arms[j].label,
            given,
            (wave["planned"] == j).to_numpy(),
            control,
            y,
            terms[arms[j].label],
            level=confidence,
        )
        if r is not None:
            reads.append(r)
    return reads


def learn_and_gate(
    history: pd.DataFrame,
    wave: pd.DataFrame,
    arms: list[Arm],
    features: list[str],
    categorical: list[str],
    fractions: tuple[float, float],
    confidence: float,
    settings: LoopSettings,
) -> tuple[Any, list[int], Calibration | None, list[GateDecision], list[ArmReadout], np.ndarray]:
    """The loop's learning step on a real wave (``experiments.simulate``'s functions).

    ``history``: the randomised campaigns' contacts (features, ``arm``: index into ``arms``, -1
    control, ``label``, ``campaign_id``); ``wave``: the test cell and control group with
    features, ``arm`` (what they got), ``planned`` (the plan's arm, control customers
    included) and ``label``; ``fractions``: the plan's (control, test cell) fractions.
    Returns the model refitted on both (columns: the returned arms), its calibration, the
    gate's decision per arm the test cell tried, the pooled read-outs it decided on and the
    history's cross-fitted (calibrated) estimated profit per (row of ``history``, arm of
    ``arms``; -inf for an arm the model does not know): what ``fallback_rollout`` plans the
    history's rows by for its fallback reads."""
    c, t = fractions
    history = history_design(history.reset_index(drop=True), len(arms))
    rows = wave[[*features, "arm", "label"]].copy()
    rows[CAMPAIGN] = "wave"
    # the wave's design: of its customers, control with c / (c + t), else the plan's arm
    rows[P_CONTROL] = c / (c + t)
    for j in range(len(arms)):
        rows[design_column(j)] = t / (c + t) * (wave["planned"].to_numpy() == j)
    design = [P_CONTROL, *(design_column(j) for j in range(len(arms)))]
    seen = pd.concat(
        [history[[*features, "arm", "label", CAMPAIGN, *design]], rows], ignore_index=True
    )
    model_arms = sorted(set(seen["arm"]) - {NO_ARM})
    oof = crossfit(seen, model_arms, features, categorical, settings, 0)
    cal = arm_calibration(seen, model_arms, *oof) if settings.calibrate else None
    terms = arm_terms(arms)
    # the randomised campaigns read on cross-fitted plans (their rows come first in ``seen``)
    evidence = history_readouts(history, model_arms, *oof, arms, terms, confidence)
    control = (wave["arm"] == NO_ARM).to_numpy()
    tried = sorted(set(wave.loc[~control, "arm"]))
    reads = wave_segment_reads(wave, arms, confidence)
    pooled = gate_pool(
        [*evidence, reads],
        replace(settings, confidence=confidence),
        {a.label: a.value for a in arms},
    )
    decisions = []
    for j in tried:
        label = arms[j].label
        if label in pooled:
            decisions.extend(gate([pooled[label]], confidence))
        else:
            decisions.append(
                GateDecision(label, False, "held: no control customer on its segment", confidence)
            )
    model = fit_known(seen, model_arms, features, categorical, settings, 0)
    history_profit = oof_profit(len(history), model_arms, *oof, arms, cal)
    return model, model_arms, cal, decisions, [pooled[r.arm] for r in reads], history_profit


def fallback_rollout(
    history: pd.DataFrame,
    history_profit: np.ndarray,
    planned: np.ndarray,
    profit: np.ndarray,
    passed: list[int],
    arms: list[Arm],
    confidence: float,
    settings: LoopSettings,
    segment_reads: Sequence[ArmReadout] = (),
) -> tuple[np.ndarray, list[GateDecision]]:
    """The arm each customer may be rolled out (``NO_ARM``: held), with the loop simulator's
    fallback read (docs/campaign_loop.md §5 step 5; the simulator's functions): a customer whose
    plan arm (``planned``, index into ``arms``) is in ``passed`` may get it; a customer whose plan
    arm was dropped may get their best passed arm ``b`` (by ``profit``, the calibrated estimate
    per (customer, arm)) only when ``b`` was **read on them and passed there** — read on the
    same rule on the earlier randomised campaigns of ``history`` (``history_fallback_reads``: the
    rows whose cross-fitted plan, by ``history_profit``, gives an arm outside ``passed`` and whose
    best passed arm is ``b``; every arm was randomised there, each campaign against its own
    controls), pooled by ``gate_pool`` and gated at ``confidence``; else they are held. Returns
    the allowed arm per customer and the fallback gate's decision per such ``b`` (named
    "``b`` as a fallback"). No fallback half of a test cell here: the wave tested the plan.
    With ``settings.fallback_prior`` "shifted" (the default), ``b``'s read in this wave on its
    own segment (``segment_reads``: ``wave_segment_reads``) moved by the estimated difference
    between its segment and those customers is the prior of those reads, as in the simulator
    (``simulate.shifted_segment_reads``, ``readout.pool_population_in_arm``)."""
    terms = arm_terms(arms)
    planned = np.asarray(planned, dtype=np.int64)
    best = best_passed_arm(profit, passed)
    dropped = (planned != NO_ARM) & ~np.isin(planned, passed)
    fallback = np.full(len(planned), NO_ARM, dtype=np.int64)
    fell_back: list[int] = []
    decisions = []
    for b in sorted(set(best[dropped].tolist()) - {NO_ARM}):
        key = fallback_key(arms[b])
        reads = history_fallback_reads(history, history_profit, passed, b, arms, terms, confidence)
        prior = shifted_segment_reads(
            [r for r in segment_reads if r.arm == arms[b].label],
            profit[dropped & (best == b), b],
            profit[planned == b, b],
        )
        pool = fallback_pool(
            reads, prior, key, arms[b].value, replace(settings, confidence=confidence)
        )
        if key in pool:
            decision = gate([pool[key]], confidence)[0]
        else:
            decision = GateDecision(key, False, "held: never read on these customers", confidence)
        decisions.append(decision)
        if decision.roll_out:
            fallback[dropped & (best == b)] = b
            fell_back.append(b)
    allowed = rollout_by_population(
        planned,
        passed,
        fallback=fallback,
        fallback_passed={
            (int(b), int(d))
            for b, d in zip(best[dropped], planned[dropped], strict=True)
            if b in fell_back
        },
    )
    return allowed, decisions


def dropped_counts(
    planned: np.ndarray, allowed: np.ndarray, labels: list[str]
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Of the customers whose plan arm (``planned``, index into ``labels``) is not their
    ``allowed`` one: per plan arm, how many are held (``allowed`` ``NO_ARM``) and how many may
    get another arm, per that arm (their fallback)."""
    planned, allowed = np.asarray(planned), np.asarray(allowed)
    moved = (planned != NO_ARM) & (allowed != planned)
    held: dict[str, int] = {}
    fallback: dict[str, dict[str, int]] = {}
    for j in sorted(set(planned[moved].tolist())):
        mine = moved & (planned == j)
        if (allowed[mine] == NO_ARM).any():
            held[labels[j]] = int((allowed[mine] == NO_ARM).sum())
        to = allowed[mine & (allowed != NO_ARM)]
        if len(to):
            fallback[labels[j]] = {
                labels[b]: int((to == b).sum()) for b in sorted(set(to.tolist()))
            }
    return held, fallback


def only_where_read(
    uplift: np.ndarray, allowed: np.ndarray, campaign: Campaign, labels: list[str]
) -> np.ndarray:
    """The uplift per (customer, offer, channel) with every arm but the customer's ``allowed``
    one (index into ``labels``, ``offer/channel``; ``NO_ARM``: none) set to -1, so the planner
    never chooses it (``rollout_by_population`` gives ``allowed``: the arm read on them)."""
    out = np.array(uplift, dtype=float, copy=True)
    for i, offer in enumerate(campaign.offers):
        for c, channel in enumerate(campaign.channels):
            j = labels.index(f"{offer.data_id}/{channel.name}")
            out[np.asarray(allowed) != j, i, c] = -1.0
    return out


def rollout(state: Any, plan_id: str) -> tuple[SavedPlan | None, Plan | None, dict[str, Any]]:
    """Learn from the wave, gate each arm on its segment, re-plan the rest of the base with
    each passed arm on its own segment only — and on a dropped arm's customers whose best
    passed arm it is where it was read on them and passed (``fallback_rollout``) — save the
    plan. Returns (saved plan, plan, facts); the plan is None when no arm passed the gate."""
    record, table = load_plan(state, plan_id)
    folder = plans_dir(state) / plan_id
    if not (folder / READOUT_FILE).exists():
        raise ValueError(
            f"--plan {plan_id}: no read-out yet — read the test cell first "
            f"(patron campaign read --plan {plan_id} --responses <file>)"
        )
    readout = json.loads((folder / READOUT_FILE).read_text())
    confidence = float(readout.get("confidence", 0.9))
    campaign = Campaign.model_validate(record["campaign"])
    inputs = record["inputs"]
    if inputs.get("wave") == "retest":  # a re-priced arm's re-test: no model to refit
        return None, None, retest_rollout(state, plan_id, record)
    lacking = sorted({"dataset", "feature_set", "learned_from"} - set(inputs))
    if lacking and inputs.get("made_by") == "POST /campaigns/plan":
        raise ValueError(
            f"--plan {plan_id} was saved over HTTP with the served models (no arm model to "
            f"refit): roll it out with POST /campaigns/{plan_id}/rollout — each customer of its "
            "roll-out group only the arm the plan gave them, when that arm passed "
            "(docs/campaign_loop.md §7)"
        )
    if lacking:
        raise ValueError(
            f"--plan {plan_id} was not made from an arm model (its inputs lack {lacking}): "
            "plan with patron campaign plan to roll out"
        )
    dataset, fs = inputs["dataset"], inputs["feature_set"]
    learned_from = [c for c in str(inputs["learned_from"]).split(",") if c]
    params = json.loads(inputs.get("model_params") or "{}") or None
    learner = inputs.get("learner", "x")
    arms = arms_of(campaign)
    labels = [a.label for a in arms]
    data_id = {o.id: o.data_id for o in campaign.offers}

    # 1. the randomised campaigns (their contacts of this campaign's arms, and controls) and
    # the wave, with the plan date's features
    frame, features, categorical, _ = contact_frame(state, dataset, learned_from, fs)
    pairs = [(a.offer_id, a.channel) for a in arms]
    treated = frame["treatment"].to_numpy().astype(bool)
    keys = set(pairs)
    ours = ~treated | np.array(
        [(str(o), str(c)) in keys for o, c in zip(frame["offer_id"], frame["channel"], strict=True)]
    )
    history = frame[ours].reset_index(drop=True)
    history["arm"] = pair_index(history, pairs)
    as_of = pd.Timestamp(record["as_of"]).date()
    base, _ = planning_base(state, dataset, fs, as_of)
    wave = pd.read_parquet(folder / RESPONSES_FILE)
    offer_ids = wave["offer"].map(lambda o: data_id.get(str(o), str(o)))
    wave["planned"] = _arm_of(offer_ids, wave["channel"], labels)
    wave["arm"] = np.where((wave["group"] == "test").to_numpy(), wave["planned"], NO_ARM)
    wave["label"] = wave["responded"].astype(int)
    wave_rows = wave.merge(base[[ID, *features]], on=ID, how="inner")
    settings = LoopSettings(learner=learner, params=params or LoopSettings().params)
    pipe, model_arms, cal, decisions, reads, history_profit = learn_and_gate(
        history,
        wave_rows,
        arms,
        features,
        categorical,
        (campaign.control_fraction, campaign.test_cell_fraction),
        confidence,
        settings,
    )
    passed = [d.arm for d in decisions if d.roll_out]
    # a dropped arm whose offer has re-priced terms: re-priced when the wave's declines on its
    # segment (the read-out's) say price, else dropped (models.decisions.repricing)
    repricing = repricing_of(campaign, readout.get("arms", []), decisions, confidence)
    facts: dict[str, Any] = {
        "parent_plan": plan_id,
        "rolled_out_arms": passed,
        "gate": [d.as_dict() for d in decisions],
        "readouts": [r.as_dict() for r in reads],
        "calibrated": cal is not None,
        "learned_rows": len(history) + len(wave_rows),
        "wave_rows": len(wave_rows),
        "repricing": [d.as_dict() for d in repricing],
    }
    # the plan's arm of each customer of its roll-out group
    parent = table[table["selected"] & (table["group"] == "rollout")].drop_duplicates(ID)
    parent_offer = parent["offer"].map(lambda o: data_id.get(str(o), str(o)))
    parent_arm = pd.Series(
        _arm_of(parent_offer, parent["channel"], labels),
        index=parent[ID].to_numpy(),
    )
    # the budgets less what the wave used (its records and its expected spend)
    used = table[table["selected"] & table["group"].isin(["test", "control"])]
    wave_spend = float(used["expected_spend"].sum())
    money, contacts, capacity = budget_left(campaign, wave_spend, len(used), {})
    budget = {"contacts": contacts, "money": money}
    if not passed:
        # nothing rolls out; the re-priced arms' customers of the roll-out group are re-tested
        arm_of = {str(c): labels[int(a)] for c, a in parent_arm.items() if a != NO_ARM}
        left = (money, contacts, capacity)
        facts.update(_retest(state, record, campaign, base, arm_of, repricing, readout, left))
        return None, None, facts
    model = ArmModel(
        pipe,
        [pairs[j] for j in model_arms],
        features,
        fs,
        [*learned_from, f"plan:{plan_id}"],
        len(history) + len(wave_rows),
    )

    # 2. re-plan the rest: each customer only the plan's arm for them, when it passed (the
    # population it was read on); 3. budgets less the wave's use
    rest = base[~base[ID].isin(set(wave[ID]))].reset_index(drop=True)
    planned = rest[ID].map(parent_arm).fillna(NO_ARM).to_numpy(dtype=np.int64)
    # a dropped arm's customers: their best passed arm where it was read on them and passed
    # (the history's randomised rows on the same rule), else held
    profit = estimated_profit(pipe, rest[features], arms, model_arms, cal)
    allowed, fallback_decisions = fallback_rollout(
        history,
        history_profit,
        planned,
        profit,
        [labels.index(a) for a in passed],
        arms,
        confidence,
        settings,
        wave_segment_reads(wave_rows, arms, confidence),
    )
    facts["fallback_gate"] = [d.as_dict() for d in fallback_decisions]
    fell_back = [d.arm for d in fallback_decisions if d.roll_out]
    estimate = arm_estimate(model, rest, campaign)
    assert estimate.p_accept is not None  # arm_estimate always gives P(accept | contacted)
    uplift = estimate.uplift.copy()
    if cal is not None:  # the calibrated uplift of each arm (the model's columns)
        x = pipe[:-1].transform(rest[features])
        calibrated = cal.apply(pipe[-1].predict(x))
        column = {pairs[j]: k for k, j in enumerate(model_arms)}
        for i, offer in enumerate(campaign.offers):
            for c, channel in enumerate(campaign.channels):
                uplift[:, i, c] = calibrated[:, column[(offer.data_id, channel.name)]]
    uplift = only_where_read(uplift, allowed, campaign, labels)
    estimate = UpliftEstimate(np.minimum(uplift, estimate.p_accept.p), estimate.p_accept)
    facts["held"], facts["fallback"] = dropped_counts(planned, allowed, labels)
    definition = campaign.model_dump(mode="json")
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
            "rollout_rule": (
                "each passed arm on its own segment; a dropped arm's customers their best passed "
                "arm where read on them and passed, else held"
            ),
            "fallback_arms": ",".join(fell_back),
            "fallback_gate": facts["fallback_gate"],
            "calibrated": str(cal is not None).lower(),
            "wave": "rollout",
        },
    )
    facts["budget"] = budget
    # the held customers of a re-priced arm: re-tested at the new terms, within what the
    # campaign has left after this roll-out
    held = (planned != NO_ARM) & (allowed == NO_ARM)
    arm_of = {str(c): labels[int(a)] for c, a in zip(rest[ID][held], planned[held], strict=True)}
    contacted = dict(zip(plan.by_channel["channel"], plan.by_channel["contacted"], strict=True))
    left = budget_left(
        campaign,
        wave_spend + float(plan.summary["expected_spend_contacted"]),
        len(used) + int(plan.summary["contacted"]),
        {str(c): int(n) for c, n in contacted.items()},
    )
    facts.update(_retest(state, record, campaign, base, arm_of, repricing, readout, left))
    return saved, plan, facts


def _retest(
    state: Any,
    record: dict[str, Any],
    campaign: Campaign,
    base: pd.DataFrame,
    arm_of: dict[str, str],
    repricing: list[RepriceDecision],
    readout: dict[str, Any],
    left: Left,
) -> dict[str, Any]:
    """Save the re-test of the re-priced arms' held customers (``arm_of``: customer id → the
    failed arm) as a plan of its own, within what the campaign has ``left`` (money, contacts,
    capacity per channel; None: no limit). Returns the facts ({} when no re-test)."""
    built = build_retest(campaign, repricing, base, arm_of, readout.get("arms", []), left)
    if built is None:
        return {}
    retest, plan = built
    chosen = [d for d in repricing if d.action == REPRICE]
    saved = save_plan(
        state,
        plan,
        retest,
        pd.Timestamp(record["as_of"]).date(),
        {
            **{k: v for k, v in record["inputs"].items() if k in ("dataset", "feature_set")},
            "parent_plan": record["plan_id"],
            "wave": "retest",
            "retest_of": ",".join(d.arm for d in chosen),
            "repricing": [d.as_dict() for d in chosen],
            "made_by": "patron campaign rollout",
        },
    )
    return {
        "retest_plan": saved.plan_id,
        "retest": {
            "customers": int(plan.summary["base"]),
            "test_cell": int(plan.summary["test_cell"]),
            "control": int(plan.summary["control"]),
            "waiting": int(plan.summary["rollout"]),
            "excluded": plan.exclusions,
        },
    }


def retest_rollout(state: Any, plan_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """The roll-out of a re-test plan on its read-out: its waiting customers get the re-priced
    arm when the re-test passed the gate (its test cell alone: the re-priced offer has no
    history), else they are held; consent is checked again on the base of the plan date
    (``plan_store.record_rollout``, the rule of a saved plan's roll-out)."""
    dataset, fs = record["inputs"]["dataset"], record["inputs"]["feature_set"]
    as_of = pd.Timestamp(record["as_of"]).date()

    def consent(rec: dict[str, Any]) -> tuple[pd.DataFrame, str]:
        campaign = Campaign.model_validate(rec["campaign"])
        base, _ = planning_base(state, dataset, fs, as_of)
        flags = consent_matrix(campaign, base)
        frame = pd.DataFrame(
            flags,
            index=pd.Index(base[ID].astype(str), dtype=object),
            columns=campaign.channel_names,
        )
        return frame[~frame.index.duplicated(keep="last")], f"dataset {dataset} as of {as_of}"

    out, created = store.record_rollout(plans_dir(state), plan_id, consent)
    return {
        "parent_plan": record["inputs"].get("parent_plan"),
        "retest_rollout": out,
        "created": created,
    }
