"""The value job (``patron value``): what each customer is expected to be worth, year by year.

One validated config (``experiments/value/<name>.yaml``: dataset, cutoff, the value accounting of
``models.value.ValueConfig``, the segment schemes to total over) in; BG/NBD + Gamma-Gamma fitted on
the history up to the cutoff; per customer and year the expected purchases, revenue, gross profit,
P(alive), discounted profit, NPV and cumulative NPV; totals per segment in the literature's table
form; the value x churn-risk grid with the most a retention contact is worth. Written under
``<home>/value/<dataset>/as_of=<date>/`` (atomically) and logged to the MLflow experiment ``value``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.clv_summary import TimeUnit
from features.sql import sql_date
from models.value import (
    ValueConfig,
    config_error_lines,
    retention_economics,
    value_by_group,
    value_risk_grid,
)
from training.families.clv import fit_bgnbd, value_at_cutoff

MLFLOW_EXPERIMENT = "value"
SegmentScheme = Literal[
    "abc_class", "pyramid_level", "rfm_band", "rfm_segment", "lifecycle_stage", "cluster"
]
DEFAULT_SCHEMES: tuple[SegmentScheme, ...] = ("abc_class", "rfm_segment", "lifecycle_stage")
#: What every figure of the job is, said once wherever it is shown.
BASIS = (
    "expected values under BG/NBD + Gamma-Gamma fitted on the history up to the cutoff "
    "(model estimates, not observed figures)"
)


class ValueJob(BaseModel):
    """A value job: which data, which cutoff, which accounting, which segments to total over."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dataset: str
    description: str = ""
    as_of: date | None = Field(None, description="cutoff (default: the last data date)")
    unit: TimeUnit = Field("weeks", description="time unit the BG/NBD model is fitted in")
    value: ValueConfig = Field(default_factory=ValueConfig)
    segments: list[SegmentScheme] = Field(
        default_factory=lambda: list(DEFAULT_SCHEMES),
        description="segment schemes (features.segments) the value is totalled over",
    )


def load_value_job(path: str | Path, overrides: dict[str, Any] | None = None) -> ValueJob:
    """Read and validate a value job YAML; a bad value is one line naming its key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"value config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a value config is a mapping of keys")
    try:
        job = ValueJob.model_validate({**data, **(overrides or {})})
    except ValidationError as exc:
        raise ValueError(config_error_lines(exc, str(path))) from None
    if job.dataset.endswith((".yaml", ".yml")) and not Path(job.dataset).is_absolute():
        job = job.model_copy(update={"dataset": str((path.parent / job.dataset).resolve())})
    return job


@dataclass
class ValueResult:
    """Everything the value job computed (no I/O): tables, economics, grid and the facts."""

    job: ValueJob
    dataset: str
    as_of: date
    table: pd.DataFrame  # per customer and year (models.value.VALUE_TABLE_COLUMNS)
    customers: pd.DataFrame  # per customer: totals, NPV, risk, deciles, retention economics
    overall: pd.DataFrame  # value_by_group over everyone
    by_segment: dict[str, pd.DataFrame]  # scheme -> value_by_group per segment
    grid: pd.DataFrame  # value decile x risk decile
    facts: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        """The K-year totals of the whole base (expected)."""
        c = self.customers
        return {
            "customers": float(len(c)),
            "expected_revenue": float(c["expected_revenue"].sum()),
            "expected_gross_profit": float(c["expected_gross_profit"].sum()),
            "npv": float(c["npv"].sum()),
            "npv_per_customer": float(c["npv"].mean()) if len(c) else 0.0,
            "expected_alive_end": float(self.overall["expected_alive_end"].iloc[-1]),
            "max_retention_spend_total": float(c.loc[~c["let_go"], "max_retention_spend"].sum()),
            "worth_a_contact": float((~c["let_go"]).sum()),
            "let_go": float(c["let_go"].sum()),
        }


def segments_at(con: Any, source: str, as_of: date, schemes: list[str]) -> pd.DataFrame:
    """The segment columns ``schemes`` per customer at ``as_of`` (features.segments)."""
    from features.build import compute_features
    from features.definitions import feature_set
    from features.segments import ClusterConfig, SegmentsConfig, segment_customers

    cfg = SegmentsConfig(clusters=ClusterConfig(enabled="cluster" in schemes))
    feats = compute_features(con, source, as_of, feature_set("churn_v1", cfg.rfm))
    seg = segment_customers(feats, source, con, cfg, as_of=as_of)
    return seg[["customer_id", *schemes]].assign(customer_id=lambda f: f["customer_id"].astype(str))


def compute_value(
    con: Any,
    transactions: str,
    products: str | None,
    dataset: str,
    as_of: date,
    job: ValueJob,
) -> ValueResult:
    """The value job over DuckDB relations (reads, writes nothing)."""
    cfg = job.value
    fitted = fit_bgnbd(transactions, as_of, con, job.unit)
    value = value_at_cutoff(fitted, transactions, products, as_of, cfg, con, job.unit)
    _, bg, gg = fitted
    table, customers = value.table, value.customers
    has_categories = con.execute(
        f"SELECT count(category) > 0 FROM {transactions} WHERE CAST(ts AS DATE) <= "
        f"{sql_date(as_of)}"
    ).fetchall()[0][0]
    customers = retention_economics(customers, cfg.retention)
    segments = segments_at(con, transactions, as_of, list(job.segments))
    customers = customers.merge(segments, on="customer_id", how="left", validate="one_to_one")
    by_segment: dict[str, pd.DataFrame] = {
        scheme: value_by_group(table, customers.set_index("customer_id")[scheme])
        for scheme in job.segments
    }
    facts = {
        "basis": BASIS,
        "bgnbd": {k: float(v) for k, v in bg.params_.items()},
        "gamma_gamma": {k: float(v) for k, v in gg.params_.items()},
        "repeat_buyers": int(gg.n_customers_),
        "margin_default": cfg.margin.default,
        "margin_by_category": dict(cfg.margin.by_category),
        "revenue_share_priced_by_category": value.revenue_share_priced_by_category,
        "data_has_categories": bool(has_categories) or products is not None,
        "margin_mean": float(customers["margin"].mean()),
        "annual_discount_rate": cfg.annual_discount_rate,
        "discount_timing": cfg.discount_timing,
        "years": cfg.years,
        "unit": job.unit,
        "retention": cfg.retention.model_dump(),
    }
    return ValueResult(
        job=job,
        dataset=dataset,
        as_of=as_of,
        table=table,
        customers=customers,
        overall=value.by_year,
        by_segment=by_segment,
        grid=value_risk_grid(customers, cfg.retention),
        facts=facts,
    )


def value_dir(state: Any, dataset: str, as_of: date) -> Path:
    """Folder of a dataset's value outputs at a cutoff."""
    return Path(state.home) / "value" / dataset / f"as_of={as_of.isoformat()}"


def write_value(result: ValueResult, folder: Path) -> dict[str, Path]:
    """Write the tables, the facts and the HTML page into ``folder``, each atomically."""
    from experiments.value_page import render_value_page
    from features.store import atomic_path

    paths = {
        "table": folder / "value_table.parquet",
        "customers": folder / "customer_value.parquet",
        "overall": folder / "value_by_year.csv",
        "by_segment": folder / "value_by_segment.csv",
        "grid": folder / "value_risk_grid.csv",
        "meta": folder / "value_meta.json",
        "page": folder / "value_report.html",
    }
    with atomic_path(paths["table"]) as tmp:
        result.table.to_parquet(tmp, index=False)
    with atomic_path(paths["customers"]) as tmp:
        result.customers.to_parquet(tmp, index=False)
    with atomic_path(paths["overall"]) as tmp:
        result.overall.to_csv(tmp, index=False)
    segs = [f.assign(scheme=s) for s, f in result.by_segment.items()]
    with atomic_path(paths["by_segment"]) as tmp:
        (pd.concat(segs, ignore_index=True) if segs else pd.DataFrame()).to_csv(tmp, index=False)
    with atomic_path(paths["grid"]) as tmp:
        result.grid.to_csv(tmp, index=False)
    meta = {
        "name": result.job.name,
        "dataset": result.dataset,
        "as_of": result.as_of.isoformat(),
        "config": result.job.model_dump(mode="json"),
        "facts": result.facts,
        "totals": result.totals(),
    }
    with atomic_path(paths["meta"]) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    with atomic_path(paths["page"]) as tmp:
        tmp.write_text(render_value_page(result), encoding="utf-8")
    return paths


def log_value(state: Any, result: ValueResult, paths: dict[str, Path]) -> str:
    """One MLflow run in the experiment ``value``: the accounting as params, the totals as
    metrics, the tables and the page as artifacts (no customer rows in params or tags)."""
    import mlflow

    from training.run import ensure_experiment, git_sha, tracking

    f = result.facts
    params = {
        "dataset": result.dataset,
        "as_of": result.as_of.isoformat(),
        "years": f["years"],
        "annual_discount_rate": f["annual_discount_rate"],
        "discount_timing": f["discount_timing"],
        "margin_default": f["margin_default"],
        "margin_by_category": json.dumps(f["margin_by_category"], sort_keys=True),
        "unit": f["unit"],
        **{f"retention_{k}": v for k, v in f["retention"].items()},
        **{f"bgnbd_{k}": v for k, v in f["bgnbd"].items()},
        **{f"gg_{k}": v for k, v in f["gamma_gamma"].items()},
    }
    with tracking(state.tracking_uri):
        exp_id = ensure_experiment(state, MLFLOW_EXPERIMENT)
        run_name = f"value {result.dataset} {result.as_of.isoformat()}"
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
            mlflow.set_tags({"job": result.job.name, "basis": BASIS, "git_sha": git_sha()})
            mlflow.log_params(params)
            mlflow.log_metrics(result.totals())
            for path in paths.values():
                mlflow.log_artifact(str(path))
            return str(run.info.run_id)


def run_value(state: Any, job: ValueJob, as_of: date) -> tuple[ValueResult, dict[str, Path], str]:
    """Compute the value job at ``as_of`` on the dataset's ingested tables, write and log it."""
    from features.catalog import Catalog
    from features.sources import connect, load_dataset

    dataset = load_dataset(job.dataset).name
    catalog = Catalog(state, dataset)
    con = connect(state)
    try:
        result = compute_value(
            con,
            catalog.relation("transactions"),
            catalog.relation_or_none("products"),
            dataset,
            as_of,
            job,
        )
    finally:
        con.close()
    paths = write_value(result, value_dir(state, dataset, as_of))
    return result, paths, log_value(state, result, paths)
