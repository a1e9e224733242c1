"""The campaign loop against a fixed plan and the oracle, on synthetic campaigns with known truth.

A campaign's audience (the customers of a randomised multi-arm campaign of the ``synthetic_arms``
data, whose true response probability under every arm is known) is planned three ways:

* **fixed plan**: the arm model fitted on the earlier campaigns (the pre-campaign model) gives
  every customer the arm of highest estimated incremental profit, or no contact; rolled out to
  the whole audience at once. It can only choose arms the earlier campaigns tested.
* **loop** (the CRM practice's process): a **test cell** (``test_fraction`` of the audience) gets
  the arms at random — every arm of the campaign, new ones included — and is **read** against the
  control group after the response window (``models.decisions.readout``); the **gate** keeps the
  arms whose incremental profit per contact is positive with the configured confidence; the arm
  model is **refitted** with the test cell's responses; the rest of the audience is planned with
  the refitted model over the arms that passed.
* **oracle**: every customer the arm of highest *true* incremental profit, or no contact.

The same random ``control_fraction`` of the audience is held out as the control group in all
three (the loop's read-out needs it; the others carry the same cost, so the comparison is fair),
and responses are drawn from the truth (Bernoulli on the true probability of the arm received).
Every figure is the **true expected incremental profit** of what was done — the value the truth
gives the assignments, not a noisy realisation — so the comparison is not blurred by response
noise, while the loop's own decisions see only the drawn responses, as in reality.

Why a refit and not a Bayesian / bandit update of per-segment arm effects: the refit reuses the
tested learner on the earlier campaigns plus the test cell, so a new arm is learned with the
features every other arm uses, and the model of record stays one kind of object; a per-segment
Beta-Binomial update would need segments defined in advance and throws away the features within
them. The cost: a new arm's effect is learned from the test cell alone (a few hundred contacts),
so its customer-level estimates are noisy — the gate is what protects the roll-out from that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from experiments.offpolicy import Arm, economics, fit_arm_model
from models.decisions.offpolicy import NO_CONTACT, best_choice
from models.decisions.readout import (
    DEFAULT_GATE_CONFIDENCE,
    ArmTerms,
    gate,
    pool_readouts,
    read_wave,
)

CAMPAIGN = "campaign_id"


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: test cell and control sizes, the gate's confidence, the learner."""

    test_fraction: float = 0.05
    control_fraction: float = 0.1
    confidence: float = DEFAULT_GATE_CONFIDENCE
    learner: str = "x"
    params: dict[str, Any] = field(
        default_factory=lambda: {
            "n_estimators": 100,
            "max_depth": 2,
            "learning_rate": 0.05,
            "min_child_weight": 20,
        }
    )


@dataclass(frozen=True)
class WaveOutcome:
    """One wave three ways: the true incremental profit of each, and the loop's gate."""

    wave: str
    customers: int
    fixed: float
    loop: float
    oracle: float
    loop_test_cell: float
    gate: list[dict[str, Any]]
    false_roll_outs: int  # arms rolled out whose true incremental profit where rolled out < 0
    arms_rolled_out: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class Wave:
    """A wave's audience (features the day before the send) and its truth."""

    name: str
    audience: pd.DataFrame
    truth: tuple[np.ndarray, np.ndarray]  # p_control (n,), p_arms (n, A)


def _choose(
    model: Any, x: pd.DataFrame, arms: list[Arm], model_arms: list[int], allowed: list[int]
) -> Any:
    """Per customer the allowed arm (index into ``arms``) of highest estimated profit, or none.
    ``model_arms``: the arm (index into ``arms``) of each of the model's columns."""
    pre, mau = model[:-1], model[-1]
    xt = pre.transform(x)
    econ = economics([arms[j] for j in model_arms], len(x))
    estimated = econ.estimated_profit(
        mau.predict(xt), mau.predict_outcomes(xt)[:, : len(model_arms)]
    )
    profit = np.full((len(x), len(arms)), -np.inf)
    for k, j in enumerate(model_arms):
        if j in allowed:
            profit[:, j] = estimated[:, k]
    return best_choice(profit)


def _true_profit(choice: np.ndarray, true_profit: np.ndarray) -> float:
    contacted = choice != NO_CONTACT
    return float(true_profit[np.flatnonzero(contacted), choice[contacted]].sum())


def _responses(
    choice: np.ndarray, draw: np.ndarray, p0: np.ndarray, p_arms: np.ndarray
) -> np.ndarray:
    """Who responds: one uniform per customer against the true probability of what they got."""
    rows = np.arange(choice.size)
    return draw < np.where(choice == NO_CONTACT, p0, p_arms[rows, np.maximum(choice, 0)])


def _fit_known(
    data: pd.DataFrame,
    known: list[int],
    features: list[str],
    categorical: list[str],
    settings: LoopSettings,
    seed: int,
) -> Any:
    """The arm model on the rows of the known arms and the controls (columns: ``known``)."""
    rows = data[data["arm"].isin([-1, *known])].copy()
    rows["arm"] = rows["arm"].map({-1: -1, **{j: k for k, j in enumerate(known)}})
    return fit_arm_model(rows, features, categorical, settings.learner, settings.params, seed)


def simulate_loop(
    history: pd.DataFrame,
    waves: list[Wave],
    features: list[str],
    categorical: list[str],
    arms: list[Arm],
    known: list[int],
    settings: LoopSettings,
    rng: np.random.Generator,
    seed: int = 0,
) -> list[WaveOutcome]:
    """A campaign over ``waves``, three ways. ``history``: the contacts known before the campaign
    (column ``arm``: index into ``arms``, -1 control; ``label``); ``known``: the arms it tested.

    The fixed plan uses the pre-campaign model for every wave. The loop, in each wave: a test
    cell with random arms (every arm), read against the control group; the gate; a refit on
    everything seen so far plus the test cell; the rest planned over the arms that passed; then
    the wave's responses (test cell, roll-out and control) join what it learns from."""
    history = history[history["arm"].isin([-1, *known])]  # the arms never tested do not exist
    model0 = _fit_known(history, known, features, categorical, settings, seed)
    seen = history[[*features, "arm", "label"]]
    terms = {a.label: ArmTerms(a.value, a.cost_per_contact, a.cost_per_acceptance) for a in arms}
    everything = list(range(len(arms)))
    # the randomised evidence about each arm: each earlier campaign against its own control
    evidence = [
        read_wave(
            [arms[a].label if a != NO_CONTACT else None for a in part["arm"]],
            part["label"].to_numpy(),
            terms,
            level=settings.confidence,
        )
        for _, part in history.groupby(CAMPAIGN)
    ]
    out = []
    for wave in waves:
        n = len(wave.audience)
        econ = economics(arms, n)
        p0, p_arms = wave.truth
        true_profit = econ.profit(p0, p_arms)
        control = rng.random(n) < settings.control_fraction
        x = wave.audience[features]

        fixed = _choose(model0, x, arms, known, known)
        fixed[control] = NO_CONTACT
        oracle = best_choice(true_profit)
        oracle[control] = NO_CONTACT

        # the test cell: random arms, every arm, read against the control group
        test = ~control & (rng.random(n) < settings.test_fraction)
        loop = np.full(n, NO_CONTACT)
        loop[test] = rng.integers(0, len(arms), int(test.sum()))
        draw = rng.random(n)  # one uniform per customer: the response under what they get
        y = _responses(loop, draw, p0, p_arms)
        cell = test | control
        labels = [arms[a].label if a != NO_CONTACT else None for a in loop[cell]]
        readouts = read_wave(labels, y[cell], terms, level=settings.confidence)
        evidence.append(readouts)
        pooled = {r.arm: r for r in pool_readouts(evidence, settings.confidence)}
        decisions = gate([pooled.get(r.arm, r) for r in readouts], settings.confidence)
        passed = [j for j, d in enumerate(decisions) if d.roll_out]

        # learn from everything seen and the test cell, then plan the rest over the passed arms
        rows = wave.audience.loc[cell, features].copy()
        rows["arm"], rows["label"] = loop[cell], y[cell].astype(int)
        learn = pd.concat([seen, rows], ignore_index=True)
        rest = ~control & ~test
        if passed:
            model1 = fit_arm_model(
                learn, features, categorical, settings.learner, settings.params, seed
            )
            loop[rest] = _choose(model1, x[rest], arms, everything, passed)
        y = _responses(loop, draw, p0, p_arms)
        wave_rows = wave.audience[features].copy()
        wave_rows["arm"], wave_rows["label"] = loop, y.astype(int)
        seen = pd.concat([seen, wave_rows], ignore_index=True)

        false_roll_outs = 0
        for j in passed:
            rolled = rest & (loop == j)
            if rolled.any() and true_profit[rolled, j].sum() < 0:
                false_roll_outs += 1
        out.append(
            WaveOutcome(
                wave=wave.name,
                customers=n,
                fixed=_true_profit(fixed, true_profit),
                loop=_true_profit(loop, true_profit),
                oracle=_true_profit(oracle, true_profit),
                loop_test_cell=_true_profit(np.where(test, loop, NO_CONTACT), true_profit),
                gate=[d.as_dict() for d in decisions],
                false_roll_outs=false_roll_outs,
                arms_rolled_out=len(passed),
            )
        )
    return out


@dataclass(frozen=True)
class SimulationData:
    """What a simulation runs on: the contacts before the campaign and the campaign's waves."""

    history: pd.DataFrame
    waves: list[Wave]
    features: list[str]
    categorical: list[str]


def simulation_data(
    state: Any,
    dataset: str,
    history: list[str],
    waves: list[str],
    arms: list[Arm],
    feature_set: str,
) -> SimulationData:
    """Contacts of the ``history`` campaigns (with their arms), and the audience of each of
    ``waves`` with features the day before its send and its truth (a synthetic dataset's
    truth_arms): the waves' own logged assignments are not used, only who was in them."""
    from experiments.offpolicy import ID, arm_index, read_arm_truth
    from experiments.planning import contact_frame

    frame, features, categorical, uf = contact_frame(
        state, dataset, [*history, *waves], feature_set
    )
    if uf.truth_path is None:
        raise ValueError(f"dataset {dataset!r} has no truth beside its campaign_history")
    past = frame[frame[CAMPAIGN].isin(history)].copy()
    past["arm"] = arm_index(past, arms)
    out = []
    for name in waves:
        audience = frame[frame[CAMPAIGN] == name].reset_index(drop=True)
        truth = read_arm_truth(uf.truth_path.parent, name, audience[ID], arms)
        out.append(Wave(name, audience, truth))
    return SimulationData(past.reset_index(drop=True), out, features, categorical)


def simulable(campaign: Any) -> None:
    """Refuse what the simulator does not apply (rather than ignore it silently): budgets,
    capacities, eligibility, segments and contact policies."""
    unsupported = []
    if campaign.budget.contacts is not None or campaign.budget.money is not None:
        unsupported.append("budget")
    for i, o in enumerate(campaign.offers):
        if o.budget.contacts is not None or o.budget.money is not None:
            unsupported.append(f"offers[{i}].budget")
        if o.eligibility or o.segments is not None:
            unsupported.append(f"offers[{i}].eligibility / segments")
    for i, c in enumerate(campaign.channels):
        if c.capacity is not None:
            unsupported.append(f"channels[{i}].capacity")
    policy = campaign.contact_policy
    if policy.max_contacts is not None or policy.quiet_days_after_negative is not None:
        unsupported.append("contact_policy")
    if unsupported:
        raise ValueError(
            f"campaign {', '.join(unsupported)}: the loop simulator chooses per customer without "
            "budgets, capacities, eligibility or contact policies; simulate a campaign without "
            "them (e.g. experiments/campaigns/loop_demo.yaml)"
        )


def summarise(runs: list[list[WaveOutcome]], groups: list[Any] | None = None) -> dict[str, Any]:
    """Cumulative true incremental profit of each way per run, the loop minus the fixed plan
    with a 90 % t-interval, the loop's share of the oracle, the gate's false roll-outs.

    ``groups``: the world (generator seed) of each run; runs of one world share its customers
    and truth, so the interval is then taken over the worlds' mean differences (one value per
    world), not over runs that are not independent."""
    from scipy import stats

    cum = np.array(
        [[sum(getattr(w, k) for w in run) for k in ("fixed", "loop", "oracle")] for run in runs]
    )
    diff = cum[:, 1] - cum[:, 0]
    units = diff
    if groups is not None:
        g = np.asarray(groups)
        units = np.array([diff[g == key].mean() for key in dict.fromkeys(groups)])
    k = len(units)
    half = (
        float(stats.t.ppf(0.95, k - 1) * units.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    )
    rolled = sum(w.arms_rolled_out for run in runs for w in run)
    false = sum(w.false_roll_outs for run in runs for w in run)
    return {
        "runs": k,
        "fixed": cum[:, 0].tolist(),
        "loop": cum[:, 1].tolist(),
        "oracle": cum[:, 2].tolist(),
        "loop_minus_fixed": {
            "mean": float(units.mean()),
            "ci90": [float(units.mean() - half), float(units.mean() + half)],
            "over": "worlds" if groups is not None else "runs",
            "units": units.tolist(),
        },
        "loop_over_oracle": {
            "mean": float((cum[:, 1] / cum[:, 2]).mean()),
            "min": float((cum[:, 1] / cum[:, 2]).min()),
        },
        "fixed_over_oracle": {"mean": float((cum[:, 0] / cum[:, 2]).mean())},
        "arms_rolled_out": rolled,
        "false_roll_outs": false,
        "false_roll_out_rate": false / rolled if rolled else 0.0,
    }
