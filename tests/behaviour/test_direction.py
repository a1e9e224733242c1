"""Direction checks on trained models: a change to a customer's history that should move the
score one way must not move the mean score the other way (counterfactuals.py says what each
shift changes). Tolerances are on the mean over the out-of-time rows."""

from __future__ import annotations

import pytest

from tests.behaviour.conftest import BehaviourModel
from tests.behaviour.counterfactuals import (
    add_recent_orders,
    age_last_order,
    direction_check,
    scale_spend_365d,
)

CHURN_TOLERANCE = 0.005  # half a percentage point of mean churn probability
CLV_TOLERANCE = 1.0  # one currency unit of mean predicted spend (the mean is ~150)


@pytest.mark.parametrize("days", [30, 90])
def test_longer_silence_never_lowers_churn_on_average(
    churn_model: BehaviourModel, days: int
) -> None:
    result = direction_check(
        churn_model.score,
        churn_model.rows,
        lambda rows: age_last_order(rows, days, churn_model.feature_set),
        "not_lower",
        CHURN_TOLERANCE,
        f"last order {days} days older",
    )
    assert not result.violated, str(result)


@pytest.mark.parametrize("orders", [1, 2])
def test_more_recent_orders_never_raise_churn_on_average(
    churn_model: BehaviourModel, orders: int
) -> None:
    result = direction_check(
        churn_model.score,
        churn_model.rows,
        lambda rows: add_recent_orders(rows, orders, churn_model.feature_set),
        "not_higher",
        CHURN_TOLERANCE,
        f"{orders} more orders in the last 90 days",
    )
    assert not result.violated, str(result)


@pytest.mark.parametrize("factor", [1.25, 2.0])
def test_more_spend_in_the_year_never_lowers_clv_on_average(
    clv_model: BehaviourModel, factor: float
) -> None:
    spenders = clv_model.rows[clv_model.rows["spend_sum_365d"] > 0]  # the others do not change
    result = direction_check(
        clv_model.score,
        spenders,
        lambda rows: scale_spend_365d(rows, factor, clv_model.feature_set),
        "not_lower",
        CLV_TOLERANCE,
        f"spend in the last 365 days x{factor}",
    )
    assert not result.violated, str(result)


def test_the_direction_checks_catch_an_inverted_model(
    churn_model: BehaviourModel, clv_model: BehaviourModel
) -> None:
    """The same checks on models that learned the opposite: each must report a violation."""
    fs = churn_model.feature_set
    inverted_churn = lambda rows: 1.0 - churn_model.score(rows)  # noqa: E731
    inverted_clv = lambda rows: 1000.0 - clv_model.score(rows)  # noqa: E731
    results = [
        direction_check(
            inverted_churn,
            churn_model.rows,
            lambda r: age_last_order(r, 30, fs),
            "not_lower",
            CHURN_TOLERANCE,
            "inverted: last order 30 days older",
        ),
        direction_check(
            inverted_churn,
            churn_model.rows,
            lambda r: add_recent_orders(r, 1, fs),
            "not_higher",
            CHURN_TOLERANCE,
            "inverted: 1 more recent order",
        ),
        direction_check(
            inverted_clv,
            clv_model.rows[clv_model.rows["spend_sum_365d"] > 0],
            lambda r: scale_spend_365d(r, 1.25, clv_model.feature_set),
            "not_lower",
            CLV_TOLERANCE,
            "inverted: spend x1.25",
        ),
    ]
    assert all(r.violated for r in results), [str(r) for r in results]
