"""Which targeting policy pays: learn per-arm uplift from earlier randomised multi-arm campaigns,
then value policies on a later one — off-policy (IPS and doubly robust, with intervals) and, on
synthetic data, against the truth.

An *arm* is an (offer, channel) pair of the campaign log (``campaign_history`` with an
``offer_id`` and a ``channel`` per treated contact; controls have neither). The learned policy
gives each customer the arm of highest estimated incremental profit, or no contact when none is
positive; it is compared with the oracle (the same rule on the true probabilities, synthetic
only), every single arm given to everyone, the random policy (every customer, a uniformly random
arm) and treat-none (0 by definition: values are incremental over no contact).

Model selection never sees the evaluation campaign: the learner is fitted on ``fit`` campaigns
only; the evaluation campaign's log is used once, for the estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from models.decisions.offpolicy import (
    ArmEconomics,
    Log,
    best_choice,
    doubly_robust,
    dr_difference,
    ips,
    policy_from_choice,
    true_value,
)
from models.estimators import preprocessor
from models.uplift import MultiArmUplift

ID, CAMPAIGN = "customer_id", "campaign_id"
ARM_TRUTH_FILE = "truth_arms.parquet"


@dataclass(frozen=True)
class Arm:
    """One (offer, channel) arm and its economics."""

    offer_id: str
    channel: str
    value: float  # margin of one response
    cost_per_contact: float
    cost_per_acceptance: float = 0.0

    @property
    def label(self) -> str:
        """``offer/channel``."""
        return f"{self.offer_id}/{self.channel}"


def arms_of(campaign: Any) -> list[Arm]:
    """Every (offer, channel) pair of a campaign definition (``models.decisions.Campaign``) as an
    arm with its economics; the offers must be valued per response (``value_source: offer``)."""
    arms = []
    for i, offer in enumerate(campaign.offers):
        if offer.value is None:
            raise ValueError(
                f"offers[{i}] ({offer.id!r}) is valued per customer (value_source: "
                "customer_value): a simulation or policy table needs `value`"
            )
        for channel in campaign.channels:
            arms.append(
                Arm(
                    offer.data_id,
                    channel.name,
                    float(offer.value),
                    float(channel.cost_per_contact),
                    float(offer.cost_per_acceptance),
                )
            )
    return arms


def arm_index(contacts: pd.DataFrame, arms: list[Arm]) -> np.ndarray:
    """Per contact, the index of its arm in ``arms`` (-1 for the control group); names any
    treated (offer, channel) pair that is not an arm."""
    from experiments.planning import arm_index as pair_index

    return pair_index(contacts, [(a.offer_id, a.channel) for a in arms])


def design_log(action: np.ndarray, responded: np.ndarray, n_arms: int) -> Log:
    """The log of a campaign randomised with constant shares, estimated by the observed shares
    (the design's; with a few thousand contacts they are within ~1 % of the planned ones)."""
    counts = np.bincount(action + 1, minlength=n_arms + 1).astype(float)
    if (counts == 0).any():
        raise ValueError("the evaluation campaign lacks the control group or some arm")
    share = counts / counts.sum()
    row = np.append(share[1:], share[0])
    return Log(action, responded, np.broadcast_to(row, (action.size, row.size)).copy())


@dataclass(frozen=True)
class PolicyRow:
    """One policy's figures on the evaluation campaign (sums over its audience)."""

    policy: str
    contacts: float
    true_value: float | None
    ips: tuple[float, float, float]
    dr: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "policy": self.policy,
            "contacts": self.contacts,
            "true_value": self.true_value,
            "ips": dict(zip(("value", "low", "high"), self.ips, strict=True)),
            "dr": dict(zip(("value", "low", "high"), self.dr, strict=True)),
        }


@dataclass(frozen=True)
class Difference:
    """The learned policy's incremental profit minus another's, paired by customer (DR)."""

    baseline: str
    dr: tuple[float, float, float]
    true_value: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "baseline": self.baseline,
            "dr": dict(zip(("value", "low", "high"), self.dr, strict=True)),
            "true_value": self.true_value,
        }


@dataclass(frozen=True)
class PolicyReport:
    """Every policy's row, what the learned policy chose, and the learned policy against the
    best single arm by estimate and against the random arm (paired differences)."""

    rows: list[PolicyRow]
    learned_choice: np.ndarray
    level: float
    differences: list[Difference]

    def row(self, policy: str) -> PolicyRow:
        """The row of one policy."""
        return next(r for r in self.rows if r.policy == policy)


def economics(arms: list[Arm], n: int) -> ArmEconomics:
    """The arms' values (the same for every customer) and costs."""
    return ArmEconomics(
        np.tile([a.value for a in arms], (n, 1)),
        np.array([a.cost_per_contact for a in arms]),
        np.array([a.cost_per_acceptance for a in arms]),
    )


def fit_arm_model(
    frame: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    learner: str = "x",
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> Pipeline:
    """The per-arm uplift model (preprocessing + ``MultiArmUplift``) on the fit contacts."""
    model = Pipeline(
        [
            ("pre", preprocessor(features, categorical)),
            ("uplift", MultiArmUplift(learner=learner, params=params, random_state=seed)),
        ]
    )
    return model.fit(
        frame[features], frame["label"].to_numpy(), uplift__arm=frame["arm"].to_numpy()
    )


def policy_report(
    model: Pipeline,
    x_eval: pd.DataFrame,
    log: Log,
    arms: list[Arm],
    truth: tuple[np.ndarray, np.ndarray] | None = None,
    level: float = 0.9,
) -> PolicyReport:
    """Value the policies on the evaluation campaign's log (and truth: p_control (n,), p_arms
    (n, A), when known)."""
    n, n_arms = log.n, len(arms)
    econ = economics(arms, n)
    x = model[:-1].transform(x_eval)
    outcomes = model[-1].predict_outcomes(x)
    m_arms, m_control = outcomes[:, :n_arms], outcomes[:, n_arms]
    uplift = model[-1].predict(x)
    learned = best_choice(econ.estimated_profit(uplift, m_arms))
    policies: dict[str, np.ndarray] = {"learned": policy_from_choice(learned, n_arms)}
    if truth is not None:
        p0, p1 = truth
        policies["oracle"] = policy_from_choice(best_choice(econ.profit(p0, p1)), n_arms)
    for j, arm in enumerate(arms):
        policies[f"all: {arm.label}"] = policy_from_choice(np.full(n, j), n_arms)
    policies["random arm"] = np.full((n, n_arms), 1.0 / n_arms)
    policies["treat none"] = np.zeros((n, n_arms))
    rows: list[PolicyRow] = []
    for name, pi in policies.items():
        e_ips = ips(pi, log, econ, level)
        e_dr = doubly_robust(pi, log, econ, m_control, m_arms, level)
        rows.append(
            PolicyRow(
                name,
                float(pi.sum()),
                None if truth is None else true_value(pi, econ, *truth),
                (e_ips.value, e_ips.low, e_ips.high),
                (e_dr.value, e_dr.low, e_dr.high),
            )
        )
    singles = [r for r in rows if r.policy.startswith("all: ")]
    best = max(singles, key=lambda r: r.dr[0])  # by the estimate: no truth needed
    differences = []
    for other in (best.policy, "random arm"):
        e = dr_difference(policies["learned"], policies[other], log, econ, m_control, m_arms, level)
        truth_d = None
        if truth is not None:
            truth_d = true_value(policies["learned"], econ, *truth) - true_value(
                policies[other], econ, *truth
            )
        differences.append(Difference(other, (e.value, e.low, e.high), truth_d))
    return PolicyReport(rows, learned, level, differences)


def read_arm_truth(folder: Path, campaign_id: str, ids: pd.Series, arms: list[Arm]) -> tuple:
    """p_control (n,) and p_arms (n, A) of a synthetic campaign's audience, in ``ids`` order."""
    t = pd.read_parquet(folder / ARM_TRUTH_FILE)
    t = t[t[CAMPAIGN] == campaign_id]
    t["arm"] = t["offer_id"] + "/" + t["channel"]
    wide = t.pivot(index=ID, columns="arm", values="p_treatment")
    p_arms = wide.reindex(index=ids.to_numpy(), columns=[a.label for a in arms]).to_numpy()
    p0 = t.groupby(ID)["p_control"].first().reindex(ids.to_numpy()).to_numpy()
    if np.isnan(p_arms).any() or np.isnan(p0).any():
        raise ValueError(f"{ARM_TRUTH_FILE}: campaign {campaign_id} lacks some audience members")
    return p0, p_arms


@dataclass(frozen=True)
class ArmFrames:
    """The contacts of the fit campaigns and of the evaluation campaign, with point-in-time
    features (the day before each send), arm index, response."""

    fit: pd.DataFrame
    evaluate: pd.DataFrame
    features: list[str]
    categorical: list[str]
    eval_campaign: str
    truth_folder: Path | None


def arm_frames(
    state: Any, dataset: str, campaign_ids: list[str], arms: list[Arm], feature_set: str
) -> ArmFrames:
    """Contacts of ``campaign_ids`` with features: the latest campaign is the evaluation one."""
    from experiments.planning import contact_frame

    frame, features, categorical, uf = contact_frame(state, dataset, campaign_ids, feature_set)
    if uf.split_kind != "out_of_time":
        raise ValueError("off-policy evaluation needs at least two campaigns (fit, then evaluate)")
    frame["arm"] = arm_index(frame, arms)
    test = frame["split"] == "test"
    return ArmFrames(
        frame[~test].reset_index(drop=True),
        frame[test].reset_index(drop=True),
        features,
        categorical,
        str(frame.loc[test, CAMPAIGN].iloc[0]),
        None if uf.truth_path is None else uf.truth_path.parent,
    )
