"""Allocate at most one (offer, channel) per customer to maximise the campaign's objective.

Pure: frames and arrays in, a ``Plan`` out. The steps:

1. **Duplicates**: the merge map (customer → canonical customer) collapses records to persons; the
   canonical record (or the first record of the person) represents them, the others are
   ``duplicate_record``. A person's consent per channel is granted only if every record grants it;
   their past contacts are summed and their last negative response is the latest of any record.
2. **Rules**, per person, in this order (a customer is counted under the first rule it fails):
   ``no_consent`` (no channel), ``not_eligible`` (no offer), ``contact_policy`` (fatigue or quiet
   period), ``not_profitable`` (no allowed (offer, channel) with a positive objective).
3. **Optimisation** over the allowed, profitable options: at most one per person, and at most one
   per household when the policy says so (the household is then the unit of choice: the
   customers frame's ``household_id`` — the served base's — where given, else the households
   map, else the person alone); total and per-offer budgets in contacts and money (expected
   spend), channel capacities. Two methods:

   * ``exact``: the mixed-integer programme solved by HiGHS (``scipy.optimize.milp``); its dual
     bound is the bound reported.
   * ``lagrangian``: the budgets and capacities are the only constraints coupling units, so
     relaxing them with multipliers ``λ ≥ 0`` leaves a separable problem (each unit takes its
     best option if its reduced value ``value - λ·usage`` is positive). The dual function
     ``L(λ) = Σ_u max(0, max_o value_o - λ·usage_o) + λ·b`` is an upper bound of the LP
     relaxation, hence of the optimum, for **every** ``λ ≥ 0``, and its minimum equals the LP
     bound. It is minimised by a box-step cutting-plane method (Kelley's cuts, each master a
     small LP solved by HiGHS through ``scipy.optimize.linprog``). The units' choices at the best
     ``λ`` are then repaired greedily to feasibility (in order of reduced value, each accepted
     only if every budget and capacity still holds) and the leftover budget is filled the same
     way. The gap reported is ``(L(λ) - objective) / L(λ)`` measured in the same run.

   ``auto`` takes ``exact`` up to ``EXACT_MAX_OPTIONS`` options, ``lagrangian`` above.
4. **Groups**: every selected person gets a group from hash(campaign id, person id): control
   (selected but held out, not contacted), test cell, roll-out. Budgets and capacities are
   checked over all the selected, control included, so what is contacted always fits (and spends
   about ``1 - control_fraction`` of a binding budget).

Unselected persons who passed the rules are ``household`` (another member of their household was
chosen) or ``budget_or_capacity``. Selected + every exclusion reason = the base (records).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.decisions.campaign import Campaign, Condition
from models.decisions.groups import assign_groups
from models.decisions.sizing import contacts_for_power, read_variances
from models.decisions.value import Estimate, contact_values

EXCLUSION_REASONS = (
    "duplicate_record",
    "no_consent",
    "not_eligible",
    "contact_policy",
    "not_profitable",
    "household",
    "budget_or_capacity",
)
EXACT_MAX_OPTIONS = 5_000
_EPS = 1e-9

Method = Literal["auto", "exact", "lagrangian", "greedy"]


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ContactHistory:
    """Per customer record: contacts in the policy window, days since the last negative response.

    ``days_since_negative`` is NaN where there was none. Build it from ``campaign_history`` with
    ``contact_history``.
    """

    contacts_in_window: np.ndarray
    days_since_negative: np.ndarray
    # the reason of the last negative response (lower case, stripped), "" where there was none;
    # the planner offers it to eligibility rules as the column ``last_negative_reason``
    last_negative_reason: np.ndarray | None = None


@dataclass(frozen=True)
class HouseholdMaps:
    """customer → household id, and customer → canonical customer (the merge map)."""

    household: Mapping[str, str] = field(default_factory=dict)
    canonical: Mapping[str, str] = field(default_factory=dict)


LAST_NEGATIVE_REASON = "last_negative_reason"
#: A customers column naming each record's household (``serving.base.CustomerBase.household_id``);
#: where given, it is the household the policy uses, before ``HouseholdMaps.household``.
HOUSEHOLD_ID = "household_id"


def household_maps_from(
    merge: pd.DataFrame | None, homes: pd.DataFrame | None, known: set[str]
) -> HouseholdMaps:
    """The maps of the customers in ``known`` from a merge map (customer_id, master_id) and a
    households table (customer_id, household_id), as ``patron customers link`` writes them; a
    merge into a customer outside ``known`` is ignored."""
    canonical: dict[str, str] = {}
    household: dict[str, str] = {}
    if merge is not None:
        pairs = zip(merge["customer_id"].astype(str), merge["master_id"].astype(str), strict=True)
        canonical = {cid: m for cid, m in pairs if cid in known and m in known}
    if homes is not None:
        rows = zip(homes["customer_id"].astype(str), homes["household_id"].astype(str), strict=True)
        household = {cid: hh for cid, hh in rows if cid in known}
    return HouseholdMaps(household=household, canonical=canonical)


def contact_history(
    campaign_history: pd.DataFrame,
    customer_ids: pd.Series | list[str],
    as_of: pd.Timestamp,
    window_days: int,
) -> ContactHistory:
    """Count each customer's contacts in ``(as_of - window_days, as_of]`` and the days since their
    last negative response (a treated contact not responded to, with a reason given), from
    ``campaign_history`` rows with ``ts <= as_of``. Control rows are not contacts."""
    ids = pd.Index(pd.Series(list(customer_ids), dtype=object).astype(str))
    h = campaign_history[pd.to_datetime(campaign_history["ts"]) <= as_of]
    ts = pd.to_datetime(h["ts"])
    treated = h["group"].astype(str).str.lower() != "control"
    cid = h["customer_id"].astype(str)
    recent = treated & (ts > as_of - pd.Timedelta(days=window_days))
    counts = recent.groupby(cid).sum().reindex(ids, fill_value=0).to_numpy(dtype=np.int64)
    negative = treated & ~h["responded"].astype(bool)
    if "reason" in h.columns:
        negative &= h["reason"].notna() & (h["reason"].astype(str).str.strip() != "")
    else:
        negative &= False
    last_negative = ts[negative].groupby(cid[negative]).max().reindex(ids)
    days = (as_of - last_negative).dt.total_seconds().to_numpy(dtype=float) / 86400.0
    reason = pd.Series("", index=ids, dtype=object)
    if negative.any():
        neg = pd.DataFrame(
            {
                "cid": cid[negative],
                "ts": ts[negative],
                "reason": h.loc[negative, "reason"].astype(str).str.strip().str.lower(),
            }
        ).sort_values(["cid", "ts"], kind="stable")
        latest = neg.groupby("cid")["reason"].last()
        reason = latest.reindex(ids).fillna("").astype(object)
    return ContactHistory(
        contacts_in_window=counts,
        days_since_negative=days,
        last_negative_reason=reason.to_numpy(dtype=object),
    )


# --------------------------------------------------------------------------- output


@dataclass(frozen=True)
class Plan:
    """The allocation: one row per customer record, totals, exclusions, solver figures.

    ``customers`` columns: customer_id, person_id, household_id, selected, group, offer, channel,
    the figure (``expected_incremental_profit`` + ``expected_incremental_responses`` on an
    uplift basis; ``non_causal_ranking_value`` otherwise), expected_spend, ``expected_response``
    (P(accept | contacted) of the chosen arm, when the estimate gives it), ``customer_value``
    (what a response to a customer-valued offer is worth, for the selected; only when the
    campaign has such an offer), basis, exclusion_reason ("" when selected).
    """

    customers: pd.DataFrame
    by_offer: pd.DataFrame
    by_channel: pd.DataFrame
    exclusions: dict[str, int]
    summary: dict[str, Any]


# --------------------------------------------------------------------------- rules


def _is_true(values: pd.Series) -> np.ndarray:
    """Only an explicit yes is consent: True, 1, "true"/"yes"/"y"/"1" (any case); as
    ``serving.targeting``; anything else, a missing value included, is no."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.fillna(False).to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype=float, na_value=np.nan) == 1.0
    return values.map(_yes).to_numpy(dtype=bool)


def _yes(value: Any) -> bool:
    if value is None or value is pd.NA:
        return False
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value) == 1
    if isinstance(value, float | np.floating):
        return bool(value == 1.0)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "y", "1")
    return False


def _condition_holds(customers: pd.DataFrame, cond: Condition) -> np.ndarray:
    if cond.column not in customers.columns:
        raise ValueError(f"eligibility: the customers table has no column {cond.column!r}")
    col = customers[cond.column]
    if cond.op in ("in", "not_in"):
        isin = col.isin(list(cond.value)).to_numpy(dtype=bool)
        return isin if cond.op == "in" else ~isin & col.notna().to_numpy(dtype=bool)
    ops = {
        "eq": col.eq,
        "ne": col.ne,
        "lt": col.lt,
        "le": col.le,
        "gt": col.gt,
        "ge": col.ge,
    }
    # a missing value satisfies no condition (not even `ne`): unknown is not eligible
    return ops[cond.op](cond.value).fillna(False).to_numpy(dtype=bool) & col.notna().to_numpy(
        dtype=bool
    )


def eligibility(campaign: Campaign, customers: pd.DataFrame) -> np.ndarray:
    """(records, offers) True where every eligibility condition and the segment list hold."""
    out = np.ones((len(customers), len(campaign.offers)), dtype=bool)
    for j, offer in enumerate(campaign.offers):
        for cond in offer.eligibility:
            out[:, j] &= _condition_holds(customers, cond)
        if offer.segments is not None:
            if offer.segment_column not in customers.columns:
                raise ValueError(
                    f"offer {offer.id!r}: the customers table has no column "
                    f"{offer.segment_column!r}"
                )
            out[:, j] &= customers[offer.segment_column].isin(offer.segments).to_numpy(dtype=bool)
    return out


def consent_matrix(campaign: Campaign, customers: pd.DataFrame) -> np.ndarray:
    """(records, channels) True where the record's consent column says yes; missing = no."""
    out = np.zeros((len(customers), len(campaign.channels)), dtype=bool)
    for c, channel in enumerate(campaign.channels):
        if channel.consent in customers.columns:
            out[:, c] = _is_true(customers[channel.consent])
    return out


# --------------------------------------------------------------------------- constraints


@dataclass(frozen=True)
class _Constraints:
    """Rows k of ``usage_k = P[k, arm] + Q[k, arm] x spend <= b[k]``."""

    names: list[str]
    P: np.ndarray
    Q: np.ndarray
    b: np.ndarray

    def usage(self, arm: np.ndarray, spend: np.ndarray) -> np.ndarray:
        """(K, m) usage of each option."""
        return self.P[:, arm] + self.Q[:, arm] * spend[None, :]

    def total(self, arm: np.ndarray, spend: np.ndarray, n_arms: int) -> np.ndarray:
        """(K,) usage of a set of options."""
        cnt = np.bincount(arm, minlength=n_arms).astype(float)
        sp = np.bincount(arm, weights=spend, minlength=n_arms)
        return np.asarray(self.P @ cnt + self.Q @ sp)


def _constraints(campaign: Campaign) -> _Constraints:
    n_off, n_ch = len(campaign.offers), len(campaign.channels)
    n_arms = n_off * n_ch
    offer_of = np.repeat(np.arange(n_off), n_ch)
    channel_of = np.tile(np.arange(n_ch), n_off)
    names, P, Q, b = [], [], [], []

    def add(name: str, p: np.ndarray, q: np.ndarray, bound: float) -> None:
        names.append(name)
        P.append(p.astype(float))
        Q.append(q.astype(float))
        b.append(float(bound))

    ones, zeros = np.ones(n_arms), np.zeros(n_arms)
    if campaign.budget.contacts is not None:
        add("budget.contacts", ones, zeros, campaign.budget.contacts)
    if campaign.budget.money is not None:
        add("budget.money", zeros, ones, campaign.budget.money)
    for j, offer in enumerate(campaign.offers):
        mask = offer_of == j
        if offer.budget.contacts is not None:
            add(f"offers.{offer.id}.budget.contacts", mask, zeros, offer.budget.contacts)
        if offer.budget.money is not None:
            add(f"offers.{offer.id}.budget.money", zeros, mask, offer.budget.money)
    for c, channel in enumerate(campaign.channels):
        if channel.capacity is not None:
            add(f"channels.{channel.name}.capacity", channel_of == c, zeros, channel.capacity)
    if not names:
        return _Constraints([], np.zeros((0, n_arms)), np.zeros((0, n_arms)), np.zeros(0))
    return _Constraints(names, np.vstack(P), np.vstack(Q), np.asarray(b))


# --------------------------------------------------------------------------- solvers


@dataclass
class _Options:
    """The flat candidate options, sorted by unit."""

    unit: np.ndarray  # unit index per option (sorted)
    arm: np.ndarray  # offer * n_channels + channel
    value: np.ndarray  # objective coefficient (> 0)
    spend: np.ndarray  # expected money
    n_arms: int

    @property
    def starts(self) -> np.ndarray:
        u = self.unit
        return np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.zeros(0, int)


@dataclass(frozen=True)
class SolveResult:
    """Chosen option indices, objective, an upper bound, and how they were obtained."""

    chosen: np.ndarray
    objective: float
    bound: float
    method: str
    iterations: int
    seconds: float
    status: str

    @property
    def gap(self) -> float:
        """(bound - objective) / |bound| (0 when both are 0)."""
        if abs(self.bound) < _EPS:
            return 0.0
        return max(0.0, (self.bound - self.objective) / abs(self.bound))


def _best_per_unit(opts: _Options, reduced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max reduced value per unit, index of the first option reaching it)."""
    starts = opts.starts
    best = np.maximum.reduceat(reduced, starts)
    counts = np.diff(np.r_[starts, len(reduced)])
    hit = np.flatnonzero(reduced >= np.repeat(best, counts))
    first = hit[np.r_[True, opts.unit[hit][1:] != opts.unit[hit][:-1]]]
    return best, first


def solve_exact(
    opts: _Options,
    cons: _Constraints,
    time_limit: float = 60.0,
    relax: bool = False,
    rel_gap: float = 1e-7,
) -> SolveResult:
    """The MIP (or, with ``relax``, its LP relaxation) solved by HiGHS."""
    from scipy import sparse  # imported where solved: the service starts without them
    from scipy.optimize import LinearConstraint, linprog, milp

    t0 = time.perf_counter()
    m = len(opts.value)
    if m == 0:
        return SolveResult(np.zeros(0, int), 0.0, 0.0, "exact", 0, 0.0, "empty")
    n_units = int(opts.unit.max()) + 1
    a_unit = sparse.csr_array((np.ones(m), (opts.unit, np.arange(m))), shape=(n_units, m))
    parts = [a_unit]
    ub = [np.ones(n_units)]
    if cons.names:
        parts.append(sparse.csr_array(cons.usage(opts.arm, opts.spend)))
        ub.append(cons.b)
    a = sparse.vstack(parts).tocsr()
    b_ub = np.concatenate(ub)
    if relax:
        res = linprog(-opts.value, A_ub=a, b_ub=b_ub, bounds=(0, 1), method="highs")
        bound = -float(res.fun)
        return SolveResult(
            np.zeros(0, int),
            bound,
            bound,
            "lp",
            int(res.nit),
            time.perf_counter() - t0,
            str(res.message),
        )
    res = milp(
        -opts.value,
        constraints=LinearConstraint(a, -np.inf, b_ub),
        integrality=np.ones(m),
        bounds=(0, 1),
        options={
            "time_limit": time_limit,
            "mip_rel_gap": rel_gap,
            "disp": False,
            "presolve": False,
        },
    )
    if res.x is None:
        raise RuntimeError(f"HiGHS found no solution: {res.message}")
    chosen = np.flatnonzero(res.x > 0.5)
    objective = float(opts.value[chosen].sum())
    dual = getattr(res, "mip_dual_bound", None)
    bound = -float(dual) if dual is not None and np.isfinite(dual) else objective
    return SolveResult(
        chosen,
        objective,
        max(bound, objective),
        "exact",
        int(getattr(res, "mip_node_count", 0)),
        time.perf_counter() - t0,
        str(res.message),
    )


def _dual(
    opts: _Options, P: np.ndarray, Q: np.ndarray, b: np.ndarray, lam: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """L(λ), a subgradient, the reduced values and each positive unit's best option."""
    reduced = opts.value - (lam @ P)[opts.arm] - (lam @ Q)[opts.arm] * opts.spend
    best, first = _best_per_unit(opts, reduced)
    positive = best > 0
    chosen = first[positive]
    cnt = np.bincount(opts.arm[chosen], minlength=opts.n_arms).astype(float)
    sp = np.bincount(opts.arm[chosen], weights=opts.spend[chosen], minlength=opts.n_arms)
    usage = P @ cnt + Q @ sp
    return float(best[positive].sum() + lam @ b), b - usage, reduced, chosen


def solve_lagrangian(
    opts: _Options,
    cons: _Constraints,
    *,
    tol: float = 1e-6,
    max_iter: int = 150,
    time_limit: float = 600.0,
    polish_units: int = 500,
) -> SolveResult:
    """Lagrangian dual of the budgets by box-step cutting planes, then greedy repair and fill;
    with ``polish_units``, also a HiGHS MIP over the units nearest indifference (the rest fixed
    at their choice), kept when it beats the greedy repair."""
    from scipy.optimize import linprog  # imported where solved

    t0 = time.perf_counter()
    m, k = len(opts.value), len(cons.names)
    if m == 0:
        return SolveResult(np.zeros(0, int), 0.0, 0.0, "lagrangian", 0, 0.0, "empty")
    # scale each row so that its multiplier is in value units per typical option: divide it by
    # the mean usage of the options touching it (contacts: 1; money: the mean spend)
    per_arm = np.bincount(opts.arm, minlength=opts.n_arms).astype(float)
    n_touch = ((cons.P != 0) | (cons.Q != 0)) @ per_arm
    all_use = cons.total(opts.arm, opts.spend, opts.n_arms)
    scale = np.where((n_touch > 0) & (all_use > 0), all_use / np.maximum(n_touch, 1.0), 1.0)
    P, Q, b = cons.P / scale[:, None], cons.Q / scale[:, None], cons.b / scale

    lam = np.zeros(k)
    l_c, g_c, reduced, chosen = _dual(opts, P, Q, b, lam)
    it, status = 1, "no coupling constraints"
    if k:
        cuts_g, cuts_rhs = [g_c], [g_c @ lam - l_c]
        delta = float(max(opts.value.max(), _EPS))
        status = "iteration limit"
        while it < max_iter and time.perf_counter() - t0 < time_limit:
            lo = np.maximum(0.0, lam - delta)
            hi = lam + delta
            a_ub = np.hstack([np.vstack(cuts_g), -np.ones((len(cuts_g), 1))])
            res = linprog(
                np.r_[np.zeros(k), 1.0],
                A_ub=a_ub,
                b_ub=np.asarray(cuts_rhs),
                bounds=[*zip(lo, hi, strict=True), (None, None)],
                method="highs",
            )
            if res.x is None:
                status = f"master LP failed: {res.message}"
                break
            lam_n, theta = res.x[:k], float(res.x[k])
            predicted = l_c - theta
            if predicted <= tol * max(1.0, abs(l_c)):
                status = "converged"
                break
            l_n, g_n, red_n, ch_n = _dual(opts, P, Q, b, lam_n)
            it += 1
            cuts_g.append(g_n)
            cuts_rhs.append(g_n @ lam_n - l_n)
            if l_n <= l_c - 0.1 * predicted:  # a serious step
                on_edge = np.any(np.isclose(lam_n, hi) | (np.isclose(lam_n, lo) & (lo > 0)))
                if on_edge:
                    delta *= 2.0 if l_n <= l_c - 0.5 * predicted else 1.5
                lam, l_c, reduced, chosen = lam_n, l_n, red_n, ch_n
    repaired = _repair(opts, cons, reduced, chosen)
    if k and polish_units > 0:
        polished = _polish(opts, cons, reduced, polish_units, time_limit=10.0)
        if polished is not None and opts.value[polished].sum() > opts.value[repaired].sum():
            repaired, status = polished, status + ", polished"
    chosen = repaired
    objective = float(opts.value[chosen].sum())
    return SolveResult(
        chosen, objective, max(l_c, objective), "lagrangian", it, time.perf_counter() - t0, status
    )


def _polish(
    opts: _Options, cons: _Constraints, reduced: np.ndarray, n_free: int, time_limit: float
) -> np.ndarray | None:
    """Fix every unit whose choice at λ is clear (largest margin between its best and second-best
    reduced value, "none" counting as 0); solve the MIP over the ``n_free`` least clear units
    within what the fixed ones leave of each budget. None when the fixed ones alone overspend."""
    starts = opts.starts
    best, first = _best_per_unit(opts, reduced)
    masked = reduced.copy()
    masked[first] = -np.inf
    second = np.maximum(np.maximum.reduceat(masked, starts), 0.0)
    margin = np.where(best > 0, best - second, -best)
    n_units = len(starts)
    if n_units <= n_free:
        free = np.ones(n_units, dtype=bool)
    else:
        free = np.zeros(n_units, dtype=bool)
        free[np.argpartition(margin, n_free)[:n_free]] = True
    fixed = first[(best > 0) & ~free]
    remaining = cons.b - cons.total(opts.arm[fixed], opts.spend[fixed], opts.n_arms)
    if np.any(remaining < -_EPS):
        return None
    sub_idx = np.flatnonzero(free[opts.unit])
    sub = _Options(
        unit=pd.factorize(opts.unit[sub_idx])[0].astype(np.int64),
        arm=opts.arm[sub_idx],
        value=opts.value[sub_idx],
        spend=opts.spend[sub_idx],
        n_arms=opts.n_arms,
    )
    sub_cons = _Constraints(cons.names, cons.P, cons.Q, np.maximum(remaining, 0.0))
    try:
        res = solve_exact(sub, sub_cons, time_limit=time_limit, rel_gap=1e-3)
    except RuntimeError:
        return None
    return np.sort(np.concatenate([fixed, sub_idx[res.chosen]]))


def solve_greedy(opts: _Options, cons: _Constraints) -> SolveResult:
    """The naive reference: options by value, best first, each taken if its unit is free and it
    fits every budget; its bound is the units' best values summed (no budget)."""
    t0 = time.perf_counter()
    if len(opts.value) == 0:
        return SolveResult(np.zeros(0, int), 0.0, 0.0, "greedy", 0, 0.0, "empty")
    if cons.names:
        chosen = _repair(opts, cons, opts.value, np.zeros(0, dtype=np.int64))
    else:
        chosen = _best_per_unit(opts, opts.value)[1]
    best = np.maximum.reduceat(opts.value, opts.starts)
    return SolveResult(
        chosen,
        float(opts.value[chosen].sum()),
        float(best.sum()),
        "greedy",
        1,
        time.perf_counter() - t0,
        "done",
    )


def _repair(
    opts: _Options, cons: _Constraints, reduced: np.ndarray, chosen: np.ndarray
) -> np.ndarray:
    """Make the units' choices feasible, then fill the leftover budget; greedy by reduced value."""
    if not cons.names:
        return chosen
    b = cons.b
    n_units = int(opts.unit.max()) + 1
    order = chosen[np.argsort(-reduced[chosen], kind="stable")]
    use = cons.usage(opts.arm[order], opts.spend[order])
    cum = np.cumsum(use, axis=1)
    ok = np.all(cum <= b[:, None] + _EPS, axis=0)
    first_bad = int(np.argmin(ok)) if not ok.all() else len(order)
    accepted = [order[:first_bad]]
    remaining = b - (cum[:, first_bad - 1] if first_bad > 0 else 0.0)
    assigned = np.zeros(n_units, dtype=bool)
    assigned[opts.unit[order[:first_bad]]] = True
    # fill: every option of an unassigned unit, best reduced value first
    rest = np.flatnonzero(~assigned[opts.unit])
    rest = rest[np.argsort(-reduced[rest], kind="stable")]
    extra: list[int] = []
    chunk = 50_000
    every_contact = np.all(cons.P > 0, axis=1)
    for start in range(0, len(rest), chunk):
        idx = rest[start : start + chunk]
        u = cons.usage(opts.arm[idx], opts.spend[idx])
        fits = np.all(u <= remaining[:, None] + _EPS, axis=0) & ~assigned[opts.unit[idx]]
        for j in np.flatnonzero(fits):
            unit = opts.unit[idx[j]]
            if assigned[unit]:
                continue
            col = u[:, j]
            if np.all(col <= remaining + _EPS):
                remaining = remaining - col
                assigned[unit] = True
                extra.append(int(idx[j]))
        if np.any(every_contact & (remaining < 1.0 - _EPS)):
            break  # a contact row every option uses is exhausted
    return np.sort(np.concatenate([*accepted, np.asarray(extra, dtype=np.int64)]))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class AllocationProblem:
    """The rules applied and the candidate options built: what every solver works on."""

    campaign: Campaign
    ids: np.ndarray
    person_codes: np.ndarray
    person_ids: np.ndarray
    rep: np.ndarray
    is_rep: np.ndarray
    household: np.ndarray
    reason_p: np.ndarray
    unit_of_person: np.ndarray
    person_idx: np.ndarray
    arm: np.ndarray
    profit: np.ndarray
    responses: np.ndarray
    spend: np.ndarray
    basis: str
    incremental: bool
    options: _Options
    constraints: _Constraints
    #: per person the value of a response to a customer-valued offer (``value_source:
    #: customer_value``); None when the campaign has none
    customer_value: np.ndarray | None = None
    #: per (person, arm) P(accept | contacted), where the estimate gives it
    accept: np.ndarray | None = None


def allocation_problem(
    campaign: Campaign,
    customers: pd.DataFrame,
    estimate: Estimate,
    *,
    customer_value: np.ndarray | None = None,
    history: ContactHistory | None = None,
    households: HouseholdMaps | None = None,
) -> AllocationProblem:
    """Collapse duplicates, apply consent, eligibility and the contact policy, value every
    allowed contact and build the options of each unit (household or person)."""
    n = len(customers)
    ids = customers["customer_id"].astype(str).to_numpy(dtype=object)
    if len(pd.unique(ids)) != n:
        raise ValueError("customers: one row per customer_id")
    maps = households or HouseholdMaps()
    n_off, n_ch = len(campaign.offers), len(campaign.channels)

    # 1. persons: canonical id per record; the representative is the canonical record if present
    canonical = pd.Series(ids).map(lambda c: str(maps.canonical.get(c, c))).to_numpy(dtype=object)
    person_codes, person_ids = pd.factorize(canonical)
    rep = np.full(len(person_ids), -1, dtype=np.int64)
    is_self = canonical == ids
    rep[person_codes[is_self]] = np.flatnonzero(is_self)
    missing = rep < 0
    if missing.any():
        first_rec = pd.Series(np.arange(n)).groupby(person_codes).min().to_numpy()
        rep[missing] = first_rec[missing]
    n_persons = len(person_ids)
    is_rep = np.zeros(n, dtype=bool)
    is_rep[rep] = True

    if (
        history is not None
        and history.last_negative_reason is not None
        and LAST_NEGATIVE_REASON not in customers.columns
    ):
        customers = customers.assign(**{LAST_NEGATIVE_REASON: history.last_negative_reason})
    consent_rec = consent_matrix(campaign, customers)
    consent = np.ones((n_persons, n_ch), dtype=bool)
    np.logical_and.at(consent, person_codes, consent_rec)
    elig = eligibility(campaign, customers)[rep]

    policy_ok = np.ones(n_persons, dtype=bool)
    if history is not None:
        contacts = np.bincount(
            person_codes,
            weights=np.asarray(history.contacts_in_window, dtype=float),
            minlength=n_persons,
        )
        days = pd.Series(np.asarray(history.days_since_negative, dtype=float))
        days_p = days.groupby(person_codes).min().reindex(range(n_persons)).to_numpy()
        pol = campaign.contact_policy
        if pol.max_contacts is not None:
            policy_ok &= contacts + 1 <= pol.max_contacts
        quiet = np.full(n_persons, np.nan)
        if pol.quiet_days_after_negative is not None:
            quiet[:] = pol.quiet_days_after_negative
        if pol.quiet_days_by_reason and history.last_negative_reason is not None:
            # the person's last negative response: the record with the fewest days since one
            frame = pd.DataFrame(
                {
                    "p": person_codes,
                    "days": days.to_numpy(),
                    "reason": np.asarray(history.last_negative_reason, dtype=object),
                }
            ).sort_values(["p", "days"], kind="stable", na_position="last")
            last = frame.groupby("p")["reason"].first().reindex(range(n_persons)).fillna("")
            by_reason = {k.strip().lower(): v for k, v in pol.quiet_days_by_reason.items()}
            override = last.map(by_reason).to_numpy(dtype=float)
            quiet = np.where(np.isnan(override), quiet, override)
        policy_ok &= ~(days_p < np.nan_to_num(quiet, nan=-np.inf))

    hh_map: Mapping[str, str] = maps.household
    if HOUSEHOLD_ID in customers.columns:  # the served base's household ids come first
        given = customers[HOUSEHOLD_ID].to_numpy(dtype=object)
        known = {c: str(h) for c, h in zip(ids, given, strict=True) if not pd.isna(h)}
        hh_map = {**hh_map, **known}
    household = np.array(
        [
            str(hh_map.get(str(pid), hh_map.get(str(ids[r]), f"person:{pid}")))
            for pid, r in zip(person_ids, rep, strict=True)
        ],
        dtype=object,
    )

    # 2. values and rules
    vals = contact_values(campaign, estimate, customer_value)
    if vals.objective.shape[0] != n:
        raise ValueError(f"the estimate has {vals.objective.shape[0]} customers, the table {n}")
    objective = vals.objective[rep]
    allowed = consent[:, None, :] & elig[:, :, None] & policy_ok[:, None, None]
    candidate = allowed & (objective > 0)
    reason_p = np.full(n_persons, "", dtype=object)
    for name, failed in (
        ("no_consent", ~consent.any(axis=1)),
        ("not_eligible", ~elig.any(axis=1)),
        ("contact_policy", ~policy_ok),
        ("not_profitable", ~candidate.reshape(n_persons, n_off * n_ch).any(axis=1)),
    ):
        reason_p[(reason_p == "") & failed] = name

    # 3. options, one unit per household (or per person)
    if campaign.household.one_contact_per_household:
        unit_of_person = pd.factorize(household)[0]
    else:
        unit_of_person = np.arange(n_persons)
    person_idx, arm = np.nonzero(candidate.reshape(n_persons, n_off * n_ch))
    unit = unit_of_person[person_idx]
    order = np.argsort(unit, kind="stable")
    person_idx, arm, unit = person_idx[order], arm[order], unit[order]
    unit = pd.factorize(unit)[0] if len(unit) else unit  # dense codes, still sorted
    flat_obj = objective.reshape(n_persons, n_off * n_ch)
    flat_spend = vals.spend[rep].reshape(n_persons, n_off * n_ch)
    opts = _Options(
        unit=unit.astype(np.int64),
        arm=arm.astype(np.int64),
        value=flat_obj[person_idx, arm].astype(float),
        spend=flat_spend[person_idx, arm].astype(float),
        n_arms=n_off * n_ch,
    )
    return AllocationProblem(
        campaign=campaign,
        ids=ids,
        person_codes=person_codes,
        person_ids=np.asarray(person_ids, dtype=object),
        rep=rep,
        is_rep=is_rep,
        household=household,
        reason_p=reason_p,
        unit_of_person=np.asarray(unit_of_person),
        person_idx=person_idx,
        arm=arm,
        profit=vals.profit[rep].reshape(n_persons, n_off * n_ch),
        responses=vals.responses[rep].reshape(n_persons, n_off * n_ch),
        spend=flat_spend,
        basis=vals.basis,
        incremental=vals.incremental,
        options=opts,
        constraints=_constraints(campaign),
        customer_value=(
            np.asarray(customer_value, dtype=float)[rep]
            if customer_value is not None
            and any(o.value_source == "customer_value" for o in campaign.offers)
            else None
        ),
        accept=None if vals.accept is None else vals.accept[rep].reshape(n_persons, n_off * n_ch),
    )


def solve(
    problem: AllocationProblem, method: Method = "auto", time_limit: float = 600.0
) -> SolveResult:
    """Solve an allocation problem with the method asked (``auto``: exact when small)."""
    opts, cons = problem.options, problem.constraints
    if method == "greedy":
        return solve_greedy(opts, cons)
    if method == "auto":
        method = "exact" if len(opts.value) <= EXACT_MAX_OPTIONS else "lagrangian"
    if method == "exact":
        return solve_exact(opts, cons, time_limit=time_limit)
    return solve_lagrangian(opts, cons, time_limit=time_limit)


def plan_campaign(
    campaign: Campaign,
    customers: pd.DataFrame,
    estimate: Estimate,
    *,
    customer_value: np.ndarray | None = None,
    history: ContactHistory | None = None,
    households: HouseholdMaps | None = None,
    method: Method = "auto",
    time_limit: float = 600.0,
) -> Plan:
    """Who to contact, with which offer, on which channel — and why the others are not."""
    problem = allocation_problem(
        campaign,
        customers,
        estimate,
        customer_value=customer_value,
        history=history,
        households=households,
    )
    return plan_from(problem, solve(problem, method, time_limit))


def sized_test_fractions(
    pb: AllocationProblem, sel_person: np.ndarray, sel_arm: np.ndarray
) -> np.ndarray | float:
    """Each selected person's test-cell fraction: the campaign's ``test_cell_fraction``, or with
    ``test_cell_sizing`` per arm the fraction of its selected persons whose test contacts give
    the gate the sizing's power if the plan's expected profit per contact on them is right
    (``sizing.contacts_for_power``, against the arm's share ``control_fraction`` of them), at
    least ``test_cell_fraction``, at most ``max_fraction``. An arm sized on a non-incremental
    score, a customer-valued offer or no P(accept | contacted) keeps ``test_cell_fraction``:
    its read's noise is not known before the responses."""
    campaign = pb.campaign
    base, sizing = campaign.test_cell_fraction, campaign.test_cell_sizing
    if sizing is None or not pb.incremental or pb.accept is None:
        return base
    n_ch = len(campaign.channels)
    c = campaign.control_fraction
    out = np.full(len(sel_person), base)
    for flat in np.unique(sel_arm):
        offer = campaign.offers[int(flat) // n_ch]
        if offer.value_source != "offer" or offer.value is None:
            continue
        on = sel_arm == flat
        who = sel_person[on]
        p = float(pb.accept[who, flat].mean())
        u = float(pb.responses[who, flat].mean())
        variances = read_variances(p, p - u, float(offer.value), float(offer.cost_per_acceptance))
        n = int(on.sum())
        need = contacts_for_power(
            float(pb.profit[who, flat].mean()),
            *variances,
            c * n,
            sizing.confidence,
            sizing.power,
        )
        share = sizing.max_fraction if need is None else min(need / n, sizing.max_fraction)
        out[on] = max(base, share)
    return out


def plan_from(problem: AllocationProblem, result: SolveResult) -> Plan:
    """The plan of a solved problem: per-record table, totals, exclusions, groups, summary."""
    pb = problem
    campaign = pb.campaign
    n_off, n_ch = len(campaign.offers), len(campaign.channels)
    ids, person_codes, person_ids = pb.ids, pb.person_codes, pb.person_ids
    n, n_persons = len(ids), len(person_ids)
    is_rep, household, unit_of_person = pb.is_rep, pb.household, pb.unit_of_person
    reason_p = pb.reason_p.copy()
    person_idx, arm, flat_spend = pb.person_idx, pb.arm, pb.spend
    opts, cons = pb.options, pb.constraints

    sel_person = person_idx[result.chosen]
    sel_arm = arm[result.chosen]
    selected_p = np.zeros(n_persons, dtype=bool)
    selected_p[sel_person] = True
    chosen_hh = np.zeros(unit_of_person.max() + 1 if n_persons else 0, dtype=bool)
    chosen_hh[unit_of_person[sel_person]] = True
    pending = (reason_p == "") & ~selected_p
    reason_p[pending & chosen_hh[unit_of_person]] = "household"
    reason_p[(reason_p == "") & ~selected_p] = "budget_or_capacity"

    # 4. the per-record table
    offer_p = np.full(n_persons, None, dtype=object)
    channel_p = np.full(n_persons, None, dtype=object)
    offer_p[sel_person] = np.asarray(campaign.offer_ids, dtype=object)[sel_arm // n_ch]
    channel_p[sel_person] = np.asarray(campaign.channel_names, dtype=object)[sel_arm % n_ch]
    profit_p = np.full(n_persons, np.nan)
    resp_p = np.full(n_persons, np.nan)
    spend_p = np.full(n_persons, np.nan)
    profit_p[sel_person] = pb.profit[sel_person, sel_arm]
    resp_p[sel_person] = pb.responses[sel_person, sel_arm]
    spend_p[sel_person] = flat_spend[sel_person, sel_arm]
    group_p = np.full(n_persons, None, dtype=object)
    group_p[sel_person] = assign_groups(
        person_ids[sel_person].astype(str),
        campaign.campaign_id,
        campaign.control_fraction,
        sized_test_fractions(pb, sel_person, sel_arm),
    )

    pc = person_codes
    rep_rec = is_rep
    selected = selected_p[pc] & rep_rec
    reason = np.where(rep_rec, reason_p[pc], "duplicate_record")
    reason = np.where(selected, "", reason)

    def on_rep(a: np.ndarray, fill: Any) -> np.ndarray:
        return np.where(rep_rec, a[pc], fill)

    frame: dict[str, Any] = {
        "customer_id": ids,
        "person_id": np.asarray(person_ids, dtype=object)[pc],
        "household_id": household[pc],
        "selected": selected,
        "group": on_rep(group_p, None),
        "offer": on_rep(offer_p, None),
        "channel": on_rep(channel_p, None),
    }
    if pb.incremental:
        frame["expected_incremental_profit"] = on_rep(profit_p, np.nan)
        frame["expected_incremental_responses"] = on_rep(resp_p, np.nan)
    else:
        frame["non_causal_ranking_value"] = on_rep(profit_p, np.nan)
    frame["expected_spend"] = on_rep(spend_p, np.nan)
    if pb.accept is not None:  # P(accept | contacted) of the chosen arm: sizes the test cell
        accept_p = np.full(n_persons, np.nan)
        accept_p[sel_person] = pb.accept[sel_person, sel_arm]
        frame["expected_response"] = on_rep(accept_p, np.nan)
    if pb.customer_value is not None:
        # what a response is worth for the customer-valued offers, kept for the selected (test
        # cell, control and roll-out alike): the read-out values their responses with it
        value_p = np.full(n_persons, np.nan)
        value_p[sel_person] = pb.customer_value[sel_person]
        frame["customer_value"] = on_rep(value_p, np.nan)
    frame["basis"] = pb.basis
    frame["exclusion_reason"] = reason
    table = pd.DataFrame(frame)

    figure = "expected_incremental_profit" if pb.incremental else "non_causal_ranking_value"
    exclusions = {r: int((reason == r).sum()) for r in EXCLUSION_REASONS}
    by_offer = _totals(table, "offer", campaign.offer_ids, figure)
    by_channel = _totals(table, "channel", campaign.channel_names, figure)
    sel = table[table["selected"]]
    contacted = sel[sel["group"] != "control"]
    cons_use = cons.total(sel_arm, spend_p[sel_person], n_off * n_ch)
    summary: dict[str, Any] = {
        "campaign_id": campaign.campaign_id,
        "objective_name": campaign.objective,
        "basis": pb.basis,
        "base": n,
        "selected": int(len(sel)),
        "contacted": int(len(contacted)),
        "control": int((sel["group"] == "control").sum()),
        "test_cell": int((sel["group"] == "test").sum()),
        "rollout": int((sel["group"] == "rollout").sum()),
        "excluded": exclusions,
        f"{figure}_selected": float(sel[figure].sum()),
        f"{figure}_contacted": float(contacted[figure].sum()),
        "expected_spend_selected": float(sel["expected_spend"].sum()),
        "expected_spend_contacted": float(contacted["expected_spend"].sum()),
        "solver": {
            "method": result.method,
            "objective": result.objective,
            "bound": result.bound,
            "gap": result.gap,
            "iterations": result.iterations,
            "seconds": result.seconds,
            "status": result.status,
            "options": int(len(opts.value)),
            "units": int(opts.unit.max() + 1) if len(opts.unit) else 0,
        },
        "constraints": {
            name: {"limit": float(cons.b[i]), "used_by_selected": float(cons_use[i])}
            for i, name in enumerate(cons.names)
        },
    }
    if not pb.incremental:
        summary["warning"] = (
            "ranked by a non-causal score: every figure is non-incremental (not an effect of "
            f"the contact); reason given: {campaign.ranking.reason}"
        )
    return Plan(table, by_offer, by_channel, exclusions, summary)


def _totals(table: pd.DataFrame, key: str, levels: list[str], figure: str) -> pd.DataFrame:
    sel = table[table["selected"]]
    contacted = sel[sel["group"] != "control"]
    out = pd.DataFrame(index=pd.Index(levels, name=key))
    out["selected"] = sel.groupby(key).size().reindex(levels, fill_value=0)
    out["contacted"] = contacted.groupby(key).size().reindex(levels, fill_value=0)
    out["control"] = out["selected"] - out["contacted"]
    out[f"{figure}_contacted"] = contacted.groupby(key)[figure].sum().reindex(levels).fillna(0.0)
    out["expected_spend_contacted"] = (
        contacted.groupby(key)["expected_spend"].sum().reindex(levels).fillna(0.0)
    )
    return out.reset_index()
