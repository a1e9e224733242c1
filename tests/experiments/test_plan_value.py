"""A campaign whose offer is valued per customer, planned from a value file (`patron campaign
plan --customer-value`): the value reaches the allocation, the plan records the file, and every
file the option cannot use ends in one line naming it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from experiments.planning import (
    VALUE_COLUMN,
    ArmModel,
    CustomerValue,
    align_customer_value,
    check_value_options,
    plan_inputs,
    read_customer_value,
)
from models.decisions import load_campaign, parse_campaign
from models.decisions.plan_store import plan_id_of
from patron.cli import mount
from tests.conftest import cli_error_line

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "experiments" / "campaigns" / "arms_demo.yaml"
WAVES = ["ARMS_2023_09", "ARMS_2024_01", "ARMS_2024_05"]
VALUED = "retention_voucher"  # valued by customer_value below


def valued_campaign() -> dict[str, Any]:
    """arms_demo with the retention offer valued per customer."""
    data = load_campaign(CAMPAIGN).model_dump(mode="json", exclude_none=True)
    offer = next(o for o in data["offers"] if o["id"] == VALUED)
    offer.pop("value")
    offer["value_source"] = "customer_value"
    return data


def value_table(ids: list[str], seed: int = 0) -> pd.DataFrame:
    """``patron value``'s columns that matter here: every other customer worth nothing."""
    rng = np.random.default_rng(seed)
    npv = rng.lognormal(4.0, 0.8, len(ids))
    npv[::2] = 0.0
    return pd.DataFrame(
        {"customer_id": ids, "npv": npv, "npv_if_retained": npv * 1.5, "let_go": npv == 0}
    )


# ----------------------------------------------------------------------- the pure alignment


def test_the_value_is_aligned_to_the_base_by_customer_id() -> None:
    table = pd.DataFrame(
        {"customer_id": ["C3", "C9", "C1", "C2"], "npv": pd.array([3.0, 9.0, 1.0, None], "Float64")}
    )
    got = align_customer_value(table, pd.Series(["C1", "C3"]), "npv", "v.parquet")
    assert got.tolist() == [1.0, 3.0]  # the base's order; others in the file are not needed
    assert align_customer_value(table, pd.Series([], dtype=str), "npv", "v.parquet").size == 0


BASE = pd.Series(["C1", "C2", "C3"])


@pytest.mark.parametrize(
    ("table", "column", "message"),
    [
        (
            {"customer_id": ["C1", "C2"], "npv": [1.5, 2.5]},
            "npv",
            r"^--customer-value: 1 of 3 customers of the base have no value in v\.parquet "
            r"\(first: C3\)$",
        ),
        (
            {"customer_id": ["C1", "C2", "C3"], "npv": [1.5, np.nan, np.inf]},
            "npv",
            r"^--value-column npv: 2 of 3 customers of the base have NaN or an infinite value in "
            r"v\.parquet \(first: C2\)$",
        ),
        (
            {"customer_id": ["C1", "C2", "C3"], "npv": [1.5, 2.5, 3.5]},
            "clv",
            r"^--value-column clv: v\.parquet has no such column \(columns: npv\)$",
        ),
        (
            {"id": ["C1", "C2", "C3"], "npv": [1.5, 2.5, 3.5]},
            "npv",
            r"^--customer-value v\.parquet: no customer_id column",
        ),
        (
            {"customer_id": ["C1", "C2", "C3", "C2"], "npv": [1.5, 2.5, 3.5, 4.5]},
            "npv",
            r"^--customer-value v\.parquet: 1 customer ids appear more than once \(first: C2\)$",
        ),
        (
            {"customer_id": ["C1", "C2", "C3"], "npv": ["1.5", "2.5", "3.5"]},
            "npv",
            r"^--value-column npv: not numeric in v\.parquet",
        ),
    ],
    ids=["missing-customer", "nan-and-inf", "no-column", "no-id", "repeated-id", "text"],
)
def test_a_value_it_cannot_use_is_one_line_naming_the_option(
    table: dict[str, Any], column: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        align_customer_value(pd.DataFrame(table), BASE, column, "v.parquet")
    assert "\n" not in str(info.value)
    assert "1.5" not in str(info.value) and "2.5" not in str(info.value)  # no values


def test_the_options_and_the_campaign_must_agree() -> None:
    valued = parse_campaign(valued_campaign())
    plain = load_campaign(CAMPAIGN)
    with pytest.raises(
        ValueError, match=r"^offers\[0\] \('retention_voucher'\) .*--customer-value"
    ):
        check_value_options(valued, None, None)
    with pytest.raises(ValueError, match=r"^--customer-value v\.parquet: .* would not be used"):
        check_value_options(plain, Path("v.parquet"), None)
    with pytest.raises(ValueError, match=r"^--value-column npv: needs --customer-value"):
        check_value_options(valued, None, "npv")
    check_value_options(valued, Path("v.parquet"), None)
    check_value_options(plain, None, None)


def test_the_file_is_digested_as_read_and_a_file_it_cannot_read_names_the_option(
    tmp_path: Path,
) -> None:
    path = tmp_path / "customer_value.parquet"
    value_table(["C1", "C2", "C3"]).to_parquet(path, index=False)
    value = read_customer_value(path)
    assert value.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert value.column == VALUE_COLUMN == "npv"
    assert (
        value.values.to_dict()
        == value_table(["C1", "C2", "C3"]).set_index("customer_id")["npv"].to_dict()
    )
    assert value.inputs() == {
        "customer_value_file": str(path.resolve()),
        "customer_value_sha256": value.sha256,
        "customer_value_column": "npv",
    }
    assert read_customer_value(path, "npv_if_retained").column == "npv_if_retained"
    with pytest.raises(ValueError, match=r"^--customer-value .*absent\.parquet: no such file$"):
        read_customer_value(tmp_path / "absent.parquet")
    text = tmp_path / "values.csv"
    text.write_text("customer_id,npv\nC1,1.5\n")
    with pytest.raises(ValueError, match=r"^--customer-value .*values\.csv: not a Parquet file"):
        read_customer_value(text)
    with pytest.raises(ValueError, match=r"^--value-column clv: .* has no such column"):
        read_customer_value(path, "clv")
    with pytest.raises(ValueError, match=r"^--value-column let_go: not numeric in .* \(bool\)$"):
        read_customer_value(path, "let_go")


def test_another_value_file_or_column_is_another_plan() -> None:
    campaign = parse_campaign(valued_campaign())
    values = pd.Series([1.0], index=["C1"])

    def value(sha: str, column: str = "npv") -> CustomerValue:
        return CustomerValue(values, "v.parquet", "/data/v.parquet", sha, column)

    model = ArmModel(None, [("RET_01", "email")], [], "churn_v1", ["W1"], 10)  # type: ignore[arg-type]
    plain = plan_inputs(model, "d", "x", None)
    assert not any(k.startswith("customer_value") for k in plain)  # earlier plan ids unchanged
    day = pd.Timestamp("2024-12-31").date()
    ids = {
        plan_id_of(campaign, day, plan_inputs(model, "d", "x", None, v))
        for v in (value("a" * 64), value("b" * 64), value("a" * 64, "npv_if_retained"))
    }
    assert len(ids) == 3


# ----------------------------------------------------------------------- through the command


def plan_args(campaign: Path, home: Path, *extra: str) -> list[str]:
    args = ["campaign", "plan", "--campaign", str(campaign), "--dataset", "synthetic_arms"]
    for wave in WAVES:
        args += ["--learn-from", wave]
    return [*args, "--home", str(home), *extra]


def test_cli_refuses_a_value_file_it_cannot_use_before_fitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    valued = tmp_path / "valued.yaml"
    valued.write_text(yaml.safe_dump(valued_campaign()))
    path = tmp_path / "customer_value.parquet"
    value_table(["C1", "C2"]).to_parquet(path, index=False)
    home = tmp_path / "home"  # no data: each error comes before the model is fitted
    cases = [
        (plan_args(valued, home), "error: offers[0] ('retention_voucher') is valued by "),
        (plan_args(valued, home, "--customer-value", str(tmp_path / "x.parquet")), "no such"),
        (plan_args(valued, home, "--customer-value", str(path), "--value-column", "clv"), "clv"),
        (
            plan_args(valued, home, "--customer-value", str(path), "--value-column", "let_go"),
            "numeric",
        ),
        (plan_args(CAMPAIGN, home, "--customer-value", str(path)), "would not be used"),
    ]
    for args, expected in cases:
        line = cli_error_line(monkeypatch, capsys, *args)
        assert expected in line, line
        assert "--customer-value" in line or "--value-column" in line, line


def test_cli_plans_a_customer_valued_offer_from_the_value_file(arms_state, tmp_path) -> None:
    campaign = tmp_path / "valued.yaml"
    campaign.write_text(yaml.safe_dump(valued_campaign()))
    ids = pd.read_csv(arms_state.synthetic("synthetic_arms") / "customers.csv", dtype=str)
    values = value_table(sorted(set(ids["customer_id"])), seed=1)
    path = tmp_path / "customer_value.parquet"
    values.to_parquet(path, index=False)
    out = tmp_path / "plan.parquet"
    args = plan_args(campaign, arms_state.home, "--customer-value", str(path), "--out", str(out))
    result = CliRunner().invoke(mount(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "customer value: column npv of" in result.output

    # the per-customer value is what each contact of the valued offer is worth
    chosen = pd.read_parquet(out).query("selected")
    npv = values.set_index("customer_id")["npv"]
    value = np.where(chosen["offer"] == VALUED, chosen["customer_id"].map(npv), 60.0)
    expected = chosen["expected_incremental_responses"] * value - chosen["expected_spend"]
    np.testing.assert_allclose(chosen["expected_incremental_profit"], expected, atol=1e-9)
    kept = chosen[chosen["offer"] == VALUED]
    assert len(kept) > 50
    assert (kept["customer_id"].map(npv) > 0).all()  # nobody worth nothing is kept at a cost

    # the saved plan says where the value came from
    plan_id = re.search(r"plan (\S+) saved", result.output)
    assert plan_id is not None, result.output
    record = json.loads(
        (arms_state.home / "campaigns" / plan_id.group(1) / "plan.json").read_text()
    )
    assert (
        record["inputs"]["customer_value_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert record["inputs"]["customer_value_file"] == str(path.resolve())
    assert record["inputs"]["customer_value_column"] == "npv"
