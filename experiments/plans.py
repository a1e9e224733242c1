"""A campaign plan as a tracked, immutable object; the read-out of its test cell and the gate.

``save_plan`` writes ``<home>/campaigns/<plan id>/`` — ``plan.parquet`` (one row per customer
record: group, offer, channel, expected incremental profit and responses, exclusion reason) and
``plan.json`` (the campaign definition, the model and data it was made with, the totals and the
expected figures per arm) — atomically, and logs the plan to MLflow (experiment
``campaign-plans``, run named by the plan id). The id is the campaign id, the plan date and a
hash of everything the plan was made from, so the same inputs give the same id; a plan folder is
never overwritten (a different plan under an existing id is refused).

``read_plan`` reads the test cell's responses (the ``campaign_history`` layout: ``customer_id``,
``responded``, optional ``reason``) after the response window: per arm, the incremental response
and profit against the plan's control group with intervals, actual vs expected, declines by
reason, the arms that contradict the model, and the roll-out gate's decision. The read-out is
written beside the plan and logged to the plan's MLflow run; responses of customers outside the
wave are kept in ``rejected_responses.csv`` with the reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.store import atomic_path
from models.decisions import Campaign, Plan
from models.decisions.readout import (
    DEFAULT_GATE_CONFIDENCE,
    ArmTerms,
    gate,
    read_wave,
)

ID = "customer_id"
PLAN_FILE, RECORD_FILE, READOUT_FILE = "plan.parquet", "plan.json", "readout.json"
REJECTED_FILE = "rejected_responses.csv"
RESPONSES_FILE = "responses.parquet"  # the wave's responses the read-out used
MLFLOW_EXPERIMENT = "campaign-plans"


def plans_dir(state: Any) -> Path:
    """Where the plans live: ``<home>/campaigns``."""
    return Path(state.home) / "campaigns"


def _arm_label(offer_data_id: str, channel: str) -> str:
    return f"{offer_data_id}/{channel}"


def expected_by_arm(plan: Plan, campaign: Campaign) -> list[dict[str, Any]]:
    """Per (offer, channel) arm of the contacted customers: contacts, expected incremental
    responses and profit, and the spread of the response count the model itself expects
    (``sqrt(sum u (1 - u))`` over the contacts: response noise only, not the model's error)."""
    c = plan.customers
    contacted = c[c["selected"] & c["group"].isin(["test", "rollout"])]
    data_id = {o.id: o.data_id for o in campaign.offers}
    rows = []
    for (offer, channel), part in contacted.groupby(["offer", "channel"], sort=True):
        u = part["expected_incremental_responses"].to_numpy(dtype=float)
        rows.append(
            {
                "arm": _arm_label(data_id[str(offer)], str(channel)),
                "offer": str(offer),
                "channel": str(channel),
                "contacts": int(len(part)),
                "test_cell": int((part["group"] == "test").sum()),
                "expected_incremental_responses": float(u.sum()),
                "expected_incremental_responses_sd": float(
                    np.sqrt(np.sum(np.clip(u, 0, 1) * (1 - np.clip(u, 0, 1))))
                ),
                "expected_incremental_profit": float(part["expected_incremental_profit"].sum()),
            }
        )
    return rows


def plan_id_of(campaign: Campaign, as_of: date, inputs: dict[str, Any]) -> str:
    """``<campaign id>-<as of>-<8 hex>``: the hash covers the definition and the inputs."""
    blob = json.dumps(
        {"campaign": campaign.model_dump(mode="json"), "as_of": str(as_of), "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in campaign.campaign_id)
    return f"{safe}-{as_of}-{digest}"


@dataclass(frozen=True)
class SavedPlan:
    """Where a plan was written and its record."""

    plan_id: str
    folder: Path
    record: dict[str, Any]
    created: bool  # False when the identical plan already existed


def save_plan(
    state: Any, plan: Plan, campaign: Campaign, as_of: date, inputs: dict[str, Any]
) -> SavedPlan:
    """Write the plan and its record atomically (never over another plan) and log it to
    MLflow. ``inputs``: what the plan was made from (dataset, model, feature set, ...)."""
    plan_id = plan_id_of(campaign, as_of, inputs)
    folder = plans_dir(state) / plan_id
    record = {
        "plan_id": plan_id,
        "campaign": campaign.model_dump(mode="json"),
        "as_of": str(as_of),
        "inputs": inputs,
        "summary": _clean(plan.summary),
        "by_arm": expected_by_arm(plan, campaign),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if (folder / RECORD_FILE).exists():
        old = json.loads((folder / RECORD_FILE).read_text())
        keys = ("campaign", "as_of", "inputs", "by_arm")  # not the timings or the run id
        same = {k: old.get(k) for k in keys} == json.loads(
            json.dumps({k: record[k] for k in keys}, default=str)
        )
        if not same:
            raise ValueError(f"plan {plan_id} exists with other contents: plans are immutable")
        return SavedPlan(plan_id, folder, old, False)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / PLAN_FILE) as tmp:
        plan.customers.to_parquet(tmp, index=False)
    record["mlflow_run_id"] = _log_plan(state, plan_id, record, folder)
    with atomic_path(folder / RECORD_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return SavedPlan(plan_id, folder, record, True)


def _log_plan(state: Any, plan_id: str, record: dict[str, Any], folder: Path) -> str:
    import mlflow

    from training.run import ensure_experiment, tracking

    with tracking(state.tracking_uri):
        exp_id = ensure_experiment(state, MLFLOW_EXPERIMENT)
        with mlflow.start_run(experiment_id=exp_id, run_name=plan_id) as run:
            mlflow.set_tags(
                {
                    "plan_id": plan_id,
                    "campaign_id": record["campaign"]["campaign_id"],
                    "as_of": record["as_of"],
                    "basis": record["summary"]["basis"],
                }
            )
            flat = {k: v for k, v in record["inputs"].items() if isinstance(v, str | int | float)}
            mlflow.log_params(flat)
            s = record["summary"]
            mlflow.log_metrics(
                {k: float(s[k]) for k in ("base", "selected", "contacted", "control", "test_cell")}
            )
            for arm in record["by_arm"]:
                key = arm["arm"].replace("/", "_")
                mlflow.log_metric(
                    f"expected_incremental_profit_{key}", arm["expected_incremental_profit"]
                )
                mlflow.log_metric(
                    f"expected_incremental_responses_{key}", arm["expected_incremental_responses"]
                )
            mlflow.log_dict(record, "plan.json")
            mlflow.log_artifact(str(folder / PLAN_FILE))
            return str(run.info.run_id)


def load_plan(state: Any, plan_id: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """A saved plan's record and per-customer table; a clear error for an unknown id."""
    folder = plans_dir(state) / plan_id
    if not (folder / RECORD_FILE).exists():
        known = sorted(p.name for p in plans_dir(state).glob("*") if (p / RECORD_FILE).exists())
        raise ValueError(f"--plan {plan_id!r}: no such plan (known: {known[-5:]})")
    return json.loads((folder / RECORD_FILE).read_text()), pd.read_parquet(folder / PLAN_FILE)


def read_plan(
    state: Any,
    plan_id: str,
    responses: pd.DataFrame,
    confidence: float = DEFAULT_GATE_CONFIDENCE,
) -> dict[str, Any]:
    """The test cell's read-out against the control group and the gate's decision per arm."""
    record, customers = load_plan(state, plan_id)
    campaign = Campaign.model_validate(record["campaign"])
    missing = {ID, "responded"} - set(responses.columns)
    if missing:
        raise ValueError(f"responses lack columns {sorted(missing)} (campaign_history layout)")
    r = responses.copy()
    r[ID] = r[ID].astype(str)
    r["responded"] = r["responded"].map(_flag)
    wave = customers[customers["selected"] & customers["group"].isin(["test", "control"])]
    known = r[ID].isin(wave[ID])
    bad = r["responded"].isna()
    rejected = r[~known | bad].copy()
    rejected["reason_rejected"] = np.where(
        ~known[~known | bad], "not in the plan's test cell or control group", "responded: not 0/1"
    )
    r = r[known & ~bad].drop_duplicates(ID, keep="last")
    rows = wave.merge(r, on=ID, how="inner")
    data_id = {o.id: o.data_id for o in campaign.offers}
    test = rows["group"] == "test"
    labels = [
        _arm_label(data_id[o], c) if t else None
        for o, c, t in zip(rows["offer"], rows["channel"], test, strict=True)
    ]
    offers = {o.id: o for o in campaign.offers}
    channels = {c.name: c for c in campaign.channels}
    terms = {}
    for o, c in {(o, c) for o, c, t in zip(rows["offer"], rows["channel"], test, strict=True) if t}:
        offer, channel = offers[o], channels[c]
        if offer.value is None:
            raise ValueError(f"offer {o!r} is valued per customer: the read-out needs `value`")
        terms[_arm_label(data_id[o], c)] = ArmTerms(
            float(offer.value), float(channel.cost_per_contact), float(offer.cost_per_acceptance)
        )
    expected = np.where(test, rows["expected_incremental_responses"].to_numpy(dtype=float), np.nan)
    reason = rows["reason"].tolist() if "reason" in rows.columns else None
    readouts = read_wave(
        labels,
        rows["responded"].to_numpy(dtype=float),
        terms,
        expected_uplift=expected,
        reason=reason,
        level=confidence,
    )
    decisions = gate(readouts, confidence)
    out = {
        "plan_id": plan_id,
        "read_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "confidence": confidence,
        "responses": int(len(responses)),
        "read": int(len(rows)),
        "rejected": int(len(rejected)),
        "wave_without_response": int(len(wave) - len(rows)),
        "arms": [x.as_dict() for x in readouts],
        "gate": [d.as_dict() for d in decisions],
        "contradicting_arms": [x.arm for x in readouts if x.contradicts_model],
    }
    folder = plans_dir(state) / plan_id
    out = _clean(out)
    kept = rows[[ID, "group", "offer", "channel", "responded"]].copy()
    kept["reason"] = rows["reason"] if "reason" in rows.columns else None
    with atomic_path(folder / RESPONSES_FILE) as tmp:
        kept.to_parquet(tmp, index=False)
    with atomic_path(folder / READOUT_FILE) as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n")
    if len(rejected):
        with atomic_path(folder / REJECTED_FILE) as tmp:
            rejected.to_csv(tmp, index=False)
    run_id = record.get("mlflow_run_id")
    if run_id:
        import mlflow

        from training.run import tracking

        with tracking(state.tracking_uri), mlflow.start_run(run_id=run_id):
            mlflow.log_dict(out, "readout.json")
            for d in decisions:
                mlflow.set_tag(f"gate.{d.arm}", "roll out" if d.roll_out else "not rolled out")
    return out


def _flag(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "1.0"):
        return 1.0
    if text in ("0", "false", "no", "n", "0.0"):
        return 0.0
    return None


def _clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become null, numpy scalars Python ones, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
