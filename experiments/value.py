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


class RiskSource(BaseModel):
    """Where the grid's churn risk comes from: BG/NBD's 1 - P(alive now) (the default), or the
    probability of a registered churn model (a label meaning churn: a response or any other
    probability is refused) scored on its own features at the cutoff."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        None, description="registered churn model (e.g. churn_synthetic); none: BG/NBD"
    )
    alias: str = Field("champion", description="the model's alias to score with")


@dataclass(frozen=True)
class ChurnRisk:
    """A churn model's probabilities per customer at the cutoff, and what they are."""

    scores: pd.Series  # indexed by customer_id (str)
    model: str
    version: str
    alias: str
    meaning: str  # said wherever the risk is shown


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
    risk: RiskSource = Field(
        default_factory=RiskSource, description="the churn risk of the value x risk grid"
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
    risk: ChurnRisk | None = None,
) -> ValueResult:
    """The value job over DuckDB relations (reads, writes nothing); the grid's churn risk is
    ``risk``'s probability where given (BG/NBD's for customers it did not score, counted)."""
    cfg = job.value
    fitted = fit_bgnbd(transactions, as_of, con, job.unit)
    value = value_at_cutoff(fitted, transactions, products, as_of, cfg, con, job.unit)
    _, bg, gg = fitted
    table, customers = value.table, value.customers
    has_categories = con.execute(
        f"SELECT count(category) > 0 FROM {transactions} WHERE CAST(ts AS DATE) <= "
        f"{sql_date(as_of)}"
    ).fetchall()[0][0]
    customers, risk_facts = with_churn_risk(customers, risk)
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
        "risk": risk_facts,
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


BGNBD_RISK = "1 - P(alive now) under BG/NBD (a customer without a repeat purchase counts as alive)"


def with_churn_risk(
    customers: pd.DataFrame, risk: ChurnRisk | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The customers with ``churn_risk`` from the churn model where it scored them (BG/NBD's
    kept as ``churn_risk_bgnbd``), and the facts saying where the risk came from."""
    if risk is None:
        return customers, {"source": "bgnbd", "meaning": BGNBD_RISK}
    out = customers.copy()
    out["churn_risk_bgnbd"] = out["churn_risk"]
    scored = out["customer_id"].astype(str).map(risk.scores)
    out["churn_risk"] = scored.fillna(out["churn_risk_bgnbd"]).astype(float)
    out["churn_risk_source"] = scored.notna().map({True: "model", False: "bgnbd"})
    return out, {
        "source": "model",
        "model": risk.model,
        "alias": risk.alias,
        "version": risk.version,
        "meaning": risk.meaning,
        "customers_scored": int(scored.notna().sum()),
        "customers_bgnbd": int(scored.isna().sum()),
    }


def load_churn_risk(state: Any, dataset: str, source: RiskSource, as_of: date) -> ChurnRisk:
    """Score the dataset's customers at ``as_of`` with the registered churn model ``source``
    names: its own feature set rebuilt from its record, computed as a snapshot would be. A model
    whose label is not churn, or not found, is one line naming ``risk.model``."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from features.build import snapshot_sql
    from features.definitions import feature_set_from_spec
    from features.sources import connect
    from models.pyfunc import ScoringModel
    from training.families import get_family
    from training.run import tracking

    name = f"{source.model}@{source.alias}"
    with tracking(state.tracking_uri):
        client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
        try:
            version = client.get_model_version_by_alias(str(source.model), source.alias)
            wrapper: Any = mlflow.pyfunc.load_model(f"models:/{name}").unwrap_python_model()
        except MlflowException as exc:
            raise ValueError(f"risk.model: no registered model {name} ({exc.message})") from None
    if not isinstance(wrapper, ScoringModel):
        raise ValueError(f"risk.model: {name} is not a Patron scoring model")
    recorded = wrapper.info.get("label_meaning")
    try:
        meaning = recorded or get_family(wrapper.family).fixed_label_meaning
    except ValueError:  # a family this install does not know: only a recorded meaning counts
        meaning = recorded
    if meaning != "churn":
        raise ValueError(
            f"risk.model: {name} predicts {meaning or 'a label of unknown meaning'!r}, not churn: "
            "only a churn probability is a churn risk"
        )
    spec = wrapper.info.get("feature_set_spec")
    if not spec:
        raise ValueError(f"risk.model: {name} records no feature set to rebuild its inputs")
    fs = feature_set_from_spec(spec)
    con = connect(state)
    try:
        features = con.execute(snapshot_sql(state, dataset, fs, as_of)).df()
    finally:
        con.close()
    scores = pd.Series(
        wrapper.score(features), index=features["customer_id"].astype(str), dtype=float
    )
    return ChurnRisk(
        scores=scores,
        model=str(source.model),
        version=str(version.version),
        alias=source.alias,
        meaning=f"P(churn) by {source.model} version {version.version} ({source.alias})",
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
    risk = f["risk"]
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
        "risk_source": risk["source"],
        "risk_model": f"{risk['model']}/{risk['version']}" if "model" in risk else "none",
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
    risk = None if job.risk.model is None else load_churn_risk(state, dataset, job.risk, as_of)
    con = connect(state)
    try:
        result = compute_value(
            con,
            catalog.relation("transactions"),
            catalog.relation_or_none("products"),
            dataset,
            as_of,
            job,
            risk,
        )
    finally:
        con.close()
    paths = write_value(result, value_dir(state, dataset, as_of))
    return result, paths, log_value(state, result, paths)
