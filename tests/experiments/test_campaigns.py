"""Campaign evaluation: published interval values, hand-built campaigns, and the interval's
coverage of the true average uplift on synthetic campaigns."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.campaigns import (
    evaluate_campaigns,
    newcombe_interval,
    run_campaign_evaluate,
    two_proportion_test,
    wilson_interval,
    window_revenue,
)
from features.sources import ingest, load_dataset
from features.store import StateDirs
from features.synthetic import SyntheticConfig, generate


def test_newcombe_matches_the_published_examples() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10
    low, high = newcombe_interval(56, 70, 48, 80)
    assert (round(float(low), 4), round(float(high), 4)) == (0.0524, 0.3339)
    low, high = newcombe_interval(9, 10, 3, 10)
    assert (round(float(low), 4), round(float(high), 4)) == (0.1705, 0.8090)
    # Wilson (1927) score interval of 0 / 10: [0, 0.2775]
    assert np.allclose(wilson_interval(0, 10), (0.0, 0.2775), atol=1e-4)


def test_two_proportion_test_uses_fisher_for_small_cells() -> None:
    p, test = two_proportion_test(56, 70, 48, 80)
    chi2 = stats.chi2_contingency([[56, 14], [48, 32]], correction=False)
    assert test == "z" and p == pytest.approx(chi2.pvalue)  # z^2 is the chi-square statistic
    p, test = two_proportion_test(3, 10, 1, 10)
    assert test == "fisher"
    assert p == pytest.approx(stats.fisher_exact([[3, 7], [1, 9]]).pvalue)


def contacts(
    campaign: str,
    offer: str,
    send: str,
    treated: list[int],
    control: list[int],
    reasons: list[str] | None = None,
) -> pd.DataFrame:
    """Rows of one campaign: responses of the treated, then of the control group."""
    n_t = len(treated)
    frame = pd.DataFrame(
        {
            "campaign_id": campaign,
            "customer_id": [f"{campaign}-{i}" for i in range(n_t + len(control))],
            "offer_id": offer,
            "ts": pd.Timestamp(send),
            "group": ["treatment"] * n_t + ["control"] * len(control),
            "responded": [bool(v) for v in treated + control],
        }
    )
    frame["reason"] = (reasons or []) + [None] * (len(frame) - len(reasons or []))
    return frame


def test_evaluation_by_hand() -> None:
    a = contacts(
        "A",
        "RET_01",
        "2024-03-01",
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 0, 0, 0],
        reasons=[None, None, None, "price", "Price ", "no need", "", None],
    )
    b = contacts("B", "XS_01", "2024-04-01", [1] * 30 + [0] * 70, [1] * 20 + [0] * 80)
    offers = pd.DataFrame(
        {"offer_id": ["RET_01", "XS_01"], "value": [50.0, 10.0], "cost": [2.0, 0.5]}
    )
    scores = pd.DataFrame(
        {
            "campaign_id": "A",
            "customer_id": [f"A-{i}" for i in range(4)],
            "score": [0.5, 0.5, 0.25, 0.25],
        }
    )
    history = pd.concat([b, a, a.iloc[:1]])  # a repeated contact counts once
    report = evaluate_campaigns(history, expected_scores=scores, offers=offers).set_index(
        "campaign_id"
    )
    assert list(report.index) == ["A", "B"]  # by send date
    ra, rb = report.loc["A"], report.loc["B"]
    assert (ra["contacts"], ra["control"]) == (8, 4)
    assert ra["response_rate_treatment"] == pytest.approx(3 / 8)
    assert ra["uplift"] == pytest.approx(3 / 8 - 1 / 4)
    assert ra["incremental_responses"] == pytest.approx(8 * (3 / 8 - 1 / 4))
    assert ra["test"] == "fisher" and rb["test"] == "z"
    low, high = newcombe_interval(30, 100, 20, 100)
    assert (rb["uplift_ci_low"], rb["uplift_ci_high"]) == pytest.approx((low, high))
    assert rb["revenue_source"] == "offer value"
    assert rb["incremental_revenue"] == pytest.approx(10.0 * 0.1 * 100)
    assert rb["contact_costs"] == pytest.approx(50.0)
    assert rb["roi"] == pytest.approx((100.0 - 50.0) / 50.0)
    # actual vs expected over the scored treated contacts A-0 .. A-3: 3 responses, 1.5 expected
    assert (ra["scored_contacts"], ra["expected_responses"]) == (4, pytest.approx(1.5))
    assert ra["actual_vs_expected"] == pytest.approx(2.0)
    assert np.isnan(rb["expected_responses"])
    # negative responses: 5 treated non-responders, reasons normalised, blanks are no reason
    assert (ra["declined"], ra["declined_price"], ra["declined_no_need"]) == (5, 2, 1)
    assert ra["declined_no_reason"] == 2 and rb["declined_no_reason"] == 70


def test_revenue_from_transactions_in_the_window() -> None:
    history = contacts("A", "RET_01", "2024-03-01 08:00", [1, 0], [0, 0])
    tx = pd.DataFrame(
        {
            "customer_id": ["A-0", "A-0", "A-0", "A-1", "A-2", "A-3"],
            "ts": pd.to_datetime(
                [
                    "2024-03-01 07:00",
                    "2024-03-05 12:00",
                    "2024-03-31 00:00",
                    "2024-02-28 12:00",
                    "2024-03-30 23:59",
                    "2024-03-10 12:00",
                ]
            ),
            "amount": [100.0, -20.0, 999.0, 50.0, 30.0, 10.0],
        }
    )
    from experiments.campaigns import prepare_contacts

    ch = prepare_contacts(history)
    spent = window_revenue(ch, tx, 30)  # days 2024-03-01 .. 2024-03-30 (from the send date)
    assert spent.tolist() == [80.0, 0.0, 30.0, 10.0]
    report = evaluate_campaigns(history, tx, contact_cost=1.0).iloc[0]
    assert report["revenue_source"] == "transactions"
    assert report["incremental_revenue"] == pytest.approx((40.0 - 20.0) * 2)
    assert report["roi"] == pytest.approx((40.0 - 2.0) / 2.0)
    assert report["incremental_revenue_ci_low"] < 40 < report["incremental_revenue_ci_high"]


def test_groups_are_validated() -> None:
    bad = contacts("A", "X", "2024-01-01", [1], [0]).assign(group=["treatment", "holdout"])
    with pytest.raises(ValueError, match="holdout"):
        evaluate_campaigns(bad)


# --------------------------------------------------------------------------- coverage

SENDS = [date(2023, 3, 6), date(2023, 9, 4), date(2024, 3, 4), date(2024, 9, 2)]


def small_campaigns(seed: int, out: Path) -> pd.DataFrame:
    """Four small synthetic campaigns (~190 contacts per group); evaluation with the truth."""
    campaigns = [
        {"campaign_id": f"C{i}", "send_date": d, "audience_share": 1.0} for i, d in enumerate(SENDS)
    ]
    generate(SyntheticConfig(seed=seed, n_customers=800, dirty_share=0.0, campaigns=campaigns), out)
    report = evaluate_campaigns(pd.read_csv(out / "campaign_history.csv"))
    truth = pd.read_parquet(out / "truth_uplift.parquet")
    # the estimand: the average treatment effect over the campaign's audience (both groups)
    report["true_ate"] = report["campaign_id"].map(
        truth.groupby("campaign_id")["true_uplift"].mean()
    )
    return report


def covers(report: pd.DataFrame) -> pd.Series:
    return (report["uplift_ci_low"] <= report["true_ate"]) & (
        report["true_ate"] <= report["uplift_ci_high"]
    )


def test_interval_covers_the_true_average_uplift_of_a_campaign(tmp_path) -> None:
    dataset = load_dataset("synthetic")
    generate(SyntheticConfig.model_validate(dataset.synthetic), tmp_path)
    report = evaluate_campaigns(pd.read_csv(tmp_path / "campaign_history.csv"))
    truth = pd.read_parquet(tmp_path / "truth_uplift.parquet")
    report["true_ate"] = report["campaign_id"].map(
        truth.groupby("campaign_id")["true_uplift"].mean()
    )
    assert covers(report).all()  # the demo's four campaigns
    assert (report["p_value"] < 0.05).all() and (report["uplift"] > 0).all()


def test_coverage_over_seeds_is_about_95_percent(tmp_path) -> None:
    """100 seeds x 4 campaigns = 400 intervals. With exact 95 % intervals the number covering is
    Binomial(400, 0.95): outside its central 99.9 % range [364, 393] the interval is wrong. On
    these seeds Newcombe covers 386; a Wald interval without the control group's variance
    (83 % nominal) covers 346 and one twice too wide 398: both fail."""
    reports = [small_campaigns(seed, tmp_path / str(seed)) for seed in range(100)]
    hits = pd.concat([covers(r) for r in reports])
    lo, hi = stats.binom.ppf([0.0005, 0.9995], len(hits), 0.95)
    assert len(hits) == 400
    assert lo <= hits.sum() <= hi, (hits.sum(), lo, hi)


def test_run_campaign_evaluate_on_an_ingested_dataset(tmp_path, monkeypatch) -> None:
    state = StateDirs.resolve(tmp_path / "home")
    monkeypatch.setenv("PATRON_HOME", str(state.home))
    dataset = load_dataset("synthetic")
    params = {**dataset.synthetic, "n_customers": 3000}
    generate(SyntheticConfig.model_validate(params), state.synthetic(dataset.name))
    ingest(dataset, state)
    html = tmp_path / "report" / "campaigns.html"
    report = run_campaign_evaluate(
        state, "synthetic", ["CMP_2024_04_XS", "CMP_2024_06_RET"], out_html=html
    )
    assert report["campaign_id"].tolist() == ["CMP_2024_04_XS", "CMP_2024_06_RET"]
    assert (report["revenue_source"] == "transactions").all()
    assert report["contact_costs"].tolist() == pytest.approx(
        [0.1 * report["contacts"].iloc[0], 2.0 * report["contacts"].iloc[1]]
    )
    # the cross-sell offer is declined as "not relevant" more often than the retention offer
    share = report["declined_not_relevant"] / report["declined"]
    assert share.iloc[0] > share.iloc[1]
    page = html.read_text()
    assert 'id="chart-uplift"' in page and "CMP_2024_06_RET" in page and "Newcombe" in page
    assert sorted(p.name for p in html.parent.iterdir()) == ["campaigns.html"]
    with pytest.raises(ValueError, match="NOPE"):
        run_campaign_evaluate(state, "synthetic", ["NOPE"])


def test_two_campaigns_on_one_send_date_are_read_apart() -> None:
    """Two campaigns sent the same day, one file: each is read against its own control group."""
    a = contacts("ARM_A", "RET_01", "2024-03-01", [1] * 6 + [0] * 4, [1] * 2 + [0] * 8)
    b = contacts("ARM_B", "RET_02", "2024-03-01", [1] * 3 + [0] * 7, [1] * 3 + [0] * 7)
    report = evaluate_campaigns(pd.concat([a, b], ignore_index=True)).set_index("campaign_id")
    assert list(report.index) == ["ARM_A", "ARM_B"]
    assert report.loc["ARM_A", "uplift"] == pytest.approx(0.6 - 0.2)
    assert report.loc["ARM_B", "uplift"] == pytest.approx(0.0)
    assert report["contacts"].tolist() == [10, 10] and report["control"].tolist() == [10, 10]
