"""The KPI report (``patron report kpis``): the CRM programme measured month by month.

Per calendar month, from the ingested transactions (DuckDB): customers active at the month's start
and end, buying customers, new and won-back customers, churned customers and the churn and
retention rates, net revenue and gross profit; the same per segment at the month's start (Pareto
ABC class or lifecycle stage, computed from the data before the month only); and the targets of
the config (the e-CRM literature's three: churn down, profit up, payback) marked met, not met or
not known yet. Definitions in docs/kpis.md. Written under ``<home>/kpis/<dataset>/<first>_<last>/``
(atomically) and logged to the MLflow experiment ``kpis``.

Churn follows ``features.labels.churn_label_sql`` at the cutoff "the day before the month":
active = an order in the trailing ``active_days``, churned = active and no order in the
``churn_horizon_days`` after; a month whose horizon runs past the data has no churn figure.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from features.sql import sql_date, sql_literal
from models.value import MarginConfig, config_error_lines

MLFLOW_EXPERIMENT = "kpis"
SegmentCriterion = Literal["abc_class", "lifecycle_stage"]
#: Segment of a customer without an order before the month (a new customer, this month).
NO_HISTORY = "no order before the month"
Verdict = Literal["met", "not met", "not known yet"]


# --------------------------------------------------------------------------- config


def _month(value: Any) -> date:
    """``2011-03`` (or a date in that month) -> the month's first day."""
    if isinstance(value, date):
        return value.replace(day=1)
    text = str(value).strip()
    try:
        year, month = text.split("-")[:2] if text.count("-") == 1 else ("", "")
        return date(int(year), int(month), 1)
    except ValueError:
        raise ValueError("not a month YYYY-MM") from None


Month = Annotated[date, BeforeValidator(_month)]


def month_label(month: date) -> str:
    """``2011-03``."""
    return f"{month.year:04d}-{month.month:02d}"


def month_end(month: date) -> date:
    """The last day of ``month``."""
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def add_months(month: date, n: int) -> date:
    """The first day of the month ``n`` months after ``month``."""
    k = month.year * 12 + month.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


class Period(BaseModel):
    """A run of calendar months, first and last included."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: Month
    end: Month

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self

    def months(self) -> list[date]:
        out, m = [], self.start
        while m <= self.end:
            out.append(m)
            m = add_months(m, 1)
        return out

    def label(self) -> str:
        a, b = month_label(self.start), month_label(self.end)
        return a if a == b else f"{a} to {b}"


class KpiTargets(BaseModel):
    """Targets of a programme against a baseline period (docs/kpis.md: what each one means)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline: Period = Field(description="months before the programme, the reference")
    evaluation: Period = Field(description="the programme's months; it starts at their first")
    churn_reduction: float | None = Field(
        None, gt=0, lt=1, description="churn rate down at least this share (0.10 = 10 %)"
    )
    profit_growth: float | None = Field(
        None, gt=0, description="mean monthly gross profit up at least this share (0.20 = 20 %)"
    )
    payback_months: int | None = Field(
        None, ge=1, description="programme_cost returned by extra gross profit within these months"
    )
    programme_cost: float | None = Field(None, gt=0, description="what the programme cost")

    @model_validator(mode="after")
    def _check(self) -> KpiTargets:
        if self.evaluation.start <= self.baseline.end:
            raise ValueError("the evaluation period must start after the baseline period ends")
        if (self.payback_months is None) != (self.programme_cost is None):
            raise ValueError("payback_months and programme_cost go together")
        if self.churn_reduction is None and self.profit_growth is None and not self.payback_months:
            raise ValueError("name at least one of churn_reduction, profit_growth, payback_months")
        return self


class KpiJob(BaseModel):
    """A KPI report: which data, which months, the definitions' parameters, margin, targets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dataset: str
    description: str = ""
    start: Month | None = Field(
        None, description="first month (default: the first whose active window the data covers)"
    )
    end: Month | None = Field(None, description="last month (default: the last data month)")
    active_days: int = Field(
        365, ge=1, description="active: an order in the trailing this many days"
    )
    churn_horizon_days: int = Field(
        90, ge=1, description="churned: active, and no order in this many days after"
    )
    segment: SegmentCriterion = Field(
        "abc_class", description="segment of a customer at the month's start"
    )
    margin: MarginConfig = Field(default_factory=MarginConfig)
    targets: KpiTargets | None = None

    @model_validator(mode="after")
    def _range(self) -> KpiJob:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end must not be before start")
        return self


def load_kpi_job(path: str | Path, overrides: dict[str, Any] | None = None) -> KpiJob:
    """Read and validate a KPI config YAML; a bad value is one line naming its key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KPI config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a KPI config is a mapping of keys")
    try:
        job = KpiJob.model_validate({**data, **(overrides or {})})
    except ValidationError as exc:
        raise ValueError(config_error_lines(exc, str(path))) from None
    if job.dataset.endswith((".yaml", ".yml")) and not Path(job.dataset).is_absolute():
        job = job.model_copy(update={"dataset": str((path.parent / job.dataset).resolve())})
    return job


# --------------------------------------------------------------------------- months


def resolve_months(
    job: KpiJob, dates: tuple[date, date], names: dict[str, str] | None = None
) -> list[date]:
    """The report's months: the config's (or the defaults), refused when outside the data.

    The first month must start on or after the first data date (an earlier month would be
    partly without data) and the last must start on or before the last data date. The target
    periods must lie within the report. ``names`` says what to call start / end in errors (the
    CLI's options when they were given there)."""
    first, last = dates
    names = {"start": "start", "end": "end", **(names or {})}
    span = f"the data runs {first} .. {last}"
    first_full = _month_from(first)
    # the first month whose active window (the active_days before it) lies in the data
    start = job.start or _month_from(first + timedelta(days=job.active_days))
    end = job.end or last.replace(day=1)
    if job.start is None and start > end:  # data shorter than the active window: every month
        start = first_full
    if start < first:
        raise ValueError(
            f"{names['start']} {month_label(start)} begins before the first data date: {span} "
            f"(use {month_label(first_full)} or later)"
        )
    if start > last:
        raise ValueError(f"{names['start']} {month_label(start)} is after the data: {span}")
    if end > last:
        raise ValueError(
            f"{names['end']} {month_label(end)} is after the last data date: {span} "
            f"(use {month_label(last)} or earlier)"
        )
    if end < start:
        raise ValueError(
            f"{names['end']} {month_label(end)} is before {names['start']} {month_label(start)}"
        )
    if job.targets is not None:
        for which in ("baseline", "evaluation"):
            period: Period = getattr(job.targets, which)
            for key in ("start", "end"):
                m = getattr(period, key)
                if not start <= m <= end:
                    raise ValueError(
                        f"targets.{which}.{key} {month_label(m)} is outside the report's months "
                        f"{month_label(start)} to {month_label(end)}"
                    )
    return Period(start=start, end=end).months()


def _month_from(day: date) -> date:
    """The first month starting on or after ``day``."""
    return day if day.day == 1 else add_months(day, 1)


def month_frame(months: list[date], dates: tuple[date, date], job: KpiJob) -> pd.DataFrame:
    """One row per month: its first and (data-bounded) last day, the cutoff before it, and what
    is final: a partial last month, a history shorter than the active window, churn's horizon."""
    first, last = dates
    rows = []
    for m in months:
        cutoff = m - timedelta(days=1)
        known_on = cutoff + timedelta(days=job.churn_horizon_days)
        rows.append(
            {
                "month": month_label(m),
                "month_start": m,
                "month_end": min(month_end(m), last),
                "cutoff": cutoff,
                "partial_month": month_end(m) > last,
                "history_complete": cutoff - timedelta(days=job.active_days - 1) >= first,
                "churn_final": known_on <= last,
                "churn_known_on": known_on,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- SQL


def margin_sql(margin: MarginConfig, column: str = "category") -> str:
    """The gross margin of a line by its category (models.value.MarginConfig)."""
    if not margin.by_category:
        return sql_literal(float(margin.default))
    whens = " ".join(
        f"WHEN {column} = {sql_literal(k)} THEN {sql_literal(float(v))}"
        for k, v in sorted(margin.by_category.items())
    )
    return f"CASE {whens} ELSE {sql_literal(float(margin.default))} END"


def customer_months_sql(
    source: str,
    products: str | None,
    months: pd.DataFrame,
    last: date,
    job: KpiJob,
) -> str:
    """Per (month, customer) with anything to count: active at the start, churned (the churn
    label at the cutoff before the month), bought, new, won back, net revenue, gross profit.

    An order is a non-return line (``features.engine.churn_label_sql``'s rule); order days are
    calendar days. A customer's last order day on or before the cutoff decides activity (less
    than ``active_days`` before it) and churn (the next order day more than ``horizon`` days after
    the cutoff, or none)."""
    n, h = job.active_days, job.churn_horizon_days
    category, join = "t.category", ""
    if products is not None:
        category = "coalesce(t.category, p.category)"
        join = (
            " LEFT JOIN (SELECT product_id, any_value(category) AS category "
            f"FROM {products} GROUP BY product_id) p ON t.product_id = p.product_id"
        )
    values = ", ".join(
        f"({sql_date(r['month_start'])}, {sql_date(r['month_end'])}, {sql_date(r['cutoff'])})"
        for r in months.to_dict("records")
    )
    return f"""
WITH lines AS (
    SELECT CAST(t.customer_id AS VARCHAR) AS customer_id, CAST(t.ts AS DATE) AS day,
           CAST(t.amount AS DOUBLE) AS amount,
           (coalesce(t.is_return, FALSE) OR t.amount < 0) AS is_return,
           {category} AS category
    FROM {source} t{join}
    WHERE CAST(t.ts AS DATE) <= {sql_date(last)}
),
months AS (SELECT * FROM (VALUES {values}) m(month_start, month_end, cutoff)),
orders AS (SELECT DISTINCT customer_id, day FROM lines WHERE NOT is_return),
seq AS (
    SELECT customer_id, day,
           lead(day) OVER w AS next_day,
           date_diff('day', lag(day) OVER w, day) AS gap,
           min(day) OVER (PARTITION BY customer_id) AS first_day
    FROM orders
    WINDOW w AS (PARTITION BY customer_id ORDER BY day)
),
at_start AS (
    SELECT m.month_start, s.customer_id,
           (s.next_day IS NULL OR date_diff('day', m.cutoff, s.next_day) > {h}) AS churned
    FROM months m JOIN seq s
      ON s.day <= m.cutoff AND s.day > m.cutoff - INTERVAL {n} DAY
     AND (s.next_day IS NULL OR s.next_day > m.cutoff)
),
in_month AS (
    SELECT m.month_start, s.customer_id,
           bool_or(s.day = s.first_day) AS new,
           bool_or(coalesce(s.gap > {h}, FALSE)) AS won_back
    FROM months m JOIN seq s ON s.day >= m.month_start AND s.day <= m.month_end
    GROUP BY m.month_start, s.customer_id
),
money AS (
    SELECT m.month_start, l.customer_id, sum(l.amount) AS revenue,
           sum(l.amount * {margin_sql(job.margin, "l.category")}) AS gross_profit
    FROM months m JOIN lines l ON l.day >= m.month_start AND l.day <= m.month_end
    GROUP BY m.month_start, l.customer_id
),
keys AS (
    SELECT month_start, customer_id FROM at_start
    UNION SELECT month_start, customer_id FROM in_month
    UNION SELECT month_start, customer_id FROM money
)
SELECT k.month_start, k.customer_id,
       a.customer_id IS NOT NULL AS active_start,
       a.churned,
       i.customer_id IS NOT NULL AS bought,
       coalesce(i.new, FALSE) AS new,
       coalesce(i.won_back, FALSE) AS won_back,
       coalesce(y.revenue, 0.0) AS revenue,
       coalesce(y.gross_profit, 0.0) AS gross_profit
FROM keys k
LEFT JOIN at_start a ON a.month_start = k.month_start AND a.customer_id = k.customer_id
LEFT JOIN in_month i ON i.month_start = k.month_start AND i.customer_id = k.customer_id
LEFT JOIN money y ON y.month_start = k.month_start AND y.customer_id = k.customer_id
ORDER BY k.month_start, k.customer_id"""


def active_at_end_sql(source: str, months: pd.DataFrame, active_days: int) -> str:
    """Customers active at each month's (data-bounded) last day: an order in the trailing
    ``active_days`` up to and including it."""
    values = ", ".join(
        f"({sql_date(r['month_start'])}, {sql_date(r['month_end'])})"
        for r in months.to_dict("records")
    )
    return f"""
WITH orders AS (
    SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id, CAST(ts AS DATE) AS day
    FROM {source} WHERE NOT (coalesce(is_return, FALSE) OR amount < 0)
),
months AS (SELECT * FROM (VALUES {values}) m(month_start, month_end))
SELECT m.month_start, count(DISTINCT o.customer_id) AS active_end
FROM months m LEFT JOIN orders o
  ON o.day <= m.month_end AND o.day > m.month_end - INTERVAL {active_days} DAY
GROUP BY m.month_start ORDER BY m.month_start"""


# --------------------------------------------------------------------------- tables


def _rates(frame: pd.DataFrame) -> pd.DataFrame:
    with np.errstate(invalid="ignore", divide="ignore"):
        churn = frame["churned"] / frame["active_start"].where(frame["active_start"] > 0)
    return frame.assign(churn_rate=churn, retention_rate=1.0 - churn)


def monthly_kpis(facts: pd.DataFrame, months: pd.DataFrame, active_end: pd.Series) -> pd.DataFrame:
    """The month table from the per-(month, customer) facts: counts, rates and money; churn only
    for months whose horizon has elapsed (NaN, with ``churn_final`` False, otherwise)."""
    f = facts.assign(churned=facts["churned"].fillna(False).astype(bool) & facts["active_start"])
    agg = f.groupby("month_start").agg(
        active_start=("active_start", "sum"),
        buyers=("bought", "sum"),
        new=("new", "sum"),
        won_back=("won_back", "sum"),
        churned=("churned", "sum"),
        revenue=("revenue", "sum"),
        gross_profit=("gross_profit", "sum"),
    )
    out = months.set_index("month_start").join(agg).join(active_end.rename("active_end"))
    counts = ["active_start", "active_end", "buyers", "new", "won_back", "churned"]
    out[counts] = out[counts].fillna(0).astype(int)
    out[["revenue", "gross_profit"]] = out[["revenue", "gross_profit"]].fillna(0.0)
    out = _rates(out.reset_index())
    final = out["churn_final"]
    out["churned"] = out["churned"].astype("Int64").where(final)
    out[["churn_rate", "retention_rate"]] = out[["churn_rate", "retention_rate"]].where(final)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["gross_margin"] = out["gross_profit"] / out["revenue"].where(out["revenue"] != 0)
    return out[MONTHLY_COLUMNS]


MONTHLY_COLUMNS = [
    "month",
    "month_start",
    "month_end",
    "partial_month",
    "history_complete",
    "active_start",
    "active_end",
    "buyers",
    "new",
    "won_back",
    "churned",
    "churn_rate",
    "retention_rate",
    "churn_final",
    "churn_known_on",
    "revenue",
    "gross_profit",
    "gross_margin",
]


def segment_kpis(facts: pd.DataFrame, months: pd.DataFrame) -> pd.DataFrame:
    """Per month and segment (at the month's start): active at the start, churned, churn and
    retention rates (final months only), buyers, won back, revenue, gross profit."""
    f = facts.assign(
        churned=facts["churned"].fillna(False).astype(bool) & facts["active_start"],
        segment=facts["segment"].fillna(NO_HISTORY),
    )
    agg = (
        f.groupby(["month_start", "segment"])
        .agg(
            active_start=("active_start", "sum"),
            churned=("churned", "sum"),
            buyers=("bought", "sum"),
            new=("new", "sum"),
            won_back=("won_back", "sum"),
            revenue=("revenue", "sum"),
            gross_profit=("gross_profit", "sum"),
        )
        .reset_index()
    )
    agg = _rates(agg).merge(months[["month_start", "month", "churn_final"]], on="month_start")
    final = agg["churn_final"]
    agg["churned"] = agg["churned"].astype("Int64").where(final)
    agg[["churn_rate", "retention_rate"]] = agg[["churn_rate", "retention_rate"]].where(final)
    cols = ["month", "month_start", "segment", "active_start", "churned", "churn_rate"]
    cols += ["retention_rate", "churn_final", "buyers", "new", "won_back", "revenue"]
    return agg[[*cols, "gross_profit"]].sort_values(["month_start", "segment"], ignore_index=True)


# --------------------------------------------------------------------------- targets


def _in(monthly: pd.DataFrame, period: Period) -> pd.DataFrame:
    return monthly[
        (monthly["month_start"] >= period.start) & (monthly["month_start"] <= period.end)
    ]


def _churn_of(rows: pd.DataFrame) -> float:
    """Churn of a period: churned over active-at-start, pooled over its months."""
    active = float(rows["active_start"].sum())
    return float(rows["churned"].astype(float).sum()) / active if active > 0 else float("nan")


def evaluate_targets(monthly: pd.DataFrame, targets: KpiTargets | None) -> list[dict[str, Any]]:
    """Each target: what it measures, baseline and evaluation figures, the achieved and the
    required value, and the verdict. A figure not final yet (churn horizon not elapsed, a
    partial month) makes the verdict "not known yet", never a guess."""
    if targets is None:
        return []
    base, ev = _in(monthly, targets.baseline), _in(monthly, targets.evaluation)
    periods = {"baseline": targets.baseline.label(), "evaluation": targets.evaluation.label()}
    out: list[dict[str, Any]] = []
    if targets.churn_reduction is not None:
        pending = pd.concat([base, ev])
        pending = pending[~pending["churn_final"]]
        b, e = _churn_of(base), _churn_of(ev)
        achieved = 1.0 - e / b if b > 0 and pending.empty else float("nan")
        verdict: Verdict = (
            "not known yet"
            if not pending.empty or not np.isfinite(achieved)
            else "met"
            if achieved >= targets.churn_reduction - 1e-12
            else "not met"
        )
        why = (
            f"the churn of {', '.join(pending['month'])} is known on "
            f"{max(pending['churn_known_on'])}"
            if not pending.empty
            else ""
        )
        out.append(
            {
                "target": "churn_reduction",
                "title": "Churn down",
                **periods,
                "baseline_value": b if pending.empty else float("nan"),
                "evaluation_value": e if pending.empty else float("nan"),
                "achieved": achieved,
                "required": targets.churn_reduction,
                "verdict": verdict,
                "note": why,
            }
        )
    full_base, full_ev = base[~base["partial_month"]], ev[~ev["partial_month"]]
    base_profit = float(full_base["gross_profit"].mean()) if len(full_base) else float("nan")
    if targets.profit_growth is not None:
        e = float(full_ev["gross_profit"].mean()) if len(full_ev) else float("nan")
        partial = len(full_ev) < len(ev) or len(full_base) < len(base)
        achieved = e / base_profit - 1.0 if base_profit > 0 and not partial else float("nan")
        verdict = (
            "not known yet"
            if partial or not np.isfinite(achieved)
            else "met"
            if achieved >= targets.profit_growth - 1e-12
            else "not met"
        )
        out.append(
            {
                "target": "profit_growth",
                "title": "Profit up",
                **periods,
                "baseline_value": base_profit,
                "evaluation_value": e,
                "achieved": achieved,
                "required": targets.profit_growth,
                "verdict": verdict,
                "note": "a month of the periods is not complete in the data" if partial else "",
            }
        )
    if targets.payback_months is not None and targets.programme_cost is not None:
        after = monthly[
            (monthly["month_start"] >= targets.evaluation.start) & ~monthly["partial_month"]
        ]
        extra = (after["gross_profit"] - base_profit).cumsum().to_numpy()
        reached = np.flatnonzero(extra >= targets.programme_cost - 1e-9)
        months_taken = float(reached[0] + 1) if len(reached) else float("nan")
        if len(reached):
            verdict = "met" if months_taken <= targets.payback_months else "not met"
        elif len(after) >= targets.payback_months:
            verdict = "not met"
        else:
            verdict = "not known yet"
        if not np.isfinite(base_profit):
            verdict = "not known yet"
        out.append(
            {
                "target": "payback_months",
                "title": "Programme cost returned",
                **periods,
                "baseline_value": base_profit,
                "evaluation_value": float(extra[-1]) if len(extra) else float("nan"),
                "achieved": months_taken,
                "required": float(targets.payback_months),
                "verdict": verdict,
                "note": (
                    f"cost {targets.programme_cost:,.2f}; {len(after)} complete months since "
                    f"{month_label(targets.evaluation.start)}"
                ),
            }
        )
    return out


def target_in_words(t: dict[str, Any]) -> str:
    """One line: a target's figures, achieved against required, and its verdict."""
    b, e, a, r = t["baseline_value"], t["evaluation_value"], t["achieved"], t["required"]
    if t["target"] == "churn_reduction":
        change = f"{abs(a):.1%} {'lower' if a >= 0 else 'higher'}" if np.isfinite(a) else ""
        figures = f"churn {b:.1%} -> {e:.1%} ({change}" if change else "churn (-"
        figures += f"; at least {r:.1%} asked)"
    elif t["target"] == "profit_growth":
        figures = f"gross profit {b:,.0f} -> {e:,.0f} a month ({a:+.1%}" if np.isfinite(a) else "(-"
        figures += f"; at least +{r:.1%} asked)"
    else:
        figures = f"returned in {a:.0f} months" if np.isfinite(a) else "not returned yet"
        figures += f" (within {r:.0f} asked; {t['note']})"
    note = f" — {t['note']}" if t["note"] and t["target"] != "payback_months" else ""
    return f"{t['title']}: {t['verdict']}: {figures}{note}"


# --------------------------------------------------------------------------- the job


@dataclass
class KpiResult:
    """Everything the KPI job computed (no I/O)."""

    job: KpiJob
    dataset: str
    dates: tuple[date, date]
    monthly: pd.DataFrame  # MONTHLY_COLUMNS
    by_segment: pd.DataFrame  # segment_kpis
    targets: list[dict[str, Any]]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def first_month(self) -> str:
        return str(self.monthly["month"].iloc[0])

    @property
    def last_month(self) -> str:
        return str(self.monthly["month"].iloc[-1])


def segments_before(
    con: Any, source: str, cutoffs: list[date], first: date, criterion: str
) -> pd.DataFrame:
    """``month_start, customer_id, segment``: each customer's segment computed at the day before
    the month (``features.segments`` on the data up to that day only)."""
    from experiments.value import segments_at

    parts = []
    for cutoff in cutoffs:
        if cutoff < first:  # nobody has a history before the data
            continue
        seg = segments_at(con, source, cutoff, [criterion])
        parts.append(
            pd.DataFrame(
                {
                    "month_start": cutoff + timedelta(days=1),
                    "customer_id": seg["customer_id"].astype(str),
                    "segment": seg[criterion].astype(str),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["month_start", "customer_id", "segment"])
    return pd.concat(parts, ignore_index=True)


def compute_kpis(
    con: Any,
    transactions: str,
    products: str | None,
    dataset: str,
    job: KpiJob,
    months: list[date],
    dates: tuple[date, date],
) -> KpiResult:
    """The KPI tables over DuckDB relations (reads, writes nothing)."""
    frame = month_frame(months, dates, job)
    facts = con.execute(customer_months_sql(transactions, products, frame, dates[1], job)).df()
    facts["month_start"] = pd.to_datetime(facts["month_start"]).dt.date
    facts["churned"] = facts["churned"].astype("boolean")
    ends = con.execute(active_at_end_sql(transactions, frame, job.active_days)).df()
    active_end = ends.assign(month_start=pd.to_datetime(ends["month_start"]).dt.date).set_index(
        "month_start"
    )["active_end"]
    monthly = monthly_kpis(facts, frame, active_end)
    segments = segments_before(con, transactions, list(frame["cutoff"]), dates[0], job.segment)
    facts = facts.merge(segments, on=["month_start", "customer_id"], how="left")
    by_segment = segment_kpis(facts, frame)
    info = {
        "data_first_date": dates[0].isoformat(),
        "data_last_date": dates[1].isoformat(),
        "active_days": job.active_days,
        "churn_horizon_days": job.churn_horizon_days,
        "segment": job.segment,
        "margin_default": job.margin.default,
        "margin_by_category": dict(job.margin.by_category),
        "months": len(monthly),
        "months_churn_final": int(monthly["churn_final"].sum()),
        "months_history_incomplete": int((~monthly["history_complete"]).sum()),
        "partial_months": list(monthly.loc[monthly["partial_month"], "month"]),
    }
    return KpiResult(
        job=job,
        dataset=dataset,
        dates=dates,
        monthly=monthly,
        by_segment=by_segment,
        targets=evaluate_targets(monthly, job.targets),
        facts=info,
    )


def kpis_dir(state: Any, dataset: str, first: str, last: str) -> Path:
    """Folder of a dataset's KPI report over its months."""
    return Path(state.home) / "kpis" / dataset / f"{first}_{last}"


def write_kpis(result: KpiResult, folder: Path) -> dict[str, Path]:
    """Write the tables, the targets, the facts and the HTML page into ``folder``, atomically."""
    from experiments.kpis_page import render_kpis_page
    from features.store import atomic_path

    paths = {
        "monthly": folder / "kpis_monthly.csv",
        "by_segment": folder / "kpis_by_segment.csv",
        "meta": folder / "kpis_meta.json",
        "page": folder / "kpis_report.html",
    }
    with atomic_path(paths["monthly"]) as tmp:
        result.monthly.to_csv(tmp, index=False)
    with atomic_path(paths["by_segment"]) as tmp:
        result.by_segment.to_csv(tmp, index=False)
    meta = {
        "name": result.job.name,
        "dataset": result.dataset,
        "months": [result.first_month, result.last_month],
        "config": result.job.model_dump(mode="json"),
        "facts": result.facts,
        "targets": [{k: _json_value(v) for k, v in t.items()} for t in result.targets],
    }
    with atomic_path(paths["meta"]) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=_json_value, allow_nan=False) + "\n")
    with atomic_path(paths["page"]) as tmp:
        tmp.write_text(render_kpis_page(result), encoding="utf-8")
    return paths


def _json_value(x: Any) -> Any:
    """A value JSON can hold: NaN (a figure not known yet) as null, numbers as numbers."""
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, str | int | bool) or x is None:
        return x
    return str(x)


def _finite(x: Any) -> bool:
    return x is not None and not pd.isna(x) and bool(np.isfinite(float(x)))


def log_kpis(state: Any, result: KpiResult, paths: dict[str, Path]) -> str:
    """One MLflow run in the experiment ``kpis``: definitions as params, each month's figures as
    metrics stepped by month (0 = the first), the targets' achieved values and verdicts (1 met,
    0 not met; absent when not known yet), the files as artifacts."""
    import mlflow

    from training.run import ensure_experiment, git_sha, tracking

    job = result.job
    params: dict[str, Any] = {
        "dataset": result.dataset,
        "first_month": result.first_month,
        "last_month": result.last_month,
        "active_days": job.active_days,
        "churn_horizon_days": job.churn_horizon_days,
        "segment": job.segment,
        "margin_default": job.margin.default,
        "margin_by_category": json.dumps(dict(job.margin.by_category), sort_keys=True),
    }
    if job.targets is not None:
        t = job.targets
        params |= {
            "baseline": t.baseline.label(),
            "evaluation": t.evaluation.label(),
            "target_churn_reduction": t.churn_reduction,
            "target_profit_growth": t.profit_growth,
            "target_payback_months": t.payback_months,
            "programme_cost": t.programme_cost,
        }
    series = ["active_start", "active_end", "buyers", "new", "won_back", "revenue"]
    series += ["gross_profit", "churn_rate", "retention_rate"]
    with tracking(state.tracking_uri):
        exp_id = ensure_experiment(state, MLFLOW_EXPERIMENT)
        run_name = f"kpis {result.dataset} {result.first_month} to {result.last_month}"
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
            mlflow.set_tags({"job": job.name, "git_sha": git_sha()})
            mlflow.log_params({k: v for k, v in params.items() if v is not None})
            for step, row in enumerate(result.monthly.to_dict("records")):
                values = {k: float(row[k]) for k in series if _finite(row[k])}
                mlflow.log_metrics(values, step=step)
            summary: dict[str, float] = {}
            for target in result.targets:
                key = target["target"]
                if _finite(target["achieved"]):
                    summary[f"{key}_achieved"] = float(target["achieved"])
                if target["verdict"] != "not known yet":
                    summary[f"{key}_met"] = float(target["verdict"] == "met")
            final = result.monthly[result.monthly["churn_final"]]
            if len(final):
                summary["churn_rate_pooled"] = _churn_of(final)
            summary["revenue_total"] = float(result.monthly["revenue"].sum())
            summary["gross_profit_total"] = float(result.monthly["gross_profit"].sum())
            mlflow.log_metrics(summary)
            for path in paths.values():
                mlflow.log_artifact(str(path))
            return str(run.info.run_id)


def run_kpis(
    state: Any, job: KpiJob, names: dict[str, str] | None = None
) -> tuple[KpiResult, dict[str, Path], str]:
    """The KPI report on the dataset's ingested tables: months checked against the data (before
    anything is written or logged), computed, written and logged."""
    from features.build import data_date_range
    from features.catalog import Catalog
    from features.sources import connect, load_dataset

    dataset = load_dataset(job.dataset).name
    catalog = Catalog(state, dataset)
    transactions = catalog.relation("transactions")
    con = connect(state)
    try:
        dates = data_date_range(con, transactions)
        months = resolve_months(job, dates, names)
        result = compute_kpis(
            con,
            transactions,
            catalog.relation_or_none("products"),
            dataset,
            job,
            months,
            dates,
        )
    finally:
        con.close()
    paths = write_kpis(result, kpis_dir(state, dataset, result.first_month, result.last_month))
    return result, paths, log_kpis(state, result, paths)
