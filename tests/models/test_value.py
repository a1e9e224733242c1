"""Value accounting: the literature's cohort table to the cent, BG/NBD per-year value against the
model's own expectations and a simulation, the value x risk economics, config errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from models.clv import BetaGeoModel, GammaGammaModel, customer_lifetime_value
from models.value import (
    MarginConfig,
    RetentionConfig,
    ValueConfig,
    blended_margins,
    cohort_value_table,
    config_error_lines,
    customer_value_summary,
    customer_value_table,
    deciles,
    discount_factors,
    probability_alive_after,
    purchases_if_alive,
    retention_economics,
    served_value_accounting,
    served_value_terms,
    value_by_group,
    value_risk_grid,
)

CDNOW = {"r": 0.2425929, "alpha": 4.413531, "a": 0.7928860, "b": 2.425753}
GG = {"p": 6.25, "q": 3.74, "v": 15.44}


def _bg(**params: float) -> BetaGeoModel:
    model = BetaGeoModel()
    model.params_ = pd.Series(params or CDNOW, dtype=float)
    return model


def _gg() -> GammaGammaModel:
    model = GammaGammaModel()
    model.params_ = pd.Series(GG, dtype=float)
    return model


def _summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "frequency": [0, 2, 7, 1],
            "recency": [0.0, 30.43, 60.0, 2.0],
            "T": [10.0, 38.86, 62.0, 70.0],
            "monetary_value": [0.0, 20.0, 45.5, 12.0],
        }
    )


def test_cohort_table_matches_the_hand_computed_table_to_the_cent() -> None:
    # 1 000 customers, 60 % kept into year 2 and 70 % of those into year 3, spending 150, 160,
    # 170 a year; direct costs 70 % of revenue (margin 30 %); 10 % a year, discounted at year end.
    #   year 1: 1000 customers x 150 = 150 000.00 revenue; costs 105 000.00; gross profit
    #           45 000.00; factor 1/1.1 = 0.909091; NPV 45 000 / 1.1 = 40 909.09; cum. 40 909.09
    #   year 2: 1000 x 0.6 = 600 x 160 = 96 000.00; costs 67 200.00; profit 28 800.00;
    #           factor 1/1.21 = 0.826446; NPV 28 800 / 1.21 = 23 801.65; cumulative 64 710.74
    #   year 3: 600 x 0.7 = 420 x 170 = 71 400.00; costs 49 980.00; profit 21 420.00;
    #           factor 1/1.331 = 0.751315; NPV 21 420 / 1.331 = 16 093.16; cumulative 80 803.91
    #   lifetime value per starting customer: 80 803.91 / 1 000 = 80.80
    table = cohort_value_table(1000, [0.6, 0.7, 0.7], [150, 160, 170], 0.30, 0.10, 3)
    cents = table.round(2)
    assert cents["customers"].tolist() == [1000.0, 600.0, 420.0]
    assert cents["revenue"].tolist() == [150_000.00, 96_000.00, 71_400.00]
    assert cents["costs"].tolist() == [105_000.00, 67_200.00, 49_980.00]
    assert cents["gross_profit"].tolist() == [45_000.00, 28_800.00, 21_420.00]
    assert table["discount_factor"].round(6).tolist() == [0.909091, 0.826446, 0.751315]
    assert cents["npv"].tolist() == [40_909.09, 23_801.65, 16_093.16]
    assert cents["cumulative_npv"].tolist() == [40_909.09, 64_710.74, 80_803.91]
    assert cents["clv_per_customer"].iloc[-1] == 80.80


def test_start_of_year_timing_leaves_the_first_year_undiscounted() -> None:
    # one retention rate of 50 %, 100 a year, margin 40 %, 20 %, first year undiscounted:
    #   year 1: 200 customers x 100 = 20 000; profit 8 000; factor 1; NPV 8 000.00
    #   year 2: 100 x 100 = 10 000; profit 4 000; factor 1/1.2; NPV 3 333.33; cumulative 11 333.33
    table = cohort_value_table(200, 0.5, 100, 0.4, 0.2, 2, timing="start_of_year")
    assert table["npv"].round(2).tolist() == [8_000.00, 3_333.33]
    assert table["cumulative_npv"].round(2).tolist() == [8_000.00, 11_333.33]


def test_discount_factors_refuse_a_rate_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="annual_rate"):
        discount_factors(3, 1.5)


def _simulate(n: int, seed: int, t: float) -> tuple[pd.DataFrame, np.ndarray]:
    """BG/NBD customers at T and whether each is still alive at T + t."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(CDNOW["r"], 1.0 / CDNOW["alpha"], n)
    p = rng.beta(CDNOW["a"], CDNOW["b"], n)
    age = rng.uniform(30, 80, n)
    last = rng.geometric(p)  # the customer leaves right after the last-th repeat purchase
    by_t = rng.poisson(lam * age)
    by_later = by_t + rng.poisson(lam * t)
    x = np.minimum(last, by_t)
    t_x = np.zeros(n)
    pos = x > 0
    t_x[pos] = age[pos] * rng.beta(x[pos], by_t[pos] - x[pos] + 1)
    summary = pd.DataFrame({"frequency": x, "recency": t_x, "T": age})
    return summary, by_later < last


def test_probability_alive_after_t_matches_a_simulation() -> None:
    summary, alive_later = _simulate(40_000, seed=11, t=52.0)
    predicted = probability_alive_after(_bg(), summary, 52.0)
    # given the histories, the alive count is a sum of Bernoullis with these probabilities
    se = np.sqrt(np.sum(predicted * (1 - predicted)))
    assert abs(predicted.sum() - alive_later.sum()) < 4 * se
    for x in (0, 1, 2):  # also by calibration frequency
        m = summary["frequency"].to_numpy() == x
        se_x = np.sqrt(np.sum(predicted[m] * (1 - predicted[m])))
        assert abs(predicted[m].sum() - alive_later[m].sum()) < 4 * se_x


def test_probability_alive_after_zero_is_probability_alive_and_falls_with_t() -> None:
    bg, summary = _bg(), _summary()
    now = probability_alive_after(bg, summary, 0.0)
    np.testing.assert_allclose(now, bg.probability_alive(summary), rtol=1e-12)
    later = [probability_alive_after(bg, summary, t) for t in (10.0, 52.0, 200.0)]
    assert np.all(np.diff(np.column_stack([now, *later]), axis=1) < 0)


def test_expected_purchases_are_p_alive_times_purchases_if_alive() -> None:
    bg, summary = _bg(), _summary()
    for t in (1.0, 39.0, 156.0):
        np.testing.assert_allclose(
            bg.expected_purchases(summary, t),
            bg.probability_alive(summary) * purchases_if_alive(bg, summary, t),
            rtol=1e-10,
        )


def test_customer_value_table_with_one_period_years_equals_discounted_clv() -> None:
    # with the summary in years, year k of the table is period k of customer_lifetime_value
    bg, gg, summary = _bg(), _gg(), _summary()
    cfg = ValueConfig(years=4, annual_discount_rate=0.08, margin=0.35)
    table = customer_value_table(bg, gg, summary, 0.35, cfg, periods_per_year=1.0)
    npv = table.groupby("customer_id", sort=False)["npv"].sum().to_numpy()
    expected = customer_lifetime_value(bg, gg, summary, 4, 0.08, margin=0.35)
    np.testing.assert_allclose(npv, expected, rtol=1e-10)
    last = table[table["year"] == 4]["cumulative_npv"].to_numpy()
    np.testing.assert_allclose(last, expected, rtol=1e-10)
    np.testing.assert_allclose(
        table["expected_gross_profit"], table["expected_revenue"] * 0.35, rtol=1e-12
    )
    np.testing.assert_allclose(
        table["expected_costs"] + table["expected_gross_profit"], table["expected_revenue"]
    )


def test_customer_value_table_years_add_up_and_p_alive_chains() -> None:
    bg, gg, summary = _bg(), _gg(), _summary()
    cfg = ValueConfig(years=3, annual_discount_rate=0.0, margin=1.0)
    table = customer_value_table(bg, gg, summary, 1.0, cfg, periods_per_year=52.0)
    total = table.groupby("customer_id", sort=False)["expected_purchases"].sum().to_numpy()
    np.testing.assert_allclose(total, bg.expected_purchases(summary, 156.0), rtol=1e-10)
    wide = table.pivot(index="customer_id", columns="year", values="p_alive_start").loc[
        summary["customer_id"]
    ]
    np.testing.assert_allclose(wide[1], bg.probability_alive(summary), rtol=1e-12)
    ends = table.pivot(index="customer_id", columns="year", values="p_alive_end")
    np.testing.assert_allclose(wide[[2, 3]].to_numpy(), ends.loc[wide.index][[1, 2]].to_numpy())
    assert (table["retention_rate"].between(0, 1)).all()


def test_summary_npv_if_retained_times_p_alive_is_npv() -> None:
    bg, gg, summary = _bg(), _gg(), _summary()
    cfg = ValueConfig(years=3, annual_discount_rate=0.1, margin=0.3)
    table = customer_value_table(bg, gg, summary, 0.3, cfg, 52.0)
    value = customer_value_summary(bg, gg, summary, table, 0.3, cfg, 52.0)
    np.testing.assert_allclose(value["npv"], value["p_alive"] * value["npv_if_retained"])
    assert value["customer_id"].tolist() == ["a", "b", "c", "d"]


def test_value_by_group_adds_up_to_the_whole() -> None:
    bg, gg, summary = _bg(), _gg(), _summary()
    cfg = ValueConfig(years=2, annual_discount_rate=0.1, margin=0.3)
    table = customer_value_table(bg, gg, summary, 0.3, cfg, 52.0)
    whole = value_by_group(table)
    parts = value_by_group(table, pd.Series({"a": "new", "b": "old", "c": "old", "d": "old"}))
    for col in ("expected_revenue", "npv", "expected_alive_start", "customers"):
        assert parts.groupby("year")[col].sum().to_numpy() == pytest.approx(whole[col].to_numpy())
    assert whole["retention_rate"].tolist() == pytest.approx(
        (whole["expected_alive_end"] / whole["expected_alive_start"]).tolist()
    )
    old = parts[parts["segment"] == "old"]
    assert old["cumulative_npv"].iloc[-1] == pytest.approx(old["npv"].sum())


def test_deciles_rank_ten_high_and_ties_share_the_lowest() -> None:
    assert deciles(np.arange(20.0)).tolist() == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
        5,
        5,
        6,
        6,
        7,
        7,
        8,
        8,
        9,
        9,
        10,
        10,
    ]
    assert deciles(np.array([0.0, 0.0, 0.0, 5.0])).tolist() == [3, 3, 3, 10]


def test_retention_economics_by_hand() -> None:
    customers = pd.DataFrame(
        {
            "customer_id": ["safe", "worth", "cheap", "lost"],
            "npv": [100.0, 50.0, 1.0, 0.1],
            "churn_risk": [0.0, 0.5, 0.5, 0.99],
            "npv_if_retained": [100.0, 100.0, 2.0, 10.0],
        }
    )
    cfg = RetentionConfig(contact_cost=2.0, offer_cost=1.0, success_rate=0.5)
    out = retention_economics(customers, cfg)
    # saved = risk x value if retained: 0, 50, 1, 9.9
    assert out["max_retention_spend"].tolist() == pytest.approx([0.0, 50.0, 1.0, 9.9])
    # pays when 0.5 x (saved - 1) > 2, i.e. saved > 5: only "worth" and "lost"
    assert out["let_go"].tolist() == [True, False, True, False]
    # "safe" would pay if surely leaving (0.5 x (100 - 1) > 2); "cheap" not even then (0.5 x 1)
    assert out["let_go_reason"].tolist() == ["low risk", "", "low value", ""]
    grid = value_risk_grid(out, cfg)
    assert grid["customers"].sum() == 4
    assert grid.loc[grid["let_go_share"] == 0, "let_go"].eq(False).all()


def test_blended_margins_weigh_category_margins_by_past_revenue() -> None:
    revenue = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b"],
            "category": ["toys", "food", "food", None],
            "revenue": [300.0, 100.0, 50.0, 50.0],
        }
    )
    cfg = MarginConfig(default=0.3, by_category={"toys": 0.5})
    margins, covered = blended_margins(pd.Series(["a", "b", "c"]), revenue, cfg)
    # a: (300 x 0.5 + 100 x 0.3) / 400 = 0.45; b: default on both lines 0.3; c: no revenue 0.3
    assert margins.tolist() == pytest.approx([0.45, 0.3, 0.3])
    assert covered == pytest.approx(300 / 500)
    assert blended_margins(pd.Series(["a"]), revenue, MarginConfig(default=0.2))[0].tolist() == [
        0.2
    ]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"years": 0}, "years"),
        ({"annual_discount_rate": 1.5}, "annual_discount_rate"),
        ({"margin": 30}, "margin.default"),
        (
            {"margin": {"default": 0.3, "by_category": {"toys": -0.1}}},
            "by_category: category 'toys'",
        ),
        ({"retention": {"success_rate": 2}}, "retention.success_rate"),
        ({"discount": 0.1}, "discount"),
    ],
)
def test_each_bad_config_value_is_one_line_naming_its_key(data: dict, key: str) -> None:
    with pytest.raises(ValidationError) as info:
        ValueConfig.model_validate(data)
    text = config_error_lines(info.value, "value.yaml")
    assert len(text.splitlines()) == 1
    assert text.startswith("value.yaml: ") and key in text


def test_served_value_accounting_reads_back_as_margin_and_horizon_discount() -> None:
    cfg = ValueConfig(
        margin={"default": 0.25, "by_category": {"toys": 0.5}}, annual_discount_rate=0.2
    )
    recorded = served_value_accounting(cfg, 365)
    assert recorded["margin"] == 0.25 and "not applied" in recorded["margin_basis"]
    margin, factor = served_value_terms({"value_accounting": recorded})
    assert margin == 0.25 and factor == pytest.approx(1 / 1.2 ** (365 / 365.25))
    assert served_value_terms({"dataset": "x"}) is None and served_value_terms(None) is None
