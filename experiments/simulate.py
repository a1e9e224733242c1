"""The campaign loop against a fixed plan and the oracle, on synthetic campaigns with known truth.

A campaign's audience (the customers of a randomised multi-arm campaign of the ``synthetic_arms``
data, whose true response probability under every arm is known) is planned three ways:

* **fixed plan**: the arm model fitted on the earlier campaigns (the pre-campaign model) gives
  every customer the arm of highest estimated incremental profit, or no contact; rolled out to
  the whole audience at once. It can only choose arms the earlier campaigns tested.
* **loop** (the CRM practice's process), two designs (``LoopSettings.method``):

  - ``targeted`` (default, ``_simulate_targeted``): the arm model, refitted on everything seen
    after every wave and **calibrated** on randomised responses it did not see (best linear
    predictor of each arm's uplift, shrunk toward the model by empirical Bayes:
    ``models.decisions.learning``), plans every customer; the **test cell** gets that plan
    (arms never tested get their share at random); each arm is **read on the customers the plan
    gives it** (``readout.read_targeted``), pooled with the earlier waves' read-outs by a
    random effect with the uncertainty of the next wave (``pool_readouts(predictive=True)``);
    the **gate** keeps the arms positive with the configured confidence, and the roll-out gives
    each passed arm only to customers of a population it was read on (``LoopSettings.rollout``:
    its segment; a dropped arm's customers their best passed arm where it was read on them,
    else they are held; a never-tested arm passed on everyone those left without an arm);
  - ``refit`` (the first design): the test cell gets the arms at random, the gate reads each
    arm's average effect over random customers, the model is refitted with the test cell and
    the rest planned over the arms that passed.
* **oracle**: every customer the arm of highest *true* incremental profit, or no contact.

The same random ``control_fraction`` of the audience is held out as the control group in all
three (the loop's read-out needs it; the others carry the same cost, so the comparison is fair),
and responses are drawn from the truth (Bernoulli on the true probability of the arm received).
Every figure is the **true expected incremental profit** of what was done — the value the truth
gives the assignments, not a noisy realisation — so the comparison is not blurred by response
noise, while the loop's own decisions see only the drawn responses, as in reality. Where the
loop loses against the oracle is split by cause per wave (``regret_parts``).

Why a refit plus a calibration, and not a per-segment Beta-Binomial update alone: the refit
learns every arm with the same features; segments fixed in advance would throw those away. The
calibration is the Bayesian update on top: per arm, two numbers (average uplift and how much of
the model's spread is real), measured on randomised responses and shrunk toward the model by how
much the arms' measurements vary beyond their noise (docs/campaign_loop.md §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from experiments.offpolicy import Arm, economics, fit_arm_model
from models.decisions.learning import Calibration, LinearFit, best_linear_predictor, calibrate
from models.decisions.offpolicy import NO_CONTACT, best_choice
from models.decisions.readout import (
    DEFAULT_GATE_CONFIDENCE,
    ArmReadout,
    ArmTerms,
    GateDecision,
    gate,
    pool_on_current_bayes,
    pool_population_in_arm,
    pool_predictive_bayes,
    pool_readouts,
    pool_toward_current,
    read_population,
    read_targeted,
    read_wave,
    rollout_by_population,
    shared_tau2,
)
from models.decisions.sizing import contacts_for_power, read_variances

CAMPAIGN = "campaign_id"


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: test cell and control sizes, the gate's confidence, the learner."""

    test_fraction: float = 0.05
    control_fraction: float = 0.1
    confidence: float = DEFAULT_GATE_CONFIDENCE
    method: str = "targeted"  # or "refit": random test cell, gate on the average arm
    history_folds: int = 2  # cross-fitting folds (targeted read-out of history, calibration)
    calibrate: bool = True  # targeted: BLP calibration of each arm's uplift, shrunk by EB
    # targeted: whom the roll-out gives a passed arm (docs/campaign_loop.md §6):
    # "read" (default): an arm goes only to customers of a population it was read on and passed
    #   (its segment; a dropped arm's customers get their best passed arm only where that arm
    #   was read and passed on them; a never-tested arm passed on everyone goes to the
    #   customers without a passed arm of their own); the rest are held;
    # "held": the same without the reads of a passed arm on a dropped arm's customers (they are
    #   always held);
    # "extend" (the design before): a dropped arm's customers get their best passed arm, unread,
    #   and a never-tested arm no one (no model knows it)
    rollout: str = "read"
    # targeted: what the gate reads an arm on (docs/campaign_loop.md §6):
    # "bayes" (default): every read of the arm (history, earlier waves, this test cell) pooled
    #   with a random effect, the predictive figure for the next population, the spread between
    #   the reads integrated over a half-normal prior of scale ``tau_uplift`` x the arm's value
    #   per response (``readout.pool_predictive_bayes``); chosen on the development seeds 1-3
    #   and 101-103 over "pooled" (docs/campaign_loop.md §6);
    # "pooled" (the default before): the same with the spread estimated by moments, on one
    #   degree of freedom when the arm was read twice;
    # "current": the population it would roll out on now (this test cell's read of it), the
    #   earlier reads as its prior (``pool_toward_current``), with a half-normal prior of scale
    #   ``tau_uplift`` x the arm's value per response on the spread between populations; an arm
    #   not read now is held;
    # "bayes_current": "bayes"'s model judged on the posterior of the population read now
    #   (``pool_on_current_bayes``); tried, no different on the development seeds
    gate_reads: str = "bayes"
    tau_uplift: float = 0.02
    # targeted: what later waves' gates pool of this wave (docs/campaign_loop.md §6):
    # False (default): the roll-out's reads only (each population rolled out against its
    #   controls), so an arm that was not rolled out leaves nothing of this wave's test cell;
    # True: also the test cell's read of every arm read now and not rolled out (the rolled-out
    #   ones' test-cell reads share their roll-out's controls and stay out); tried, lost profit
    #   on the development seeds: the read kept is the one the arm was dropped on
    keep_test_reads: bool = False
    # targeted, rollout "read": how the reads of a wave count the customers whose chance of
    # being a contact differs (docs/campaign_loop.md §6). The fallback half gives half of the
    # test cell's at-risk customers another arm, so an at-risk customer is half as likely to be
    # a contact of their plan arm as the others of the segment, while as likely to be one of
    # its controls. True (default): each read is post-stratified by that chance (strata read
    # apart, combined by their share of the controls: ``readout.read_strata``); False (before):
    # each read is the plain difference, biased where at-risk customers respond differently
    stratified_reads: bool = True
    # targeted, rollout "read": the test cell's share of the customers whose plan arm the
    # evidence so far does not pass (docs/campaign_loop.md §6). False: the test fraction, like
    # everyone; True: the control fraction per arm read on them (twice it with a fallback
    # half, once without), so each such read has about as many contacts as controls; a new
    # arm's random share stays at the test fraction over everyone. Its reads are stratified
    # (as ``stratified_reads``): the test and roll-out shares then differ by stratum. Tried,
    # not chosen on the development seeds: fewer held customers, as many more test contacts,
    # no more gaining populations rolled out
    unproven_cell: bool = False
    # targeted, gate_reads "pooled": the spread between an arm's reads (their random effect).
    # "arm" (default): estimated per arm by moments, on one degree of freedom when the arm was
    # read twice; "shared": one spread in incremental-response units for every arm
    # (``readout.shared_tau2``, each arm's Q pooled), scaled by each arm's value per response.
    # Tried, not chosen on the development seeds: the up-sell arms' real spread widened the
    # retention arm's interval (docs/campaign_loop.md §6)
    between: str = "arm"
    # targeted, rollout "read": what a dropped arm's customers' fallback is judged on. "none"
    # (before): its reads on them alone (the earlier randomised campaigns on the same rule,
    # this test cell's fallback half), pooled like any arm; "arm": those reads with the arm's
    # reads on its other populations as the prior (``readout.pool_population_in_arm``; tried:
    # the populations are not exchangeable, the plan chose another arm for these customers,
    # and the gate rolled out 12 of 13 losing ones); "shifted" (default since stop 23): with
    # this test cell's read of the arm on its own segment as the prior, moved by the model's
    # estimated difference between that segment and these customers (docs/campaign_loop.md §6)
    fallback_prior: str = "shifted"
    # targeted: each read of an arm (the test cell's on its segment, the fallback's, the
    # roll-out's, the earlier randomised campaigns') regression-adjusted by the customer's
    # predicted response without contact (``readout.read_adjusted``): from the model fitted
    # before the wave (the waves' reads) or cross-fitted (the earlier campaigns'), so never on
    # the responses it adjusts. False (default): the plain reads
    adjusted_reads: bool = False
    # targeted: a never-tested arm's random share of the first test cell it is tried in
    # (docs/campaign_loop.md §6). False (default): the arms never tested share the test cell,
    # ``1 / A`` of it each (A: every arm), so at 60 000 customers each new arm is read on
    # 30-45 random contacts, and the model refitted on them gives it to no one afterwards;
    # True: each never-tested arm gets its own share of everyone, the test fraction, drawn at
    # random outside the control group beside the plan's test cell (which keeps the test
    # fraction of the others); its cost is the test cell's (those customers get no plan arm)
    new_arm_cell: bool = False
    # targeted: an arm the model knows but the plan gives to no one in a wave keeps being tried
    # at random in that wave's test cell, like a never-tested arm (its share ``1 / A`` of the
    # test fraction, read over everyone, rolled out to the customers left without an arm if it
    # passes there), so the refit sees more of it (docs/campaign_loop.md §6). False (default):
    # such an arm is tried no more — after the first wave a new arm is read on its first random
    # contacts only
    explore_unplanned: bool = False
    # targeted: ``explore_unplanned`` for the arms not shown to lose on a random customer only:
    # those whose reads over everyone so far (the earlier randomised campaigns, the arm's random
    # shares of earlier test cells) pooled have their upper one-sided bound at the gate's
    # confidence above zero (``not_shown_to_lose``), so an arm that loses on random customers
    # (a phone arm at 4.00 a contact) is not bought again at random. False (default): off;
    # tried, not chosen on the development seeds 134-139 (docs/campaign_loop.md §6)
    explore_promising: bool = False
    # targeted: each arm's test share of its segment sized to the read it needs
    # (docs/campaign_loop.md §6): the share whose test contacts, against the segment's controls,
    # the gate would pass with chance ``powered_goal`` if the model's expected profit per contact
    # on the segment were right (response noise only, as ``plan_store.gate_power_by_arm``), at
    # least the test fraction, at most ``powered_cap``. 0 (default): the test fraction for every
    # arm
    powered_goal: float = 0.0
    powered_cap: float = 0.25
    # targeted: the earlier reads of an arm the gate pools (the earlier randomised campaigns',
    # the earlier waves' roll-outs) each moved by the model's estimated difference between the
    # population it was made on and the arm's segment now (the calibrated estimated profit per
    # contact of the arm, mean over each: cross-fitted on the rows seen, the current model on
    # this wave; ``shift_to_segment``), as the fallback's prior is moved (``fallback_prior``
    # "shifted"). False (default): the earlier reads as they were made, their spread around this
    # segment's only in the random effect. Tried, not chosen on the development seeds 128-133:
    # it moved reads up as often as down, and lost with new channels (docs/campaign_loop.md §6)
    shift_reads: bool = False
    learner: str = "x"
    params: dict[str, Any] = field(
        default_factory=lambda: {
            "n_estimators": 100,
            "max_depth": 2,
            "learning_rate": 0.05,
            "min_child_weight": 20,
        }
    )


def campaign_settings(campaign: Any, **options: Any) -> LoopSettings:
    """The loop's settings for a campaign definition: its test and control fractions, and its
    ``test_cell_sizing`` (power and largest fraction; the simulator sizes for the gate's own
    confidence), then ``options``. The simulator takes both fractions of the customers outside
    the control group."""
    sizing = campaign.test_cell_sizing
    base: dict[str, Any] = {
        "test_fraction": campaign.test_cell_fraction,
        "control_fraction": campaign.control_fraction,
        "powered_goal": 0.0 if sizing is None else sizing.power,
    }
    if sizing is not None:
        base["powered_cap"] = sizing.max_fraction
    return LoopSettings(**{**base, **options})


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
    arms_rolled_out: int  # arms that passed the gate and reached at least one customer
    regret: dict[str, float] = field(default_factory=dict)  # oracle - loop, by cause
    # of regret["under_contact"], the customers the roll-out held (the rest: left out by the plan)
    held_regret: float = 0.0
    # the roll-out's decisions per (arm, population): the gate of a passed arm on a dropped
    # arm's customers (targeted, rollout="read"); and per population rolled out (an arm on its
    # segment, on a dropped arm's customers, or a new arm on its read over everyone), how many
    # reached anyone and how many of those had a negative true profit there
    rollout_gate: list[dict[str, Any]] = field(default_factory=list)
    populations_rolled_out: int = 0
    false_population_roll_outs: int = 0
    held: int = 0  # customers of the roll-out held because their arm was not read on them
    # per population rolled out: its read-out name, arm, customers reached, true profit there
    populations: list[dict[str, Any]] = field(default_factory=list)
    # per population the gate decided on, rolled out or not (an arm's segment of the roll-out, a
    # dropped arm's customers for a passed arm, the customers left without an arm for a new
    # arm): its read-out name, arm, customers, the true profit of giving it the arm, and
    # whether it was rolled out — the gate's error rate on the populations where an arm loses
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class Wave:
    """A wave's audience (features the day before the send) and its truth."""

    name: str
    audience: pd.DataFrame
    truth: tuple[np.ndarray, np.ndarray]  # p_control (n,), p_arms (n, A)


def estimated_profit(
    model: Any,
    x: pd.DataFrame,
    arms: list[Arm],
    model_arms: list[int],
    calibration: Calibration | None = None,
) -> Any:
    """The estimated incremental profit per (customer, arm of ``arms``); -inf for an arm the
    model does not know. ``model_arms``: the arm (index into ``arms``) of each model column;
    ``calibration``: of the model's uplift (same columns), applied when given."""
    pre, mau = model[:-1], model[-1]
    xt = pre.transform(x)
    econ = economics([arms[j] for j in model_arms], len(x))
    uplift = mau.predict(xt)
    if calibration is not None:
        uplift = calibration.apply(uplift)
    estimated = econ.estimated_profit(uplift, mau.predict_outcomes(xt)[:, : len(model_arms)])
    profit = np.full((len(x), len(arms)), -np.inf)
    profit[:, model_arms] = estimated
    return profit


def _choose(
    model: Any, x: pd.DataFrame, arms: list[Arm], model_arms: list[int], allowed: list[int]
) -> Any:
    """Per customer the allowed arm (index into ``arms``) of highest estimated profit, or none.
    ``model_arms``: the arm (index into ``arms``) of each of the model's columns."""
    profit = estimated_profit(model, x, arms, model_arms)
    profit[:, [j for j in range(len(arms)) if j not in allowed]] = -np.inf
    return best_choice(profit)


def _restricted_oracle(true_profit: np.ndarray, passed: list[int]) -> np.ndarray:
    """Every customer the arm of ``passed`` of highest true incremental profit, or none."""
    if not passed:
        return np.full(true_profit.shape[0], NO_CONTACT)
    allowed = np.full(true_profit.shape, -np.inf)
    allowed[:, passed] = true_profit[:, passed]
    return best_choice(allowed)


def held_regret(
    loop: np.ndarray,
    planned: np.ndarray,
    true_profit: np.ndarray,
    rest: np.ndarray,
    passed: list[int],
) -> float:
    """The part of ``regret_parts``' ``under_contact`` on customers the plan gave an arm and the
    roll-out held (their arm did not pass where they are, and no passed arm was read on them):
    what the restricted oracle earns on them. The rest of ``under_contact`` is customers the
    plan itself left out."""
    best = _restricted_oracle(true_profit, passed)
    where = rest & (loop == NO_CONTACT) & (planned != NO_CONTACT) & (best != NO_CONTACT)
    return float(true_profit[np.flatnonzero(where), best[where]].sum())


def regret_parts(
    loop: np.ndarray,
    oracle: np.ndarray,
    true_profit: np.ndarray,
    test: np.ndarray,
    rest: np.ndarray,
    passed: list[int],
) -> dict[str, float]:
    """Where the loop loses against the oracle, in true incremental profit; the parts add up to
    ``oracle - loop`` (the control group is held out by both):

    * ``test_cell``: the oracle's profit on the test cell minus what the test cell earned;
    * ``gate``: on the rest, the oracle over every arm minus the oracle over the arms that
      passed the gate (what the dropped arms would have earned where they are best);
    * against that restricted oracle, on the rest: ``under_contact`` (the loop skips a customer
      the restricted oracle contacts), ``over_contact`` (the loop contacts a customer whom no
      passed arm pays for: minus the true profit of that contact) and ``wrong_arm`` (both
      contact, with different arms: the profit of the better arm minus the loop's)."""
    best = _restricted_oracle(true_profit, passed)

    def value(choice: np.ndarray, where: np.ndarray) -> np.ndarray:
        out = np.zeros(choice.size)
        hit = where & (choice != NO_CONTACT)
        out[hit] = true_profit[np.flatnonzero(hit), choice[hit]]
        return out

    v_loop, v_best = value(loop, rest), value(best, rest)
    skipped, contacted = loop == NO_CONTACT, best != NO_CONTACT
    both = rest & ~skipped & contacted & (loop != best)
    return {
        "test_cell": float(value(oracle, test).sum() - value(loop, test).sum()),
        "gate": float(value(oracle, rest).sum() - v_best.sum()),
        "under_contact": float(v_best[rest & skipped & contacted].sum()),
        "over_contact": float(-v_loop[rest & ~skipped & ~contacted].sum()),
        "wrong_arm": float((v_best - v_loop)[both].sum()),
    }


def _false_roll_outs(
    loop: np.ndarray, rest: np.ndarray, passed: list[int], true_profit: np.ndarray
) -> tuple[int, int]:
    """Of the arms that passed the gate, (those rolled out whose true incremental profit over
    the customers they reached is negative, those rolled out to anyone at all)."""
    false = reached = 0
    for j in passed:
        rolled = rest & (loop == j)
        if rolled.any():
            reached += 1
            false += int(true_profit[rolled, j].sum() < 0)
    return false, reached


def _wave_start(
    wave: Wave,
    arms: Sequence[Arm],
    features: list[str],
    model0: Any,
    known: Any,
    control_fraction: float,
    rng: np.random.Generator,
) -> tuple[int, np.ndarray, np.ndarray, pd.DataFrame, np.ndarray, np.ndarray]:
    """What every design starts a wave with: its size, the true profit per customer and arm, the
    control group (drawn first from ``rng``), the audience's features, and the fixed and oracle
    plans (both leaving the control group alone)."""
    n = len(wave.audience)
    true_profit = economics(list(arms), n).profit(*wave.truth)
    control = rng.random(n) < control_fraction
    x = wave.audience[features]
    fixed = _choose(model0, x, list(arms), known, known)
    fixed[control] = NO_CONTACT
    oracle = best_choice(true_profit)
    oracle[control] = NO_CONTACT
    return n, true_profit, control, x, fixed, oracle


def wave_outcome(
    name: str,
    plans: tuple[np.ndarray, np.ndarray, np.ndarray],
    true_profit: np.ndarray,
    test: np.ndarray,
    rest: np.ndarray,
    passed: Any,
    decisions: Sequence[Any],
    populations: Sequence[tuple[int, np.ndarray, str]] = (),
    rollout_gate: Sequence[Any] = (),
    held: int = 0,
    candidates: Sequence[tuple[int, np.ndarray, str]] = (),
    planned: np.ndarray | None = None,
) -> WaveOutcome:
    """A wave's outcome from its three plans (fixed, loop, oracle: an arm per customer) scored on
    the true profit, with the loop's test cell, gate decisions and regret by cause.
    ``populations``: (arm, mask, read-out name) of each population the roll-out gave an arm;
    ``candidates``: the same for every population the gate decided on (those it held too);
    ``planned``: the loop's plan before the gate (an arm per customer), to split off the
    under-contact of the customers the roll-out held (``held_regret``)."""
    fixed, loop, oracle = plans
    false_roll_outs, reached = _false_roll_outs(loop, rest, passed, true_profit)
    pop_reached = pop_false = 0
    rolled_out = []
    for j, mask, key in populations:
        rolled = rest & mask & (loop == j)
        if rolled.any():
            pop_reached += 1
            value = float(true_profit[rolled, j].sum())
            pop_false += int(value < 0)
            rolled_out.append(
                {"read": key, "arm": int(j), "customers": int(rolled.sum()), "true_profit": value}
            )
    decided = []
    for j, mask, key in candidates:
        where = rest & mask
        if where.any():
            decided.append(
                {
                    "read": key,
                    "arm": int(j),
                    "customers": int(where.sum()),
                    "true_profit": float(true_profit[where, j].sum()),
                    "rolled_out": bool((where & (loop == j)).any()),
                }
            )
    return WaveOutcome(
        wave=name,
        customers=len(loop),
        fixed=_true_profit(fixed, true_profit),
        loop=_true_profit(loop, true_profit),
        oracle=_true_profit(oracle, true_profit),
        loop_test_cell=_true_profit(np.where(test, loop, NO_CONTACT), true_profit),
        gate=[d.as_dict() for d in decisions],
        false_roll_outs=false_roll_outs,
        arms_rolled_out=reached,
        regret=regret_parts(loop, oracle, true_profit, test, rest, passed),
        held_regret=(
            held_regret(loop, planned, true_profit, rest, list(passed))
            if planned is not None
            else 0.0
        ),
        rollout_gate=[d.as_dict() for d in rollout_gate],
        populations_rolled_out=pop_reached,
        false_population_roll_outs=pop_false,
        held=held,
        populations=rolled_out,
        candidates=decided,
    )


def _true_profit(choice: np.ndarray, true_profit: np.ndarray) -> float:
    contacted = choice != NO_CONTACT
    return float(true_profit[np.flatnonzero(contacted), choice[contacted]].sum())


def _responses(
    choice: np.ndarray, draw: np.ndarray, p0: np.ndarray, p_arms: np.ndarray
) -> np.ndarray:
    """Who responds: one uniform per customer against the true probability of what they got."""
    rows = np.arange(choice.size)
    return draw < np.where(choice == NO_CONTACT, p0, p_arms[rows, np.maximum(choice, 0)])


def fit_known(
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
    the wave's responses (test cell, roll-out and control) join what it learns from.

    ``settings.method``: ``targeted`` (default, ``_simulate_targeted``) or ``refit`` (the first
    design: random arms in the test cell, the gate on each arm's average effect)."""
    if settings.method not in ("targeted", "refit"):
        raise ValueError(f"unknown loop method {settings.method!r}; known: refit, targeted")
    if settings.rollout not in ("read", "held", "extend"):
        raise ValueError(f"unknown roll-out {settings.rollout!r}; known: read, held, extend")
    if settings.fallback_prior not in ("none", "arm", "shifted"):
        raise ValueError(
            f"unknown fallback prior {settings.fallback_prior!r}; known: arm, none, shifted"
        )
    if settings.gate_reads not in ("pooled", "current", "bayes", "bayes_current"):
        raise ValueError(
            f"unknown gate reads {settings.gate_reads!r}; "
            "known: bayes, bayes_current, current, pooled"
        )
    history = history[history["arm"].isin([-1, *known])]  # the arms never tested do not exist
    if settings.method == "targeted":
        return _simulate_targeted(
            history, waves, features, categorical, arms, known, settings, rng, seed
        )
    model0 = fit_known(history, known, features, categorical, settings, seed)
    seen = history[[*features, "arm", "label"]]
    terms = arm_terms(arms)
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
        n, true_profit, control, x, fixed, oracle = _wave_start(
            wave, arms, features, model0, known, settings.control_fraction, rng
        )
        p0, p_arms = wave.truth

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

        out.append(
            wave_outcome(
                wave.name, (fixed, loop, oracle), true_profit, test, rest, passed, decisions
            )
        )
    return out


def _labels(choice: np.ndarray, arms: list[Arm]) -> list[str | None]:
    return [arms[a].label if a != NO_CONTACT else None for a in choice]


P_CONTROL = "p_control"
# "read": the share of the test cell's at-risk customers (plan arm not passed by the evidence
# so far) given their fallback instead (fixed before any run: half, the even split)
FALLBACK_SHARE = 0.5


def design_column(j: int) -> str:
    """The design column of arm ``j``: its probability per row."""
    return f"p_arm_{j}"


def history_design(history: pd.DataFrame, n_arms: int) -> pd.DataFrame:
    """Each earlier randomised campaign's design per row: the probability of every arm and of
    the control group (the campaign's shares, as observed)."""
    out = history.copy()
    for _, part in history.groupby(CAMPAIGN):
        share = np.bincount(part["arm"].to_numpy() + 1, minlength=n_arms + 1) / len(part)
        out.loc[part.index, P_CONTROL] = share[0]
        for j in range(n_arms):
            out.loc[part.index, design_column(j)] = share[j + 1]
    return out


def crossfit(
    seen: pd.DataFrame,
    model_arms: list[int],
    features: list[str],
    categorical: list[str],
    settings: LoopSettings,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold uplift (n, arms) and response probabilities (n, arms + 1, control last) of
    every row, each from a model fitted on the other folds (cross-fitting). An arm whose rows
    the draw put in one fold (a new arm read on a few contacts) has them dealt over the folds
    in turn, so every fold's model knows every arm (an arm needs as many rows as folds)."""
    k_folds = settings.history_folds
    folds = np.random.default_rng(seed).permutation(len(seen)) % k_folds
    arm = seen["arm"].to_numpy()
    for j in model_arms:
        on = np.flatnonzero(arm == j)
        if len(np.unique(folds[on])) < k_folds:
            folds[on] = np.arange(len(on)) % k_folds
    uplift = np.full((len(seen), len(model_arms)), np.nan)
    outcomes = np.full((len(seen), len(model_arms) + 1), np.nan)
    for k in range(k_folds):
        train, held = seen[folds != k], seen[folds == k]
        model = fit_known(train, model_arms, features, categorical, settings, seed)
        xt = model[:-1].transform(held[features])
        uplift[folds == k] = model[-1].predict(xt)
        outcomes[folds == k] = model[-1].predict_outcomes(xt)
    return uplift, outcomes


def arm_calibration(
    seen: pd.DataFrame, model_arms: list[int], uplift: np.ndarray, outcomes: np.ndarray
) -> Calibration:
    """Per arm of the model, the BLP of its cross-fitted uplift on the rows that could have got
    the arm or the control (by the design of their campaign or wave), shrunk by EB."""
    fits: list[LinearFit | None] = []
    arm = seen["arm"].to_numpy()
    y = seen["label"].to_numpy()
    p_c = seen[P_CONTROL].to_numpy()
    for k, j in enumerate(model_arms):
        p_j = seen[design_column(j)].to_numpy()
        rows = (p_j > 0) & (p_c > 0) & ((arm == j) | (arm == NO_CONTACT))
        if (arm[rows] == j).sum() < 30 or (arm[rows] == NO_CONTACT).sum() < 30:
            fits.append(None)
            continue
        p = p_j[rows] / (p_j[rows] + p_c[rows])
        fits.append(
            best_linear_predictor(y[rows], arm[rows] == j, p, uplift[rows, k], outcomes[rows, -1])
        )
    return calibrate(fits)


def history_readouts(
    history: pd.DataFrame,
    model_arms: list[int],
    uplift: np.ndarray,
    outcomes: np.ndarray,
    arms: list[Arm],
    terms: dict[str, ArmTerms],
    level: float,
    *,
    adjusted: bool = False,
) -> list[list[ArmReadout]]:
    """The earlier randomised campaigns read the targeted way with cross-fitted plans (no row
    is planned by a model that saw it), each campaign against its own controls.
    ``adjusted``: each read regression-adjusted by the row's cross-fitted predicted response
    without contact (``outcomes``' last column)."""
    plan = best_choice(oof_profit(len(history), model_arms, uplift, outcomes, arms))
    baseline = outcomes[: len(history), -1] if adjusted else None
    out = []
    for _, part in history.reset_index(drop=True).groupby(CAMPAIGN):
        i = part.index.to_numpy()
        out.append(
            read_targeted(
                _labels(part["arm"].to_numpy(), arms),
                _labels(plan[i], arms),
                part["label"].to_numpy(),
                terms,
                level=level,
                covariate=None if baseline is None else baseline[i],
            )
        )
    return out


def oof_profit(
    n: int,
    model_arms: list[int],
    uplift: np.ndarray,
    outcomes: np.ndarray,
    arms: list[Arm],
    calibration: Calibration | None = None,
) -> Any:
    """Estimated profit per (row, arm) of the first ``n`` rows from their cross-fitted uplift
    (calibrated when ``calibration`` is given) and responses; -inf for an arm the model does
    not know."""
    econ = economics([arms[j] for j in model_arms], n)
    u = uplift[:n] if calibration is None else calibration.apply(uplift[:n])
    profit = np.full((n, len(arms)), -np.inf)
    profit[:, model_arms] = econ.estimated_profit(u, outcomes[:n, : len(model_arms)])
    return profit


def best_passed_arm(profit: np.ndarray, passed: list[int]) -> np.ndarray:
    """Per customer the passed arm of highest estimated profit, or none (``NO_CONTACT``)."""
    if not passed:
        return np.full(len(profit), NO_CONTACT)
    allowed = np.full(profit.shape, -np.inf)
    allowed[:, passed] = profit[:, passed]
    return best_choice(allowed)


def fallback_key(arm: Arm) -> str:
    """The read-out name of ``arm`` on the customers it is the fallback of."""
    return f"{arm.label} as a fallback"


def history_fallback_reads(
    history: pd.DataFrame,
    profit: np.ndarray,
    passed: list[int],
    b: int,
    arms: list[Arm],
    terms: dict[str, ArmTerms],
    level: float,
    *,
    covariate: np.ndarray | None = None,
) -> list[list[ArmReadout]]:
    """Each earlier randomised campaign's read of arm ``b`` on the customers whose
    (cross-fitted) plan gives an arm outside ``passed`` and whose best arm of
    ``passed`` is ``b`` (its fallback): the campaign randomised every arm, so within
    that population the contacts of ``b`` against the control are a randomised comparison.
    ``covariate``: per row of ``history`` a pre-treatment figure the reads are
    regression-adjusted by (e.g. the cross-fitted predicted response without contact)."""
    plan = best_choice(profit)
    second = best_passed_arm(profit, passed)
    on_them = (plan != NO_CONTACT) & ~np.isin(plan, passed) & (second == b)
    arm = history["arm"].to_numpy()
    y = history["label"].to_numpy()
    given = _labels(arm, arms)
    out = []
    for _, part in history.reset_index(drop=True).groupby(CAMPAIGN):
        i = part.index.to_numpy()
        r = read_population(
            arms[b].label,
            [given[k] for k in i],
            on_them[i],
            arm[i] == NO_CONTACT,
            y[i],
            terms[arms[b].label],
            key=fallback_key(arms[b]),
            level=level,
            covariate=None if covariate is None else covariate[i],
        )
        out.append([r] if r is not None else [])
    return out


def shifted_segment_reads(
    segment_reads: list[ArmReadout], on_them: np.ndarray, on_segment: np.ndarray
) -> list[ArmReadout]:
    """An arm's reads on its own plan segment as the prior of its profit on other customers
    (a dropped arm's, whose fallback it is): each moved by the model's estimated difference
    between them, ``on_them.mean() - on_segment.mean()`` (the calibrated estimated profit per
    contact of the arm on those customers and on its segment). The plan chose another arm
    for them, so the arm is expected to earn less there than where it is planned; the
    calibration shrinks the model's spread to what the randomised rows show of it. None of
    the reads without customers on either side."""
    if not len(on_them) or not len(on_segment):
        return []
    delta = float(np.mean(on_them) - np.mean(on_segment))
    return [replace(r, profit_per_contact=r.profit_per_contact + delta) for r in segment_reads]


def history_populations(
    history: pd.DataFrame,
    model_arms: list[int],
    uplift: np.ndarray,
    outcomes: np.ndarray,
    arms: list[Arm],
) -> list[dict[str, np.ndarray]]:
    """Per earlier randomised campaign (``history_readouts``' order), the rows of ``history``
    each arm's read is made on: those whose cross-fitted plan gives it the arm."""
    plan = best_choice(oof_profit(len(history), model_arms, uplift, outcomes, arms))
    out = []
    for _, part in history.reset_index(drop=True).groupby(CAMPAIGN):
        i = part.index.to_numpy()
        out.append({arms[j].label: i[plan[i] == j] for j in model_arms})
    return out


def shift_to_segment(
    reads: list[list[ArmReadout]],
    rows: list[dict[str, np.ndarray]],
    profit: dict[str, np.ndarray],
    segment: dict[str, float],
) -> list[list[ArmReadout]]:
    """Earlier reads moved to the arm's segment now: the read of ``arm`` made on the rows
    ``rows[w][arm]`` moves by ``segment[arm]`` minus the mean of ``profit[arm]`` over those rows
    (the model's estimated profit per contact of the arm on each). A read without rows, or of an
    arm without a segment now, is kept as it was."""
    out = []
    for wave_reads, wave_rows in zip(reads, rows, strict=True):
        moved = []
        for r in wave_reads:
            on = wave_rows.get(r.arm)
            if r.arm in segment and r.arm in profit and on is not None and len(on):
                delta = segment[r.arm] - float(np.mean(profit[r.arm][on]))
                r = replace(r, profit_per_contact=r.profit_per_contact + delta)
            moved.append(r)
        out.append(moved)
    return out


def arms_to_explore(
    plan: np.ndarray,
    fallback: np.ndarray,
    model_arms: list[int],
    random_reads: dict[str, list[ArmReadout]] | None,
    labels: list[str],
    level: float,
) -> list[int]:
    """The arms the model knows that no customer is given, as the plan arm (``plan``) or as the
    test cell's fallback (``fallback``; ``NO_CONTACT`` where none): tried again at random
    (``explore_unplanned``). With ``random_reads`` (per arm label its reads over random
    customers; ``explore_promising``) only those ``not_shown_to_lose``."""
    out = [j for j in model_arms if not ((plan == j) | (fallback == j)).any()]
    if random_reads is not None:
        out = [j for j in out if not_shown_to_lose(random_reads.get(labels[j], []), level)]
    return out


def not_shown_to_lose(reads: list[ArmReadout], level: float) -> bool:
    """Whether an arm's reads over random customers leave room for a profit: their
    fixed-effect pool's (``pool_readouts``) upper one-sided bound at ``level`` is above zero (no
    usable read: True)."""
    pooled = pool_readouts([reads], level)
    if not pooled:
        return True
    (r,) = pooled
    return 2 * r.profit_per_contact - r.profit_lower_one_sided > 0


def cell_shares(
    plan: np.ndarray, provisional: list[int], at_risk: np.ndarray, settings: LoopSettings
) -> np.ndarray:
    """Each customer's chance of the test cell, of those not in the control group: the test
    fraction; with ``settings.unproven_cell`` (roll-out "read"), for a customer whose plan arm
    is not among the ``provisional``-ly passed arms, the control fraction per arm read on them
    (twice it when they are ``at_risk``: half of them get their fallback), at least the test
    fraction."""
    t = settings.test_fraction
    if not (settings.unproven_cell and settings.rollout == "read"):
        return np.full(len(plan), t)
    unproven = (plan != NO_CONTACT) & ~np.isin(plan, provisional)
    per_arm = settings.control_fraction * np.where(at_risk, 2.0, 1.0)
    return np.where(unproven, np.minimum(np.maximum(t, per_arm), 1.0), t)


def powered_shares(
    plan: np.ndarray,
    profit: np.ndarray,
    response: np.ndarray,
    baseline: np.ndarray,
    arms: Sequence[Arm],
    control: np.ndarray,
    settings: LoopSettings,
) -> np.ndarray:
    """Each customer's chance of the test cell, of those not in the control group, with the
    test cell sized per arm (``settings.powered_goal``): for the customers the ``plan`` gives
    arm ``j``, the share of them whose test contacts give the gate, one-sided at
    ``settings.confidence``, the chance ``powered_goal`` of passing ``j`` if the expected
    ``profit`` per contact (estimated, per customer and arm) on them is right — the read's
    spread from the expected ``response`` to ``j`` and ``baseline`` response without contact,
    against the control customers the plan gives ``j`` (``sizing.contacts_for_power``) —
    at least the test fraction, at most ``settings.powered_cap`` (also when no share would
    do)."""
    share = np.full(len(plan), settings.test_fraction)
    for j in sorted(set(plan[plan != NO_CONTACT].tolist())):
        seg = plan == j
        n_out = int((seg & ~control).sum())
        variances = read_variances(
            float(response[seg, j].mean()),
            float(baseline[seg].mean()),
            arms[j].value,
            arms[j].cost_per_acceptance,
        )
        need = (
            contacts_for_power(
                float(profit[seg & ~control, j].mean()),
                *variances,
                int((seg & control).sum()),
                settings.confidence,
                settings.powered_goal,
            )
            if n_out
            else None
        )
        cap = settings.powered_cap
        share[seg] = max(settings.test_fraction, cap if need is None else min(need / n_out, cap))
    return share


def draw_test_cell(
    plan: np.ndarray,
    second: np.ndarray,
    at_risk: np.ndarray,
    share: np.ndarray,
    control: np.ndarray,
    untested: list[int],
    n_arms: int,
    settings: LoopSettings,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The test cell (drawn with each customer's ``share`` outside the control group) and what
    it gives each customer: the plan; half of the ``at_risk`` customers their fallback
    (``second``, roll-out "read"); a never-tested arm at random to its share ``1 / n_arms`` of
    the base test fraction of everyone (not of the larger share: its read over everyone stays
    a uniform draw); with ``settings.new_arm_cell`` each never-tested arm gets the base test
    fraction of everyone instead, drawn on a uniform of its own beside the plan's test cell
    (``new_arm_shares``)."""
    n = len(plan)
    t = settings.test_fraction
    u_test = rng.random(n)
    test = ~control & (u_test < share)
    u_new = rng.random(n)
    explore = ~control & (u_test < t) & (u_new < len(untested) / n_arms)
    if settings.new_arm_cell and untested:
        # each never-tested arm its own share t of everyone (``new_arm_shares``), drawn apart
        # from the plan's test cell: the plan keeps its share of the others
        explore = ~control & (u_new < t * len(untested))
        test = test | explore
    loop = np.full(n, NO_CONTACT)
    loop[test] = plan[test]
    if settings.rollout == "read":
        split = test & at_risk & (rng.random(n) < FALLBACK_SHARE)
        loop[split] = second[split]
    if untested:
        loop[explore] = rng.choice(untested, int(explore.sum()))
    return test, loop


def new_arm_shares(
    share: np.ndarray, untested: list[int], n_arms: int, settings: LoopSettings
) -> tuple[float, np.ndarray, np.ndarray]:
    """Of the customers outside the control group, the chance of being a test contact of each
    never-tested arm (random over everyone), and per customer of the plan's test cell (their
    plan arm or fallback) and of the roll-out, as ``draw_test_cell`` draws them: by default
    the new arms share the base test fraction ``t`` (``t / n_arms`` each) and the plan gets the
    rest of ``share``; with ``settings.new_arm_cell`` each new arm gets ``t`` of everyone and
    the plan ``share`` of the others."""
    t = settings.test_fraction
    if settings.new_arm_cell and untested:
        keep = 1 - t * len(untested)
        return t, keep * share, keep * (1 - share)
    return t / n_arms if untested else 0.0, share - t * len(untested) / n_arms, 1 - share


def gate_pool(
    reads: list[list[ArmReadout]],
    settings: LoopSettings,
    scale: dict[str, float],
    tau2: float | None = None,
) -> dict[str, ArmReadout]:
    """The arms' reads pooled for the gate (``settings.gate_reads``): with a random effect
    whose spread is integrated over a half-normal prior of scale ``settings.tau_uplift`` x
    ``scale[arm]`` (the arm's value per response; "bayes", the default,
    ``pool_predictive_bayes``) or estimated by moments (``pool_readouts(predictive=True)``),
    per arm or shared by the arms (``settings.between``; ``tau2``: the shared spread per unit
    of ``scale`` already estimated on more reads). Used by the loop simulator and by
    ``experiments.rollout``."""
    if settings.gate_reads == "bayes":
        prior = {arm: settings.tau_uplift * v for arm, v in scale.items()}
        return {r.arm: r for r in pool_predictive_bayes(reads, prior, settings.confidence)}
    if settings.gate_reads == "bayes_current":
        prior = {arm: settings.tau_uplift * v for arm, v in scale.items()}
        return {r.arm: r for r in pool_on_current_bayes(reads, prior, settings.confidence)}
    if settings.between == "shared":
        t2 = shared_tau2(reads, scale) if tau2 is None else tau2
        got = pool_readouts(
            reads, settings.confidence, predictive=True, tau2_per_unit=t2, scale=scale
        )
    else:
        got = pool_readouts(reads, settings.confidence, predictive=True)
    return {r.arm: r for r in got}


def fallback_pool(
    reads: list[list[ArmReadout]],
    prior: list[ArmReadout],
    key: str,
    value: float,
    settings: LoopSettings,
    tau2: float | None = None,
) -> dict[str, ArmReadout]:
    """A dropped arm's customers' fallback read ``key`` (``reads``: on them) pooled for the gate
    (``settings.fallback_prior``): with ``prior`` (the arm's reads elsewhere, e.g.
    ``shifted_segment_reads``) as the prior of those reads (``readout.pool_population_in_arm``),
    or, "none", alone like any arm's (``gate_pool``). ``value``: the arm's value per response.
    Empty when they were never read on. Used by the loop simulator and by
    ``experiments.rollout``."""
    if settings.fallback_prior == "none":
        return gate_pool(reads, settings, {key: value}, tau2)
    one = pool_population_in_arm(
        reads, prior, key, settings.tau_uplift * value, settings.confidence
    )
    return {key: one} if one is not None else {}


def arm_terms(arms: Sequence[Arm]) -> dict[str, ArmTerms]:
    """Each arm's value and costs for its read-outs, by its label."""
    return {a.label: ArmTerms(a.value, a.cost_per_contact, a.cost_per_acceptance) for a in arms}


def _gate_every_arm(
    pooled: dict[str, ArmReadout], arms: list[Arm], confidence: float
) -> list[GateDecision]:
    """The gate's decision per arm, in ``arms`` order; an arm without evidence is held."""
    out = []
    for a in arms:
        if a.label in pooled:
            out.extend(gate([pooled[a.label]], confidence))
        else:
            out.append(
                GateDecision(
                    a.label,
                    False,
                    "held: the plan gives it to no one and nothing measured it where it would",
                    confidence,
                )
            )
    return out


def _simulate_targeted(
    history: pd.DataFrame,
    waves: list[Wave],
    features: list[str],
    categorical: list[str],
    arms: list[Arm],
    known: list[int],
    settings: LoopSettings,
    rng: np.random.Generator,
    seed: int,
) -> list[WaveOutcome]:
    """The loop that tests its plan and gates each arm where the plan uses it.

    Per wave: the arm model fitted on everything seen so far plans every customer over every arm
    it knows (**the plan**). The **test cell** gets the plan — the CRM practice's "test the
    plan on a small cell" — except that arms never tested yet (no model knows them) get their
    share ``1 / A`` of the test cell at random. Each arm is **read on its segment** (the
    customers the plan gives it: its test-cell contacts against the control customers the plan
    gives it, ``read_targeted``), pooled by a random effect with every earlier wave's roll-out
    on that wave's plan's segments (the test cell's read of an arm not rolled out too, with
    ``settings.keep_test_reads``) and the earlier randomised campaigns (cross-fitted:
    ``history_readouts``). The **gate** keeps an arm when
    its profit per contact on its segment is positive with the configured confidence, and the
    **roll-out** (``settings.rollout``; docs/campaign_loop.md §5 step 5) gives each passed arm
    only to customers of a population it was read on: its segment; a dropped arm's customers
    their best passed arm when that arm was read on them (the earlier randomised campaigns and
    the test cell's fallback half) and passed, else nothing (held); a never-tested arm that
    passed on everyone the customers left without an arm. ``extend`` is the design before (a
    dropped arm's customers got their best passed arm, unread). After the wave everything it
    saw (test cell, roll-out, control) joins the data of the refit, the held customers without
    an arm probability (outside the calibration)."""
    terms = arm_terms(arms)
    tau_scale = {a.label: settings.tau_uplift * a.value for a in arms}
    design = [P_CONTROL, *(design_column(j) for j in range(len(arms)))]
    history = history_design(history.reset_index(drop=True), len(arms))
    seen = history[[*features, "arm", "label", *design]]
    model_arms = sorted(known)
    oof = crossfit(seen, model_arms, features, categorical, settings, seed)
    evidence = history_readouts(
        history,
        model_arms,
        *oof,
        arms,
        terms,
        settings.confidence,
        adjusted=settings.adjusted_reads,
    )
    # each arm's reads over random customers (settings.explore_promising): the earlier
    # randomised campaigns', then its random shares of the test cells
    random_reads: dict[str, list[ArmReadout]] = {}
    if settings.explore_promising:
        for _, part in history.groupby(CAMPAIGN):
            for r in read_wave(
                _labels(part["arm"].to_numpy(), arms),
                part["label"].to_numpy(),
                terms,
                level=settings.confidence,
            ):
                random_reads.setdefault(r.arm, []).append(r)
    # the rows of seen each earlier read was made on (settings.shift_reads)
    evidence_rows = (
        history_populations(history, model_arms, *oof, arms) if settings.shift_reads else []
    )
    scale = {a.label: a.value for a in arms}  # the random effect's unit (settings.between)
    model0 = fit_known(history, model_arms, features, categorical, settings, seed)
    model = model0
    out = []
    for w, wave in enumerate(waves):
        if w > 0:  # the data grew: cross-fit again (before the first wave: done above)
            oof = crossfit(seen, model_arms, features, categorical, settings, seed)
        cal = arm_calibration(seen, model_arms, *oof) if settings.calibrate else None
        n, true_profit, control, x, fixed, oracle = _wave_start(
            wave, arms, features, model0, known, settings.control_fraction, rng
        )
        p0, p_arms = wave.truth

        estimated = estimated_profit(model, x, arms, model_arms, cal)
        plan = best_choice(estimated)
        # the adjusted reads' covariate: the predicted response without contact, from the
        # model fitted before this wave (it never saw this wave's responses)
        baseline = (
            model[-1].predict_outcomes(model[:-1].transform(x))[:, -1]
            if settings.adjusted_reads
            else None
        )
        untested = [j for j in range(len(arms)) if j not in model_arms]
        earlier = evidence
        if settings.shift_reads:
            seen_profit = oof_profit(len(seen), model_arms, *oof, arms, cal)
            earlier = shift_to_segment(
                evidence,
                evidence_rows,
                {arms[j].label: seen_profit[:, j] for j in model_arms},
                {
                    arms[j].label: float(estimated[plan == j, j].mean())
                    for j in model_arms
                    if (plan == j).any()
                },
            )
        # "read": the customers whose plan arm the evidence so far does not pass (at risk of
        # being dropped) may fall back to their best provisionally passed arm; half of them in
        # the test cell get that fallback, so it is read on them (a randomised comparison:
        # the half is drawn, the control group too)
        at_risk = np.zeros(n, bool)
        second = np.full(n, NO_CONTACT)
        provisional: list[int] = []
        if settings.rollout == "read":
            so_far = gate_pool(earlier, settings, scale)
            provisional = [
                j
                for j in model_arms
                if arms[j].label in so_far
                and gate([so_far[arms[j].label]], settings.confidence)[0].roll_out
            ]
            second = best_passed_arm(estimated, provisional)
            at_risk = (plan != NO_CONTACT) & ~np.isin(plan, provisional) & (second != NO_CONTACT)
        if settings.explore_unplanned or settings.explore_promising:
            # the known arms the plan gives to no one (neither as a plan arm nor as a fallback):
            # tried again at random, read over everyone like a never-tested arm (with
            # explore_promising: only those not shown to lose on a random customer)
            explored = arms_to_explore(
                plan,
                np.where(at_risk, second, NO_CONTACT),
                model_arms,
                random_reads if settings.explore_promising else None,
                [a.label for a in arms],
                settings.confidence,
            )
            untested = sorted([*untested, *explored])
        share = cell_shares(plan, provisional, at_risk, settings)
        if settings.powered_goal > 0:
            outcomes = model[-1].predict_outcomes(model[:-1].transform(x))
            response = np.zeros((n, len(arms)))
            response[:, model_arms] = outcomes[:, : len(model_arms)]
            share = powered_shares(
                plan, estimated, response, outcomes[:, -1], arms, control, settings
            )
        test, loop = draw_test_cell(
            plan, second, at_risk, share, control, untested, len(arms), settings, rng
        )
        t = settings.test_fraction
        draw = rng.random(n)
        y = _responses(loop, draw, p0, p_arms)
        cell = test | control
        planned = _labels(plan, arms)
        untargeted = [arms[j].label for j in untested]
        # each customer's chance of being a test contact of their plan arm, of their fallback
        # and of the roll-out (all of it given they are not in the control group): the strata
        # of the reads when they are stratified
        share_new = len(untested) / len(arms)
        half = FALLBACK_SHARE * at_risk
        p_plan = (share - t * share_new) * (1 - half)
        p_second = (share - t * share_new) * half
        if settings.new_arm_cell and untested:  # each new arm its own share: the plan keeps more
            _, plan_share, _ = new_arm_shares(share, untested, len(arms), settings)
            p_plan, p_second = plan_share * (1 - half), plan_share * half
        # (the larger cell's shares differ by stratum: its reads are always stratified)
        strata = settings.stratified_reads or settings.unproven_cell or settings.powered_goal > 0
        readouts = read_targeted(
            _labels(loop[cell], arms),
            [planned[i] for i in np.flatnonzero(cell)],
            y[cell],
            terms,
            untargeted=untargeted,
            level=settings.confidence,
            stratum=p_plan[cell] if strata else None,
            covariate=None if baseline is None else baseline[cell],
        )
        if settings.explore_promising:  # the random reads over everyone of this test cell
            for r in readouts:
                if r.arm in untargeted:
                    random_reads.setdefault(r.arm, []).append(r)
        if settings.gate_reads == "current":
            pooled = {
                r.arm: r
                for r in pool_toward_current(readouts, evidence, tau_scale, settings.confidence)
            }
        else:
            pooled = gate_pool([*earlier, readouts], settings, scale)
        decisions = _gate_every_arm(pooled, arms, settings.confidence)
        passed = [j for j, d in enumerate(decisions) if d.roll_out]

        # the roll-out (settings.rollout): every customer whose plan arm passed gets it; a
        # dropped arm's customers get their fallback only where it was read on them and passed
        # ("read"), never ("held"), or their best passed arm, unread ("extend", the design
        # before); a never-tested arm that passed on everyone goes to those left without one
        rest = ~control & ~test
        new_passed = [j for j in passed if j in untested]
        if settings.rollout == "extend":  # before: no model knew a new arm, so no one got it
            new_passed = []
        own = np.isin(plan, passed)
        rollout_gate: list[GateDecision] = []
        # every arm of the plan on its segment, whether it passed or not
        candidates = [(j, plan == j, arms[j].label) for j in model_arms]
        if settings.rollout == "extend":
            fallback = best_passed_arm(estimated, passed)
            gated = np.where(own, plan, fallback)
            populations = [(j, gated == j, arms[j].label) for j in passed]
        else:
            given = _labels(loop, arms)
            fallback = np.full(n, NO_CONTACT)
            fell_back = []
            # a dropped arm's customers: their best passed arm by the estimate (the arms the
            # model knows), rolled out there only when read there — on the earlier randomised
            # campaigns (cross-fitted plans, the same rule), earlier waves' roll-outs and this
            # test cell's fallback half — and passed
            known_passed = [j for j in passed if j not in new_passed]
            best_passed = best_passed_arm(estimated, known_passed)
            dropped = (plan != NO_CONTACT) & ~own
            hist_profit = None
            # the spread shared by the arms, when the design asks for one: estimated once
            spread = (
                shared_tau2([*evidence, readouts], scale) if settings.between == "shared" else None
            )
            for b in sorted(set(best_passed[dropped & rest]) - {NO_CONTACT}):
                key = fallback_key(arms[b])
                on_them = dropped & (best_passed == b)
                if hist_profit is None:
                    hist_profit = oof_profit(len(history), model_arms, *oof, arms, cal)
                live = read_population(
                    arms[b].label,
                    given,
                    on_them & at_risk & (second == b) & cell,
                    control,
                    y,
                    terms[arms[b].label],
                    key=key,
                    level=settings.confidence,
                    stratum=p_second if strata else None,
                    covariate=baseline,
                )
                hist = history_fallback_reads(
                    history,
                    hist_profit,
                    known_passed,
                    b,
                    arms,
                    terms,
                    settings.confidence,
                    covariate=oof[1][: len(history), -1] if settings.adjusted_reads else None,
                )
                if settings.gate_reads == "current":
                    pool = {
                        r.arm: r
                        for r in pool_toward_current(
                            [live] if live is not None else [],
                            hist,
                            {key: settings.tau_uplift * arms[b].value},
                            settings.confidence,
                        )
                    }
                else:
                    fb_reads = [*hist, [live] if live is not None else []]
                    b_label = arms[b].label
                    if settings.fallback_prior == "arm":
                        elsewhere = [
                            r
                            for wave_reads in [*evidence, readouts]
                            for r in wave_reads
                            if r.arm in (b_label, key)
                        ]
                    else:
                        elsewhere = shifted_segment_reads(
                            [r for r in readouts if r.arm == b_label],
                            estimated[on_them & rest, b],
                            estimated[(plan == b) & rest, b],
                        )
                    pool = fallback_pool(fb_reads, elsewhere, key, arms[b].value, settings, spread)
                if key in pool:
                    decision = gate([pool[key]], settings.confidence)[0]
                else:
                    decision = GateDecision(
                        key, False, "held: never read on these customers", settings.confidence
                    )
                rollout_gate.append(decision)
                candidates.append((b, on_them, key))
                if decision.roll_out:
                    fallback[on_them] = b
                    fell_back.append(b)
            # a new arm would go to the customers left without one
            candidates += [(j, ~own & (fallback == NO_CONTACT), arms[j].label) for j in untested]
            if new_passed:  # the new arm of highest measured profit per contact
                best = max(new_passed, key=lambda j: pooled[arms[j].label].profit_per_contact)
                fallback[fallback == NO_CONTACT] = best
            gated = rollout_by_population(
                plan,
                passed,
                read_on_everyone=new_passed,
                fallback=fallback,
                fallback_passed={
                    (int(b), int(d))
                    for b, d in zip(best_passed[dropped], plan[dropped], strict=True)
                    if b in fell_back
                },
            )
            populations = [(j, plan == j, arms[j].label) for j in passed if j not in new_passed]
            populations += [(j, ~own & (fallback == j), arms[j].label) for j in new_passed]
            populations += [
                (b, dropped & (best_passed == b), fallback_key(arms[b])) for b in fell_back
            ]
        held = int((rest & (plan != NO_CONTACT) & (gated == NO_CONTACT)).sum())
        loop[rest] = gated[rest]
        y = _responses(loop, draw, p0, p_arms)
        # what later waves learn from: each population of the roll-out against the control
        # customers of the same population (the test cell's read, on the same control group,
        # is not added again)
        given = _labels(loop, arms)
        rolled_reads = [
            read_population(
                arms[j].label,
                given,
                mask & ~test,
                control,
                y,
                terms[arms[j].label],
                key=key,
                level=settings.confidence,
                stratum=share if strata else None,
                covariate=baseline,
            )
            for j, mask, key in populations
        ]
        kept = [r for r in rolled_reads if r is not None]
        if settings.keep_test_reads:
            # an arm not rolled out has no roll-out read: its test-cell read (its segment's
            # test contacts against its controls, or a new arm's over everyone) is this wave's
            # evidence about it, else it would be lost to the later waves' gates
            rolled_keys = {r.arm for r in kept}
            kept += [r for r in readouts if r.arm not in rolled_keys]
        evidence.append(kept)
        if settings.shift_reads:
            offset = len(seen)
            evidence_rows.append(
                {key: offset + np.flatnonzero(mask & ~test) for _, mask, key in populations}
            )
        wave_rows = wave.audience[features].copy()
        wave_rows["arm"], wave_rows["label"] = loop, y.astype(int)
        # the wave's design: control with its fraction, else the test cell's arm (the plan, its
        # fallback half, or an untested arm at random) with the test fraction, else the
        # roll-out's. The customers the roll-out held are left out of the calibration (no arm
        # probability): their "no contact" followed from the gate, not from the control draw
        # (a customer's test share: ``share``, of which a never-tested arm's random part is t)
        c = settings.control_fraction
        wave_rows[P_CONTROL] = c
        held_rows = rest & (plan != NO_CONTACT) & (gated == NO_CONTACT)
        for j in range(len(arms)):
            planned_j = (1 - half) * (plan == j) + half * (second == j)
            if settings.new_arm_cell and untested:
                p_new, plan_share, roll_share = new_arm_shares(share, untested, len(arms), settings)
                in_cell = p_new if j in untested else plan_share * planned_j
                p_j = (1 - c) * (in_cell + roll_share * (gated == j))
            else:
                in_test = np.where(j in untested, 1 / len(arms), (1 - share_new) * planned_j)
                larger = 0.0 if j in untested else (share - t) * planned_j
                p_j = (1 - c) * (t * in_test + larger + (1 - share) * (gated == j))
            wave_rows[design_column(j)] = np.where(held_rows, 0.0, p_j)
        seen = pd.concat([seen, wave_rows], ignore_index=True)
        # an arm joins the model once it has a row for each cross-fitting fold
        counts = seen["arm"].value_counts()
        model_arms = [j for j in range(len(arms)) if counts.get(j, 0) >= settings.history_folds]
        model = fit_known(seen, model_arms, features, categorical, settings, seed)

        out.append(
            wave_outcome(
                wave.name,
                (fixed, loop, oracle),
                true_profit,
                test,
                rest,
                passed,
                decisions,
                populations,
                rollout_gate,
                held,
                candidates,
                plan,
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
    pops = sum(w.populations_rolled_out for run in runs for w in run)
    pop_false = sum(w.false_population_roll_outs for run in runs for w in run)
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
        # where the loop loses against the oracle (regret_parts), summed over the waves, as a
        # share of the oracle's profit: the mean over runs
        "regret_share": {
            k: float(np.mean([sum(w.regret.get(k, 0.0) for w in run) for run in runs] / cum[:, 2]))
            for k in dict.fromkeys(k for run in runs for w in run for k in w.regret)
        },
        "arms_rolled_out": rolled,
        "false_roll_outs": false,
        "false_roll_out_rate": false / rolled if rolled else 0.0,
        # per population rolled out (an arm counted once per population it reached)
        "populations_rolled_out": pops,
        "false_population_roll_outs": pop_false,
        "false_population_roll_out_rate": pop_false / pops if pops else 0.0,
        "held_per_run": float(np.mean([sum(w.held for w in run) for run in runs])),
        # of the under-contact share, the customers the roll-out held (their plan arm dropped)
        "held_regret_share": float(
            np.mean([sum(w.held_regret for w in run) for run in runs] / cum[:, 2])
        ),
        # the gate on every population it decided on: of those where the arm truly loses, the
        # share rolled out (its type-I error, what a one-sided gate at confidence c bounds by
        # 1 - c); of those where it truly gains, the share rolled out (its power)
        **gate_error_rates([c for run in runs for w in run for c in w.candidates]),
    }


def gate_error_rates(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The gate's errors over the populations it decided on (``WaveOutcome.candidates``): the
    share of the populations with a negative true profit that were rolled out anyway, and the
    share of those with a positive one that were rolled out."""
    negative = [c for c in candidates if c["true_profit"] < 0]
    positive = [c for c in candidates if c["true_profit"] >= 0]
    neg_out = sum(c["rolled_out"] for c in negative)
    pos_out = sum(c["rolled_out"] for c in positive)
    return {
        "populations_decided": len(candidates),
        "negative_populations": len(negative),
        "negative_rolled_out": neg_out,
        "negative_rolled_out_rate": neg_out / len(negative) if negative else 0.0,
        "positive_populations": len(positive),
        "positive_rolled_out": pos_out,
        "positive_rolled_out_rate": pos_out / len(positive) if positive else 0.0,
    }
