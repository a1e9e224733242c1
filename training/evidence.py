"""Evidence for a choice between two scorers on the same rows: the paired bootstrap.

Every choice Patron makes between two models (promotion against the champion and the baseline,
tuned against default parameters, a calibrator against none) is judged by the same rule: the
difference of a metric on the *same* rows, with a percentile interval from resampling those rows
(or whole groups of rows, e.g. all offer pairs of one customer) with replacement, the same draw for
both scorers. ``improvement`` is signed so that positive always means "the challenger is better".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MetricOf = Callable[[np.ndarray, np.ndarray], float]
"""metric(row_indices, scores) -> value: the metric of ``scores[row_indices]`` on those rows."""


@dataclass(frozen=True)
class PairedDifference:
    """Challenger minus other on one metric, signed so that > 0 means the challenger is better,
    with its bootstrap interval at ``level``."""

    metric: str
    challenger: float
    other: float
    improvement: float
    lower: float
    upper: float
    level: float
    n_boot: int
    n_units: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        pct = round(100 * self.level)
        return (
            f"{self.metric} {self.challenger:.4f} vs {self.other:.4f}: improvement "
            f"{self.improvement:+.4f} [{pct} % CI {self.lower:+.4f} … {self.upper:+.4f}]"
        )


def resamples(
    n: int, groups: np.ndarray | None = None, n_boot: int = 500, seed: int = 0
) -> Iterator[np.ndarray]:
    """``n_boot`` resamples of ``n`` rows as row indices: rows drawn with replacement, or whole
    ``groups`` (every row of a drawn group, as often as the group is drawn). The same ``seed``
    gives the same draws, so every comparison of one decision sees the same resamples."""
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, size=n)
        return
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable")  # rows grouped, group by group
    sizes = np.bincount(inverse, minlength=len(codes))
    starts = np.cumsum(sizes) - sizes
    for _ in range(n_boot):
        draw = rng.integers(0, len(codes), size=len(codes))
        size = sizes[draw]
        first = np.repeat(starts[draw] - (np.cumsum(size) - size), size)
        yield order[first + np.arange(int(size.sum()))]


def n_units(n: int, groups: np.ndarray | None) -> int:
    """How many units a resample draws: rows, or distinct groups."""
    return n if groups is None else len(np.unique(np.asarray(groups)))


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    return float(np.quantile(finite, tail)), float(np.quantile(finite, 1.0 - tail))


def paired_bootstrap(
    metric: str,
    metric_of: MetricOf,
    challenger: np.ndarray,
    other: np.ndarray,
    *,
    higher_is_better: bool = True,
    groups: np.ndarray | None = None,
    n_boot: int = 500,
    level: float = 0.90,
    seed: int = 0,
) -> PairedDifference:
    """The challenger's improvement over ``other`` on ``metric`` and its two-sided percentile
    interval at ``level``: each resample draws units (rows, or whole ``groups``) with replacement,
    the same units for both scorers. Resamples where the metric is undefined (e.g. one class only)
    are left out of the interval."""
    challenger = np.asarray(challenger, dtype=float)
    other = np.asarray(other, dtype=float)
    if challenger.shape != other.shape:
        raise ValueError("paired bootstrap: both scorers must score the same rows")
    n = len(challenger)
    sign = 1.0 if higher_is_better else -1.0
    every = np.arange(n)
    a, b = metric_of(every, challenger), metric_of(every, other)
    diffs = np.full(n_boot, np.nan)
    for k, idx in enumerate(resamples(n, groups, n_boot, seed)):
        with np.errstate(all="ignore"):
            try:
                diffs[k] = sign * (metric_of(idx, challenger) - metric_of(idx, other))
            except ValueError:  # the metric is undefined on this resample
                continue
    lower, upper = _interval(diffs, level)
    return PairedDifference(
        metric=metric,
        challenger=float(a),
        other=float(b),
        improvement=float(sign * (a - b)),
        lower=lower,
        upper=upper,
        level=level,
        n_boot=n_boot,
        n_units=n_units(n, groups),
    )


@dataclass(frozen=True)
class Estimate:
    """One scorer's metric on the rows with its bootstrap interval at ``level`` (readiness)."""

    metric: str
    value: float
    lower: float
    upper: float
    level: float
    n_boot: int
    n_units: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_interval(
    metric: str,
    metric_of: MetricOf,
    scores: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 500,
    level: float = 0.90,
    seed: int = 0,
) -> Estimate:
    """One scorer's ``metric`` on all rows and its two-sided percentile interval at ``level``,
    from the same resamples as ``paired_bootstrap`` with the same seed."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    value = metric_of(np.arange(n), scores)
    values = np.full(n_boot, np.nan)
    for k, idx in enumerate(resamples(n, groups, n_boot, seed)):
        with np.errstate(all="ignore"):
            try:
                values[k] = metric_of(idx, scores)
            except ValueError:
                continue
    lower, upper = _interval(values, level)
    return Estimate(
        metric=metric,
        value=float(value),
        lower=lower,
        upper=upper,
        level=level,
        n_boot=n_boot,
        n_units=n_units(n, groups),
    )
