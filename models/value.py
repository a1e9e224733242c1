"""Customer value accounting: year-by-year value, gross profit, NPV and cumulative NPV, and the
value x churn-risk grid with the most a retention contact is worth.

``cohort_value_table`` is the CRM literature's table for one cohort: customers left each year under
a retention rate, revenue, costs, gross profit, discount factor, NPV and cumulative NPV.
``customer_value_table`` fills the same columns per customer and year from a fitted BG/NBD +
Gamma-Gamma pair (``models.clv``): expected purchases per year, expected spend per purchase, the
probability of being alive at each year's start and end. ``value_by_group`` adds customers up per
segment in the cohort table's form; ``value_risk_grid`` crosses value and churn-risk deciles.

Every model figure is an *expectation* under the fitted model (labelled ``expected_*``), not an
observed fact. Gross profit = revenue x margin; costs = revenue - gross profit. Year ``k``'s profit
is discounted by ``1 / (1 + d)^k`` (end of year, as ``models.clv.customer_lifetime_value`` does per
period) or ``1 / (1 + d)^(k - 1)`` (start of year: the first year undiscounted, as some textbook
tables print it). Pure functions over arrays and frames: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.special import hyp2f1

from models.clv import BGNBD_COLUMNS, BetaGeoModel, GammaGammaModel, _hyp2f1_stable

DAYS_PER_YEAR = 365.25
Timing = Literal["end_of_year", "start_of_year"]

#: Columns of the per-customer, per-year value table.
VALUE_TABLE_COLUMNS = [
    "customer_id",
    "year",
    "p_alive_start",
    "p_alive_end",
    "retention_rate",
    "expected_purchases",
    "expected_revenue",
    "expected_costs",
    "expected_gross_profit",
    "discount_factor",
    "npv",
    "cumulative_npv",
]


# --------------------------------------------------------------------------- config


def _share(value: float, what: str = "") -> float:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{what}a margin is a share of revenue in (0, 1], e.g. 0.3 for 30 %")
    return value


class MarginConfig(BaseModel):
    """Gross margin as a share of revenue: one global figure, optionally one per category."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: float = Field(
        0.3, description="gross margin of revenue in (0, 1]; categories not listed use it"
    )
    by_category: dict[str, float] = Field(
        default_factory=dict, description="category -> gross margin in (0, 1]"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # ``margin: 0.3`` means one global margin, wherever a MarginConfig is read
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"default": data}
        return data

    @field_validator("default")
    @classmethod
    def _default(cls, v: float) -> float:
        return _share(v)

    @field_validator("by_category")
    @classmethod
    def _categories(cls, v: dict[str, float]) -> dict[str, float]:
        for name, share in v.items():
            _share(share, f"category {name!r}: ")
        return v


class RetentionConfig(BaseModel):
    """What a retention contact costs and how often it succeeds (for the value x risk grid)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contact_cost: float = Field(1.5, ge=0, description="cost of one retention contact")
    offer_cost: float = Field(
        0.0, ge=0, description="cost paid when the contact succeeds (e.g. a discount)"
    )
    success_rate: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of contacts that keep an at-risk customer (1 = the upper bound)",
    )


class ValueConfig(BaseModel):
    """The value accounting of one job: horizon in years, discount rate, margin, retention."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    years: int = Field(3, ge=1, le=30, description="years of the value table")
    annual_discount_rate: float = Field(
        0.10, ge=0, lt=1, description="annual rate profit is discounted at (0.10 = 10 %)"
    )
    discount_timing: Timing = Field(
        "end_of_year", description="end_of_year: year k / (1+d)^k; start_of_year: / (1+d)^(k-1)"
    )
    margin: MarginConfig = Field(default_factory=MarginConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)


def config_error_lines(exc: Any, prefix: str = "") -> str:
    """A pydantic ValidationError as one line per bad value, each naming its config key."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {err['input']!r})"
        if err["type"] == "extra_forbidden":
            msg = "not a known key"
        lines.append(f"{prefix}{prefix and ': '}{key}: {msg}{got}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- accounting


def discount_factors(years: int, annual_rate: float, timing: Timing = "end_of_year") -> np.ndarray:
    """Discount factor of each year 1..years: 1 / (1 + d)^k, or ^(k - 1) at the start of year."""
    if years < 1:
        raise ValueError("years must be >= 1")
    if not 0 <= annual_rate < 1:
        raise ValueError("annual_rate must lie in [0, 1)")
    k = np.arange(1, years + 1, dtype=np.float64)
    exponent = k if timing == "end_of_year" else k - 1.0
    return np.asarray((1.0 + annual_rate) ** -exponent)


def _accounting(
    revenue: np.ndarray, margin: np.ndarray, factors: np.ndarray
) -> dict[str, np.ndarray]:
    """Costs, gross profit, discounted profit (NPV of the year) and cumulative NPV per row."""
    gross = revenue * margin[..., None]
    npv = gross * factors
    return {
        "costs": revenue - gross,
        "gross_profit": gross,
        "npv": npv,
        "cumulative_npv": np.cumsum(npv, axis=-1),
    }


def _per_year(value: float | Sequence[float], years: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(years, float(arr))
    if arr.shape != (years,):
        raise ValueError(f"{name} needs one value per year ({years}), got {arr.shape[0]}")
    return arr


def served_value_accounting(cfg: ValueConfig, horizon_days: int) -> dict[str, Any]:
    """What a served value model records to turn its predicted revenue over ``horizon_days``
    into gross profit and its present value (``served_value_terms`` reads it back). The served
    features carry no category mix, so the margin is the global one."""
    return {
        "margin": cfg.margin.default,
        "margin_basis": "global"
        + (
            " (per-category margins are not applied to served values)"
            if cfg.margin.by_category
            else ""
        ),
        "annual_discount_rate": cfg.annual_discount_rate,
        "horizon_days": int(horizon_days),
    }


def served_value_terms(info: Any) -> tuple[float, float] | None:
    """(margin, discount factor) of a served value model from its recorded accounting, or None
    when it records none (a model trained before it did: its value stays revenue only). The
    horizon's profit is discounted once, at the horizon's end: 1 / (1 + d)^(days / 365.25)."""
    accounting = info.get("value_accounting") if isinstance(info, dict) else None
    if not accounting:
        return None
    rate, days = float(accounting["annual_discount_rate"]), float(accounting["horizon_days"])
    return float(accounting["margin"]), 1.0 / (1.0 + rate) ** (days / DAYS_PER_YEAR)


def cohort_value_table(
    customers: float,
    retention_rate: float | Sequence[float],
    revenue_per_customer: float | Sequence[float],
    margin: float,
    annual_discount_rate: float,
    years: int,
    timing: Timing = "end_of_year",
) -> pd.DataFrame:
    """The literature's value table of one cohort, one row per year.

    ``customers`` start in year 1; ``retention_rate`` (one rate, or one per year) is the share of
    a year's customers still there the next year, so year k has customers x r_1 ... r_(k-1).
    Revenue = customers x revenue per customer; gross profit = revenue x margin; NPV = gross profit
    x discount factor; ``clv_per_customer`` = cumulative NPV / the starting customers.
    """
    rates = _per_year(retention_rate, years, "retention_rate")
    spend = _per_year(revenue_per_customer, years, "revenue_per_customer")
    if np.any((rates < 0) | (rates > 1)):
        raise ValueError("retention rates must lie in [0, 1]")
    left = customers * np.concatenate([[1.0], np.cumprod(rates[:-1])])
    revenue = left * spend
    factors = discount_factors(years, annual_discount_rate, timing)
    acc = _accounting(revenue, np.asarray(margin, dtype=np.float64), factors)
    return pd.DataFrame(
        {
            "year": np.arange(1, years + 1),
            "customers": left,
            "retention_rate": rates,
            "revenue_per_customer": spend,
            "revenue": revenue,
            "costs": acc["costs"],
            "gross_profit": acc["gross_profit"],
            "discount_factor": factors,
            "npv": acc["npv"],
            "cumulative_npv": acc["cumulative_npv"],
            "clv_per_customer": acc["cumulative_npv"] / customers,
        }
    )


# --------------------------------------------------------------------------- BG/NBD per year


def probability_alive_after(bg: BetaGeoModel, X: Any, t: float | np.ndarray) -> np.ndarray:  # noqa: N803
    """P(alive at T + t | x, t_x, T) under BG/NBD.

    Alive at T, the customer's posterior is lambda ~ Gamma(r + x, alpha + T), p ~ Beta(a, b + x);
    alive through the next t means none of the Poisson(lambda t) purchases was followed by a
    dropout, exp(-lambda p t), whose expectation is 2F1(r + x, a; a + b + x; -t / (alpha + T))
    (the Beta integral of (1 + p t / (alpha + T))^-(r + x)), computed after Pfaff's
    transformation so the argument lies in [0, 1).
    """
    r, alpha, a, b = (float(v) for v in bg.params_.to_numpy())
    x = np.asarray(pd.DataFrame(X)[list(BGNBD_COLUMNS)].to_numpy(dtype=np.float64))
    x, age = x[:, 0], x[:, 2]
    z = np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape) / (alpha + age)
    if np.any(z < 0):
        raise ValueError("t must be >= 0")
    c = a + b + x
    survive = (1.0 + z) ** (-a) * hyp2f1(c - r - x, a, c, z / (1.0 + z))
    return np.asarray(bg.probability_alive(X) * survive)


def purchases_if_alive(bg: BetaGeoModel, X: Any, t: float | np.ndarray) -> np.ndarray:  # noqa: N803
    """E[repeat purchases in (T, T + t] | alive at T, history]: FHL 2005 eq. 10 without its
    P(alive) factor, i.e. ``expected_purchases`` of a customer known to be alive."""
    r, alpha, a, b = (float(v) for v in bg.params_.to_numpy())
    frame = pd.DataFrame(X)
    x = frame["frequency"].to_numpy(dtype=np.float64)
    age = frame["T"].to_numpy(dtype=np.float64)
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape)
    zz = t / (alpha + age + t)
    hyp = _hyp2f1_stable(r + x, b + x, a + b + x - 1.0, zz)
    ratio = np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + age + t)))
    out = (a + b + x - 1.0) / (a - 1.0) * (1.0 - ratio * hyp)
    return np.asarray(np.where(t > 0, out, 0.0))


def customer_value_table(
    bg: BetaGeoModel,
    gg: GammaGammaModel,
    summary: pd.DataFrame,
    margin: np.ndarray | float,
    cfg: ValueConfig,
    periods_per_year: float,
) -> pd.DataFrame:
    """Per customer and year 1..K: expected purchases, revenue, costs, gross profit, P(alive) at
    the year's start and end (``retention_rate`` = end / start), discount factor, NPV, cumulative
    NPV (VALUE_TABLE_COLUMNS). ``summary`` is ``features.clv_summary`` in the time unit of the
    models; ``periods_per_year`` converts (52.18 for weeks)."""
    n, years = len(summary), cfg.years
    margins = np.broadcast_to(np.asarray(margin, dtype=np.float64), (n,))
    ends = periods_per_year * np.arange(0, years + 1, dtype=np.float64)
    cum = np.column_stack([bg.expected_purchases(summary, e) for e in ends])
    alive = np.column_stack([probability_alive_after(bg, summary, e) for e in ends])
    purchases = np.diff(cum, axis=1)
    spend = gg.expected_spend(summary)
    revenue = purchases * spend[:, None]
    factors = discount_factors(years, cfg.annual_discount_rate, cfg.discount_timing)
    acc = _accounting(revenue, margins, factors)
    start, end = alive[:, :-1], alive[:, 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        retention = np.where(start > 0, end / start, np.nan)
    return pd.DataFrame(
        {
            "customer_id": np.repeat(summary["customer_id"].astype(str).to_numpy(), years),
            "year": np.tile(np.arange(1, years + 1), n),
            "p_alive_start": start.ravel(),
            "p_alive_end": end.ravel(),
            "retention_rate": retention.ravel(),
            "expected_purchases": purchases.ravel(),
            "expected_revenue": revenue.ravel(),
            "expected_costs": acc["costs"].ravel(),
            "expected_gross_profit": acc["gross_profit"].ravel(),
            "discount_factor": np.tile(factors, n),
            "npv": acc["npv"].ravel(),
            "cumulative_npv": acc["cumulative_npv"].ravel(),
        }
    )[VALUE_TABLE_COLUMNS]


def customer_value_summary(
    bg: BetaGeoModel,
    gg: GammaGammaModel,
    summary: pd.DataFrame,
    table: pd.DataFrame,
    margin: np.ndarray | float,
    cfg: ValueConfig,
    periods_per_year: float,
) -> pd.DataFrame:
    """One row per customer: P(alive) now, the K-year totals of ``table``, the NPV if the
    customer is alive now (``npv_if_retained``) and the churn risk 1 - P(alive now)."""
    per = table.groupby("customer_id", sort=False)[
        ["expected_purchases", "expected_revenue", "expected_gross_profit", "npv"]
    ].sum()
    ids = summary["customer_id"].astype(str).to_numpy()
    per = per.reindex(ids)
    n = len(summary)
    margins = np.broadcast_to(np.asarray(margin, dtype=np.float64), (n,))
    ends = periods_per_year * np.arange(0, cfg.years + 1, dtype=np.float64)
    cum_alive = np.column_stack([purchases_if_alive(bg, summary, e) for e in ends])
    revenue_alive = np.diff(cum_alive, axis=1) * gg.expected_spend(summary)[:, None]
    factors = discount_factors(cfg.years, cfg.annual_discount_rate, cfg.discount_timing)
    npv_alive = _accounting(revenue_alive, margins, factors)["cumulative_npv"][:, -1]
    p_alive = bg.probability_alive(summary)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "p_alive": p_alive,
            "churn_risk": 1.0 - p_alive,
            "margin": margins,
            "expected_purchases": per["expected_purchases"].to_numpy(),
            "expected_revenue": per["expected_revenue"].to_numpy(),
            "expected_gross_profit": per["expected_gross_profit"].to_numpy(),
            "npv": per["npv"].to_numpy(),
            "npv_if_retained": npv_alive,
        }
    )


def value_by_group(table: pd.DataFrame, groups: pd.Series | None = None) -> pd.DataFrame:
    """The value table added up per group (a Series customer_id -> segment; None = everyone) in
    the cohort table's form: expected customers alive at the year's start and end, retention
    rate, revenue, costs, gross profit, discount factor, NPV, cumulative NPV, NPV per customer."""
    frame = table
    key = "segment"
    if groups is None:
        frame = frame.assign(segment="all customers")
    else:
        mapping = groups.astype(str)
        frame = frame.assign(segment=frame["customer_id"].map(mapping).fillna("(none)"))
    sums = (
        frame.groupby([key, "year"], sort=True)
        .agg(
            customers=("customer_id", "size"),
            expected_alive_start=("p_alive_start", "sum"),
            expected_alive_end=("p_alive_end", "sum"),
            expected_purchases=("expected_purchases", "sum"),
            expected_revenue=("expected_revenue", "sum"),
            expected_costs=("expected_costs", "sum"),
            expected_gross_profit=("expected_gross_profit", "sum"),
            discount_factor=("discount_factor", "first"),
            npv=("npv", "sum"),
        )
        .reset_index()
    )
    sums.insert(5, "retention_rate", sums["expected_alive_end"] / sums["expected_alive_start"])
    sums["cumulative_npv"] = sums.groupby(key)["npv"].cumsum()
    sums["npv_per_customer"] = sums["cumulative_npv"] / sums["customers"]
    return sums


# --------------------------------------------------------------------------- value x risk


def deciles(values: np.ndarray | pd.Series) -> np.ndarray:
    """Decile 1..10 of each value (10 = highest); equal values share the lowest decile."""
    s = pd.Series(np.asarray(values, dtype=np.float64))
    if s.isna().any():
        raise ValueError("deciles need values without NaN")
    rank = s.rank(method="min").to_numpy()
    return np.asarray(np.ceil(rank * 10 / max(len(s), 1)).astype(int))


def retention_economics(customers: pd.DataFrame, retention: RetentionConfig) -> pd.DataFrame:
    """Per customer: value and risk deciles, the most a retention contact is worth and whether
    any contact pays.

    ``max_retention_spend`` = churn_risk x npv_if_retained: the expected NPV a successful contact
    saves, bringing the customer back to the alive state. A contact pays when
    success_rate x (max_retention_spend - offer_cost) > contact_cost; ``let_go`` marks the
    customers for whom it does not (no retention spend is worth making on them), with the reason:
    ``low risk`` (a contact would pay were the customer surely leaving) or ``low value`` (not even
    then). The value decile
    ranks ``npv_if_retained`` (what the customer is worth if kept), so value and risk are two axes.
    """
    out = customers.copy()
    saved = out["churn_risk"].to_numpy() * out["npv_if_retained"].to_numpy()
    out["max_retention_spend"] = saved
    pays = retention.success_rate * (saved - retention.offer_cost) > retention.contact_cost
    out["let_go"] = ~pays
    if_lost = retention.success_rate * (out["npv_if_retained"] - retention.offer_cost)
    out["let_go_reason"] = np.where(
        pays,
        "",
        np.where(if_lost > retention.contact_cost, "low risk", "low value"),
    )
    out["value_decile"] = deciles(out["npv_if_retained"])
    out["risk_decile"] = deciles(out["churn_risk"])
    return out


def value_risk_grid(economics: pd.DataFrame, retention: RetentionConfig) -> pd.DataFrame:
    """One row per (value decile, risk decile) cell with customers: their expected NPV, mean churn
    risk, mean and total worthwhile retention spend, the share let go, and ``let_go`` for the
    cell when a contact does not pay at the cell's mean worthwhile spend."""
    grid = (
        economics.groupby(["value_decile", "risk_decile"])
        .agg(
            customers=("customer_id", "size"),
            npv=("npv", "sum"),
            npv_if_retained_mean=("npv_if_retained", "mean"),
            churn_risk_mean=("churn_risk", "mean"),
            max_retention_spend_mean=("max_retention_spend", "mean"),
            max_retention_spend_total=("max_retention_spend", "sum"),
            let_go_share=("let_go", "mean"),
        )
        .reset_index()
    )
    mean = grid["max_retention_spend_mean"]
    grid["let_go"] = ~(
        retention.success_rate * (mean - retention.offer_cost) > retention.contact_cost
    )
    return grid


# --------------------------------------------------------------------------- inputs


def fit_value_models(summary: pd.DataFrame) -> tuple[BetaGeoModel, GammaGammaModel]:
    """BG/NBD on every customer of the summary, Gamma-Gamma on the repeat buyers with value."""
    bg = BetaGeoModel().fit(summary)
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    return bg, GammaGammaModel().fit(repeat)


def blended_margins(
    customer_ids: pd.Series, revenue_by_category: pd.DataFrame, margin: MarginConfig
) -> tuple[np.ndarray, float]:
    """Each customer's margin: their past revenue mix over categories weighted by the category
    margins (the default for unlisted or missing categories, and for customers without revenue);
    and the share of all revenue priced by a listed category's margin.

    ``revenue_by_category`` has columns customer_id, category (may be null), revenue.
    """
    ids = customer_ids.astype(str)
    if not margin.by_category or revenue_by_category.empty:
        return np.full(len(ids), margin.default), 0.0
    rev = revenue_by_category.assign(
        customer_id=revenue_by_category["customer_id"].astype(str),
        revenue=revenue_by_category["revenue"].clip(lower=0.0),
    )
    listed = rev["category"].isin(list(margin.by_category))
    rate = rev["category"].map(margin.by_category).where(listed, margin.default).astype(float)
    rev = rev.assign(profit=rev["revenue"] * rate)
    per = rev.groupby("customer_id")[["revenue", "profit"]].sum().reindex(ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        blended = (per["profit"] / per["revenue"]).to_numpy()
    blended = np.where(np.isfinite(blended), blended, margin.default)
    total = float(rev["revenue"].sum())
    covered = float(rev.loc[listed, "revenue"].sum()) / total if total > 0 else 0.0
    return blended, covered
