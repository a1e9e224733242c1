"""The analyst's campaign page: a plan record (and its read-out) as one self-contained page."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from experiments.campaign_page import (
    fmt_money,
    fmt_pct,
    render_campaign_page,
    write_campaign_page,
)
from experiments.plans import READOUT_FILE, RECORD_FILE, plans_dir
from features.store import StateDirs

PLAN_ID = "spring-2024-12-31-0123abcd"
ARMS = ("RET_01/email", "RET_01/sms", "UP_T3/phone")
PLOTLY_HEADER = re.compile(r"\* plotly\.js v\d")


def _record() -> dict[str, Any]:
    """A plan record in the layout ``save_plan`` writes (the fields the page reads)."""
    return {
        "plan_id": PLAN_ID,
        "as_of": "2024-12-31",
        "created_at": "2026-12-01T21:59:05+00:00",
        "campaign": {"campaign_id": "spring"},
        "inputs": {"dataset": "synthetic_arms", "learned_from": "ARMS_2023_09"},
        "summary": {
            "campaign_id": "spring",
            "basis": "incremental (uplift)",
            "base": 20_000,
            "selected": 6_494,
            "contacted": 5_794,
            "control": 700,
            "test_cell": 333,
            "rollout": 5_461,
            "excluded": {
                "budget_or_capacity": 82,
                "contact_policy": 0,
                "duplicate_record": 0,
                "household": 0,
                "no_consent": 3_112,
                "not_eligible": 3_773,
                "not_profitable": 6_539,
            },
            "expected_incremental_profit_selected": 39_292.358968557135,
            "expected_incremental_profit_contacted": 35_307.849406760644,
            "expected_spend_selected": 5_999.888086348772,
            "expected_spend_contacted": 5_361.809850057959,
            "solver": {"method": "lagrangian", "seconds": 0.078, "status": "converged"},
            "constraints": {
                "budget.money": {"limit": 6000.0, "used_by_selected": 5999.888},
                "channels.phone.capacity": {"limit": 400.0, "used_by_selected": 356.0},
            },
        },
        "by_arm": [
            {
                "arm": "RET_01/email",
                "offer": "retention_voucher",
                "channel": "email",
                "contacts": 3_470,
                "test_cell": 206,
                "expected_incremental_responses": 595.5250657543321,
                "expected_incremental_responses_sd": 21.225114444932654,
                "expected_incremental_profit": 23_127.002630173283,
            },
            {
                "arm": "RET_01/sms",
                "offer": "retention_voucher",
                "channel": "sms",
                "contacts": 2_184,
                "test_cell": 114,
                "expected_incremental_responses": 108.43861885718874,
                "expected_incremental_responses_sd": 8.886015850141819,
                "expected_incremental_profit": 11_673.19,
            },
            {
                "arm": "UP_T3/phone",
                "offer": "premium_upgrade",
                "channel": "phone",
                "contacts": 140,
                "test_cell": 13,
                "expected_incremental_responses": 19.74994779237965,
                "expected_incremental_responses_sd": 4.105271686445309,
                "expected_incremental_profit": 507.6524817221559,
            },
        ],
    }


def _arm_read(arm: str, rate: float, uplift: float, ci: list[float], **kw: Any) -> dict[str, Any]:
    return {
        "arm": arm,
        "contacts": kw.get("contacts", 206),
        "responders": 0,
        "control": 700,
        "control_responders": 120,
        "response_rate": rate,
        "control_rate": 0.17142857142857143,
        "incremental_response": uplift,
        "incremental_response_ci": ci,
        "profit_per_contact": kw.get("profit", 13.719556171983356),
        "profit_per_contact_ci": kw.get("profit_ci", [11.244893792257884, 16.19421855170883]),
        "profit_lower_one_sided": 11.79,
        "profit_se": 1.5,
        "incremental_profit": kw.get("profit", 13.72) * kw.get("contacts", 206),
        "expected_incremental_response": kw.get("expected", 0.17231195753644646),
        "contradicts_model": kw.get("contradicts", False),
        "declined": kw.get("declined", {}),
        "level": 0.9,
    }


def _readout() -> dict[str, Any]:
    """A read-out in the layout ``read_plan`` writes: one arm per gate decision."""
    return {
        "plan_id": PLAN_ID,
        "read_at": "2026-12-01T22:10:00+00:00",
        "confidence": 0.9,
        "responses": 1_035,
        "read": 1_033,
        "rejected": 2,
        "wave_without_response": 0,
        "arms": [
            _arm_read(
                "RET_01/email",
                0.3574,
                0.1859714,
                [0.1237, 0.2468],
                expected=0.30,  # outside the measured interval: what "contradicts" means
                contradicts=True,
                declined={"price": [0.21, 0.02], "did not fit": [0.05, 0.01]},
            ),
            _arm_read(
                "RET_01/sms",
                0.19,
                0.0186,
                [-0.05, 0.09],
                contacts=114,
                profit=-0.42,
                profit_ci=[-3.1, 2.26],
                expected=0.05,
            ),
            _arm_read("UP_T3/phone", 0.5, 0.3286, [0.0487, 0.6082], contacts=13, expected=0.16),
        ],
        "gate": [
            {
                "arm": "RET_01/email",
                "roll_out": True,
                "reason": "rolled out: incremental profit per contact +13.720 (206 contacts, "
                "700 controls), positive with 90% confidence (lower bound +11.791)",
                "confidence": 0.9,
            },
            {
                "arm": "RET_01/sms",
                "roll_out": False,
                "reason": "dropped: incremental profit per contact -0.420 (114 contacts, 700 "
                "controls) is not positive with 90% confidence (lower bound -2.650)",
                "confidence": 0.9,
            },
            {
                "arm": "UP_T3/phone",
                "roll_out": False,
                "reason": "held: 13 contacts and 700 controls (fewer than 30) cannot show a profit",
                "confidence": 0.9,
            },
        ],
        "contradicting_arms": ["RET_01/email"],
    }


class _Visible(HTMLParser):
    """The text a reader sees (no scripts or styles), and that text outside ``<code>`` ids."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = 0
        self.code = 0
        self.text: list[str] = []
        self.prose: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.hidden += tag in ("script", "style")
        self.code += tag == "code"

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in ("script", "style")
        self.code -= tag == "code"

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.text.append(data)
            if not self.code:
                self.prose.append(data)


def _visible(page: str) -> tuple[str, str]:
    parser = _Visible()
    parser.feed(page)
    return " ".join(parser.text), " ".join(parser.prose)


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return {
        "plan": render_campaign_page(_record(), None),
        "read": render_campaign_page(_record(), _readout()),
    }


def test_formatting_helpers() -> None:
    assert fmt_pct(0.3574) == "35.7 %"
    assert fmt_money(28255.1938) == "28,255" and fmt_money(507.6524) == "507.65"
    assert fmt_money(float("nan")) == fmt_pct(None) == "–"


def test_plan_page_before_the_read_out(pages) -> None:
    page = pages["plan"]
    text, _ = _visible(page)
    assert len(PLOTLY_HEADER.findall(page)) == 1
    for arm in ARMS:
        assert arm in text
    assert "spring" in text and PLAN_ID in text and "2024-12-31" in text
    assert "incremental (uplift)" in text and "not read yet" in text
    # totals in words and numbers with thousands separators; money with 0-2 decimals
    assert "20,000" in text and "5,794" in text and "35,308" in text and "23,127" in text
    assert "507.65" in text and "595.5 ± 21.2" in text and "response noise only" in text
    assert "chart-expected-profit" in page and "chart-actual-vs-expected" not in page
    assert "Measured vs expected response appears once" in text


def test_exclusions_add_up_to_the_base(pages) -> None:
    text, _ = _visible(pages["plan"])
    row = re.search(r"Base \(all records\)\s+([\d,]+)", text)
    assert row and row.group(1) == "20,000"
    assert "No consent for any channel" in text and "3,112" in text
    bad = _record()
    bad["summary"]["excluded"]["no_consent"] += 5
    assert "not the base of 20,000" in render_campaign_page(bad, None)


def test_page_with_the_read_out_and_the_gate(pages) -> None:
    page = pages["read"]
    text, _ = _visible(page)
    readout = _readout()
    assert len(PLOTLY_HEADER.findall(page)) == 1  # two charts, one copy of plotly.js
    assert "chart-actual-vs-expected" in page and "chart-expected-profit" in page
    for arm in ARMS:
        assert arm in text
    for decision in readout["gate"]:
        assert decision["reason"] in text
    for badge in ("rolled-out", "dropped", "held"):
        assert f'class="badge {badge}"' in page
    assert "contradicts the model" in text
    # a rate as a percentage, a difference in percentage points with its interval
    assert "35.7 %" in text and "0.3574" not in text
    assert "+18.6 pp" in text and "+12.4 to +24.7 pp" in text and "+30.0 pp" in text
    assert "+13.72" in text and "+11.24 to +16.19" in text
    # declines by reason against control
    assert "price" in text and "21.0 %" in text and "2.0 %" in text and "+19.0 pp" in text
    # hover text carries the exact figures
    assert "measured +18.60 pp" in page and "expected incremental profit 23,127" in page


def test_no_snake_case_in_the_visible_text(pages) -> None:
    keys = {k for k in _keys(_record()) | _keys(_readout()) if "_" in k}
    assert "expected_incremental_profit" in keys
    for page in pages.values():
        text, prose = _visible(page)
        assert not keys & set(re.findall(r"[a-z0-9_]+", text))
        # outside the ids (plan, offer, arm, dataset) shown as code, no snake_case at all
        assert not re.findall(r"\b[a-z]+_[a-z0-9_]+\b", prose)


def test_write_is_atomic_and_an_unknown_plan_names_the_flag(tmp_path: Path) -> None:
    state = StateDirs.resolve(tmp_path / "state")
    folder = plans_dir(state) / PLAN_ID
    folder.mkdir(parents=True)
    (folder / RECORD_FILE).write_text(json.dumps(_record()))
    out_dir = tmp_path / "out"
    path = write_campaign_page(state, PLAN_ID, out_dir / "campaign.html")
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert "not read yet" in path.read_text()
    (folder / READOUT_FILE).write_text(json.dumps(_readout()))
    write_campaign_page(state, PLAN_ID, path)  # replaces the page, now with the read-out
    assert "Roll-out gate" in path.read_text()
    assert [p.name for p in out_dir.iterdir()] == ["campaign.html"]  # no temporary file left
    with pytest.raises(ValueError, match=r"--plan 'nope'"):
        write_campaign_page(state, "nope", out_dir / "other.html")
    assert not (out_dir / "other.html").exists()
