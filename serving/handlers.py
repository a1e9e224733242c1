"""Request logic as plain functions over a ``ServingState``: what each endpoint answers.

The service only parses, calls these and validates the answer with its schema; ``serving.batch``
calls ``score_records`` so the batch file holds what /score returns. Client errors raise
``RequestError``, which the service turns into a 4xx naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.decisions.value import BASIS_UPLIFT
from serving.base import SEGMENT_COLUMNS, CustomerBase
from serving.errors import RequestError
from serving.errors import check_ids as check_ids  # re-exported (moved there: no pandas)
from serving.kinds import ScoreModel, campaign_score_kind
from serving.registry import ModelMeta
from serving.state import ServingState


def _segment_records(base: CustomerBase, positions: np.ndarray) -> list[dict[str, Any] | None]:
    if base.segment_arrays is None:
        return [None] * len(positions)
    cols = base.segment_arrays
    # columns as Python lists first: indexing numpy arrays element by element is ~10x slower
    return [
        {
            "rfm_code": str(code),
            "rfm_segment": str(seg),
            "abc_class": str(abc),
            "lifecycle_stage": str(stage),
            "win_back_priority": bool(lapsed),
        }
        for code, seg, abc, stage, lapsed in zip(
            *(cols[c][positions].tolist() for c in SEGMENT_COLUMNS),
            strict=True,
        )
    ]


def score_records(
    served: ScoreModel, positions: np.ndarray, with_reasons: bool = True
) -> list[dict[str, Any]]:
    """One record per base row: score, percentile, decile, segment and reasons."""
    scores = served.scores[positions].astype(float).tolist()
    pct = served.percentile[positions].astype(float).tolist()
    dec = served.decile[positions].astype(int).tolist()
    ids = served.base.features.index[positions].tolist()
    segments = _segment_records(served.base, positions)
    reasons = served.reasons(positions) if with_reasons else [[] for _ in range(len(positions))]
    prob, value = served.output == "probability", served.output == "value"
    terms = served.value_terms
    return [
        {
            "customer_id": cid,
            "score": s,
            "probability": s if prob else None,
            "value": s if value else None,
            "gross_profit": None if terms is None else s * terms[0],
            "npv": None if terms is None else s * terms[0] * terms[1],
            "percentile": p,
            "decile": d,
            "segment": seg,
            "reasons": rs,
        }
        for cid, s, p, d, seg, rs in zip(ids, scores, pct, dec, segments, reasons, strict=True)
    ]


@dataclass(frozen=True)
class ScorePlan:
    """A checked /score request: the answer's head, the known customers' base rows in request
    order and the unknown ids' entries; the records are made from ``known``, whole or in slices
    (``score_records``)."""

    served: ScoreModel
    head: dict[str, Any]
    known: np.ndarray
    unknown: list[dict[str, Any]]


def plan_score(
    state: ServingState, family: str, customer_ids: Sequence[str], max_batch: int
) -> ScorePlan:
    """Check a /score request (400 / 404 naming the field) and place its ids in the base."""
    served = state.model(family)
    if not isinstance(served, ScoreModel):
        raise RequestError("model", f"model {family!r} is a {served.meta.kind} model, not a scorer")
    if not 0 < len(set(customer_ids)) == len(customer_ids) <= max_batch:
        check_ids(customer_ids, max_batch)  # the 400 naming the field (and the positions)
    encoded = served.encoded
    if encoded is not None:  # the rows of the records encoded at load: a dict, no pandas
        positions = np.asarray(encoded.rows_of(customer_ids), dtype=np.intp)
    else:
        positions = served.base.positions(customer_ids)
    unknown = [customer_ids[i] for i in np.flatnonzero(positions < 0).tolist()]
    head = {
        "model": family,
        "kind": served.output,
        "registered_model": served.meta.registered_model,
        "alias": served.meta.alias,
        "version": served.meta.version,
        "as_of": served.base.as_of.isoformat(),
    }
    return ScorePlan(
        served=served,
        head=head,
        known=positions[positions >= 0],
        unknown=[{"customer_id": c, "reason": "not in the feature snapshot"} for c in unknown],
    )


def score_customers(
    state: ServingState,
    family: str,
    customer_ids: Sequence[str],
    max_batch: int,
    with_reasons: bool = True,
) -> dict[str, Any]:
    """The /score answer as plain data (what serving.schemas.ScoreResponse describes)."""
    plan = plan_score(state, family, customer_ids, max_batch)
    return {
        **plan.head,
        "scores": score_records(plan.served, plan.known, with_reasons),
        "unknown": plan.unknown,
    }


def model_info(
    state: ServingState, shadow_stats: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The /models answer as plain data."""
    out = []
    for family, served in state.models.items():
        meta: ModelMeta = served.meta
        base: CustomerBase = served.base
        shadow = state.shadows.get(family)
        out.append(
            {
                "family": family,
                "kind": meta.kind,
                "output": getattr(served, "output", meta.kind),
                "registered_model": meta.registered_model,
                "alias": meta.alias,
                "version": meta.version,
                "run_id": meta.run_id,
                "trained_at": meta.trained_at,
                "metrics": dict(meta.metrics),
                "tags": dict(meta.tags),
                "dataset": base.dataset,
                "feature_set": base.feature_set,
                "snapshot_as_of": base.as_of.isoformat(),
                "customers": base.size,
                "loaded_at": meta.loaded_at,
                "monitoring": monitor_summary(base.monitor),
                "shadow": None
                if shadow is None
                else {
                    "alias": shadow.meta.alias,
                    "version": shadow.meta.version,
                    **shadow_stats.get(family, {}),
                },
            }
        )
    return out


def monitor_summary(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The aggregate lines of a monitor.json (no per-customer data is in it anyway)."""
    if not report:
        return None
    keys = (
        "registered_model",
        "model_version",
        "reference_as_of",
        "current_as_of",
        "created_at",
        "score",
        "breached",
        "mlflow_run_id",
    )
    return {k: report.get(k) for k in keys if k in report}


# --------------------------------------------------------------------------- campaigns


def _offer_row(base: CustomerBase, offer_id: str) -> pd.Series:
    if base.offers is None or offer_id not in base.offers.index:
        known = [] if base.offers is None else sorted(base.offers.index)[:20]
        raise RequestError("offer_id", f"unknown offer {offer_id!r}; known: {known}", 404)
    return base.offers.loc[[offer_id]].iloc[0]  # a Series (offer ids are unique)


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _nbo_model(state: ServingState) -> str | None:
    names = [
        f for f, m in state.models.items() if getattr(m, "meta", None) and m.meta.kind == "nbo"
    ]
    return names[0] if names else None


#: What a churn or response probability is not, in the 400 of /target naming ``model``.
_NOT_AN_EFFECT = {
    "churn_probability": "a churn probability, not the probability of responding to an offer "
    "(a churn probability is never a response probability)",
    "response_probability": "a response probability P(respond | contacted), not the "
    "incremental effect of a contact (it counts those who would respond anyway)",
}


def _ranking_basis(model: str, kind: str, ranking: Mapping[str, Any] | None) -> str:
    """The basis label of the ranking, or the 400 that says what to do instead."""
    from serving.targeting import basis_for

    wanted = str((ranking or {}).get("basis") or "uplift")
    reason = (ranking or {}).get("reason")
    if wanted == "non_causal_score" and not (isinstance(reason, str) and reason.strip()):
        # the request schema checks it too; plain callers are held to the same rule
        raise RequestError("ranking.reason", "say why a non-causal score may rank this campaign")
    try:
        return basis_for(kind, wanted)
    except ValueError as exc:
        if kind == "uplift":
            raise RequestError(
                "ranking.basis",
                f"model {model!r} is an uplift model: its figures are incremental; rank by "
                "ranking.basis uplift (or leave ranking out)",
            ) from exc
        raise RequestError(
            "model",
            f"model {model!r} gives {_NOT_AN_EFFECT[kind]}: it cannot rank /target as the "
            "gain of a contact. Name an uplift model for the offer, or plan the campaign with "
            "POST /campaigns/plan, or rank by this score explicitly with "
            '"ranking": {"basis": "non_causal_score", "reason": "<why>"} (every figure is then '
            "labelled non-incremental)",
        ) from exc


def target_customers(
    state: ServingState,
    *,
    campaign_id: str,
    channel: str,
    model: str | None = None,
    offer_id: str | None = None,
    audience: Mapping[str, Any] | None = None,
    budget: Mapping[str, Any] | None = None,
    cost_per_contact: float | None = None,
    value_per_conversion: float | None = None,
    control_fraction: float = 0.1,
    test_cell_fraction: float = 0.05,
    win_back_first: bool = False,
    include_customers: bool = True,
    ranking: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The /target answer as plain data: profit-ranked customers within budget, with groups.

    Only an uplift model ranks by default; a churn or response-probability model ranks only when
    ``ranking`` says ``basis: non_causal_score`` with a reason, and every figure is then labelled
    non-incremental (a churn probability ranks by value at risk and counts no responses).
    """
    from serving.targeting import CampaignRules, select_customers

    audience = dict(audience or {})
    budget = dict(budget or {})
    if control_fraction + test_cell_fraction > 1.0:
        raise RequestError("test_cell_fraction", "control_fraction + test_cell_fraction exceed 1")
    if model is None:
        model = _nbo_model(state) if offer_id is not None else None
        if model is None:
            raise RequestError(
                "model",
                "no next-best-offer model is served to score the offer: name a model",
                404,
            )
    served = state.model(model)
    base: CustomerBase = served.base
    offer = _offer_row(base, offer_id) if offer_id is not None else None
    scorer = getattr(served, "campaign_scores", None)
    if scorer is None:
        raise RequestError("model", f"model {model!r} cannot rank a campaign audience")
    scores, output = scorer(offer_id)
    kind = campaign_score_kind(served, output, model, "model")
    basis = _ranking_basis(model, kind, ranking)
    value = value_per_conversion
    if value is None and offer is not None:
        value = _number(offer.get("value"))
    if value is None:
        value = 1.0  # no money given: profit counted in responses
    cost = cost_per_contact
    if cost is None and offer is not None:
        cost = _number(offer.get("cost"))
    if cost is None:
        cost = 0.0
    if budget.get("max_cost") is not None and not cost > 0.0:
        # with no cost every contact is free: a money budget would select everyone, silently
        if cost_per_contact is not None:
            why = "cost_per_contact is 0"
        elif offer is not None:
            why = f"cost_per_contact is not given and offer {offer_id!r} has no cost"
        else:
            why = "cost_per_contact is not given and there is no offer_id to take a cost from"
        raise RequestError(
            "budget.max_cost",
            f"a money budget (budget.max_cost) needs a cost per contact above 0: {why}; "
            "give cost_per_contact, or limit the contacts with budget.max_contacts",
        )
    segments = base.segments
    for key in ("segments", "abc_classes", "lifecycle_stages"):
        if audience.get(key) and segments is None:
            raise RequestError(f"audience.{key}", "segments are not available for this snapshot")
    n = base.size
    candidates = pd.DataFrame(
        {
            "customer_id": base.features.index.to_numpy(),
            "score": scores,
            "consent": base.consent[channel],
            "rfm_segment": segments["rfm_segment"].to_numpy()
            if segments is not None
            else np.full(n, None, dtype=object),
            "abc_class": segments["abc_class"].to_numpy()
            if segments is not None
            else np.full(n, None, dtype=object),
            "lifecycle_stage": segments["lifecycle_stage"].to_numpy()
            if segments is not None
            else np.full(n, None, dtype=object),
            "lapsed_recently": segments["lapsed_recently"].to_numpy(dtype=bool)
            if segments is not None
            else np.zeros(n, dtype=bool),
            "id_hash": base.id_hash,
        }
    )

    def allowed(key: str) -> frozenset[str] | None:
        values = audience.get(key)
        return frozenset(values) if values else None

    rules = CampaignRules(
        campaign_id=campaign_id,
        value_per_conversion=float(value),
        cost_per_contact=float(cost),
        segments=allowed("segments"),
        abc_classes=allowed("abc_classes"),
        lifecycle_stages=allowed("lifecycle_stages"),
        min_score=audience.get("min_score"),
        max_contacts=budget.get("max_contacts"),
        max_cost=budget.get("max_cost"),
        control_fraction=control_fraction,
        test_cell_fraction=test_cell_fraction,
        win_back_first=win_back_first,
        score_is_response=kind != "churn_probability",
    )
    selection = select_customers(candidates, rules)
    customers = selection.customers
    records = (
        [
            {
                "rank": int(r),
                "customer_id": c,
                "group": g,
                "score": float(s),
                "expected_profit": float(p),
                "win_back_priority": bool(w),
                "lifecycle_stage": st,
                "rfm_segment": seg,
            }
            for r, c, g, s, p, w, st, seg in zip(
                customers["rank"],
                customers["customer_id"],
                customers["group"],
                customers["score"],
                customers["expected_profit"],
                customers["win_back_priority"],
                customers["lifecycle_stage"],
                customers["rfm_segment"],
                strict=True,
            )
        ]
        if include_customers
        else []
    )
    return {
        "campaign_id": campaign_id,
        "model": model,
        "registered_model": served.meta.registered_model,
        "version": served.meta.version,
        "score_kind": kind,
        "basis": basis,
        "warning": None
        if basis == BASIS_UPLIFT
        else (
            "ranked by a non-causal score: every figure is non-incremental (not an effect of "
            f"the contact); reason given: {(ranking or {}).get('reason')}"
        ),
        "offer_id": offer_id,
        "channel": channel,
        "as_of": base.as_of.isoformat(),
        "value_per_conversion": float(value),
        "cost_per_contact": float(cost),
        "summary": selection.summary,
        "customers": records,
    }


# --------------------------------------------------------------------------- consent


def contactable_customers(
    state: ServingState,
    family: str,
    customer_ids: Sequence[str],
    channel: str,
    max_batch: int,
) -> dict[str, Any]:
    """The POST /contactable answer of a family served in memory, from its base's consent
    (``CustomerBase.consent``: the flags /target and /campaigns/plan select with, only an
    explicit yes of the customers table is true)."""
    from serving.online import check_channel, contactable_answer

    served = state.model(family)
    base: CustomerBase = served.base
    check_channel(channel, list(base.consent))
    check_ids(customer_ids, max_batch)
    flags = base.consent[channel]
    granted = [None if pos < 0 else bool(flags[pos]) for pos in base.positions(customer_ids)]
    head = {
        "model": family,
        "registered_model": served.meta.registered_model,
        "alias": served.meta.alias,
        "version": served.meta.version,
        "as_of": base.as_of.isoformat(),
    }
    return contactable_answer(head, channel, customer_ids, granted)


# --------------------------------------------------------------------------- next-best offer


def rank_offers(
    state: ServingState,
    model: str | None,
    customer_ids: Sequence[str],
    k: int,
    kind: str,
    max_batch: int,
) -> dict[str, Any]:
    """The /next-best-offer answer as plain data, from a served model of kind ``nbo``."""
    if model is None:
        model = _nbo_model(state)
        if model is None:
            raise RequestError("model", "no next-best-offer model is served", 404)
    served = state.model(model)
    if getattr(served, "meta", None) is None or served.meta.kind != "nbo":
        raise RequestError("model", f"model {model!r} is not a next-best-offer model", 404)
    check_ids(customer_ids, max_batch)
    base: CustomerBase = served.base
    positions = base.positions(customer_ids)
    known = positions[positions >= 0]
    unknown = [cid for cid, pos in zip(customer_ids, positions, strict=True) if pos < 0]
    ranked = served.rank(known, k, kind)
    return {
        "model": model,
        "registered_model": served.meta.registered_model,
        "version": served.meta.version,
        "as_of": base.as_of.isoformat(),
        "kind": kind,
        "customers": [
            {"customer_id": cid, "offers": offers}
            for cid, offers in zip(base.features.index[known], ranked, strict=True)
        ],
        "unknown": [{"customer_id": c, "reason": "not in the feature snapshot"} for c in unknown],
    }
