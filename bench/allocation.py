"""Allocation benchmark: offers x channels x customers under budgets, against the LP bound.

Run ``python bench/allocation.py`` (1 M customers x 5 offers x 4 channels; a few minutes on 2
cores) or ``--customers 200000``. A synthetic base (consent per channel, eligibility, households,
a merge map, past contacts, per-arm uplift that differs by customer, CLV margins) is planned with
the retention-style campaign below, whose money budget, contact budget, two per-offer budgets and
the phone capacity all bind. Measured in the same run:

1. ``lagrangian`` (the default method at this size): wall time of the whole plan (rules, values,
   solver, groups, table) and of the solver; objective, the Lagrangian bound ``L(λ)`` (an upper
   bound of the LP relaxation for any ``λ``), the gap between them;
2. ``greedy``: options by value, best first, each taken while every budget holds — the naive
   reference; its objective as a ratio of the Lagrangian one;
3. on a ``--ref-customers`` sub-base (same generator, first rows): the LP relaxation and the MIP
   solved by HiGHS (``scipy.optimize.linprog`` / ``milp``), against which the Lagrangian bound
   and objective are compared (ratios).

Prints a table and writes ``bench/results/allocation.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.decisions import (  # noqa: E402
    ContactHistory,
    HouseholdMaps,
    ResponseProbability,
    UpliftEstimate,
    allocation_problem,
    parse_campaign,
    plan_from,
    solve,
)
from models.decisions.allocate import solve_exact  # noqa: E402

CHANNELS = [  # name, cost per contact, consent rate, uplift multiplier
    ("email", 0.20, 0.75, 1.0),
    ("sms", 0.10, 0.45, 0.8),
    ("direct_mail", 1.50, 0.60, 1.4),
    ("phone", 4.00, 0.35, 2.5),
]
OFFERS = [  # id, kind, value (None = the customer's CLV margin), cost per acceptance, base uplift
    ("retention_discount", "retention", None, 15.0, 0.030),
    ("loyalty_upgrade", "up_sell", 60.0, 5.0, 0.020),
    ("accessory_bundle", "cross_sell", 25.0, 2.0, 0.040),
    ("service_plan", "cross_sell", 40.0, 3.0, 0.015),
    ("win_back_voucher", "win_back", 35.0, 8.0, 0.025),
]
STAGES = np.array(["new", "active", "lapsing", "lapsed", "loyal"], dtype=object)


def campaign_for(n: int) -> Any:
    """The benchmark campaign; budgets scale with the base so they bind at every size."""
    offers: list[dict[str, Any]] = []
    for oid, kind, value, cost, _ in OFFERS:
        o: dict[str, Any] = {"id": oid, "kind": kind, "cost_per_acceptance": cost}
        if value is None:
            o["value_source"] = "customer_value"
        else:
            o["value"] = value
        offers.append(o)
    offers[0]["eligibility"] = [{"column": "stage", "op": "in", "value": ["lapsing", "lapsed"]}]
    offers[0]["budget"] = {"money": round(0.25 * n, 2)}
    offers[1]["eligibility"] = [{"column": "stage", "op": "in", "value": ["active", "loyal"]}]
    offers[2]["budget"] = {"contacts": int(0.04 * n)}
    offers[4]["eligibility"] = [{"column": "stage", "op": "eq", "value": "lapsed"}]
    channels = [{"name": c, "cost_per_contact": cost} for c, cost, _, _ in CHANNELS]
    channels[3]["capacity"] = int(0.01 * n)
    return parse_campaign(
        {
            "campaign_id": "bench-allocation",
            "offers": offers,
            "channels": channels,
            "budget": {"contacts": int(0.15 * n), "money": round(0.3 * n, 2)},
            "contact_policy": {
                "max_contacts": 3,
                "window_days": 30,
                "quiet_days_after_negative": 60,
            },
        }
    )


def synthetic_base(n: int, seed: int, dense: bool = False) -> dict[str, Any]:
    """Customers, per-arm uplift and acceptance, CLV margins, past contacts, households.

    ``dense``: consent 95 % on every channel and 3x the effects, so that most of the
    customers x offers x channels arms are allowed and profitable (a harder solver case)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i:07d}" for i in range(n)], dtype=object)
    customers = pd.DataFrame({"customer_id": ids, "stage": rng.choice(STAGES, n)})
    for name, _, rate, _ in CHANNELS:
        customers[f"consent_{name}"] = rng.random(n) < (0.95 if dense else rate)
    # heterogeneous effects: a customer responsiveness x an offer fit x a channel effect
    responsive = rng.gamma(2.0, 0.5, n)
    fit = rng.gamma(2.0, 0.5, (n, len(OFFERS)))
    base = np.array([o[4] for o in OFFERS]) * (3.0 if dense else 1.0)
    mult = np.array([c[3] for c in CHANNELS])
    uplift = responsive[:, None, None] * fit[:, :, None] * base[None, :, None] * mult
    uplift = uplift * rng.lognormal(0.0, 0.2, uplift.shape) - 0.005
    uplift = np.clip(uplift, -0.05, 0.6)
    p_accept = np.clip(uplift + rng.uniform(0.02, 0.15, uplift.shape), 0.0, 1.0)
    clv = rng.lognormal(np.log(120.0), 0.8, n)
    history = ContactHistory(
        contacts_in_window=rng.poisson(0.6, n),
        days_since_negative=np.where(rng.random(n) < 0.1, rng.uniform(0, 365, n), np.nan),
    )
    # households of 1-3 people (mean ~1.6) and 2 % duplicate records
    hh = np.cumsum(rng.random(n) < 0.62)
    household = dict(zip(ids, (f"h{h}" for h in hh), strict=True))
    dup = np.flatnonzero(rng.random(n) < 0.02)
    dup = dup[dup > 0]
    canonical = {ids[i]: ids[i - 1] for i in dup if i - 1 not in set(dup)}
    return {
        "customers": customers,
        "estimate": UpliftEstimate(uplift, ResponseProbability(p_accept)),
        "customer_value": clv,
        "history": history,
        "households": HouseholdMaps(household=household, canonical=canonical),
    }


def _subset(data: dict[str, Any], m: int) -> dict[str, Any]:
    est = data["estimate"]
    assert est.p_accept is not None
    ids = set(data["customers"]["customer_id"].iloc[:m])
    hist = data["history"]
    maps = data["households"]
    return {
        "customers": data["customers"].iloc[:m].reset_index(drop=True),
        "estimate": UpliftEstimate(est.uplift[:m], ResponseProbability(est.p_accept.p[:m])),
        "customer_value": data["customer_value"][:m],
        "history": ContactHistory(hist.contacts_in_window[:m], hist.days_since_negative[:m]),
        "households": HouseholdMaps(
            household={k: v for k, v in maps.household.items() if k in ids},
            canonical={k: v for k, v in maps.canonical.items() if k in ids and v in ids},
        ),
    }


def _solver_row(result: Any) -> dict[str, Any]:
    return {
        "seconds": round(result.seconds, 3),
        "objective": round(result.objective, 2),
        "bound": round(result.bound, 2),
        "gap": result.gap,
        "iterations": result.iterations,
        "status": result.status,
        "selected": len(result.chosen),
    }


def run(
    n: int, ref: int, seed: int, time_limit: float, dense: bool = False, full_lp: bool = False
) -> dict[str, Any]:
    """Every measurement of one run."""
    t0 = time.perf_counter()
    data = synthetic_base(n, seed, dense)
    gen_s = time.perf_counter() - t0
    print(f"generated {n:,} customers in {gen_s:.1f} s", flush=True)
    campaign = campaign_for(n)

    t0 = time.perf_counter()
    problem = allocation_problem(campaign, **data)
    prep_s = time.perf_counter() - t0
    print(f"rules and values: {prep_s:.1f} s, {len(problem.options.value):,} options", flush=True)
    lag = solve(problem, "lagrangian", time_limit)
    print(f"lagrangian: {lag.seconds:.1f} s, gap {lag.gap:.2e}", flush=True)
    t0 = time.perf_counter()
    plan = plan_from(problem, lag)
    assemble_s = time.perf_counter() - t0
    greedy = solve(problem, "greedy")
    print(f"greedy: {greedy.seconds:.1f} s", flush=True)

    out: dict[str, Any] = {
        "customers": n,
        "dense": dense,
        "offers": len(campaign.offers),
        "channels": len(campaign.channels),
        "options": int(len(problem.options.value)),
        "units": int(problem.options.unit.max() + 1),
        "constraints": problem.constraints.names,
        "plan_seconds": round(prep_s + lag.seconds + assemble_s, 2),
        "rules_values_seconds": round(prep_s, 2),
        "assemble_seconds": round(assemble_s, 2),
        "lagrangian": _solver_row(lag),
        "greedy": _solver_row(greedy),
        "greedy_to_lagrangian_objective": greedy.objective / lag.objective,
        "lagrangian_objective_to_own_bound": lag.objective / lag.bound,
        "plan_summary": {
            k: plan.summary[k]
            for k in ("base", "selected", "contacted", "control", "test_cell", "rollout")
        }
        | {"excluded": plan.summary["excluded"], "constraints": plan.summary["constraints"]},
    }

    if full_lp:
        lp_full = solve_exact(problem.options, problem.constraints, relax=True)
        print(f"HiGHS LP at full size: {lp_full.seconds:.1f} s", flush=True)
        out["highs_lp_full_size"] = _solver_row(lp_full)
        out["lagrangian_bound_to_full_lp"] = lag.bound / lp_full.objective
        out["lagrangian_objective_to_full_lp"] = lag.objective / lp_full.objective
        out["lagrangian_seconds_to_full_lp_seconds"] = lag.seconds / max(lp_full.seconds, 1e-9)

    # the reference: LP relaxation and MIP by HiGHS on a sub-base
    sub = _subset(data, ref)
    sub_problem = allocation_problem(campaign_for(ref), **sub)
    sub_lag = solve(sub_problem, "lagrangian", time_limit)
    lp = solve_exact(sub_problem.options, sub_problem.constraints, relax=True)
    print(f"reference LP ({ref:,}): {lp.seconds:.1f} s", flush=True)
    mip = solve_exact(sub_problem.options, sub_problem.constraints, time_limit=time_limit)
    print(f"reference MIP ({ref:,}): {mip.seconds:.1f} s, {mip.status}", flush=True)
    out["reference"] = {
        "customers": ref,
        "options": int(len(sub_problem.options.value)),
        "lagrangian": _solver_row(sub_lag),
        "highs_lp": _solver_row(lp),
        "highs_mip": _solver_row(mip),
        "lagrangian_bound_to_lp": sub_lag.bound / lp.objective,
        "lagrangian_objective_to_mip": sub_lag.objective / mip.objective,
        "mip_gap_reported_by_highs": mip.gap,
        "lagrangian_seconds_to_mip_seconds": sub_lag.seconds / max(mip.seconds, 1e-9),
    }
    out["generate_seconds"] = round(gen_s, 2)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["cpus"] = os.cpu_count()
    out["load_average_1m_at_end"] = os.getloadavg()[0]
    out["python"] = platform.python_version()
    return out


def _print_table(r: dict[str, Any]) -> None:
    print()
    print(
        f"{r['customers']:,} customers x {r['offers']} offers x {r['channels']} channels: "
        f"{r['options']:,} allowed profitable options in {r['units']:,} households"
    )
    print(f"binding constraints: {', '.join(r['constraints'])}")
    print(f"{'method':<22}{'seconds':>9}{'objective':>15}{'bound':>15}{'gap':>10}{'ratio':>8}")
    lag = r["lagrangian"]
    print(
        f"{'lagrangian + repair':<22}{lag['seconds']:>9.1f}{lag['objective']:>15,.0f}"
        f"{lag['bound']:>15,.0f}{lag['gap']:>10.2e}{1.0:>8.3f}"
    )
    g = r["greedy"]
    print(
        f"{'greedy by value':<22}{g['seconds']:>9.1f}{g['objective']:>15,.0f}{'':>15}{'':>10}"
        f"{r['greedy_to_lagrangian_objective']:>8.3f}"
    )
    print(
        f"whole plan (rules, values, solver, groups, table): {r['plan_seconds']:.1f} s; "
        f"peak RSS of the run {r['peak_rss_mib']:,.0f} MiB"
    )
    if "highs_lp_full_size" in r:
        lp = r["highs_lp_full_size"]
        print(
            f"{'HiGHS LP (full size)':<22}{lp['seconds']:>9.1f}{lp['objective']:>15,.0f}"
            f"{lp['bound']:>15,.0f}  bound ratio {r['lagrangian_bound_to_full_lp']:.6f}"
        )
    ref = r["reference"]
    print(f"\nreference on {ref['customers']:,} customers ({ref['options']:,} options), HiGHS:")
    for name in ("lagrangian", "highs_lp", "highs_mip"):
        s = ref[name]
        print(
            f"{name:<22}{s['seconds']:>9.1f}{s['objective']:>15,.1f}{s['bound']:>15,.1f}"
            f"{s['gap']:>10.2e}  {s['status'][:40]}"
        )
    print(
        f"lagrangian bound / LP = {ref['lagrangian_bound_to_lp']:.6f}; "
        f"lagrangian objective / MIP = {ref['lagrangian_objective_to_mip']:.6f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--ref-customers", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=300.0)
    parser.add_argument("--dense", action="store_true", help="most arms allowed and profitable")
    parser.add_argument("--full-lp", action="store_true", help="HiGHS LP at the full size too")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/allocation.json")
    args = parser.parse_args(argv)
    result = run(
        args.customers, args.ref_customers, args.seed, args.time_limit, args.dense, args.full_lp
    )
    _print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
