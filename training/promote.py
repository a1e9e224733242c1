"""Champion / challenger: a new model is promoted only when it earns it, on the same test rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PromotionPolicy(BaseModel):
    """The out-of-time metric and the margin a challenger must beat the champion and baseline by."""

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


@dataclass(frozen=True)
class PromotionDecision:
    """The decision and the numbers it was made on (logged to MLflow)."""

    promote: bool
    metric: str
    challenger: float
    baseline: float
    champion: float | None
    margin: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    policy: PromotionPolicy, challenger: float, baseline: float, champion: float | None
) -> PromotionDecision:
    """Promote iff the challenger beats the baseline and the current champion by the margin."""
    sign = 1.0 if policy.higher_is_better else -1.0

    def beats(other: float) -> bool:
        return sign * (challenger - other) > policy.margin

    reasons = []
    if not beats(baseline):
        reasons.append(
            f"does not beat the baseline {policy.metric} {baseline:.4f} "
            f"by more than {policy.margin}"
        )
    if champion is not None and not beats(champion):
        reasons.append(
            f"does not beat the champion {policy.metric} {champion:.4f} "
            f"by more than {policy.margin}"
        )
    promote = not reasons
    if promote:
        against = "baseline" if champion is None else "baseline and champion"
        reasons.append(f"beats the {against} on {policy.metric} by more than {policy.margin}")
    return PromotionDecision(
        promote=promote,
        metric=policy.metric,
        challenger=challenger,
        baseline=baseline,
        champion=champion,
        margin=policy.margin,
        reason="; ".join(reasons),
    )
