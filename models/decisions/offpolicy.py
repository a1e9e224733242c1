"""Off-policy evaluation: the incremental profit a policy would have made, from a randomised
campaign's log, with a confidence interval — and, on synthetic data, the true value.

A *policy* gives each customer a probability per arm (an (offer, channel) pair); what is left
is "no contact". A deterministic policy is one-hot (``policy_from_choice``). Its value is the
**incremental profit** over contacting nobody, summed over the customers::

    V(pi) = sum_i sum_a pi[i, a] * ( (mu_a(x_i) - mu_0(x_i)) * v[i, a]
                                     - cost_per_acceptance[a] * mu_a(x_i) - cost_per_contact[a] )

with ``mu_a`` the response probability under arm ``a`` and ``mu_0`` without contact. The
estimand is a difference against the control group, so the value of treat-none is exactly 0 and
a policy that contacts people who would have bought anyway gets no credit for them.

From a log where customer ``i`` got arm ``A_i`` (or the control, ``A_i = -1``) with the design's
known probability ``e[i, A_i]`` and responded ``Y_i``, two unbiased estimators, each a sum of
one term per customer:

* **IPS** (inverse propensity scoring)::

      phi_i = sum_a pi[i, a] * ( 1[A_i = a] Y_i (v[i, a] - acc[a]) / e[i, a]
                                 - 1[A_i = -1] Y_i v[i, a] / e[i, -1] - c[a] )

* **DR** (doubly robust): a response model's prediction ``m`` plus the IPS correction of its
  residual, unbiased if either the propensities (known here: the design randomised) or the
  model are right, and with a smaller variance than IPS when the model is good::

      phi_i = sum_a pi[i, a] * ( (m_a - m_0) v - acc m_a - c
                                 + 1[A_i = a] (Y_i - m_a) (v - acc) / e[i, a]
                                 - 1[A_i = -1] (Y_i - m_0) v / e[i, -1] )

  ``m`` must not have been fitted on the rows evaluated (fit it on an earlier campaign, or
  cross-fit), or the correction term is biased.

The terms are independent across customers (each was randomised on their own), so the interval is
the normal one of a sum: ``sum(phi) +- z * sd(phi) * sqrt(n)``.

Why our own ~60 lines and not Open Bandit Pipeline (obp): obp has not been released since 2022 and
its pins force old Python / pandas / scikit-learn (PlaytikaOSS/pybandits#59 dropped it for that
reason); and its estimators value one reward per action, while a campaign's value is an
incremental difference against the control group, with per-customer values and costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

NO_CONTACT = -1


@dataclass(frozen=True)
class ArmEconomics:
    """Per (customer, arm): the value of one response; per arm: the costs."""

    value: np.ndarray  # (n, A) margin of one response
    cost_per_contact: np.ndarray  # (A,)
    cost_per_acceptance: np.ndarray  # (A,)

    def __post_init__(self) -> None:
        v = np.asarray(self.value, dtype=float)
        if v.ndim != 2:
            raise ValueError("ArmEconomics.value: shape (customers, arms)")
        for name in ("cost_per_contact", "cost_per_acceptance"):
            c = np.asarray(getattr(self, name), dtype=float)
            if c.shape != (v.shape[1],):
                raise ValueError(f"ArmEconomics.{name}: one number per arm ({v.shape[1]})")
            object.__setattr__(self, name, c)
        object.__setattr__(self, "value", v)

    @property
    def arms(self) -> int:
        """The number of arms."""
        return int(self.value.shape[1])

    def estimated_profit(self, uplift: np.ndarray, p_arms: np.ndarray) -> np.ndarray:
        """Incremental profit per (customer, arm) from a model's uplift and P(respond | arm)."""
        return uplift * self.value - self.cost_per_acceptance * p_arms - self.cost_per_contact

    def profit(self, p_control: np.ndarray, p_arms: np.ndarray) -> np.ndarray:
        """Expected incremental profit per (customer, arm) given response probabilities."""
        p0 = np.asarray(p_control, dtype=float)[:, None]
        p = np.asarray(p_arms, dtype=float)
        return (p - p0) * self.value - self.cost_per_acceptance * p - self.cost_per_contact


@dataclass(frozen=True)
class Log:
    """A randomised campaign's log: who got which arm (or the control), with which probability,
    and who responded."""

    action: np.ndarray  # (n,) arm index, NO_CONTACT for the control group
    responded: np.ndarray  # (n,) 0/1
    propensity: np.ndarray  # (n, A + 1): P(arm a | x) per arm, last column P(control | x)

    def __post_init__(self) -> None:
        a = np.asarray(self.action)
        y = np.asarray(self.responded, dtype=float)
        e = np.asarray(self.propensity, dtype=float)
        n = a.shape[0]
        if a.ndim != 1 or y.shape != (n,) or e.ndim != 2 or e.shape[0] != n:
            raise ValueError("Log: action (n,), responded (n,), propensity (n, arms + 1)")
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("Log.responded: 0/1 per customer")
        if ((a < NO_CONTACT) | (a >= e.shape[1] - 1)).any():
            raise ValueError("Log.action: an arm index, or -1 for the control group")
        if (e < 0).any() or not np.allclose(e.sum(axis=1), 1.0):
            raise ValueError("Log.propensity: probabilities over the arms and control, sum 1")
        logged = e[np.arange(n), np.where(a == NO_CONTACT, e.shape[1] - 1, a)]
        if (logged <= 0).any():
            raise ValueError("Log.propensity: a logged action has probability 0")
        object.__setattr__(self, "action", a.astype(np.int64))
        object.__setattr__(self, "responded", y)
        object.__setattr__(self, "propensity", e)

    @property
    def n(self) -> int:
        """Customers in the log."""
        return int(self.action.shape[0])


def randomised_log(action: np.ndarray, responded: np.ndarray, arm_share: np.ndarray) -> Log:
    """A log of a design that gave every customer the same probabilities (``arm_share``: one per
    arm, the control getting the rest)."""
    share = np.asarray(arm_share, dtype=float)
    control = 1.0 - share.sum()
    if control <= 0 or (share <= 0).any():
        raise ValueError("arm_share: positive shares summing to less than 1 (the control's rest)")
    row = np.append(share, control)
    return Log(action, responded, np.broadcast_to(row, (len(action), row.size)).copy())


def policy_from_choice(choice: np.ndarray, arms: int) -> np.ndarray:
    """A deterministic policy (n, A) from one arm index per customer (NO_CONTACT for none)."""
    c = np.asarray(choice, dtype=np.int64)
    pi = np.zeros((c.size, arms))
    contacted = c != NO_CONTACT
    pi[np.flatnonzero(contacted), c[contacted]] = 1.0
    return pi


def best_choice(profit: np.ndarray) -> np.ndarray:
    """Per customer the arm of highest expected profit, or NO_CONTACT when none is positive."""
    best = np.argmax(profit, axis=1)
    return np.where(profit[np.arange(profit.shape[0]), best] > 0, best, NO_CONTACT)


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate (a sum over customers) and its two-sided interval."""

    value: float
    low: float
    high: float
    level: float

    def covers(self, truth: float) -> bool:
        """True when the interval holds ``truth``."""
        return self.low <= truth <= self.high


def _interval(phi: np.ndarray, level: float) -> Estimate:
    n = phi.size
    total = float(phi.sum())
    half = float(norm.ppf(0.5 + level / 2) * phi.std(ddof=1) * np.sqrt(n)) if n > 1 else np.inf
    return Estimate(total, total - half, total + half, level)


def _check(policy: np.ndarray, log: Log, econ: ArmEconomics) -> np.ndarray:
    pi = np.asarray(policy, dtype=float)
    if pi.shape != (log.n, econ.arms) or log.propensity.shape[1] != econ.arms + 1:
        raise ValueError(
            f"policy {pi.shape}, log propensity {log.propensity.shape} and values "
            f"{econ.value.shape} disagree: expected ({log.n}, arms) with arms = {econ.arms}"
        )
    if (pi < 0).any() or (pi.sum(axis=1) > 1 + 1e-9).any():
        raise ValueError("policy: per customer, arm probabilities >= 0 summing to at most 1")
    return pi


def _indicators(log: Log, arms: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, A) 1[A_i = a] / e[i, a], and (n,) 1[A_i = control] / e[i, control]."""
    n = log.n
    got = np.zeros((n, arms))
    treated = log.action != NO_CONTACT
    got[np.flatnonzero(treated), log.action[treated]] = 1.0
    e = log.propensity
    return got / e[:, :arms], (~treated) / e[:, arms]


def _ips_terms(policy: np.ndarray, log: Log, econ: ArmEconomics) -> np.ndarray:
    pi = _check(policy, log, econ)
    w_arm, w_control = _indicators(log, econ.arms)
    y = log.responded[:, None]
    acc, c = econ.cost_per_acceptance, econ.cost_per_contact
    terms = w_arm * y * (econ.value - acc) - w_control[:, None] * y * econ.value - c
    return (pi * terms).sum(axis=1)


def ips(policy: np.ndarray, log: Log, econ: ArmEconomics, level: float = 0.9) -> Estimate:
    """Inverse-propensity estimate of the policy's incremental profit, with its interval."""
    return _interval(_ips_terms(policy, log, econ), level)


def doubly_robust(
    policy: np.ndarray,
    log: Log,
    econ: ArmEconomics,
    p_control: np.ndarray,
    p_arms: np.ndarray,
    level: float = 0.9,
) -> Estimate:
    """Doubly robust estimate from a response model's ``p_control`` (n,) and ``p_arms`` (n, A),
    fitted on other rows than the log's."""
    return _interval(_dr_terms(policy, log, econ, p_control, p_arms), level)


def _dr_terms(
    policy: np.ndarray, log: Log, econ: ArmEconomics, p_control: np.ndarray, p_arms: np.ndarray
) -> np.ndarray:
    pi = _check(policy, log, econ)
    m0 = np.asarray(p_control, dtype=float)[:, None]
    m = np.asarray(p_arms, dtype=float)
    if m.shape != pi.shape or m0.shape[0] != log.n:
        raise ValueError("doubly_robust: p_control (n,) and p_arms (n, arms) match the log")
    w_arm, w_control = _indicators(log, econ.arms)
    y = log.responded[:, None]
    acc, c, v = econ.cost_per_acceptance, econ.cost_per_contact, econ.value
    direct = (m - m0) * v - acc * m - c
    correction = w_arm * (y - m) * (v - acc) - w_control[:, None] * (y - m0) * v
    return (pi * (direct + correction)).sum(axis=1)


def dr_difference(
    policy: np.ndarray,
    baseline: np.ndarray,
    log: Log,
    econ: ArmEconomics,
    p_control: np.ndarray,
    p_arms: np.ndarray,
    level: float = 0.9,
) -> Estimate:
    """Doubly robust estimate of ``V(policy) - V(baseline)`` on the same log, paired by
    customer: where both policies do the same thing the terms cancel, so the interval of the
    difference is much narrower than the two intervals side by side."""
    a = _dr_terms(policy, log, econ, p_control, p_arms)
    b = _dr_terms(baseline, log, econ, p_control, p_arms)
    return _interval(a - b, level)


def true_value(
    policy: np.ndarray, econ: ArmEconomics, p_control: np.ndarray, p_arms: np.ndarray
) -> float:
    """The policy's true incremental profit when the response probabilities are known."""
    pi = np.asarray(policy, dtype=float)
    return float((pi * econ.profit(p_control, p_arms)).sum())
