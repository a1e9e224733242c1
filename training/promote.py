"""Champion / challenger: a new model is promoted only on evidence, on the same test rows.

The rule (docs/training.md, "Promotion"): on the test rows, the challenger's improvement on the
primary metric over the baseline, and over the champion re-scored on the same rows, has a
paired-bootstrap interval at ``confidence`` whose lower bound lies above ``margin``; no guard
metric is significantly worse than either (its interval lies entirely on the worse side of 0);
and every readiness gate holds on the lower end of the challenger's own interval. A champion that
cannot score the rows gives no paired evidence, so it is never replaced on its logged metric.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.evidence import (
    Estimate,
    MetricOf,
    PairedDifference,
    bootstrap_interval,
    paired_bootstrap,
)

#: metrics where less is better (guards and readiness read the direction here)
LOWER_IS_BETTER = frozenset(
    {"log_loss", "brier", "ece", "ece_uncalibrated", "mae", "rmse", "mape", "calibration_error"}
)


def higher_is_better(metric: str) -> bool:
    """The direction of a guard or readiness metric (``LOWER_IS_BETTER`` lists the others)."""
    return metric not in LOWER_IS_BETTER


class Readiness(BaseModel):
    """An absolute quality gate on one test metric at the operating point, e.g.
    ``{metric: precision_top_decile, min: 0.70}``: the lower end of the challenger's bootstrap
    interval must reach ``min`` (the upper end must stay under ``max``)."""

    model_config = ConfigDict(extra="forbid")
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Readiness:
        if (self.min is None) == (self.max is None):
            raise ValueError("readiness: give exactly one of min or max")
        return self


class PromotionPolicy(BaseModel):
    """The out-of-time metric, the margin and the evidence a challenger needs to be promoted."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field("roc_auc", description="test metric compared")
    higher_is_better: bool = True
    margin: float = Field(
        0.0, ge=0.0, description="the improvement's lower confidence bound must exceed this"
    )
    confidence: float = Field(
        0.90, gt=0.5, lt=1.0, description="two-sided level of the paired-bootstrap interval"
    )
    n_boot: int = Field(500, ge=50, description="paired-bootstrap resamples of the test rows")
    guards: list[str] | None = Field(
        None,
        description="metrics that must not be significantly worse than the baseline or champion "
        "(None: the family's defaults, e.g. ece, brier, lift_top_decile for binary families)",
    )
    readiness: list[Readiness] = Field(
        default_factory=list, description="absolute quality gates (none by default)"
    )
    seed: int = Field(0, description="seed of the bootstrap resamples")


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of the decision: against whom, primary or guard, and the numbers."""

    against: str  # "baseline" | "champion"
    role: str  # "primary" | "guard"
    difference: PairedDifference

    @property
    def significantly_worse(self) -> bool:
        return bool(self.difference.upper < 0)

    def to_dict(self) -> dict[str, Any]:
        return {"against": self.against, "role": self.role, **self.difference.to_dict()}


@dataclass(frozen=True)
class ReadinessCheck:
    """One readiness gate and the challenger's interval on its metric."""

    gate: Readiness
    estimate: Estimate

    @property
    def passed(self) -> bool:
        if self.gate.min is not None:
            return bool(self.estimate.lower >= self.gate.min)
        return bool(self.gate.max is not None and self.estimate.upper <= self.gate.max)

    def describe(self) -> str:
        e, pct = self.estimate, round(100 * self.estimate.level)
        bound = f">= {self.gate.min}" if self.gate.min is not None else f"<= {self.gate.max}"
        end = "lower" if self.gate.min is not None else "upper"
        return (
            f"readiness {e.metric} {bound}: {e.value:.4f} [{pct} % CI {e.lower:.4f} … "
            f"{e.upper:.4f}], {end} end {'passes' if self.passed else 'fails'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.estimate.to_dict(),
            "min": self.gate.min,
            "max": self.gate.max,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class PromotionDecision:
    """The decision and the evidence it was made on (``promotion.json`` in MLflow)."""

    promote: bool
    metric: str
    challenger: float
    baseline: float
    champion: float | None  # the champion's metric on these rows (or its logged one, unscored)
    margin: float
    reason: str
    confidence: float = 0.90
    n_boot: int = 0
    champion_version: str | None = None
    champion_scored: bool = False
    comparisons: list[Comparison] = field(default_factory=list)
    readiness: list[ReadinessCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["comparisons"] = [c.to_dict() for c in self.comparisons]
        out["readiness"] = [r.to_dict() for r in self.readiness]
        return out

    def evidence_metrics(self) -> dict[str, float]:
        """The evidence as flat MLflow metrics, e.g. ``promotion_roc_auc_vs_baseline_lower``."""
        out: dict[str, float] = {}
        for c in self.comparisons:
            d = c.difference
            stem = f"promotion_{d.metric}_vs_{c.against}"
            out.update(
                {
                    f"{stem}_improvement": d.improvement,
                    f"{stem}_lower": d.lower,
                    f"{stem}_upper": d.upper,
                }
            )
        for r in self.readiness:
            stem = f"readiness_{r.estimate.metric}"
            e = r.estimate
            out.update({stem: e.value, f"{stem}_lower": e.lower, f"{stem}_upper": e.upper})
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}


@dataclass(frozen=True)
class Champion:
    """The current champion as the decision sees it: its scores of the challenger's test rows,
    or (when it cannot score them) why not and its own logged metric."""

    version: str
    scores: np.ndarray | None
    logged_metric: float | None = None
    error: str = ""


def compare(
    policy: PromotionPolicy,
    metric: str,
    metric_of: MetricOf,
    challenger: np.ndarray,
    other: np.ndarray,
    groups: np.ndarray | None,
    higher: bool,
) -> PairedDifference:
    """One paired bootstrap at the policy's level, resamples and seed."""
    return paired_bootstrap(
        metric,
        metric_of,
        challenger,
        other,
        higher_is_better=higher,
        groups=groups,
        n_boot=policy.n_boot,
        level=policy.confidence,
        seed=policy.seed,
    )


def decide_promotion(
    policy: PromotionPolicy,
    metric_of: dict[str, MetricOf],
    challenger: np.ndarray,
    baseline: np.ndarray,
    champion: Champion | None,
    groups: np.ndarray | None = None,
) -> PromotionDecision:
    """Promote iff, on the same rows, the primary metric's improvement over the baseline and the
    champion has its lower bound above ``margin``, no guard is significantly worse than either,
    and every readiness gate passes. ``metric_of`` maps each metric named by the policy (primary,
    guards, readiness) to its ``metric_of(idx, scores)``."""
    guards = [g for g in (policy.guards or []) if g != policy.metric]
    missing = sorted(
        {m for m in (policy.metric, *guards, *(r.metric for r in policy.readiness))}
        - set(metric_of)
    )
    others: dict[str, np.ndarray] = {"baseline": np.asarray(baseline, dtype=float)}
    if champion is not None and champion.scores is not None:
        others["champion"] = np.asarray(champion.scores, dtype=float)
    comparisons: list[Comparison] = []
    checks: list[ReadinessCheck] = []
    reasons: list[str] = []
    if missing:
        reasons.append(f"no per-row evidence for {', '.join(missing)}: not metrics of this family")
    else:
        for against, other in others.items():
            comparisons.append(
                Comparison(
                    against,
                    "primary",
                    compare(
                        policy,
                        policy.metric,
                        metric_of[policy.metric],
                        challenger,
                        other,
                        groups,
                        policy.higher_is_better,
                    ),
                )
            )
            for g in guards:
                diff = compare(
                    policy, g, metric_of[g], challenger, other, groups, higher_is_better(g)
                )
                comparisons.append(Comparison(against, "guard", diff))
        for gate in policy.readiness:
            estimate = bootstrap_interval(
                gate.metric,
                metric_of[gate.metric],
                challenger,
                groups=groups,
                n_boot=policy.n_boot,
                level=policy.confidence,
                seed=policy.seed,
            )
            checks.append(ReadinessCheck(gate, estimate))
    for c in comparisons:
        d = c.difference
        if c.role == "primary" and not d.lower > policy.margin:
            reasons.append(
                f"no evidence it beats the {c.against} by more than {policy.margin}: {d.describe()}"
            )
        if c.role == "guard" and c.significantly_worse:
            reasons.append(f"significantly worse than the {c.against} on {d.describe()}")
    for check in checks:
        if not check.passed:
            reasons.append(f"not ready: {check.describe()}")
    if champion is not None and champion.scores is None:
        reasons.append(
            f"the champion (version {champion.version}) cannot score these test rows "
            f"({champion.error or 'unknown error'}): without paired evidence it is not replaced"
        )
    promote = not reasons
    if promote:
        against = " and ".join(others)
        primary = [c for c in comparisons if c.role == "primary"]
        reasons.append(
            f"beats the {against} beyond noise: "
            + "; ".join(f"vs {c.against} {c.difference.describe()}" for c in primary)
            + (f"; no guard ({', '.join(guards)}) significantly worse" if guards else "")
            + ("; " + "; ".join(c.describe() for c in checks) if checks else "")
        )
    champ_value: float | None = None
    if champion is not None:
        scored = [
            c.difference.other
            for c in comparisons
            if c.against == "champion" and c.role == "primary"
        ]
        champ_value = scored[0] if scored else champion.logged_metric
    primary_base = [
        c.difference for c in comparisons if c.against == "baseline" and c.role == "primary"
    ]
    return PromotionDecision(
        promote=promote,
        metric=policy.metric,
        challenger=primary_base[0].challenger if primary_base else float("nan"),
        baseline=primary_base[0].other if primary_base else float("nan"),
        champion=champ_value,
        margin=policy.margin,
        reason="; ".join(reasons),
        confidence=policy.confidence,
        n_boot=policy.n_boot,
        champion_version=None if champion is None else champion.version,
        champion_scored=bool(champion is not None and champion.scores is not None),
        comparisons=comparisons,
        readiness=checks,
    )
