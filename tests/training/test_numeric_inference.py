"""Undeclared numeric-looking columns of a labelled table are read as numbers, and said so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features.sources import infer_numeric_types, ingest, load_dataset, many_level_columns
from features.store import StateDirs
from tests.conftest import require_dataset
from training.config import load_experiment
from training.families.labelled import column_types
from training.run import build_frame

TELCO = ("telco_churn", "WA_Fn-UseC_-Telco-Customer-Churn.csv.gz")


def test_numbers_as_text_become_doubles_with_blanks_missing():
    frame = pd.DataFrame(
        {
            "balance": [" 12 ", "1,234.5", "", None, "-3e2", "0.5"],
            "zip": ["02134", "10001", "94105", "", "60601", "30301"],
            "plan": ["a", "b", "1", "2", "3", "4"],
            "declared": ["1", "2", "3", "4", "5", "6"],
            "flag": ["Yes", "No", "Yes", "No", "No", "Yes"],
        }
    )
    out, decided = infer_numeric_types(frame, {"declared": "string"}, list(frame.columns))
    assert out["balance"].dtype == np.float64
    assert out["balance"].tolist()[:2] == [12.0, 1234.5]
    assert out["balance"].isna().tolist() == [False, False, True, True, False, False]
    assert out["balance"].tolist()[4:] == [-300.0, 0.5]
    by_col = {d.column: d for d in decided}
    assert by_col["balance"].dtype == "double"
    assert "2 empty -> missing" in by_col["balance"].note()
    # leading zeros: a code, not a number; a declared type always wins; words stay text
    assert by_col["zip"].dtype == "string" and out["zip"].iloc[0] == "02134"
    assert "declared" not in by_col and out["declared"].iloc[0] == "1"
    assert "plan" not in by_col and "flag" not in by_col


def test_a_column_mostly_but_not_nearly_all_numbers_stays_text():
    frame = pd.DataFrame({"x": [str(i) for i in range(95)] + ["n/a"] * 5})
    out, decided = infer_numeric_types(frame, {}, ["x"])
    assert decided == [] and out["x"].iloc[0] == "0"
    out, decided = infer_numeric_types(frame, {}, ["x"], min_share=0.9)
    assert decided[0].unparsed == 5 and out["x"].isna().sum() == 5


def test_many_levels_are_named():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "id_like": [f"c{i}" for i in range(300)],
            "plan": rng.choice(["basic", "plus", "pro"], 300),
        }
    )
    found = many_level_columns(frame, ["id_like", "plan"])
    assert [m.column for m in found] == ["id_like"]
    assert "id_like has 300 levels" in found[0].note()
    _, categorical, facts, notes = column_types(frame, {}, ["id_like", "plan"], infer=True)
    assert categorical == ["id_like", "plan"]
    assert list(facts["many_levels"]) == ["id_like"] and len(notes) == 1


def _telco_without_types(tmp_path: Path) -> Path:
    """The Telco dataset config with no declared types (every column arrives as text)."""
    src = require_dataset(*TELCO)
    (tmp_path / "telco.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "telco_untyped",
                "tables": {
                    "labelled": {
                        "sources": [
                            {
                                "path": str(src),
                                "columns": {
                                    "customer_id": "customerID",
                                    "label": {"from": "Churn", "values": {"Yes": 1, "No": 0}},
                                },
                            }
                        ]
                    }
                },
            }
        )
    )
    root = Path(__file__).resolve().parents[2]
    exp = yaml.safe_load((root / "experiments" / "labelled" / "telco_churn.yaml").read_text())
    exp["dataset"] = "telco.yaml"
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    return tmp_path / "exp.yaml"


@pytest.fixture
def telco_untyped(tmp_path: Path) -> tuple[Path, StateDirs]:
    exp = _telco_without_types(tmp_path)
    state = StateDirs(tmp_path / "state")
    ingest(load_dataset(tmp_path / "telco.yaml"), state)
    return exp, state


def test_telco_total_charges_text_with_blanks_is_inferred_numeric(telco_untyped):
    exp, state = telco_untyped
    frame = build_frame(load_experiment(exp), state)
    inferred = frame.manifest["inferred_types"]
    assert set(inferred) == {"SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges"}
    assert inferred["TotalCharges"]["dtype"] == "double"
    assert "11 empty -> missing" in inferred["TotalCharges"]["reason"]
    assert frame.frame["TotalCharges"].isna().sum() == 11
    assert frame.frame.loc[frame.frame["tenure"] == 0, "TotalCharges"].isna().all()
    assert "TotalCharges" not in frame.categorical and "Contract" in frame.categorical
    assert frame.manifest["many_levels"] == {}


def test_telco_without_inference_warns_of_the_many_levels(telco_untyped):
    exp, state = telco_untyped
    cfg = load_experiment(exp, {"infer_types": False})
    frame = build_frame(cfg, state)
    assert "TotalCharges" in frame.categorical
    assert frame.manifest["inferred_types"] == {}
    levels = frame.manifest["many_levels"]
    assert set(levels) >= {"TotalCharges"} and levels["TotalCharges"]["levels"] > 6000
