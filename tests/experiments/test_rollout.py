"""The roll-out of a read wave (experiments.rollout): the learning step of the loop simulator
on a real wave, and a roll-out that gives each arm only to the customers it was read on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.offpolicy import Arm
from experiments.rollout import (
    dropped_counts,
    fallback_rollout,
    learn_and_gate,
    only_where_read,
    rollout,
)
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


def _randomised(
    n: int,
    rng: np.random.Generator,
    effects: list[float],
    campaign: str,
    where_f1_positive: list[float] | None = None,
):
    """A randomised campaign: every arm and the control at random; each arm's uplift
    ``effects`` (``where_f1_positive``: its uplift on the customers with f1 > 0, when given)."""
    x = pd.DataFrame({"f1": rng.normal(size=n), "f2": rng.normal(size=n)})
    arm = rng.integers(-1, len(effects), n)
    uplift = np.asarray(effects)[np.maximum(arm, 0)]
    if where_f1_positive is not None:
        other = np.asarray(where_f1_positive)[np.maximum(arm, 0)]
        uplift = np.where(x["f1"].to_numpy() > 0, other, uplift)
    p = 0.2 + np.where(arm >= 0, uplift, 0.0)
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
    model, model_arms, cal, decisions, reads, history_profit = learn_and_gate(
        history, wave, arms, ["f1", "f2"], [], (0.1, 0.05), 0.9, FAST
    )
    assert model_arms == [0, 1] and cal is not None and len(cal.ate) == 2
    # the history's cross-fitted profit per (row, arm): what its fallback reads are planned by
    assert history_profit.shape == (len(history), 2) and np.isfinite(history_profit).all()
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


@pytest.mark.parametrize(("good_on_them", "falls_back"), [(0.15, True), (0.0, False)])
def test_a_dropped_arms_customers_get_their_best_passed_arm_only_where_it_passed_on_them(
    good_on_them: float, falls_back: bool
) -> None:
    """The simulator's fallback read in the CLI's roll-out: GOOD passed on its segment, BAD was
    dropped; BAD's customers may get GOOD only when GOOD, read on the customers whose plan is
    BAD (the history's randomised rows on the same rule), passed there — else they are held."""
    rng = np.random.default_rng(3)
    arms = [Arm("GOOD", "email", 40.0, 0.2), Arm("BAD", "email", 40.0, 5.0)]
    labels = [a.label for a in arms]
    # two earlier randomised campaigns: GOOD earns +15 pp where f1 <= 0 and ``good_on_them``
    # where f1 > 0 — where the history's (cross-fitted) plan gives BAD
    history = pd.concat(
        [_randomised(4_000, rng, [0.15, 0.0], c, [good_on_them, 0.0]) for c in ("A", "B")],
        ignore_index=True,
    )
    f1 = history["f1"].to_numpy()
    history_profit = np.column_stack([np.full(len(f1), 1.0), np.where(f1 > 0, 2.0, -1.0)])
    # the rest of the base: the parent plan's arm of each customer and the calibrated estimate
    n = 600
    planned = rng.integers(-1, 2, n)
    profit = np.column_stack([rng.normal(0.5, 1.0, n), rng.normal(1.0, 1.0, n)])
    bad = planned == 1
    to_good = bad & (profit[:, 0] > 0)  # BAD's customers whose best passed arm is GOOD
    before, _ = dropped_counts(planned, rollout_by_population(planned, [0]), labels)
    assert before == {"BAD/email": int(bad.sum())}

    allowed, decisions = fallback_rollout(
        history, history_profit, planned, profit, [0], arms, 0.9, FAST
    )
    held, fallback = dropped_counts(planned, allowed, labels)
    assert [d.arm for d in decisions] == ["GOOD/email as a fallback"]
    assert decisions[0].roll_out is falls_back
    # read on exactly the history's rows planned BAD: their contacts of GOOD, both campaigns
    read_on = int(((f1 > 0) & (history["arm"] == 0)).sum())
    assert f"({read_on:,} contacts" in decisions[0].reason
    if falls_back:
        assert (allowed[to_good] == 0).all()
        assert fallback == {"BAD/email": {"GOOD/email": int(to_good.sum())}}
        assert held == {"BAD/email": int((bad & ~to_good).sum())}
        assert held["BAD/email"] < before["BAD/email"]
    else:
        assert fallback == {} and held == before
    # a passed arm's segment keeps it; no positive passed arm, or none selected: no contact
    assert (allowed[planned == 0] == 0).all()
    assert (allowed[(bad & ~to_good) | (planned == NO_ARM)] == NO_ARM).all()

    # the same customers, never read: the history's plan gave BAD to no one -> held
    never = history_profit.copy()
    never[:, 1] = -1.0
    allowed, decisions = fallback_rollout(history, never, planned, profit, [0], arms, 0.9, FAST)
    assert [(d.roll_out, d.reason) for d in decisions] == [
        (False, "held: never read on these customers")
    ]
    assert dropped_counts(planned, allowed, labels) == (before, {})


def test_a_thin_fallback_read_borrows_from_the_arms_segment_read_moved_by_the_estimate() -> None:
    """The fallback's read on the dropped arm's customers is thin; the arm's read on its own
    segment in this wave, moved by the estimated difference between the two populations, is
    its prior (LoopSettings.fallback_prior, "shifted" by default): a strong segment read
    estimated to carry over lets it pass, one estimated not to carry over does not."""
    from dataclasses import replace

    from experiments.rollout import wave_segment_reads

    rng = np.random.default_rng(5)
    arms = [Arm("GOOD", "email", 40.0, 0.2), Arm("BAD", "email", 40.0, 5.0)]
    history = _randomised(500, rng, [0.15, 0.0], "A", [0.06, 0.0])  # thin on BAD's customers
    f1 = history["f1"].to_numpy()
    history_profit = np.column_stack([np.full(len(f1), 1.0), np.where(f1 > 0, 2.0, -1.0)])
    n = 600
    planned = np.repeat([0, 1], n // 2)
    # this wave on GOOD's segment: +15 pp on 3 000 contacts and 1 000 controls
    m = 4_000
    wave = pd.DataFrame(
        {
            "arm": np.where(np.arange(m) < 3_000, 0, NO_ARM),
            "planned": 0,
            "label": (rng.random(m) < np.where(np.arange(m) < 3_000, 0.35, 0.20)).astype(int),
        }
    )
    segment = wave_segment_reads(wave, arms, 0.9)
    assert [r.arm for r in segment] == ["GOOD/email"]

    def decide(on_segment: float, on_them: float, settings: LoopSettings, reads: list) -> bool:
        profit = np.column_stack([np.where(planned == 0, on_segment, on_them), np.full(n, 1.0)])
        _, (decision,) = fallback_rollout(
            history, history_profit, planned, profit, [0], arms, 0.9, settings, reads
        )
        assert decision.arm == "GOOD/email as a fallback"
        return decision.roll_out

    alone = replace(FAST, fallback_prior="none")
    assert not decide(5.0, 4.5, alone, segment)  # the thin read alone does not pass
    assert decide(5.0, 4.5, FAST, segment)  # estimated to earn there about what it earns on its own
    assert not decide(9.0, 2.0, FAST, segment)  # estimated to earn 7 per contact less there
    assert not decide(5.0, 4.5, FAST, [])  # no segment read: the thin read alone
