"""Read a campaign wave against its control group, and decide what rolls out.

Pure functions over arrays (the campaign loop's statistics; ``experiments`` and ``serving`` call
them). Per arm (an (offer, channel) pair), from the wave's contacts and its control group:

* **incremental response** = response rate of the arm's contacts − the control's, with
  Newcombe's hybrid score interval (Wilson intervals of each rate combined, Newcombe 1998 method
  10: good at small counts and rates near 0, where the normal interval is not);
* **incremental profit per contact** = incremental response × value − cost per acceptance ×
  response rate − cost per contact, with a normal interval: its variance is
  ``(v - acc)^2 r_t (1 - r_t) / n_t + v^2 r_c (1 - r_c) / n_c``;
* **actual vs expected**: the plan's expected incremental response of those contacts (its mean)
  against the measured one; an arm **contradicts the model** when the expected value lies outside
  the measured interval;
* **negative responses by reason**: the share of contacts declining for each reason, against the
  control's share (a control customer cannot decline an offer they never got: their "reasons" are
  the baseline of unprompted answers, usually none — a reason that appears only among contacts
  is the offer's).

**Post-stratified reads** (``read_strata``; ``read_targeted`` and ``read_population`` with a
``stratum``): where the contacts were drawn with a different chance in different strata of a
population and the controls with one chance, each stratum is read apart and the strata are
combined by their share of the controls — the plain difference would compare contacts and
controls holding the strata in different shares.

**Regression-adjusted reads** (``read_adjusted``; ``read_targeted``, ``read_strata`` and
``read_population`` with a ``covariate``): within a randomised comparison, each group's mean
response is adjusted by a pre-treatment covariate (e.g. the model's predicted response without
contact, from a model that did not see these responses), Lin's (2013) estimator: unbiased as the
plain difference, with a smaller standard error by as much as the covariate explains of the
response.

**The roll-out gate**: an arm rolls out only when its incremental profit per contact is positive
with the configured confidence, one-sided: ``profit - z_level * se > 0``. Default 90 % (the
literature's 70 % and 90 % levels are the usual examples: 70 % rolls out more arms and more
mistakes). An arm with too few contacts (``min_contacts``) or no control is held, not rolled out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np


def _z(p: float) -> float:
    """The standard normal quantile (the stdlib's: no scipy import where the service starts)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


DEFAULT_GATE_CONFIDENCE = 0.9
MIN_CONTACTS = 30


def wilson_interval(x: Any, n: Any, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion ``x / n`` (vectorised)."""
    x, n = np.asarray(x, dtype=float), np.asarray(n, dtype=float)
    z = _z(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return centre - half, centre + half


def newcombe_interval(
    x1: Any, n1: Any, x2: Any, n2: Any, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval (method 10) of ``x1 / n1 - x2 / n2`` (vectorised)."""
    x1, n1, x2, n2 = (np.asarray(v, dtype=float) for v in (x1, n1, x2, n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return (
        d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


@dataclass(frozen=True)
class ArmTerms:
    """What a response of an arm is worth and what a contact costs. ``value`` None: each
    response is worth its customer's value (``value_source: customer_value``), which
    ``read_wave`` then takes per contact."""

    value: float | None
    cost_per_contact: float
    cost_per_acceptance: float = 0.0


@dataclass(frozen=True)
class ArmReadout:
    """One arm's wave against the control group."""

    arm: str
    contacts: int
    responders: int
    control: int
    control_responders: int
    response_rate: float
    control_rate: float
    incremental_response: float
    incremental_response_ci: tuple[float, float]
    profit_per_contact: float
    profit_per_contact_ci: tuple[float, float]
    profit_lower_one_sided: float  # profit - z_level * se: the gate's figure
    profit_se: float
    incremental_profit: float  # per contact x contacts
    expected_incremental_response: float | None
    contradicts_model: bool | None
    declined: dict[str, tuple[float, float]] = field(default_factory=dict)  # reason: arm, ctrl
    level: float = 0.9

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    """Roll an arm out or not, and why."""

    arm: str
    roll_out: bool
    reason: str
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def read_wave(
    arm: Sequence[str | None],
    responded: Any,
    terms: dict[str, ArmTerms],
    *,
    expected_uplift: Any = None,
    reason: Sequence[str | None] | None = None,
    level: float = 0.9,
    customer_value: Any = None,
) -> list[ArmReadout]:
    """Per arm of ``terms``, the wave's read-out against its control group (``arm`` None).

    ``expected_uplift``: the plan's expected incremental response per contact (NaN where none);
    ``reason``: the reason given with a negative response (None where none);
    ``customer_value``: per row what a response of that customer is worth, for the arms whose
    ``ArmTerms.value`` is None: their profit per contact is the difference of the mean value
    responded in the arm and in the control group (each customer's own value: randomised, the
    control customers' values stand for what the contacted would have brought without the
    contact), less the costs; the incremental response stays unweighted."""
    labels = np.array([a if a is not None else "" for a in arm], dtype=object)
    y = np.asarray(responded, dtype=float)
    if y.shape != labels.shape or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("responded: 0/1 per contact, aligned with arm")
    unknown = sorted(set(labels[labels != ""]) - set(terms))
    if unknown:
        raise ValueError(f"arms {unknown[:5]} have no value / cost terms")
    control = labels == ""
    per_customer = [name for name, t in terms.items() if t.value is None]
    v = None
    if per_customer:
        if customer_value is None:
            raise ValueError(
                f"arms {per_customer[:5]} are valued per customer: pass customer_value"
            )
        v = np.asarray(customer_value, dtype=float)
        used = control | np.isin(labels, per_customer)
        if v.shape != y.shape or not np.isfinite(v[used]).all():
            raise ValueError("customer_value: a finite value per contact and control, aligned")
    n_c, x_c = int(control.sum()), int(y[control].sum())
    r_c = x_c / n_c if n_c else float("nan")
    z_two = float(_z(0.5 + level / 2))
    z_one = float(_z(level))
    expected = None if expected_uplift is None else np.asarray(expected_uplift, dtype=float)
    reasons = (
        None
        if reason is None
        else np.array([r if isinstance(r, str) and r.strip() else "" for r in reason], dtype=object)
    )
    out = []
    for name, t in terms.items():
        rows = labels == name
        n_t, x_t = int(rows.sum()), int(y[rows].sum())
        r_t = x_t / n_t if n_t else float("nan")
        if n_t and n_c:
            lo, hi = (float(v) for v in newcombe_interval(x_t, n_t, x_c, n_c, level))
        else:
            lo = hi = float("nan")
        uplift = r_t - r_c
        if t.value is None:  # each response worth its customer's value
            assert v is not None
            gain_t = (v[rows] - t.cost_per_acceptance) * y[rows]
            gain_c = v[control] * y[control]
            profit = (
                float(gain_t.mean() - gain_c.mean()) - t.cost_per_contact
                if n_t and n_c
                else float("nan")
            )
            var = (
                float(gain_t.var(ddof=1)) / n_t + float(gain_c.var(ddof=1)) / n_c
                if n_t > 1 and n_c > 1
                else float("nan")
            )
        else:
            profit = uplift * t.value - t.cost_per_acceptance * r_t - t.cost_per_contact
            var = (
                (t.value - t.cost_per_acceptance) ** 2 * r_t * (1 - r_t) / n_t
                + t.value**2 * r_c * (1 - r_c) / n_c
                if n_t and n_c
                else float("nan")
            )
        se = float(np.sqrt(var))
        exp_mean = None
        contradicts = None
        if expected is not None and n_t:
            e = expected[rows]
            e = e[~np.isnan(e)]
            if e.size:
                exp_mean = float(e.mean())
                contradicts = bool(not lo <= exp_mean <= hi) if np.isfinite(lo) else None
        declined: dict[str, tuple[float, float]] = {}
        if reasons is not None:
            for why in sorted(set(reasons[rows | control]) - {""}):
                arm_share = float((reasons[rows] == why).mean()) if n_t else float("nan")
                ctrl_share = float((reasons[control] == why).mean()) if n_c else float("nan")
                declined[why] = (arm_share, ctrl_share)
        out.append(
            ArmReadout(
                arm=name,
                contacts=n_t,
                responders=x_t,
                control=n_c,
                control_responders=x_c,
                response_rate=r_t,
                control_rate=r_c,
                incremental_response=uplift,
                incremental_response_ci=(lo, hi),
                profit_per_contact=profit,
                profit_per_contact_ci=(profit - z_two * se, profit + z_two * se),
                profit_lower_one_sided=profit - z_one * se,
                profit_se=se,
                incremental_profit=profit * n_t if n_t else 0.0,
                expected_incremental_response=exp_mean,
                contradicts_model=contradicts,
                declined=declined,
                level=level,
            )
        )
    return out


def _usable(r: ArmReadout) -> bool:
    """A read that can be pooled: contacts, controls and a positive finite SE."""
    return bool(r.contacts and r.control and np.isfinite(r.profit_se) and r.profit_se > 0)


def _usable_reads(waves: list[list[ArmReadout]], name: str) -> list[ArmReadout]:
    """The reads of ``name`` that can be pooled (``_usable``)."""
    return [r for wave in waves for r in wave if r.arm == name and _usable(r)]


def _q_terms(y: np.ndarray, var: np.ndarray) -> tuple[float, int, float]:
    """DerSimonian–Laird's pieces of reads ``y`` with variances ``var``: the ``Q`` statistic
    about their fixed-effect mean, its degrees of freedom and the ``C`` with which
    ``E[Q] = df + tau^2 C``."""
    w = 1 / var
    fixed = float(np.sum(w * y) / w.sum())
    return float(np.sum(w * (y - fixed) ** 2)), len(y) - 1, float(w.sum() - np.sum(w**2) / w.sum())


def shared_tau2(waves: list[list[ArmReadout]], scale: Mapping[str, float]) -> float:
    """The spread between waves **common to every arm**, per unit of ``scale`` (each arm's
    value per response, so the figure is in incremental-response units): the
    DerSimonian–Laird moment estimate with each arm's ``Q`` statistic and its expectation
    summed over the arms read in two waves or more (``E[sum Q] = sum (k - 1) + tau^2 sum C``).
    With two reads of an arm its own estimate rests on one degree of freedom; summed over the
    arms it rests on one per arm. Arms not in ``scale`` are left out."""
    q = df = c = 0.0
    for name in dict.fromkeys(r.arm for wave in waves for r in wave):
        usable = _usable_reads(waves, name)
        if len(usable) < 2 or not scale.get(name):
            continue
        s = abs(float(scale[name]))
        terms = _q_terms(
            np.array([r.profit_per_contact for r in usable]) / s,
            (np.array([r.profit_se for r in usable]) / s) ** 2,
        )
        q, df, c = q + terms[0], df + terms[1], c + terms[2]
    return max(0.0, (q - df) / c) if c > 0 else 0.0


def pool_readouts(
    waves: list[list[ArmReadout]],
    level: float = 0.9,
    *,
    predictive: bool = False,
    tau2_per_unit: float | None = None,
    scale: Mapping[str, float] | None = None,
) -> list[ArmReadout]:
    """One read-out per arm from several randomised waves, each read against its own control
    group: the fixed-effect (inverse-variance) pool of the per-wave profit per contact and
    incremental response, so a wave whose audience or season differs is compared only with its
    own control. Waves where the arm had no contacts or no control are left out.

    ``predictive``: the waves measured different things (another season, another plan's
    segment), so pool with a **random effect** between them (DerSimonian–Laird: the spread of
    the waves beyond their noise, ``tau^2``, estimated by moments, each wave weighted by
    ``1 / (se^2 + tau^2)``), and give the figure's uncertainty **for the next wave**:
    ``se^2 = se(pooled mean)^2 + tau^2`` — what a gate deciding the next roll-out needs. One
    wave (or waves that agree within their noise) gives the fixed-effect figures.

    ``tau2_per_unit`` (with ``predictive``): the spread between waves given, not estimated per
    arm — e.g. ``shared_tau2`` over every arm — as ``tau^2 = tau2_per_unit x scale[arm]^2``
    for an arm read in two waves or more (an arm missing from ``scale``: its own estimate; one
    read: the fixed-effect figures, as without it)."""
    names = list(dict.fromkeys(r.arm for wave in waves for r in wave))
    out = []
    for name in names:
        usable = _usable_reads(waves, name)
        if not usable:
            continue
        se2 = np.array([r.profit_se**2 for r in usable])
        tau2 = 0.0
        if predictive and len(usable) > 1:
            if tau2_per_unit is not None and scale is not None and name in scale:
                tau2 = tau2_per_unit * float(scale[name]) ** 2
            else:
                q, df, c = _q_terms(np.array([r.profit_per_contact for r in usable]), se2)
                tau2 = max(0.0, (q - df) / c)
        w = 1 / (se2 + tau2)
        profit = float(np.sum(w * [r.profit_per_contact for r in usable]) / w.sum())
        se = float(np.sqrt(1 / w.sum() + tau2))
        # incremental response: the same weights (the rate and the profit move together)
        uplift = float(np.sum(w * [r.incremental_response for r in usable]) / w.sum())
        u_se = float(
            np.sqrt(
                np.sum(
                    w**2
                    * [
                        (
                            r.response_rate * (1 - r.response_rate) / r.contacts
                            + r.control_rate * (1 - r.control_rate) / r.control
                        )
                        for r in usable
                    ]
                )
            )
            / w.sum()
        )
        contacts = sum(r.contacts for r in usable)
        out.append(
            combined_readout(
                name,
                usable,
                sum(r.responders for r in usable) / contacts,
                sum(r.control_responders for r in usable) / max(sum(r.control for r in usable), 1),
                (uplift, u_se),
                (profit, se),
                level,
            )
        )
    return out


def combined_readout(
    arm: str,
    reads: list[ArmReadout],
    response_rate: float,
    control_rate: float,
    uplift: tuple[float, float],
    profit: tuple[float, float],
    level: float,
) -> ArmReadout:
    """One read-out of ``arm`` combining ``reads`` (waves pooled, strata weighted): the counts
    summed; the rates, incremental response and profit per contact as combined, each with its
    standard error (intervals two-sided at ``level``, the gate's bound one-sided)."""
    (u, u_se), (pr, se) = uplift, profit
    z_two, z_one = float(_z(0.5 + level / 2)), float(_z(level))
    contacts = sum(r.contacts for r in reads)
    return ArmReadout(
        arm=arm,
        contacts=contacts,
        responders=sum(r.responders for r in reads),
        control=sum(r.control for r in reads),
        control_responders=sum(r.control_responders for r in reads),
        response_rate=response_rate,
        control_rate=control_rate,
        incremental_response=u,
        incremental_response_ci=(u - z_two * u_se, u + z_two * u_se),
        profit_per_contact=pr,
        profit_per_contact_ci=(pr - z_two * se, pr + z_two * se),
        profit_lower_one_sided=pr - z_one * se,
        profit_se=se,
        incremental_profit=pr * contacts,
        expected_incremental_response=None,
        contradicts_model=None,
        declined={},
        level=level,
    )


def _tau_posterior(
    y: np.ndarray, s2: np.ndarray, tau_scale: float, grid: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normal hierarchical model of reads ``y`` (variances ``s2``): ``y_k ~ N(theta_k, s2_k)``,
    ``theta_k ~ N(mu, tau^2)``, a flat prior on ``mu`` and a half-normal prior of scale
    ``tau_scale`` on ``tau``. Returns a grid of ``tau``, its posterior weights, and ``mu``'s
    posterior mean and variance given each ``tau`` (Gelman et al., *Bayesian Data Analysis*,
    §5.4, with ``mu`` integrated out)."""
    taus = np.linspace(0.0, 5.0 * tau_scale, grid + 1)[1:]
    v = s2[None, :] + taus[:, None] ** 2  # (grid, k)
    w = 1 / v
    v_mu = 1 / w.sum(axis=1)
    mu = (w * y[None, :]).sum(axis=1) * v_mu
    log_post = (
        -0.5 * (taus / tau_scale) ** 2  # the half-normal prior
        + 0.5 * np.log(v_mu)
        - 0.5 * np.log(v).sum(axis=1)
        - 0.5 * (((y[None, :] - mu[:, None]) ** 2) * w).sum(axis=1)
    )
    p = np.exp(log_post - log_post.max())
    return taus, p / p.sum(), mu, v_mu


def _posterior_on_current(
    y: np.ndarray, s2: np.ndarray, tau_scale: float, grid: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_tau_posterior``'s model, the last read the current population's: over the grid of
    ``tau``, its posterior weights and the mean and variance of ``theta_current`` given
    ``tau``."""
    taus, p, mu, v_mu = _tau_posterior(y, s2, tau_scale, grid)
    t2 = taus**2
    v_c = 1 / (1 / s2[-1] + 1 / t2)
    mean = (y[-1] / s2[-1] + mu / t2) * v_c
    var = v_c + (v_c / t2) ** 2 * v_mu
    return p, mean, var


def _posterior_predictive(
    y: np.ndarray, s2: np.ndarray, tau_scale: float, grid: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_tau_posterior``'s model: over the grid of ``tau``, its posterior weights and the mean
    and variance of a **new** population's ``theta`` given ``tau``: ``mu``'s posterior widened
    by ``tau^2``."""
    taus, p, mu, v_mu = _tau_posterior(y, s2, tau_scale, grid)
    return p, mu, v_mu + taus**2


def _mixture_readout(
    r: ArmReadout, p: np.ndarray, mean: np.ndarray, var: np.ndarray, level: float
) -> ArmReadout:
    """``r`` with its profit per contact replaced by a mixture of normals over the spread's
    grid (weights ``p``): its mean, standard deviation, two-sided interval and one-sided
    ``1 - level`` quantile; the incremental profit over ``r``'s contacts."""
    z_two = float(_z(0.5 + level / 2))
    m = float(np.sum(p * mean))
    sd = float(np.sqrt(max(np.sum(p * (var + mean**2)) - m**2, 0.0)))
    return replace(
        r,
        profit_per_contact=m,
        profit_per_contact_ci=(m - z_two * sd, m + z_two * sd),
        profit_lower_one_sided=_mixture_quantile(p, mean, np.sqrt(var), 1 - level),
        profit_se=sd,
        incremental_profit=m * r.contacts,
    )


def pool_predictive_bayes(
    waves: list[list[ArmReadout]], tau_scale: Mapping[str, float], level: float = 0.9
) -> list[ArmReadout]:
    """``pool_readouts(..., predictive=True)`` with the spread between an arm's reads
    **integrated over a half-normal prior** of scale ``tau_scale[arm]`` (profit per contact)
    instead of its moment estimate: with two reads the moment estimate rests on one degree of
    freedom, zero when they happen to agree and several times their noise when they happen to
    disagree; the prior keeps it to spreads believed possible before any read, and the reads
    move it within them (Gelman, *Prior distributions for variance parameters in hierarchical
    models*, 2006: a half-normal or half-t prior for few groups). The figure is the predictive
    distribution of the next population's profit per contact (a mixture of normals over the
    spread); ``profit_lower_one_sided`` is its ``1 - level`` quantile. An arm read once, or
    missing from ``tau_scale``, keeps ``pool_readouts``' figures."""
    out = []
    for r in pool_readouts(waves, level, predictive=True):
        usable = _usable_reads(waves, r.arm)
        if len(usable) < 2 or not tau_scale.get(r.arm):
            out.append(r)
            continue
        y = np.array([e.profit_per_contact for e in usable])
        s2 = np.array([e.profit_se**2 for e in usable])
        p, mean, var = _posterior_predictive(y, s2, float(tau_scale[r.arm]))
        out.append(_mixture_readout(r, p, mean, var, level))
    return out


def pool_on_current_bayes(
    waves: list[list[ArmReadout]], tau_scale: Mapping[str, float], level: float = 0.9
) -> list[ArmReadout]:
    """``pool_predictive_bayes``'s model, judged on **the population the last read was made
    on** where there is such a read: ``waves[-1]`` holds this wave's reads (the test cell's
    read of each arm on the customers the roll-out would give it), and the roll-out goes to the
    rest of that same population, drawn alike. So the figure is the posterior of that
    population's profit per contact (``_posterior_on_current``: its read shrunk toward the
    earlier reads as far as they agree, the spread between populations integrated over the
    prior), not the predictive of a new population's, which adds the whole spread again. An
    arm without a read in ``waves[-1]`` keeps ``pool_predictive_bayes``' predictive figure (the
    population it goes to was never read); an arm read only now, or missing from
    ``tau_scale``, keeps ``pool_readouts``'. Counts are those of every read pooled, as in
    ``pool_readouts``, so the gate's minimum counts apply to the whole evidence."""
    current = {r.arm for r in waves[-1]} if waves else set()
    out = []
    for r in pool_predictive_bayes(waves, tau_scale, level):
        usable = _usable_reads(waves, r.arm)
        now = _usable_reads(waves[-1:], r.arm)
        if r.arm not in current or len(now) != 1 or len(usable) < 2 or not tau_scale.get(r.arm):
            out.append(r)
            continue
        earlier = _usable_reads(waves[:-1], r.arm)
        y = np.array([*(e.profit_per_contact for e in earlier), now[0].profit_per_contact])
        s2 = np.array([*(e.profit_se**2 for e in earlier), now[0].profit_se ** 2])
        p, mean, var = _posterior_on_current(y, s2, float(tau_scale[r.arm]))
        out.append(_mixture_readout(r, p, mean, var, level))
    return out


def pool_population_in_arm(
    population: list[list[ArmReadout]],
    arm_reads: list[ArmReadout],
    key: str,
    tau_scale: float,
    level: float = 0.9,
) -> ArmReadout | None:
    """An arm's profit per contact **on one population** (``population``: its reads there,
    e.g. a dropped arm's customers read in the earlier randomised campaigns and in this test
    cell) with the arm's reads **on its other populations** (``arm_reads``: its own segments,
    earlier waves) as the prior: the normal hierarchical model of ``pool_predictive_bayes``,
    each population's profit drawn around the arm's mean with a spread integrated over a
    half-normal prior of scale ``tau_scale``, judged on the posterior of this population
    (``_posterior_on_current``). The population's own reads are pooled first (fixed effect:
    the same customers' rule). A thin read there is pulled toward what the arm earns
    elsewhere as far as the spread between populations allows, and a read that disagrees
    pulls the spread up. None when the population has no usable read (never read there: the
    roll-out does not go to it). Counts are those of every read used; ``key`` names it."""
    own = _usable_reads(population, key)
    if not own:
        return None
    (here,) = pool_readouts([own], level)
    others = [r for r in arm_reads if _usable(r)]
    if not others or not tau_scale > 0:
        return here
    y = np.array([*(r.profit_per_contact for r in others), here.profit_per_contact])
    s2 = np.array([*(r.profit_se**2 for r in others), here.profit_se**2])
    p, mean, var = _posterior_on_current(y, s2, float(tau_scale))
    return replace(
        _mixture_readout(here, p, mean, var, level),
        contacts=here.contacts + sum(r.contacts for r in others),
        control=here.control + sum(r.control for r in others),
    )


def pool_toward_current(
    current: list[ArmReadout],
    earlier: list[list[ArmReadout]],
    tau_scale: dict[str, float],
    level: float = 0.9,
) -> list[ArmReadout]:
    """One read-out per arm of ``current`` for **the population it was read on now**, the
    earlier reads of the same arm (other populations, other waves) as its prior.

    ``pool_readouts(..., predictive=True)`` estimates the mean of every population the arm
    was ever read on and widens it by the spread between them (``tau``, estimated by moments:
    zero when 2-4 reads happen to agree, then the pool is as sure as its biggest read). A gate
    rolls an arm out on this wave's population, so this gives the posterior of that
    population's profit per contact under a normal hierarchical model (``_posterior_on_current``):
    the current read shrunk toward the earlier ones as far as they agree, ``tau`` integrated
    over a half-normal prior of scale ``tau_scale[arm]`` (profit per contact; the spread of an
    arm's profit between populations that is believed before any read). The read-out's
    ``profit_lower_one_sided`` is the posterior's ``1 - level`` quantile, so the gate rolls out
    when the population's profit is positive with posterior probability ``level``. Counts are
    the current read's. An arm without earlier reads keeps its current read."""
    out = []
    for r in current:
        prior = [
            e
            for wave in earlier
            for e in wave
            if e.arm == r.arm and e.contacts and e.control and e.profit_se > 0
        ]
        if not prior or not (r.contacts and r.control and r.profit_se > 0):
            out.append(r)
            continue
        y = np.array([*(e.profit_per_contact for e in prior), r.profit_per_contact])
        s2 = np.array([*(e.profit_se**2 for e in prior), r.profit_se**2])
        p, mean, var = _posterior_on_current(y, s2, tau_scale[r.arm])
        out.append(replace(_mixture_readout(r, p, mean, var, level), level=level))
    return out


def _mixture_quantile(p: np.ndarray, mean: np.ndarray, sd: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a mixture of normals (weights ``p``), by bisection."""
    from scipy.special import ndtr

    lo = float(np.min(mean - 10 * sd))
    hi = float(np.max(mean + 10 * sd))
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.sum(p * ndtr((mid - mean) / sd))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def gate(
    readouts: list[ArmReadout],
    confidence: float = DEFAULT_GATE_CONFIDENCE,
    min_contacts: int = MIN_CONTACTS,
) -> list[GateDecision]:
    """Roll out an arm only when its incremental profit per contact is positive with
    ``confidence`` (one-sided); the read-outs must have been made at that level."""
    decisions = []
    for r in readouts:
        if abs(r.level - confidence) > 1e-12:
            raise ValueError(f"read-out level {r.level} is not the gate's confidence {confidence}")
        if r.contacts < min_contacts or r.control < min_contacts:
            decisions.append(
                GateDecision(
                    r.arm,
                    False,
                    f"held: {r.contacts} contacts and {r.control} controls (fewer than "
                    f"{min_contacts}) cannot show a profit",
                    confidence,
                )
            )
            continue
        if r.profit_lower_one_sided > 0:
            why = (
                f"rolled out: incremental profit per contact {r.profit_per_contact:+.3f} "
                f"({r.contacts:,} contacts, {r.control:,} controls), positive with "
                f"{confidence:.0%} confidence (lower bound {r.profit_lower_one_sided:+.3f})"
            )
        else:
            why = (
                f"dropped: incremental profit per contact {r.profit_per_contact:+.3f} "
                f"({r.contacts:,} contacts, {r.control:,} controls) is not positive with "
                f"{confidence:.0%} confidence (lower bound {r.profit_lower_one_sided:+.3f})"
            )
        decisions.append(GateDecision(r.arm, r.profit_lower_one_sided > 0, why, confidence))
    return decisions


def read_targeted(
    given: Sequence[str | None],
    planned: Sequence[str | None],
    responded: Any,
    terms: dict[str, ArmTerms],
    *,
    untargeted: Sequence[str] = (),
    level: float = 0.9,
    stratum: Any = None,
    covariate: Any = None,
) -> list[ArmReadout]:
    """Per arm, its read-out **on the customers the plan gives it**: the contacts that got arm
    ``a`` where the plan chose ``a``, against the control customers for whom the plan chose
    ``a`` (the plan is computed for the control group too; being held out is random, so within
    that segment contact against control is a randomised comparison).

    This is what a roll-out of the arm will do — reach the customers the plan picks for it — so
    a gate on it judges the arm where it will be used, not on a random customer (an arm can lose
    money on average and earn where it is targeted, or the other way round). ``given``: the arm
    each customer got (None: control); ``planned``: the plan's arm per customer (None: no
    contact); ``untargeted``: arms the plan cannot choose yet (never tested: it has no model of
    them), read on everyone, like ``read_wave``. Customers outside an arm's segment do not enter
    its read-out; arms with no contact in their segment are left out.

    ``stratum``: per customer, a key of how likely they were to be a contact of their segment's
    arm (e.g. whether half of them were given another arm instead). When the contacts' chance
    differs between strata and the controls' does not, contacts and controls hold the strata
    in different shares, and the plain difference is biased wherever the strata respond
    differently; with ``stratum`` each arm is read per stratum and the strata combined by
    their share of the segment's controls (``read_strata``); the untargeted arms are read
    without it. None: one stratum. ``covariate``: per customer a pre-treatment figure (e.g.
    the model's predicted response without contact, from a model not fitted on these
    responses): each read is regression-adjusted by it (``read_adjusted``, per stratum);
    None: the plain reads."""
    g = np.array([a if a is not None else "" for a in given], dtype=object)
    p = np.array([a if a is not None else "" for a in planned], dtype=object)
    y = np.asarray(responded, dtype=float)
    if not (g.shape == p.shape == y.shape):
        raise ValueError("given, planned and responded: one value per customer")
    s = _strata(stratum, g.size)
    x = _covariate(covariate, g.size)
    out = []
    one = np.zeros(g.size, dtype=np.int64)
    for name, t in terms.items():
        segment = np.ones(g.size, bool) if name in untargeted else p == name
        rows = segment & ((g == name) | (g == ""))
        if not (g[rows] == name).any() or not (g[rows] == "").any():
            continue
        # an untargeted arm's contacts were drawn at random over everyone: one stratum
        k = one if name in untargeted else s
        read = read_strata(
            name,
            g[rows] == name,
            y[rows],
            k[rows],
            t,
            level=level,
            covariate=None if x is None else x[rows],
        )
        if read is not None:
            out.append(read)
    return out


def read_segments(
    given: Sequence[str | None],
    planned: Sequence[str | None],
    responded: Any,
    terms: dict[str, ArmTerms],
    *,
    expected_uplift: Any = None,
    reason: Sequence[str | None] | None = None,
    level: float = 0.9,
    customer_value: Any = None,
) -> list[ArmReadout]:
    """A targeted plan's wave read per arm **on its segment**: the contacts given arm ``a``
    against the control customers the plan gave ``a`` (``read_wave`` on those rows, with its
    intervals, actual vs expected and declines by reason against that segment's controls).

    The plan picks whom each arm goes to, so customers of different arms differ before any
    contact (an up-sell arm's segment buys more anyway than a retention arm's): against the
    whole control group an arm's read would carry that difference as if it were the arm's
    effect. The control group is drawn after the plan, at random, so within a segment contact
    against control is randomised. ``given``: the arm each customer got (None: control);
    ``planned``: the plan's arm per customer (contacts and controls alike). An arm of ``terms``
    whose segment has no contact or no control customer is read on the rows it has (no
    contact: counts of zero, as ``read_wave`` gives; no control: no interval), so every arm
    keeps a row; ``expected_uplift``, ``reason`` and ``customer_value`` as in ``read_wave``."""
    g = np.array([a if a is not None else "" for a in given], dtype=object)
    p = np.array([a if a is not None else "" for a in planned], dtype=object)
    y = np.asarray(responded, dtype=float)
    if not (g.shape == p.shape == y.shape):
        raise ValueError("given, planned and responded: one value per customer")
    contact = g != ""
    if (contact & (g != p)).any():
        raise ValueError("given: a contact got an arm other than the plan's")

    def part(x: Any, rows: np.ndarray) -> Any:
        return None if x is None else np.asarray(x, dtype=float)[rows]

    out = []
    for name, t in terms.items():
        rows = p == name
        labels = [name if c else None for c in contact[rows]]
        out.extend(
            read_wave(
                labels,
                y[rows],
                {name: t},
                expected_uplift=part(expected_uplift, rows),
                reason=None if reason is None else list(np.asarray(reason, dtype=object)[rows]),
                level=level,
                customer_value=part(customer_value, rows),
            )
        )
    return out


def _covariate(covariate: Any, n: int) -> np.ndarray | None:
    """The covariate as floats, one finite value per customer (None stays None)."""
    if covariate is None:
        return None
    x = np.asarray(covariate, dtype=float)
    if x.shape != (n,) or not np.isfinite(x).all():
        raise ValueError("covariate: one finite value per customer")
    return x


def _adjusted_mean(y: np.ndarray, x: np.ndarray, centre: float) -> tuple[float, float]:
    """One group's mean of ``y`` at the covariate's value ``centre`` (its OLS line on ``x``:
    ``mean(y) - slope (mean(x) - centre)``) and the variance of that mean, the residuals'
    variance over ``n`` (one degree of freedom for the slope: ``SSR / (n - 1) / n``; without a
    slope, a constant ``x`` or fewer than three rows, the plain mean and ``var(y) / n``)."""
    n = y.size
    dx = x - x.mean()
    sxx = float(np.sum(dx**2))
    if n < 3 or sxx <= 1e-12 * n:
        return float(y.mean()), float(y.var()) / n
    slope = float(np.sum(dx * (y - y.mean())) / sxx)
    resid = y - y.mean() - slope * dx
    return float(y.mean() - slope * (x.mean() - centre)), float(np.sum(resid**2)) / (n - 1) / n


def read_adjusted(
    name: str,
    contact: Any,
    responded: Any,
    covariate: Any,
    terms: ArmTerms,
    *,
    level: float = 0.9,
) -> ArmReadout:
    """Contacts (``contact`` True) against controls (False) of one randomised comparison, each
    group's response **regression-adjusted** by a pre-treatment ``covariate`` (Lin 2013,
    *Agnostic notes on regression adjustments to experimental data*; "CUPED" in online
    experiments): each group's mean is taken on its own least-squares line at the covariate's
    mean over both groups, ``m_g = mean_g(y) - slope_g (mean_g(x) - mean(x))``. Assignment is
    random, so the covariate's group means differ only by chance and the adjusted difference
    estimates the same effect as the plain one; the part of the response the covariate
    predicts no longer adds noise, so the variance is the residuals'
    (``(v - acc)^2 var_t(e) / n_t + v^2 var_c(e) / n_c``, ``var(e) = SSR / (n - 1)``) instead
    of the responses' — smaller by as much as the covariate explains. The covariate must not
    depend on these responses (e.g. the model's predicted response without contact, fitted
    before this wave). The incremental response and the profit per contact are adjusted, with
    normal intervals; the counts and the response rates are as observed. A constant covariate
    gives the plain read's profit per contact and standard error (``read_wave``). Terms with a
    value per customer (``value`` None) are not supported."""
    if terms.value is None:
        raise ValueError(f"arm {name!r}: adjusted reads need a value per response")
    c = np.asarray(contact, dtype=bool)
    y = np.asarray(responded, dtype=float)
    x = _covariate(covariate, c.size)
    assert x is not None
    if y.shape != c.shape or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("responded: 0/1 per customer, aligned with contact")
    n_t, n_c = int(c.sum()), int((~c).sum())
    if not n_t or not n_c:
        raise ValueError("an adjusted read needs contacts and controls")
    centre = float(x.mean())
    m_t, v_t = _adjusted_mean(y[c], x[c], centre)
    m_c, v_c = _adjusted_mean(y[~c], x[~c], centre)
    value, acc = terms.value, terms.cost_per_acceptance
    uplift = m_t - m_c
    u_se = float(np.sqrt(v_t + v_c))
    profit = (value - acc) * m_t - value * m_c - terms.cost_per_contact
    se = float(np.sqrt((value - acc) ** 2 * v_t + value**2 * v_c))
    x_t, x_c = int(y[c].sum()), int(y[~c].sum())
    z_two, z_one = float(_z(0.5 + level / 2)), float(_z(level))
    return ArmReadout(
        arm=name,
        contacts=n_t,
        responders=x_t,
        control=n_c,
        control_responders=x_c,
        response_rate=x_t / n_t,
        control_rate=x_c / n_c,
        incremental_response=uplift,
        incremental_response_ci=(uplift - z_two * u_se, uplift + z_two * u_se),
        profit_per_contact=profit,
        profit_per_contact_ci=(profit - z_two * se, profit + z_two * se),
        profit_lower_one_sided=profit - z_one * se,
        profit_se=se,
        incremental_profit=profit * n_t,
        expected_incremental_response=None,
        contradicts_model=None,
        declined={},
        level=level,
    )


def _strata(stratum: Any, n: int) -> np.ndarray:
    """Per customer a stratum index (0 everywhere when ``stratum`` is None)."""
    if stratum is None:
        return np.zeros(n, dtype=np.int64)
    keys = np.asarray(stratum)
    if keys.shape != (n,):
        raise ValueError("stratum: one value per customer")
    return np.unique(keys, return_inverse=True)[1].reshape(n)


def read_strata(
    name: str,
    contact: Any,
    responded: Any,
    stratum: Any,
    terms: ArmTerms,
    *,
    level: float = 0.9,
    covariate: Any = None,
) -> ArmReadout | None:
    """Contacts (``contact`` True) against controls (False) of one population whose contacts
    were drawn with a different probability in each ``stratum`` and whose controls with the
    same one everywhere (post-stratification).

    Within a stratum the contacts and controls are a randomised comparison (``read_wave``);
    the strata are combined with weights ``W_s`` = the stratum's share of the controls, which
    are a uniform sample of the population, so the read estimates the population's effect
    whatever the contacts' shares. A stratum without a contact or without a control cannot be
    read: it is left out and the weights renormalised (the read is then of the strata read).
    Profit per contact and incremental response are ``sum W_s x_s``; the variance is
    ``sum W_s^2 se_s^2`` (the strata are independent) plus that of the weights themselves,
    a multinomial sample of ``n_c`` controls: ``(sum W_s x_s^2 - (sum W_s x_s)^2) / n_c``.
    The response rates are ``sum W_s r_s`` (the control's is then its plain rate); the counts
    are the strata's sums. One stratum gives exactly ``read_wave``'s read-out. None when no
    stratum has both a contact and a control. ``covariate``: each stratum's read is
    regression-adjusted by it (``read_adjusted``) instead of ``read_wave``'s plain one."""
    c = np.asarray(contact, dtype=bool)
    y = np.asarray(responded, dtype=float)
    s = np.asarray(stratum)
    x = _covariate(covariate, c.size)
    reads, n_ctrl = [], []
    for k in np.unique(s):
        rows = s == k
        if not c[rows].any() or c[rows].all():
            continue
        if x is None:
            labels = [name if v else None for v in c[rows]]
            reads.append(read_wave(labels, y[rows], {name: terms}, level=level)[0])
        else:
            reads.append(read_adjusted(name, c[rows], y[rows], x[rows], terms, level=level))
        n_ctrl.append(int((~c[rows]).sum()))
    if not reads:
        return None
    if len(reads) == 1:
        return reads[0]
    w = np.array(n_ctrl, dtype=float) / sum(n_ctrl)
    n_c = sum(n_ctrl)

    def combine(x: list[float], var: list[float]) -> tuple[float, float]:
        xs, vs = np.asarray(x), np.asarray(var)
        mean = float(np.sum(w * xs))
        between = float(np.sum(w * xs**2) - mean**2) / n_c
        return mean, float(np.sqrt(np.sum(w**2 * vs) + max(between, 0.0)))

    profit, se = combine([r.profit_per_contact for r in reads], [r.profit_se**2 for r in reads])
    uplift, u_se = combine(
        [r.incremental_response for r in reads],
        [
            r.response_rate * (1 - r.response_rate) / r.contacts
            + r.control_rate * (1 - r.control_rate) / r.control
            for r in reads
        ],
    )
    assert n_c == sum(r.control for r in reads)  # each stratum's controls, counted once
    return combined_readout(
        name,
        reads,
        float(np.sum(w * [r.response_rate for r in reads])),
        float(np.sum(w * [r.control_rate for r in reads])),
        (uplift, u_se),
        (profit, se),
        level,
    )


def read_population(
    arm: str,
    given: Sequence[str | None],
    population: Any,
    control: Any,
    responded: Any,
    terms: ArmTerms,
    *,
    key: str | None = None,
    level: float = 0.9,
    stratum: Any = None,
    covariate: Any = None,
) -> ArmReadout | None:
    """``arm`` read **on a population**: the customers of ``population`` (a mask) who got it
    against the control customers (``control``: the randomised hold-out) of the same
    population. Customers of the population who got something else, or nothing without being
    in the control group (held), do not enter. ``key`` names the read-out (default: the arm),
    so reads of one arm on different populations pool apart. ``stratum``: per customer, a key of
    how likely they were to be a contact (read per stratum and combined by the controls'
    shares: ``read_strata``; None: one stratum). ``covariate``: per customer a pre-treatment
    figure the read is regression-adjusted by (``read_adjusted``; None: the plain read). None
    when the population has no contact of the arm or no control customer."""
    g = np.array([a if a is not None else "" for a in given], dtype=object)
    pop = np.asarray(population, dtype=bool)
    ctrl = np.asarray(control, dtype=bool)
    y = np.asarray(responded, dtype=float)
    if not (g.shape == pop.shape == ctrl.shape == y.shape):
        raise ValueError("given, population, control and responded: one value per customer")
    s = _strata(stratum, g.size)
    x = _covariate(covariate, g.size)
    contacts, controls = pop & (g == arm) & ~ctrl, pop & ctrl
    if not contacts.any() or not controls.any():
        return None
    rows = contacts | controls
    return read_strata(
        key or arm,
        contacts[rows],
        y[rows],
        s[rows],
        terms,
        level=level,
        covariate=None if x is None else x[rows],
    )


NO_ARM = -1


def rollout_by_population(
    plan: Any,
    passed: Collection[int],
    *,
    read_on_everyone: Collection[int] = (),
    fallback: Any = None,
    fallback_passed: Collection[tuple[int, int]] = (),
) -> np.ndarray:
    """The arm each customer is rolled out (``NO_ARM``: held, not contacted), extending an arm
    **only to customers of a population it was read on** and passed:

    * ``plan``: per customer the plan's arm (``NO_ARM`` none); an arm of ``passed`` was read
      and passed on its segment (the customers the plan gives it): those customers get it;
    * ``fallback``: per customer the arm they would get when their plan arm did not pass (e.g.
      their best passed arm); they get it only when it was read on everyone and passed
      (``read_on_everyone``: an arm never tested before, whose test-cell share was random) or
      was read and passed on exactly those customers — ``(fallback arm, plan arm)`` in
      ``fallback_passed``: the customers whose plan arm is the second and fallback the first;
    * everyone else is held: a dropped arm's customers get another arm only once that arm has
      been read on them."""
    p = np.asarray(plan, dtype=np.int64)
    out = np.full(p.shape, NO_ARM, dtype=np.int64)
    own = np.isin(p, list(passed)) & (p != NO_ARM)
    out[own] = p[own]
    if fallback is None:
        return out
    f = np.asarray(fallback, dtype=np.int64)
    if f.shape != p.shape:
        raise ValueError("plan and fallback: one arm per customer")
    ok = np.isin(f, list(read_on_everyone)) & (f != NO_ARM)
    for arm, planned in fallback_passed:
        ok |= (f == arm) & (p == planned)
    take = ~own & ok & (f != NO_ARM)
    out[take] = f[take]
    return out
