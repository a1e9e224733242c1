"""Campaign plans over HTTP: configured campaigns, the inputs served models give, the plan.

Glue between the pure planner (``models.decisions``) and what the service holds. A campaign names,
per offer, the served model that estimates it (``offers[].model``); this module turns the served
models' base scores into the planner's typed inputs and refuses what the value layer would
misread:

* ``ranking.basis: uplift`` (the default): every offer's model must be an uplift model
  (``UpliftEstimate``); a churn or response-probability model is a 400 naming the offer's field.
* ``ranking.basis: non_causal_score``: a model whose label means churn gives a
  ``ChurnProbability`` (value at risk, never a response probability), one whose label means a
  response a ``ResponseProbability``; the plan is labelled non-incremental by the value layer.
  What a model's score is comes from ``serving.kinds.campaign_score_kind``, /target's rule: the
  label meaning recorded with the model, never its name; a label meaning ``other`` is a 400
  naming the offer's field on either basis.
* Consent: the customer base's own flags (``CustomerBase.consent``, read from the customers table
  by ``serving.targeting.consent_flags``) for email / sms / phone, and the same rule over the same
  table for other consent columns, so ``/target`` and the planner never disagree.
* Contact history from the dataset's ``campaign_history`` table, duplicates and households from
  its ``merge_map`` / ``households`` tables (``patron customers link``), when present.

The campaign loop over HTTP: ``save: true`` stores the plan (``models.decisions.plan_store``,
the same folder and rules as ``patron campaign plan``) under ``<home>/campaigns/<plan id>``;
``post_responses`` takes the wave's responses (idempotent by contact id) and ``plan_readout``
reads the wave against its control group with the roll-out gate, as ``patron campaign read``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from features.catalog import Catalog
from features.store import StateDirs
from models.decisions import (
    EXCLUSION_REASONS,
    ChurnProbability,
    ContactHistory,
    HouseholdMaps,
    ResponseProbability,
    UpliftEstimate,
    contact_history,
    plan_campaign,
    plan_store,
)
from models.decisions.allocate import LAST_NEGATIVE_REASON, household_maps_from
from models.decisions.campaign import Campaign, load_campaign, parse_campaign
from models.decisions.readout import DEFAULT_GATE_CONFIDENCE
from serving.errors import RequestError, first_error

if TYPE_CHECKING:
    from serving.base import CustomerBase
    from serving.state import ServingState


class CampaignConfigError(ValueError):
    """A configured campaign file is missing or invalid (one line naming its settings key)."""


class PlanRequestError(RequestError):
    """A 400 naming the field, with pydantic's errors (type, loc, msg) when there are some."""

    def __init__(self, field: str, message: str, detail: list[dict[str, Any]] | None = None):
        super().__init__(field, message, 400)
        self.detail = detail


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _errors(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    """pydantic's errors with the location under ``prefix``; never the input value."""
    out = []
    for e in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [*(prefix.split(".") if prefix else []), *e["loc"]]
        out.append({"type": e["type"], "loc": loc, "msg": e["msg"]})
    return out


# --------------------------------------------------------------------------- configured campaigns


def load_campaigns(files: Mapping[str, str]) -> dict[str, Campaign]:
    """Read and validate every configured campaign; the first broken one raises, one line."""
    out: dict[str, Campaign] = {}
    for name, path in files.items():
        try:
            out[name] = load_campaign(path)
        except ValidationError as exc:
            field, message = first_error(_errors(exc, ""))
            raise CampaignConfigError(f"campaigns.{name}: {path}: {field}: {message}") from None
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise CampaignConfigError(
                f"campaigns.{name}: {path}: {type(exc).__name__}: {_one_line(exc)}"
            ) from None
    return out


def campaign_files_key(files: Mapping[str, str]) -> tuple[Any, ...]:
    """What the configured campaigns were read from (a reload re-reads a changed file)."""
    out = []
    for name, path in sorted(files.items()):
        p = Path(path)
        st = p.stat() if p.exists() else None
        out.append((name, path, st.st_mtime_ns if st else None, st.st_size if st else None))
    return tuple(out)


def offers_listing(state: ServingState) -> dict[str, Any]:
    """The GET /offers answer: configured campaigns' offers and served NBO models' offers."""
    campaigns = [
        {
            "name": name,
            "campaign_id": c.campaign_id,
            "ranking_basis": c.ranking.basis,
            "objective": c.objective,
            "channels": c.channel_names,
            "offers": [
                {
                    "offer_id": o.id,
                    "kind": o.kind,
                    "value": o.value,
                    "value_source": o.value_source,
                    "cost_per_acceptance": o.cost_per_acceptance,
                    "model": o.model,
                    "model_served": o.model is not None and o.model in state.models,
                }
                for o in c.offers
            ],
        }
        for name, c in state.campaigns.items()
    ]
    model_offers = []
    for family, served in state.models.items():
        meta = getattr(served, "meta", None)
        offers = getattr(getattr(served, "model", None), "offers", None)
        if meta is None or meta.kind != "nbo" or not isinstance(offers, pd.DataFrame):
            continue
        for row in offers.to_dict("records"):
            value = pd.to_numeric(pd.Series([row.get("value")]), errors="coerce").iloc[0]
            model_offers.append(
                {
                    "model": family,
                    "offer_id": str(row.get("offer_id")),
                    "kind": None if pd.isna(row.get("kind")) else str(row.get("kind")),
                    "value": float(value) if np.isfinite(value) else None,
                }
            )
    return {"campaigns": campaigns, "model_offers": model_offers}


# --------------------------------------------------------------------------- the request's campaign


def request_campaign(
    state: ServingState, campaign_name: str | None, campaign: Mapping[str, Any] | None
) -> tuple[Campaign, str, str]:
    """(campaign, source label, field prefix of its errors) from a name or an inline body."""
    if (campaign_name is None) == (campaign is None):
        raise RequestError(
            "campaign_name" if campaign_name is not None else "campaign",
            "give either campaign_name (a configured campaign) or campaign (a whole definition)",
        )
    if campaign_name is not None:
        found = state.campaigns.get(campaign_name)
        if found is None:
            raise RequestError(
                "campaign_name",
                f"unknown campaign {campaign_name!r}; configured: {sorted(state.campaigns)}",
                404,
            )
        return found, f"configured:{campaign_name}", f"campaigns.{campaign_name}"
    try:
        return parse_campaign(dict(campaign or {})), "inline", "campaign"
    except ValidationError as exc:
        detail = _errors(exc, "campaign")
        field, message = first_error(detail)
        raise PlanRequestError(field, message, detail) from None


# --------------------------------------------------------------------------- the planner's inputs


def _aligned(scores: np.ndarray, served_base: CustomerBase, base: CustomerBase) -> np.ndarray:
    """A served model's base scores on ``base``'s rows (NaN where it does not score one)."""
    if served_base is base or served_base.features.index.equals(base.features.index):
        return np.asarray(scores, dtype=float)
    series = pd.Series(np.asarray(scores, dtype=float), index=served_base.features.index)
    return series.reindex(base.features.index).to_numpy(dtype=float)


def offer_estimate(
    state: ServingState, campaign: Campaign, prefix: str
) -> tuple[Any, CustomerBase, list[dict[str, Any]]]:
    """The typed estimate the value layer takes, the base it is over, and the models used."""
    from serving.kinds import ScoreModel, campaign_score_kind

    non_causal = campaign.ranking.basis == "non_causal_score"
    served_models = []
    kinds: list[str] = []
    for i, offer in enumerate(campaign.offers):
        field = f"{prefix}.offers.{i}.model"
        if offer.model is None:
            raise RequestError(
                field,
                f"offer {offer.id!r} names no served model: give the uplift model that "
                "estimates its effect (GET /models lists the served ones)",
            )
        served = state.models.get(offer.model)
        if served is None:
            raise RequestError(
                field, f"model {offer.model!r} is not served; served: {sorted(state.models)}"
            )
        output = getattr(served, "output", served.meta.kind)
        if not isinstance(served, ScoreModel) or output == "value":
            raise RequestError(
                field,
                f"model {offer.model!r} is a {output} model: it scores no response to an offer",
            )
        # /target's rule (the recorded label meaning, never a name): "other" ranks no campaign
        kind = campaign_score_kind(served, output, offer.model, field)
        if not non_causal and kind != "uplift":
            what = "a churn probability" if kind == "churn_probability" else "a probability"
            raise RequestError(
                field,
                f"model {offer.model!r} gives {what}, not an uplift: it is no incremental effect "
                "(and a churn probability is never a response probability); name an uplift "
                "model, or rank by it explicitly with ranking: {basis: non_causal_score, "
                "reason: ...}, whose figures are labelled non-incremental",
            )
        if non_causal and kind == "uplift":
            raise RequestError(
                field,
                f"model {offer.model!r} is an uplift model: rank by ranking.basis uplift",
            )
        if kind == "uplift" and offer.cost_per_acceptance > 0:
            raise RequestError(
                f"{prefix}.offers.{i}.cost_per_acceptance",
                "a served uplift model gives the uplift only, not P(accept | contacted), by "
                "which an acceptance cost is weighed (paid by those who would respond anyway "
                "too); set it to 0 and count the cost in the offer's value",
            )
        if kind == "churn_probability" and offer.cost_per_acceptance > 0:
            raise RequestError(
                f"{prefix}.offers.{i}.cost_per_acceptance",
                "a churn probability says nothing about accepting an offer, so an acceptance "
                "cost cannot be weighed by it",
            )
        served_models.append(served)
        kinds.append(kind)
    base: CustomerBase = served_models[0].base
    for i, served in enumerate(served_models):
        if served.base.dataset != base.dataset:
            raise RequestError(
                f"{prefix}.offers.{i}.model",
                f"model {served.meta.family!r} serves dataset {served.base.dataset!r}, the "
                f"campaign's first offer {base.dataset!r}: one campaign plans one base",
            )
    used = [
        {
            "offer_id": offer.id,
            "model": served.meta.family,
            "registered_model": served.meta.registered_model,
            "version": served.meta.version,
            "estimate": kind,
        }
        for offer, served, kind in zip(campaign.offers, served_models, kinds, strict=True)
    ]
    scores = [_aligned(s.scores, s.base, base) for s in served_models]
    if not non_causal:
        uplift = np.clip(np.nan_to_num(np.column_stack(scores), nan=0.0), -1.0, 1.0)
        return UpliftEstimate(uplift=uplift), base, used
    churn = [u["estimate"] == "churn_probability" for u in used]
    if any(churn):
        names = {u["model"] for u in used}
        if not all(churn) or len(names) > 1:
            i = next(j for j, u in enumerate(used) if u["model"] != used[0]["model"])
            raise RequestError(
                f"{prefix}.offers.{i}.model",
                "a churn probability ranks a whole campaign (value at risk per customer): every "
                "offer must name the same churn model",
            )
        p = np.clip(np.nan_to_num(scores[0], nan=0.0), 0.0, 1.0)
        return ChurnProbability(p=p), base, used
    p = np.clip(np.nan_to_num(np.column_stack(scores), nan=0.0), 0.0, 1.0)
    return ResponseProbability(p=p), base, used


def customer_values(
    state: ServingState, campaign: Campaign, value_model: str | None, base: CustomerBase
) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """Per base customer the value of customer_value offers, from a served value model."""
    from serving.kinds import ScoreModel

    if not any(o.value_source == "customer_value" for o in campaign.offers):
        return None, []
    values = [
        f for f, m in state.models.items() if isinstance(m, ScoreModel) and m.output == "value"
    ]
    if value_model is None:
        if len(values) != 1:
            raise RequestError(
                "value_model",
                "an offer is valued by customer_value: name the served value (CLV) model; "
                f"served value models: {values}",
            )
        value_model = values[0]
    served = state.models.get(value_model)
    if served is None or value_model not in values:
        raise RequestError(
            "value_model",
            f"model {value_model!r} is not a served value model; served value models: {values}",
        )
    aligned = _aligned(served.scores, served.base, base)
    unvalued = int(np.isnan(aligned).sum())  # base customers the value model did not score
    cv = np.nan_to_num(aligned, nan=0.0)
    # a response keeps the customer's margin, not their revenue: the model's recorded accounting
    # (gross profit over its horizon, discounted); a model recording none gives revenue, said so
    terms = served.value_terms if isinstance(served, ScoreModel) else None
    if terms is not None:
        cv = cv * terms[0] * terms[1]
    used = {
        "offer_id": ",".join(o.id for o in campaign.offers if o.value_source == "customer_value"),
        "model": value_model,
        "registered_model": served.meta.registered_model,
        "version": served.meta.version,
        "estimate": "customer_value",
        "basis": (
            "present value of the expected gross profit over the model's horizon"
            if terms is not None
            else "expected revenue over the model's horizon (the model records no margin)"
        )
        + (
            f"; {unvalued:,} of {len(cv):,} base customers the value model did not score are "
            "valued 0 (never worth a contact for these offers)"
            if unvalued
            else ""
        ),
    }
    return cv, [used]


def _yes_all(ids: pd.Index, table: pd.DataFrame, column: str) -> np.ndarray:
    """serving.targeting.consent_flags' rule for any column: every row of the customer says an
    explicit yes; a missing customer, column or value is no."""
    from serving.targeting import _is_true

    if column not in table.columns or len(table) == 0:
        return np.zeros(len(ids), dtype=bool)
    granted = table[column].map(_is_true).astype(bool)
    per = granted.groupby(table["customer_id"].astype(str).to_numpy()).all()
    return per.reindex(ids, fill_value=False).to_numpy(dtype=bool)


def _customers_table(base: CustomerBase, dirs: StateDirs) -> Callable[[], pd.DataFrame]:
    """The dataset's current customers table, read on first use (once)."""
    table_path = dirs.data(base.dataset) / "customers.parquet"
    table: pd.DataFrame | None = None

    def customers_table() -> pd.DataFrame:
        nonlocal table
        if table is None:
            from serving.base import current_customers

            table = (
                current_customers(table_path)
                if table_path.exists()
                else pd.DataFrame({"customer_id": []})
            )
            table["customer_id"] = table["customer_id"].astype(str)
        return table

    return customers_table


def _consent_of(
    base: CustomerBase, column: str, customers_table: Callable[[], pd.DataFrame]
) -> np.ndarray:
    """A channel's consent column over the base: the base's own flags for email / sms / phone
    (what /target selects with), the same rule over the customers table for other columns."""
    own = column.removeprefix("consent_") if column.startswith("consent_") else None
    if own is not None and own in base.consent:
        return np.asarray(base.consent[own], dtype=bool)
    return _yes_all(base.features.index, customers_table(), column)


def planner_customers(
    base: CustomerBase, campaign: Campaign, dirs: StateDirs, prefix: str
) -> pd.DataFrame:
    """The planner's customers frame over the base: ids, consent per channel, the columns the
    offers' eligibility and segments name (segments, snapshot features, customers table)."""
    ids = base.features.index
    frame: dict[str, Any] = {"customer_id": ids.to_numpy(dtype=object)}
    household = getattr(base, "household_id", None)
    if household is not None:  # the served base's households: the household policy reads them
        frame["household_id"] = np.asarray(household, dtype=object)
    customers_table = _customers_table(base, dirs)
    for channel in campaign.channels:
        frame[channel.consent] = _consent_of(base, channel.consent, customers_table)

    def column_values(name: str, field: str) -> np.ndarray:
        if base.segments is not None and name in base.segments.columns:
            return base.segments[name].to_numpy()
        if name in base.features.columns:
            return base.features[name].to_numpy()
        tab = customers_table()
        if name in tab.columns:
            last = tab.drop_duplicates("customer_id", keep="last").set_index("customer_id")
            return last[name].reindex(ids).to_numpy()
        raise RequestError(
            field,
            f"no column {name!r} in the snapshot, its segments or the customers table of "
            f"{base.dataset!r}",
        )

    for i, offer in enumerate(campaign.offers):
        for j, cond in enumerate(offer.eligibility):
            if cond.column == LAST_NEGATIVE_REASON:
                continue  # from the contact history (models.decisions.allocate)
            if cond.column not in frame:
                frame[cond.column] = column_values(
                    cond.column, f"{prefix}.offers.{i}.eligibility.{j}.column"
                )
        if offer.segments is not None and offer.segment_column not in frame:
            frame[offer.segment_column] = column_values(
                offer.segment_column, f"{prefix}.offers.{i}.segment_column"
            )
    return pd.DataFrame(frame)


def household_maps(base: CustomerBase, dirs: StateDirs) -> tuple[HouseholdMaps | None, str]:
    """Duplicates and households of the dataset (``patron customers link``), when written."""
    catalog = Catalog(dirs, base.dataset)
    known = set(base.features.index)
    merge = catalog.read_or_none("merge_map", ["customer_id", "master_id"])
    homes = catalog.read_or_none("households", ["customer_id", "household_id"])
    if merge is None and homes is None:
        return None, "none: no merge_map / households table (patron customers link)"
    parts = [n for n, t in (("merge_map", merge), ("households", homes)) if t is not None]
    return household_maps_from(merge, homes, known), " + ".join(parts)


def history_of(
    base: CustomerBase, campaign: Campaign, dirs: StateDirs
) -> tuple[ContactHistory | None, str]:
    """Contacts in the policy window and days since the last negative response, per customer."""
    policy = campaign.contact_policy
    if not campaign.needs_history:
        return None, "not needed: the campaign has no contact policy"
    frame = Catalog(dirs, base.dataset).read_or_none("campaign_history")
    if frame is None:
        return None, "none: no campaign_history table ingested (the contact policy cannot bind)"
    as_of = pd.Timestamp(base.as_of)
    history = contact_history(frame, list(base.features.index), as_of, policy.window_days)
    return history, f"campaign_history up to {base.as_of.isoformat()}"


# --------------------------------------------------------------------------- the plan


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _text(value: Any) -> str | None:
    """A label cell as text; None for the planner's empty cells (None or NaN)."""
    return value if isinstance(value, str) else None


def _totals(frame: pd.DataFrame, key: str, incremental: bool) -> list[dict[str, Any]]:
    figure = "expected_incremental_profit" if incremental else "non_causal_ranking_value"
    return [
        {
            "name": str(row[key]),
            "selected": int(row["selected"]),
            "contacted": int(row["contacted"]),
            "control": int(row["control"]),
            "expected_incremental_profit_contacted": _num(row[f"{figure}_contacted"])
            if incremental
            else None,
            "non_causal_ranking_value_contacted": None
            if incremental
            else _num(row[f"{figure}_contacted"]),
            "expected_spend_contacted": float(row["expected_spend_contacted"]),
        }
        for row in frame.to_dict("records")
    ]


def _rows(page: pd.DataFrame) -> list[dict[str, Any]]:
    cols = {
        c: page[c].to_numpy() if c in page.columns else np.full(len(page), None)
        for c in (
            "expected_incremental_profit",
            "expected_incremental_responses",
            "non_causal_ranking_value",
            "expected_spend",
        )
    }
    return [
        {
            "customer_id": str(cid),
            "person_id": str(pid),
            "household_id": str(hh),
            "selected": bool(sel),
            "group": _text(grp),
            "offer": _text(off),
            "channel": _text(ch),
            "expected_incremental_profit": _num(p),
            "expected_incremental_responses": _num(r),
            "non_causal_ranking_value": _num(nc),
            "expected_spend": _num(sp),
            "basis": str(basis),
            "exclusion_reason": _text(reason) or None,
        }
        for cid, pid, hh, sel, grp, off, ch, p, r, nc, sp, basis, reason in zip(
            page["customer_id"],
            page["person_id"],
            page["household_id"],
            page["selected"],
            page["group"],
            page["offer"],
            page["channel"],
            cols["expected_incremental_profit"],
            cols["expected_incremental_responses"],
            cols["non_causal_ranking_value"],
            cols["expected_spend"],
            page["basis"],
            page["exclusion_reason"],
            strict=True,
        )
    ]


def plan_request(
    state: ServingState,
    dirs: StateDirs,
    *,
    campaign_name: str | None = None,
    campaign: Mapping[str, Any] | None = None,
    value_model: str | None = None,
    customer_ids: Sequence[str] | None = None,
    selected_only: bool = False,
    offset: int = 0,
    max_rows: int = 1000,
    save: bool = False,
) -> dict[str, Any]:
    """The POST /campaigns/plan answer as plain data (serving.schemas.PlanResponse); with
    ``save``, the plan is stored immutably and its ``plan_id`` answered."""
    parsed, source, prefix = request_campaign(state, campaign_name, campaign)
    if customer_ids is not None and len(set(customer_ids)) != len(customer_ids):
        raise RequestError("customer_ids", "each customer id at most once")
    estimate, base, used = offer_estimate(state, parsed, prefix)
    cv, value_used = customer_values(state, parsed, value_model, base)
    customers = planner_customers(base, parsed, dirs, prefix)
    households, households_from = household_maps(base, dirs)
    history, history_from = history_of(base, parsed, dirs)
    try:
        plan = plan_campaign(
            parsed,
            customers,
            estimate,
            customer_value=cv,
            history=history,
            households=households,
        )
    except (ValueError, TypeError) as exc:  # the value layer refusing what it cannot read
        raise RequestError(prefix, _one_line(exc, 500)) from None
    saved = None
    if save:
        inputs = {
            "made_by": "POST /campaigns/plan",
            "source": source,
            "dataset": base.dataset,
            "snapshot_as_of": base.as_of.isoformat(),
            "models": used,
            "value_model": value_used,
            "history": history_from,
            "households": households_from,
        }
        record = plan_store.plan_record(plan, parsed, base.as_of, inputs)
        try:
            saved = plan_store.write_plan(plan_store.plans_root(dirs.home), plan.customers, record)
        except plan_store.PlanConflict as exc:
            raise RequestError("save", str(exc), 409) from None
    table = plan.customers
    unknown: list[str] = []
    if customer_ids is not None:
        known = set(table["customer_id"])
        unknown = [c for c in customer_ids if c not in known]
        table = table[table["customer_id"].isin(set(customer_ids))]
    if selected_only:
        table = table[table["selected"]]
    page = table.iloc[offset : offset + max_rows]
    end = offset + len(page)
    summary = plan.summary
    incremental = "expected_incremental_profit" in plan.customers.columns
    excluded = {r: int(plan.exclusions.get(r, 0)) for r in EXCLUSION_REASONS}
    n_excluded = sum(excluded.values())
    return {
        "campaign_id": parsed.campaign_id,
        "source": source,
        "dataset": base.dataset,
        "as_of": base.as_of.isoformat(),
        "inputs": used,
        "value_model": value_used,
        "history": history_from,
        "households": households_from,
        "summary": {
            "basis": summary["basis"],
            "incremental": incremental,
            "warning": summary.get("warning"),
            "objective": summary["objective_name"],
            "base": summary["base"],
            "selected": summary["selected"],
            "contacted": summary["contacted"],
            "control": summary["control"],
            "test_cell": summary["test_cell"],
            "rollout": summary["rollout"],
            "expected_incremental_profit_contacted": _num(
                summary.get("expected_incremental_profit_contacted")
            ),
            "expected_incremental_responses_contacted": float(
                plan.customers.loc[
                    plan.customers["selected"] & (plan.customers["group"] != "control"),
                    "expected_incremental_responses",
                ].sum()
            )
            if incremental
            else None,
            "non_causal_ranking_value_contacted": _num(
                summary.get("non_causal_ranking_value_contacted")
            ),
            "expected_spend_selected": float(summary["expected_spend_selected"]),
            "expected_spend_contacted": float(summary["expected_spend_contacted"]),
            "solver": {
                k: (_num(v) if isinstance(v, float) else v) for k, v in summary["solver"].items()
            },
            "constraints": summary["constraints"],
        },
        "by_offer": _totals(plan.by_offer, "offer", incremental),
        "by_channel": _totals(plan.by_channel, "channel", incremental),
        "excluded": excluded,
        "check": {
            "base": int(summary["base"]),
            "selected": int(summary["selected"]),
            "excluded": n_excluded,
            "adds_up": int(summary["selected"]) + n_excluded == int(summary["base"]),
        },
        "page": {
            "offset": offset,
            "returned": len(page),
            "total_rows": len(table),
            "next_offset": end if end < len(table) else None,
        },
        "customers": _rows(page),
        "unknown": [{"customer_id": c, "reason": "not in the base planned"} for c in unknown],
        "plan_id": saved.plan_id if saved else None,
        "plan_created": saved.created if saved else None,
    }


# --------------------------------------------------------------------------- the loop over HTTP


def unknown_query(params: Mapping[str, str], allowed: frozenset[str]) -> RequestError | None:
    """An error naming the first query parameter the route does not take."""
    extra = sorted(set(params) - allowed)
    if not extra:
        return None
    name = extra[0][:64]
    return RequestError(
        name, f"unknown query parameter {name!r}; this route takes only {sorted(allowed)}"
    )


def request_model(raw: bytes, model: type[Any]) -> Any:
    """A JSON body validated against a request model; a 400 naming the field (unknown fields
    first: a misspelt field is the likelier cause of a missing one)."""
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        raise RequestError("body", "the body is not valid JSON") from None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        detail = _errors(exc, "")
        detail.sort(key=lambda e: e["type"] != "extra_forbidden")
        field, message = first_error(detail)
        raise PlanRequestError(field, message, detail) from None


def _plan_folder(dirs: StateDirs, plan_id: str) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    root = plan_store.plans_root(dirs.home)
    try:  # an id of another form names no plan either (and never a path: load_plan checks)
        record, customers = plan_store.load_plan(root, plan_id)
    except plan_store.PlanNotFound:
        raise RequestError(
            "plan_id",
            f"no saved plan {plan_id[:200]!r} (plan ids: <campaign id>-<YYYY-MM-DD>-<8 hex>, "
            "answered by POST /campaigns/plan with save: true)",
            404,
        ) from None
    return root, record, customers


def post_responses(dirs: StateDirs, plan_id: str, rows: Sequence[Any]) -> dict[str, Any]:
    """The POST /campaigns/{plan_id}/responses answer (serving.schemas.ResponsesResponse)."""
    root, _, _ = _plan_folder(dirs, plan_id)
    frame = pd.DataFrame(
        {
            "customer_id": [r.customer_id for r in rows],
            "responded": [bool(r.responded) for r in rows],
            "reason": [r.reason for r in rows],
            "value": [r.value for r in rows],
        }
    )
    try:
        intake = plan_store.add_responses(root, plan_id, frame)
    except plan_store.ResponseConflict as exc:
        raise RequestError(f"responses.{exc.index}.{exc.field}", str(exc), 409) from None
    return {
        "plan_id": plan_id,
        "received": intake.received,
        "accepted": intake.accepted,
        "unchanged": intake.unchanged,
        "rejected": intake.rejected,
        "stored": intake.stored,
        "wave": intake.wave,
    }


def gate_confidence(text: str | None) -> float:
    """The ``confidence`` query parameter: a one-sided level in [0.5, 1)."""
    if text is None:
        return DEFAULT_GATE_CONFIDENCE
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.5 <= value < 1:
        raise RequestError("confidence", "a number from 0.5 up to (not including) 1, e.g. 0.9")
    return value


def plan_readout(dirs: StateDirs, plan_id: str, confidence: float) -> dict[str, Any]:
    """The GET /campaigns/{plan_id}/readout answer (serving.schemas.ReadoutResponse): the
    stored responses read per arm on its plan segment and the gate's decision per arm, recorded
    beside the plan as ``readout.json`` (what ``patron campaign rollout`` goes on from)."""
    root, record, customers = _plan_folder(dirs, plan_id)
    folder = root / plan_id
    stored = plan_store.stored_responses(folder)
    try:
        out = plan_store.readout_of(
            record,
            customers,
            stored,
            confidence,
            rejected=plan_store.rejected_count(folder),
        )
    except ValueError as exc:  # an offer valued per customer: no fixed value to read with
        raise RequestError("plan_id", _one_line(exc), 422) from None
    plan_store.write_readout(folder, out)
    return {**out, "expected_by_arm": record.get("by_arm", [])}


PLAN_GROUPS = ("test", "control", "rollout")


def page_query(params: Mapping[str, str]) -> tuple[int, int, str | None]:
    """``offset``, ``max_rows`` and ``group`` of GET /campaigns/{plan_id}/customers."""
    from serving.settings import HARD_MAX_BATCH

    def number(name: str, default: int, high: int) -> int:
        text = params.get(name)
        if text is None:
            return default
        if not text.isdigit() or int(text) > high:
            raise RequestError(name, f"a whole number from 0 to {high}")
        return int(text)

    group = params.get("group")
    if group is not None and group not in PLAN_GROUPS:
        raise RequestError("group", f"one of {list(PLAN_GROUPS)}")
    return number("offset", 0, 10**9), number("max_rows", 1000, HARD_MAX_BATCH), group


def saved_plan_page(
    dirs: StateDirs, plan_id: str, offset: int, max_rows: int, group: str | None
) -> dict[str, Any]:
    """The GET /campaigns/{plan_id}/customers answer: the saved plan's record and a page of its
    rows (serving.schemas.SavedPlanResponse) — what was saved, never re-planned."""
    _, record, customers = _plan_folder(dirs, plan_id)
    table = customers if group is None else customers[customers["group"] == group]
    page = table.iloc[offset : offset + max_rows].copy()
    for column in ("person_id", "household_id"):
        if column not in page.columns:
            page[column] = page["customer_id"]
    for column in ("basis", "exclusion_reason", "group", "offer", "channel"):
        if column not in page.columns:
            page[column] = None
    page["basis"] = page["basis"].fillna(str(record.get("summary", {}).get("basis", "")))
    end = offset + len(page)
    return {
        "plan_id": plan_id,
        "campaign_id": record["campaign"]["campaign_id"],
        "as_of": record["as_of"],
        "created_at": record.get("created_at"),
        "inputs": record.get("inputs", {}),
        "summary": record.get("summary", {}),
        "by_arm": record.get("by_arm", []),
        "page": {
            "offset": offset,
            "returned": len(page),
            "total_rows": len(table),
            "next_offset": end if end < len(table) else None,
        },
        "customers": _rows(page),
    }


# --------------------------------------------------------------------------- the roll-out


def served_consent(
    state: ServingState, dirs: StateDirs, record: Mapping[str, Any]
) -> tuple[pd.DataFrame, str]:
    """The consent the service knows now for a saved plan's channels (customer id × channel
    name): the served base of the plan's dataset, by the rule the planner used (``_consent_of``:
    the base's flags, else the customers table). No served base of that dataset: a 409 — a
    roll-out whose consent cannot be checked is not made."""
    campaign = Campaign.model_validate(record["campaign"])
    dataset = record.get("inputs", {}).get("dataset")
    base: CustomerBase | None = None
    for offer in campaign.offers:  # the base the plan's own models serve, first
        served = state.models.get(offer.model) if offer.model else None
        candidate = getattr(served, "base", None)
        if candidate is not None and candidate.dataset == dataset:
            base = candidate
            break
    if base is None:
        base = next((b for (d, _), b in sorted(state.bases.items()) if d == dataset), None)
    if base is None:
        raise RequestError(
            "plan_id",
            f"the service serves no base of dataset {dataset!r} now, so the consent of the "
            "plan's customers cannot be checked: nothing is rolled out",
            409,
        )
    table = _customers_table(base, dirs)
    frame = pd.DataFrame(
        {c.name: _consent_of(base, c.consent, table) for c in campaign.channels},
        index=base.features.index,
    )
    source = (
        f"served base {base.dataset}/{base.feature_set} as of {base.as_of.isoformat()} "
        f"(loaded {state.loaded_at})"
    )
    return frame, source


def plan_rollout(
    state: ServingState, dirs: StateDirs, plan_id: str, confidence: float | None
) -> dict[str, Any]:
    """The POST /campaigns/{plan_id}/rollout answer (serving.schemas.RolloutResponse): the
    roll-out recorded from the plan's recorded read-out — each customer of its roll-out group
    only the arm the plan gave them, when that arm passed, held if their consent for its
    channel is withdrawn now — or the one recorded already from the same read-out."""
    root, _, _ = _plan_folder(dirs, plan_id)
    try:
        out, created = plan_store.record_rollout(
            root,
            plan_id,
            lambda record: served_consent(state, dirs, record),
            confidence=confidence,
        )
    except plan_store.RolloutRefused as exc:
        raise RequestError(exc.field, _one_line(exc, 600), 409) from None
    return {**out, "created": created}


ROLLOUT_DECISIONS = ("contact", "held")


def rollout_page(
    dirs: StateDirs, plan_id: str, offset: int, max_rows: int, decision: str | None
) -> dict[str, Any]:
    """The GET /campaigns/{plan_id}/rollout answer: the recorded roll-out and a page of its
    rows (serving.schemas.RolloutPageResponse), optionally one decision's (``contact``)."""
    root, _, _ = _plan_folder(dirs, plan_id)
    recorded = plan_store.load_rollout(root / plan_id)
    if recorded is None:
        raise RequestError(
            "plan_id",
            f"no roll-out recorded for plan {plan_id}: POST /campaigns/{plan_id}/rollout first",
            404,
        )
    out, rows = recorded
    table = rows if decision is None else rows[rows["decision"] == decision]
    page = table.iloc[offset : offset + max_rows]
    end = offset + len(page)
    return {
        **out,
        "page": {
            "offset": offset,
            "returned": len(page),
            "total_rows": len(table),
            "next_offset": end if end < len(table) else None,
        },
        "customers": [
            {
                "customer_id": str(r["customer_id"]),
                "offer": str(r["offer"]),
                "channel": str(r["channel"]),
                "arm": str(r["arm"]),
                "decision": str(r["decision"]),
                "reason": str(r["reason"]),
                "expected_incremental_profit": _num(r["expected_incremental_profit"]),
            }
            for r in page.to_dict("records")
        ],
    }


def rollout_query(params: Mapping[str, str]) -> tuple[int, int, str | None]:
    """``offset``, ``max_rows`` and ``decision`` of GET /campaigns/{plan_id}/rollout."""
    decision = params.get("decision")
    if decision is not None and decision not in ROLLOUT_DECISIONS:
        raise RequestError("decision", f"one of {list(ROLLOUT_DECISIONS)}")
    offset, max_rows, _ = page_query({k: v for k, v in params.items() if k != "group"})
    return offset, max_rows, decision
