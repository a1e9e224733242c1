"""CLV: XGBoost (Tweedie) on point-in-time features, target = spend in the horizon, against
BG/NBD + Gamma-Gamma fitted on the same history; both evaluated out of time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from features.clv_summary import UNIT_DAYS, TimeUnit, clv_summary
from features.labels import spend_label_sql
from features.sources import connect
from features.sql import sql_date
from models.clv import BetaGeoModel, GammaGammaModel, clv_metrics, customer_lifetime_value
from models.estimators import DEFAULT_XGB_PARAMS, xgb_pipeline
from models.explain import global_importance
from models.pyfunc import ScoringModel
from models.value import (
    DAYS_PER_YEAR,
    ValueConfig,
    blended_margins,
    customer_value_summary,
    customer_value_table,
    fit_value_models,
    served_value_accounting,
    value_by_group,
)
from training.config import CutoffExperiment
from training.evaluate import decile_table, grade, plot_gains, plot_importance
from training.evidence import MetricOf
from training.families.base import (
    Family,
    Frame,
    RunContext,
    Trained,
    served_info,
    split_counts,
)
from training.families.binary import cutoff_frame
from training.frames import ID, LABEL, SPLIT
from training.promote import PromotionPolicy

DEFAULT_CLV_PARAMS: dict[str, Any] = {"objective": "reg:tweedie", "tweedie_variance_power": 1.5}
BASELINE_NAME = "BG/NBD + Gamma-Gamma"


class CLVConfig(CutoffExperiment):
    """A CLV experiment; promotion on the normalised Gini by default. ``value`` is the value
    accounting (years, discount rate, margin) of the value table logged with each run."""

    family: Literal["clv"] = "clv"
    promotion: PromotionPolicy = Field(default_factory=lambda: PromotionPolicy(metric="gini"))
    value: ValueConfig = Field(default_factory=ValueConfig)


@dataclass
class ValueTables:
    """The value accounting of the base at a cutoff (``models.value``): per customer and year,
    per customer, and added up per year; plus the share of revenue priced by category margins."""

    table: pd.DataFrame
    customers: pd.DataFrame
    by_year: pd.DataFrame
    revenue_share_priced_by_category: float


@dataclass
class CLVDetails:
    deciles: pd.DataFrame
    importance: pd.DataFrame
    baseline_params: dict[str, float]
    value: ValueTables | None = None


Fitted = tuple[pd.DataFrame, BetaGeoModel, GammaGammaModel]


def fit_bgnbd(transactions: str, as_of: date, con: Any, unit: TimeUnit = "weeks") -> Fitted:
    """The CLV summary at ``as_of`` and BG/NBD + Gamma-Gamma fitted on it."""
    summary = clv_summary(transactions, as_of, unit, horizon_days=None, con=con)
    if len(summary) == 0:
        raise ValueError(f"no customer has a purchase on or before {as_of}")
    summary["customer_id"] = summary["customer_id"].astype(str)
    bg, gg = fit_value_models(summary)
    return summary, bg, gg


def revenue_by_category_sql(source: str, as_of: date, products: str | None) -> str:
    """Revenue (non-return lines) per customer and category up to ``as_of``; the category comes
    from the transaction, else from the products table by product_id."""
    category, join = "t.category", ""
    if products is not None:
        category = "coalesce(t.category, p.category)"
        join = (
            " LEFT JOIN (SELECT product_id, any_value(category) AS category "
            f"FROM {products} GROUP BY product_id) p ON t.product_id = p.product_id"
        )
    return f"""
SELECT t.customer_id, {category} AS category, sum(CAST(t.amount AS DOUBLE)) AS revenue
FROM {source} t{join}
WHERE CAST(t.ts AS DATE) <= {sql_date(as_of)}
  AND NOT (coalesce(t.is_return, FALSE) OR t.amount < 0)
GROUP BY ALL"""


def value_at_cutoff(
    fitted: Fitted,
    transactions: str,
    products: str | None,
    as_of: date,
    cfg: ValueConfig,
    con: Any,
    unit: TimeUnit = "weeks",
) -> ValueTables:
    """The value tables of the base at ``as_of`` from fitted BG/NBD + Gamma-Gamma, with each
    customer's margin blended from their past revenue per category."""
    summary, bg, gg = fitted
    revenue = con.execute(revenue_by_category_sql(transactions, as_of, products)).df()
    margins, covered = blended_margins(summary["customer_id"], revenue, cfg.margin)
    per_year = DAYS_PER_YEAR / UNIT_DAYS[unit]
    table = customer_value_table(bg, gg, summary, margins, cfg, per_year)
    customers = customer_value_summary(bg, gg, summary, table, margins, cfg, per_year)
    return ValueTables(table, customers, value_by_group(table), covered)


def bgnbd_baseline(
    transactions: str,
    as_of: date,
    horizon_days: int,
    con: Any,
    discount_rate: float = 0.0,
    fitted: Fitted | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """BG/NBD + Gamma-Gamma fitted on the history up to ``as_of`` (weeks, unless ``fitted`` is
    given); CLV over the horizon. Revenue, not profit, undiscounted by default: it is graded
    against the horizon's actual spend."""
    summary, bg, gg = fitted or fit_bgnbd(transactions, as_of, con)
    value = customer_lifetime_value(bg, gg, summary, horizon_days / 7.0, discount_rate)
    params = {
        **{f"bgnbd_{k}": float(v) for k, v in bg.params_.items()},
        **{f"gg_{k}": float(v) for k, v in gg.params_.items()},
    }
    return pd.DataFrame({ID: summary[ID].astype(str), "bgnbd_clv": value}), params


def fast_clv_metric(metric: str, y_true: np.ndarray) -> MetricOf | None:
    """``metric_of(idx, scores)`` of ``mae``, ``rmse``, ``gini`` or ``top_decile_capture`` on
    the rows ``idx``, equal to ``clv_metrics`` on all rows (predictions floored at 0, ties in the
    input order); None for other metrics. Each score array's order is computed once."""
    y = np.asarray(y_true, dtype=float)
    orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def rank_of(scores: np.ndarray) -> np.ndarray:
        if id(scores) not in orders or orders[id(scores)][0] is not scores:
            p = np.clip(scores, 0.0, None)
            rank = np.empty(len(p), dtype=np.int64)
            rank[np.lexsort((np.arange(len(p)), -p))] = np.arange(len(p))
            orders[id(scores)] = (scores, rank)
        return orders[id(scores)][1]

    y_rank = np.empty(len(y), dtype=np.int64)
    y_rank[np.lexsort((np.arange(len(y)), -y))] = np.arange(len(y))
    y_sorted = np.sort(y)[::-1]

    def gini_along(idx: np.ndarray, rank: np.ndarray, y_by_rank: np.ndarray) -> float:
        # ``rank`` is a permutation: counting the drawn copies per rank orders the resample in
        # O(n); a block of c copies at positions s+1 … s+c adds v × Σ (n - j + 1) to Σ cumsum
        n = len(idx)
        c = np.bincount(rank[idx], minlength=len(rank)).astype(float)
        s = np.cumsum(c) - c
        weight = c * (n + 1) - c * s - c * (c + 1) / 2
        return float((y_by_rank * weight).sum() / y[idx].sum() / n - (n + 1) / (2 * n))

    def mae(idx: np.ndarray, scores: np.ndarray) -> float:
        return float(np.mean(np.abs(np.clip(scores[idx], 0.0, None) - y[idx])))

    def rmse(idx: np.ndarray, scores: np.ndarray) -> float:
        return float(np.sqrt(np.mean((np.clip(scores[idx], 0.0, None) - y[idx]) ** 2)))

    def gini(idx: np.ndarray, scores: np.ndarray) -> float:
        if y[idx].sum() <= 0:
            raise ValueError("Gini needs some value")
        rank = rank_of(scores)
        y_by_p = np.empty(len(y))
        y_by_p[rank] = y
        return gini_along(idx, rank, y_by_p) / gini_along(idx, y_rank, y_sorted)

    def top_decile_capture(idx: np.ndarray, scores: np.ndarray) -> float:
        total = y[idx].sum()
        if total <= 0:
            raise ValueError("capture needs some value")
        ranks = rank_of(scores)[idx]
        k = math.ceil(len(idx) / 10)
        top = np.argpartition(ranks, k - 1)[:k] if k < len(ranks) else np.arange(len(ranks))
        return float(y[idx][top].sum() / total)

    known: dict[str, MetricOf] = {
        "mae": mae,
        "rmse": rmse,
        "gini": gini,
        "top_decile_capture": top_decile_capture,
    }
    return known.get(metric)


class CLV(Family):
    name = "clv"
    config = CLVConfig
    headline_metrics = ("gini", "spearman", "top_decile_capture", "total_ratio", "mae")

    def build_frame(self, cfg: Any, ctx: RunContext) -> Frame:
        frame = cutoff_frame(
            cfg, ctx, lambda source, as_of: spend_label_sql(source, as_of, cfg.horizon_days)
        )
        con = connect(ctx.state)
        transactions = ctx.catalog.relation("transactions")
        try:
            fitted = fit_bgnbd(transactions, cfg.cutoffs.test, con)
            baseline, params = bgnbd_baseline(
                transactions, cfg.cutoffs.test, cfg.horizon_days, con, fitted=fitted
            )
            # the value table of the base at the test cutoff: profit at the configured margin,
            # discounted at the configured rate (the graded baseline above stays revenue)
            value = value_at_cutoff(
                fitted,
                transactions,
                ctx.catalog.relation_or_none("products"),
                cfg.cutoffs.test,
                cfg.value,
                con,
            )
        finally:
            con.close()
        frame.details = (baseline, params, value)
        return frame

    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        """Fit XGBoost on fit + valid rows; score test rows; compare with BG/NBD."""
        baseline, baseline_params, value = frame.details
        train_rows = frame.frame[frame.frame[SPLIT] != "test"]
        test_rows = frame.part("test").reset_index(drop=True)
        params = {**DEFAULT_XGB_PARAMS, **DEFAULT_CLV_PARAMS, **cfg.model.params, **(params or {})}
        pipe = xgb_pipeline(
            frame.feature_names, frame.categorical, params, cfg.seed, regression=True
        )
        pipe.fit(train_rows[frame.feature_names], train_rows[LABEL].to_numpy())
        pred = np.clip(pipe.predict(test_rows[frame.feature_names]), 0.0, None)
        y = test_rows[LABEL].to_numpy(dtype=float)
        merged = test_rows[[ID]].astype(str).merge(baseline, on=ID, how="left")["bgnbd_clv"]
        base = merged.fillna(0.0).to_numpy()
        preds = pd.DataFrame(
            {
                ID: test_rows[ID].astype(str),
                LABEL: y,
                "score": pred,
                "baseline_score": base,
                "value": y,
            }
        )
        trained = Trained(
            model=pipe,
            baseline_name=BASELINE_NAME,
            metrics={},
            baseline_metrics={},
            test_predictions=preds,
            test_frame=test_rows,
            grade="",
            params=params,
            feature_names=frame.feature_names,
            row_counts=split_counts(frame.frame),
        )
        trained.metrics = self.evaluate(cfg, trained, pred)
        trained.baseline_metrics = self.evaluate(cfg, trained, base)
        metric, higher = self.promotion_metric(cfg)
        trained.grade = grade(
            trained.metrics[metric], trained.baseline_metrics[metric], cfg.grade.a_margin, higher
        )
        trained.details = CLVDetails(
            deciles=decile_table((y > 0).astype(float), pred, y),
            importance=global_importance(pipe, test_rows[frame.feature_names]),
            baseline_params=baseline_params,
            value=value,
        )
        return trained

    def evaluate(self, cfg: Any, trained: Trained, scores: np.ndarray) -> dict[str, float]:
        y = trained.test_predictions[LABEL].to_numpy(dtype=float)
        return clv_metrics(y, np.clip(np.asarray(scores, dtype=float), 0.0, None))

    # money: the error of the amounts and the value found in the top decile must not get worse
    guard_metrics = ("rmse", "top_decile_capture")

    def metric_of(self, cfg: Any, trained: Trained, metric: str) -> MetricOf:
        """Vectorised CLV metrics for the promotion bootstrap (``evaluate`` otherwise)."""
        fast = fast_clv_metric(metric, trained.test_predictions[LABEL].to_numpy(dtype=float))
        return fast if fast is not None else super().metric_of(cfg, trained, metric)

    def wrap(self, cfg: Any, frame: Frame, trained: Trained) -> Any:
        # serving turns the predicted revenue into gross profit and its present value with it
        info = {
            **served_info(frame),
            "value_accounting": served_value_accounting(cfg.value, cfg.horizon_days),
        }
        return ScoringModel(trained.model, trained.feature_names, self.name, None, info)

    def log_params(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        value = {
            "value_years": cfg.value.years,
            "value_annual_discount_rate": cfg.value.annual_discount_rate,
            "value_discount_timing": cfg.value.discount_timing,
            "value_margin_default": cfg.value.margin.default,
            "value_margin_categories": len(cfg.value.margin.by_category),
        }
        return {**trained.details.baseline_params, **value}

    def artifacts(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        out = {
            "deciles.csv": trained.details.deciles,
            "importance.csv": trained.details.importance,
        }
        value = trained.details.value
        if value is not None:  # expected values of BG/NBD + Gamma-Gamma at the test cutoff
            out["value_by_year.csv"] = value.by_year
            out["value_customers.csv"] = value.customers
        return out

    def charts(self, cfg: Any, trained: Trained, folder: Path) -> list[Path]:
        preds = trained.test_predictions
        y = preds["value"].to_numpy()
        return [
            plot_gains(
                {
                    "XGBoost": (y, preds["score"].to_numpy()),
                    BASELINE_NAME: (y, preds["baseline_score"].to_numpy()),
                },
                folder / "gains.png",
                "share of horizon spend captured (out of time)",
            ),
            plot_importance(
                trained.details.importance, folder / "importance.png", "global importance (SHAP)"
            ),
        ]

    def describe(self, cfg: Any, trained: Trained) -> str:
        m, b = trained.metrics, trained.baseline_metrics
        return (
            f"CLV over {cfg.horizon_days} days on {cfg.dataset}: Gini {m['gini']:.3f} vs "
            f"BG/NBD {b['gini']:.3f}, Spearman {m['spearman']:.3f} vs {b['spearman']:.3f}, "
            f"grade {trained.grade}.{self._value_words(cfg, trained)} {cfg.description}"
        ).strip()

    @staticmethod
    def _value_words(cfg: Any, trained: Trained) -> str:
        value = trained.details.value
        if value is None:
            return ""
        v = cfg.value
        return (
            f" Expected NPV of the base at {cfg.cutoffs.test} over {v.years} years (BG/NBD + "
            f"Gamma-Gamma; margin {v.margin.default:.0%}"
            + (" or per category" if v.margin.by_category else "")
            + f", {v.annual_discount_rate:.0%} a year): "
            f"{value.customers['npv'].sum():,.0f}."
        )


FAMILY = CLV()
