"""The KPI report: monthly figures of a hand-built table computed by hand, the churn of a month
equal to the churn models' label, targets met / not met / not known yet, the config's errors,
months outside the data refused, the page (offline, atomic) and ``patron report kpis``."""

from __future__ import annotations

import json
import os
import re
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.kpis import (
    NO_HISTORY,
    KpiJob,
    KpiTargets,
    compute_kpis,
    evaluate_targets,
    load_kpi_job,
    resolve_months,
    write_kpis,
)
from features.labels import churn_label_sql
from tests.experiments.page_browser import browser_fixture

FIRST, LAST = date(2024, 1, 1), date(2024, 6, 15)

#: (customer, day, amount, category); a negative amount is a return.
LINES = [
    ("a", "2024-01-01", 100.0, "x"),
    ("a", "2024-02-20", 50.0, "x"),
    ("a", "2024-03-10", 80.0, "y"),
    ("a", "2024-05-20", 40.0, "x"),
    ("b", "2024-01-15", 200.0, "y"),
    ("b", "2024-04-10", 60.0, "y"),
    ("b", "2024-04-12", -20.0, "y"),
    ("c", "2024-03-05", 30.0, "x"),
    ("c", "2024-03-20", 30.0, "x"),
    ("d", "2024-02-10", 70.0, "x"),
    ("e", "2024-06-15", 10.0, "y"),
    ("f", "2024-01-05", 20.0, "x"),
]
# active = an order in the 60 days up to the day; churned = no order in the 30 days after the
# cutoff (the day before the month); margin 30 %, category y 50 %.
JOB = {
    "name": "kpis_toy",
    "dataset": "toy",
    "active_days": 60,
    "churn_horizon_days": 30,
    "segment": "abc_class",
    "margin": {"default": 0.3, "by_category": {"y": 0.5}},
    # churn 3 / 4 in March against (3 + 2) / (3 + 3) in April-May: higher, not met; profit 58
    # against (20 + 12) / 2 a month: not met; payback: May's profit is below March's and June is
    # partial: one complete month of six, not known yet
    "targets": {
        "baseline": {"start": "2024-03", "end": "2024-03"},
        "evaluation": {"start": "2024-04", "end": "2024-05"},
        "churn_reduction": 0.1,
        "profit_growth": 0.2,
        "payback_months": 6,
        "programme_cost": 10.0,
    },
}


def _transactions() -> pd.DataFrame:
    frame = pd.DataFrame(LINES, columns=["customer_id", "day", "amount", "category"])
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "ts": (pd.to_datetime(frame["day"]) + pd.Timedelta(hours=12)).astype("datetime64[us]"),
            "order_id": [f"o{i}" for i in range(len(frame))],
            "product_id": "p1",
            "category": frame["category"],
            "quantity": np.sign(frame["amount"]),
            "amount": frame["amount"],
            "is_return": frame["amount"] < 0,
        }
    )


@pytest.fixture(scope="module")
def toy():
    con = duckdb.connect()
    con.register("tx", _transactions())
    job = KpiJob.model_validate(JOB)
    months = resolve_months(job, (FIRST, LAST))
    try:
        yield con, compute_kpis(con, "tx", None, "toy", job, months, (FIRST, LAST))
    finally:
        con.close()


def test_monthly_kpis_of_a_hand_built_table(toy) -> None:
    _, result = toy
    m = result.monthly.set_index("month")
    # default first month: the first whose 60-day window lies in the data (2024-01-01 + 60 days
    # = 2024-03-01); the last: June, partial (data to 2024-06-15)
    assert list(m.index) == ["2024-03", "2024-04", "2024-05", "2024-06"]
    assert list(m["partial_month"]) == [False, False, False, True]
    # March, cutoff 02-29 (window 01-01..02-29): active a (02-20), b (01-15), d (02-10),
    # f (01-05) = 4. No order in (02-29, 03-30]: b (next 04-10), d, f churned; a bought 03-10.
    # Bought: a, c; new: c (first order 03-05); won back: none (a's gap 19 days).
    # Revenue 80 (a, y) + 60 (c, x) = 140; profit 80 x 0.5 + 60 x 0.3 = 58.
    # Active at 03-31 (window 02-01..03-31): a, c, d = 3.
    # April, cutoff 03-31: active a, c, d = 3; none orders in (03-31, 04-30]: all churned.
    # Bought: b (04-10), won back (86 days after 01-15 > 30); revenue 60 - 20 (return) = 40,
    # profit 40 x 0.5 = 20. Active at 04-30 (window 03-02..04-30): a, b, c = 3.
    # May, cutoff 04-30: active a (03-10), b, c = 3; a orders 05-20, b and c churn: 2 / 3.
    # Bought: a, won back (71 days after 03-10); revenue 40 x, profit 12. Active at 05-31: a, b.
    # June, cutoff 05-31: active a, b = 2; horizon ends 06-30, after the data: not known.
    # Bought: e (new, 06-15): revenue 10 y, profit 5. Active at 06-15 (window 04-17..): a, e.
    expected = {
        "active_start": [4, 3, 3, 2],
        "active_end": [3, 3, 2, 2],
        "buyers": [2, 1, 1, 1],
        "new": [1, 0, 0, 1],
        "won_back": [0, 1, 1, 0],
        "revenue": [140.0, 40.0, 40.0, 10.0],
        "gross_profit": [58.0, 20.0, 12.0, 5.0],
    }
    for column, values in expected.items():
        assert list(m[column]) == pytest.approx(values), column
    assert list(m["churned"].iloc[:3]) == [3, 3, 2]
    assert list(m["churn_rate"].iloc[:3]) == pytest.approx([0.75, 1.0, 2 / 3])
    assert list(m["retention_rate"].iloc[:3]) == pytest.approx([0.25, 0.0, 1 / 3])
    # the unfinished month is marked, its churn never reported
    assert list(m["churn_final"]) == [True, True, True, False]
    assert pd.isna(m.at["2024-06", "churned"]) and np.isnan(m.at["2024-06", "churn_rate"])
    assert m.at["2024-06", "churn_known_on"] == date(2024, 6, 30)


def test_churn_of_a_month_is_the_churn_label_at_the_day_before(toy) -> None:
    con, result = toy
    for row in result.monthly[result.monthly["churn_final"]].to_dict("records"):
        cutoff = row["month_start"] - timedelta(days=1)
        labels = con.execute(churn_label_sql("tx", cutoff, 30, 60)).df()
        assert len(labels) == row["active_start"]
        assert labels["label"].sum() == row["churned"]


def test_segments_are_taken_at_the_months_start(toy) -> None:
    _, result = toy
    march = result.by_segment[result.by_segment["month"] == "2024-03"].set_index("segment")
    # net revenue before March: b 200, a 150, d 70, f 20 (total 440); b starts at 0 %, a at
    # 45.5 %, d at 79.5 % of it (< 80 %: A), f at 95.5 % (C); c has no order before March
    assert set(march.index) == {"A", "C", NO_HISTORY}
    assert march.at["A", "active_start"] == 3 and march.at["A", "churned"] == 2  # b, d
    assert march.at["C", "active_start"] == 1 and march.at["C", "churn_rate"] == 1.0  # f
    assert march.at["A", "revenue"] == 80.0 and march.at["A", "gross_profit"] == 40.0  # a
    assert march.at[NO_HISTORY, "new"] == 1 and march.at[NO_HISTORY, "gross_profit"] == 18.0
    june = result.by_segment[result.by_segment["month"] == "2024-06"]
    assert june["churn_rate"].isna().all() and not june["churn_final"].any()
    sums = result.by_segment.groupby("month")[["revenue", "gross_profit", "active_start"]].sum()
    monthly = result.monthly.set_index("month")
    for col in sums.columns:
        assert list(sums[col]) == pytest.approx(list(monthly[col]))


def _monthly(profit: list[float], churned: list[int | None], partial_last: bool = False):
    """A month table for the targets: 100 active at each start, the churned and profit given."""
    n = len(profit)
    months = [date(2024, k + 1, 1) for k in range(n)]
    return pd.DataFrame(
        {
            "month": [f"2024-{k + 1:02d}" for k in range(n)],
            "month_start": months,
            "active_start": [100] * n,
            "churned": pd.array(churned, dtype="Int64"),
            "churn_final": [c is not None for c in churned],
            "churn_known_on": [date(2024, k + 4, 1) for k in range(n)],
            "partial_month": [False] * (n - 1) + [partial_last],
            "gross_profit": profit,
        }
    )


def _targets(**kw) -> KpiTargets:
    periods = {"baseline": {"start": "2024-01", "end": "2024-02"}}
    return KpiTargets.model_validate({**periods, **kw})


def test_targets_met_not_met_and_not_known_yet() -> None:
    monthly = _monthly([100, 100, 120, 130, 125, 140], [40, 40, 36, 35, 30, None])
    first_half = {"evaluation": {"start": "2024-03", "end": "2024-05"}}
    got = evaluate_targets(
        monthly,
        _targets(
            **first_half,
            churn_reduction=0.10,
            profit_growth=0.20,
            payback_months=3,
            programme_cost=60,
        ),
    )
    by = {t["target"]: t for t in got}
    # churn: baseline 80 / 200 = 40 %, programme (36 + 35 + 30) / 300 = 33.7 %: 15.8 % lower
    assert by["churn_reduction"]["achieved"] == pytest.approx(1 - (101 / 300) / 0.4)
    assert by["churn_reduction"]["verdict"] == "met"
    # profit: baseline 100 a month, programme 125: 25 % more
    assert by["profit_growth"]["achieved"] == pytest.approx(0.25)
    assert by["profit_growth"]["verdict"] == "met"
    # payback: extra 20, 30, 25, 40 from March on: 60 reached in May, the 3rd month
    assert by["payback_months"]["achieved"] == 3 and by["payback_months"]["verdict"] == "met"
    strict = evaluate_targets(
        monthly,
        _targets(
            **first_half,
            churn_reduction=0.20,
            profit_growth=0.30,
            payback_months=2,
            programme_cost=60,
        ),
    )
    assert [t["verdict"] for t in strict] == ["not met"] * 3
    # June's churn is not final: a period holding it is not known yet, never guessed
    late = evaluate_targets(
        monthly,
        _targets(evaluation={"start": "2024-04", "end": "2024-06"}, churn_reduction=0.1),
    )
    assert late[0]["verdict"] == "not known yet" and np.isnan(late[0]["achieved"])
    assert "2024-06" in late[0]["note"]
    # a partial month in the period: profit not known yet; payback waits for enough months
    partial = _monthly([100, 100, 120, 130], [40, 40, 36, 35], partial_last=True)
    out = evaluate_targets(
        partial,
        _targets(
            evaluation={"start": "2024-03", "end": "2024-04"},
            profit_growth=0.1,
            payback_months=6,
            programme_cost=1000,
        ),
    )
    assert [t["verdict"] for t in out] == ["not known yet", "not known yet"]


def test_bad_config_is_one_line_per_value_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    bad = {
        **JOB,
        "active_days": 0,
        "margin": 1.5,
        "targets": {
            "baseline": {"start": "2024-13", "end": "2024-03"},
            "evaluation": {"start": "2024-04", "end": "2024-05"},
            "churn_reduction": 10,
        },
    }
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError) as info:
        load_kpi_job(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 4, lines
    for key in ("active_days", "margin.default", "targets.baseline.start", "churn_reduction"):
        assert any(f": {key}: " in line or f".{key}: " in line for line in lines), key
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("not a month YYYY-MM (got '2024-13')" in line for line in lines)
    # periods in the wrong order, a payback without its cost: one line each
    path.write_text(
        yaml.safe_dump(
            {
                **JOB,
                "targets": {
                    "baseline": {"start": "2024-04", "end": "2024-05"},
                    "evaluation": {"start": "2024-03", "end": "2024-05"},
                    "payback_months": 6,
                },
            }
        )
    )
    with pytest.raises(ValueError, match="targets: the evaluation period must start after"):
        load_kpi_job(path)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"start": "2023-12"}, "start 2023-12 begins before the first data date"),
        ({"end": "2024-07"}, "end 2024-07 is after the last data date"),
        (
            {
                "targets": {
                    "baseline": {"start": "2024-03", "end": "2024-03"},
                    "evaluation": {"start": "2024-05", "end": "2024-07"},
                    "churn_reduction": 0.1,
                }
            },
            "targets.evaluation.end 2024-07 is outside the report's months 2024-03 to 2024-06",
        ),
    ],
)
def test_months_outside_the_data_are_refused(update, message) -> None:
    job = KpiJob.model_validate({**JOB, **update})
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_months(job, (FIRST, LAST))


@pytest.fixture(scope="module")
def written(toy, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The toy report's files (the page holds plotly.js: written once for both page tests)."""
    return write_kpis(toy[1], tmp_path_factory.mktemp("kpis") / "report")


def test_page_is_written_atomically_and_works_offline(written) -> None:
    from plotly.offline import get_plotlyjs

    paths = written
    assert not list(paths["page"].parent.glob(".*.tmp"))
    page = paths["page"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing fetched: no script / link / img with a source (the bundle's own strings hold links)
    assert not re.search(r"<(script|img|link|iframe)\b[^>]*\b(src|href)=", page)
    assert not re.search(r"src=[\"']https?://", page)
    assert page.count(get_plotlyjs()[:2000]) == 1  # plotly.js embedded once
    for div in ("chart-customers", "chart-churn", "chart-profit"):
        assert f'id="{div}"' in page
    assert "not known yet: known on 2024-06-30" in page  # June's churn, marked
    assert "to 2024-06-15 only" in page  # the partial month
    meta = json.loads(paths["meta"].read_text())  # strict JSON: a figure not known is null
    assert meta["months"] == ["2024-03", "2024-06"]
    verdicts = [t["verdict"] for t in meta["targets"]]
    assert verdicts == ["not met", "not met", "not known yet"]
    assert meta["targets"][0]["achieved"] == pytest.approx(1 - (5 / 6) / 0.75)
    assert meta["targets"][2]["achieved"] is None
    assert page.count('class="badge not-met"') == 2
    assert page.count('class="badge not-known-yet"') == 1
    monthly = pd.read_csv(paths["monthly"])
    assert monthly["churn_rate"].isna().tolist() == [False, False, False, True]


def test_patron_report_kpis_logs_a_run_and_refuses_months_outside_the_data(
    synthetic_pipeline, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from patron.cli import mount

    state = synthetic_pipeline["state"]
    config = tmp_path / "kpis.yaml"
    config.write_text(
        yaml.safe_dump(
            {"name": "kpis_cli", "dataset": "synthetic", "start": "2024-10", "end": "2024-11"}
        )
    )
    runner, app = CliRunner(), mount()
    home = ["--home", str(state.home)]
    out = runner.invoke(app, ["report", "kpis", "-c", str(config), *home])
    assert out.exit_code == 0, out.output
    folder = state.home / "kpis" / "synthetic" / "2024-10_2024-11"
    assert (folder / "kpis_report.html").is_file()
    monthly = pd.read_csv(folder / "kpis_monthly.csv")
    assert list(monthly["month"]) == ["2024-10", "2024-11"]
    client = MlflowClient(state.tracking_uri)
    exp = client.get_experiment_by_name("kpis")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["churn_horizon_days"] == "90"
    steps = client.get_metric_history(run.info.run_id, "gross_profit")
    assert [round(s.value, 6) for s in steps] == [round(v, 6) for v in monthly["gross_profit"]]
    # only October's churn is known (its horizon ends 2024-12-29): one step, not two
    assert len(client.get_metric_history(run.info.run_id, "churn_rate")) == 1
    late = runner.invoke(app, ["report", "kpis", "-c", str(config), "--end", "2025-01", *home])
    assert late.exit_code != 0 and str(late.exception).startswith("--end 2025-01 is after")
    assert len(client.search_runs([exp.experiment_id])) == 1


browser = browser_fixture()


def test_page_renders_in_headless_chromium(written, browser, tmp_path: Path) -> None:
    """The toy page at 1,400 px: its three charts drawn, nothing wider than the page, no console
    error, nothing fetched (the shared check of every page)."""
    import shutil

    shot = tmp_path / "kpis.png"
    check = browser.check(written["page"], shot)
    if os.environ.get("PATRON_TEST_ARTIFACTS"):
        out = Path(os.environ["PATRON_TEST_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "kpis_report.png")
    check.assert_readable(min_charts=3)
    assert {c["id"] for c in check.charts} == {"chart-customers", "chart-churn", "chart-profit"}
