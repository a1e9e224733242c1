"""The counterfactual shifts on a few hand-made customers: they change what they say and keep
the churn_v1 features consistent with each other."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.definitions import feature_set
from tests.behaviour.counterfactuals import (
    WINDOWS,
    add_recent_orders,
    age_last_order,
    recompute_derived,
    scale_spend_365d,
)

FS = feature_set("churn_v1")


def customers() -> pd.DataFrame:
    """Three consistent churn_v1 rows: recent and frequent, lapsing, nearly gone."""
    rows = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "days_since_last_order": [5, 80, 300],
            "days_since_first_order": [700, 100, 900],
            "orders_count_total": [20, 2, 4],
            "spend_sum_total": [1000.0, 80.0, 200.0],
            "orders_count_30d": [2, 0, 0],
            "spend_sum_30d": [100.0, 0.0, 0.0],
            "orders_count_90d": [4, 2, 0],
            "spend_sum_90d": [200.0, 80.0, 0.0],
            "orders_count_365d": [10, 2, 1],
            "spend_sum_365d": [500.0, 80.0, 50.0],
            "orders_count_730d": [19, 2, 3],
            "spend_sum_730d": [950.0, 80.0, 150.0],
            "returns_share": [0.1, 0.0, 0.2],
            "categories_distinct": [5, 1, 2],
            "rfm_points": [0.0, 0.0, 0.0],
        }
    )
    rows["spend_mean_order"] = rows["spend_sum_total"] / rows["orders_count_total"]
    return recompute_derived(rows, FS)


def assert_consistent(rows: pd.DataFrame) -> None:
    last = rows["days_since_last_order"]
    assert (rows["days_since_first_order"] >= last).all()
    counts = [rows[f"orders_count_{w}d"] for w in WINDOWS] + [rows["orders_count_total"]]
    assert all((a <= b).all() for a, b in zip(counts, counts[1:], strict=False))
    for w in WINDOWS:  # an order inside the window <=> the last order is inside it
        assert ((rows[f"orders_count_{w}d"] > 0) == (last < w)).all(), w
    np.testing.assert_allclose(
        rows["spend_mean_order"] * rows["orders_count_total"], rows["spend_sum_total"]
    )
    np.testing.assert_array_equal(recompute_derived(rows, FS)["rfm_points"], rows["rfm_points"])


def test_recompute_derived_gives_the_declared_rfm_points() -> None:
    rows = customers()
    # R points by recency band (< 91: 20, < 182: 10, < 365: 3), F = min(4 x orders_730d, 20),
    # M = min(0.1 x spend_730d, 20)
    assert rows["rfm_points"].tolist() == [60.0, 20.0 + 8.0 + 8.0, 3.0 + 12.0 + 15.0]
    assert_consistent(rows)


@pytest.mark.parametrize("days", [0, 30, 90, 400])
def test_age_last_order_moves_recency_and_empties_the_windows_it_leaves(days: int) -> None:
    rows = customers()
    out = age_last_order(rows, days, FS)
    assert (out["days_since_last_order"] == rows["days_since_last_order"] + days).all()
    assert_consistent(out)
    for c in ("orders_count_total", "spend_sum_total", "returns_share", "categories_distinct"):
        assert out[c].tolist() == rows[c].tolist()
    if days == 0:
        pd.testing.assert_frame_equal(out, rows)
    if days == 90:  # a (5 -> 95) and b (80 -> 170) leave the 90-day window, c (300 -> 390)
        assert out["orders_count_90d"].tolist() == [0, 0, 0]  # the 365-day one too
        assert out["orders_count_365d"].tolist() == [10, 2, 0]
        assert (out["rfm_points"] <= rows["rfm_points"]).all()


@pytest.mark.parametrize("k", [1, 3])
def test_add_recent_orders_adds_orders_in_the_90_day_window_only(k: int) -> None:
    rows = customers()
    out = add_recent_orders(rows, k, FS)
    assert_consistent(out)
    for c in ("orders_count_90d", "orders_count_365d", "orders_count_730d", "orders_count_total"):
        assert (out[c] == rows[c] + k).all()
    assert (out["orders_count_30d"] == rows["orders_count_30d"]).all()
    np.testing.assert_allclose(out["spend_mean_order"], rows["spend_mean_order"])
    assert out["days_since_last_order"].tolist() == [5, 80, 89]
    assert (out["returns_share"] <= rows["returns_share"]).all()
    assert out["returns_share"].to_numpy()[2] < rows["returns_share"].to_numpy()[2]


def test_scale_spend_365d_adds_the_extra_spend_to_every_longer_window() -> None:
    rows = customers()
    out = scale_spend_365d(rows, 2.0, FS)
    assert_consistent(out)
    np.testing.assert_allclose(out["spend_sum_365d"], 2 * rows["spend_sum_365d"])
    np.testing.assert_allclose(
        out["spend_sum_730d"], rows["spend_sum_730d"] + rows["spend_sum_365d"]
    )
    np.testing.assert_allclose(
        out["spend_sum_total"], rows["spend_sum_total"] + rows["spend_sum_365d"]
    )
    for c in ("orders_count_365d", "days_since_last_order"):
        assert out[c].tolist() == rows[c].tolist()
