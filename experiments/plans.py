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
and profit against the control customers of its plan segment with intervals, actual vs
expected, declines by reason, the arms that contradict the model, and the roll-out gate's
decision. The read-out is
written beside the plan and logged to the plan's MLflow run; responses of customers outside the
wave are kept in ``rejected_responses.csv`` with the reason, never dropped silently.

The files and their rules (paths, immutability, atomic writes, response intake) are
``models.decisions.plan_store``'s, which the service uses too; this module adds MLflow.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from models.decisions import Campaign, Plan
from models.decisions import plan_store as store
from models.decisions.plan_store import (
    ID,
    PLAN_FILE,
    READOUT_FILE,
    RECORD_FILE,
    REJECTED_FILE,
    RESPONSES_FILE,
    SavedPlan,
    expected_by_arm,
    plan_id_of,
)
from models.decisions.readout import DEFAULT_GATE_CONFIDENCE

__all__ = [
    "ID",
    "MLFLOW_EXPERIMENT",
    "PLAN_FILE",
    "READOUT_FILE",
    "RECORD_FILE",
    "REJECTED_FILE",
    "RESPONSES_FILE",
    "SavedPlan",
    "expected_by_arm",
    "load_plan",
    "plan_id_of",
    "plans_dir",
    "read_plan",
    "save_plan",
]

MLFLOW_EXPERIMENT = "campaign-plans"


def plans_dir(state: Any) -> Path:
    """Where the plans live: ``<home>/campaigns``."""
    return store.plans_root(state.home)


def save_plan(
    state: Any, plan: Plan, campaign: Campaign, as_of: date, inputs: dict[str, Any]
) -> SavedPlan:
    """Write the plan and its record atomically (never over another plan) and log it to
    MLflow. ``inputs``: what the plan was made from (dataset, model, feature set, ...)."""
    record = store.plan_record(plan, campaign, as_of, inputs)

    def logged(folder: Path, rec: dict[str, Any]) -> dict[str, Any]:
        return {"mlflow_run_id": _log_plan(state, rec["plan_id"], rec, folder)}

    return store.write_plan(plans_dir(state), plan.customers, record, on_create=logged)


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
                mlflow.log_metric(f"contacts_{key}", float(arm["contacts"]))
                # a re-test (or a non-causal ranking) has no expected incremental figure
                for figure in ("expected_incremental_profit", "expected_incremental_responses"):
                    if arm.get(figure) is not None:
                        mlflow.log_metric(f"{figure}_{key}", float(arm[figure]))
            mlflow.log_dict(record, "plan.json")
            mlflow.log_artifact(str(folder / PLAN_FILE))
            return str(run.info.run_id)


def load_plan(state: Any, plan_id: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """A saved plan's record and per-customer table; a clear error for an unknown id."""
    try:
        return store.load_plan(plans_dir(state), plan_id)
    except store.PlanNotFound as exc:
        raise ValueError(f"--plan {exc}") from None


def read_plan(
    state: Any,
    plan_id: str,
    responses: pd.DataFrame,
    confidence: float = DEFAULT_GATE_CONFIDENCE,
) -> dict[str, Any]:
    """The test cell's read-out per arm on its plan segment and the gate's decision per arm."""
    record, customers = load_plan(state, plan_id)
    kept, rejected = store.screen_responses(responses, customers)
    out = store.readout_of(
        record, customers, kept, confidence, received=len(responses), rejected=len(rejected)
    )
    folder = plans_dir(state) / plan_id
    store.write_wave(folder, kept, rejected)
    store.write_readout(folder, out)
    run_id = record.get("mlflow_run_id")
    if run_id:
        import mlflow

        from training.run import tracking

        with tracking(state.tracking_uri), mlflow.start_run(run_id=run_id):
            mlflow.log_dict(out, "readout.json")
            for d in out["gate"]:
                verdict = "roll out" if d["roll_out"] else "not rolled out"
                mlflow.set_tag(f"gate.{d['arm']}", verdict)
    return out
