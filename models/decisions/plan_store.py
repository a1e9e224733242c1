"""Saved campaign plans on disk: the immutable plan, the wave's responses, the read-out.

I/O over a folder the caller names (``<home>/campaigns``), shared by the CLI
(``experiments.plans``, which adds MLflow) and the service (``serving.decisions``, over HTTP).
One folder per plan id::

    <root>/<plan id>/plan.parquet            one row per customer record (group, offer, channel…)
                    plan.json               the record: campaign, inputs, totals, expected per arm
                    responses.parquet       the wave's accepted responses, one per contact id
                    rejected_responses.csv  responses not read, each with ``reason_rejected``
                    readout.json            the latest read-out and the gate's decision per arm
                    rollout.json            the roll-out recorded from a read-out: per arm, counts
                    rollout.parquet         its rows: each roll-out customer contacted or held

Every file is written atomically (a temporary file moved into place). ``plan.parquet`` and
``plan.json`` are written once: the same id with other contents is refused (``PlanConflict``).
Responses come in two ways: a whole wave's file (``screen_responses`` + ``write_wave``: the file is
the statement of the wave, its last row per contact wins, as ``patron campaign read`` always did)
or in batches (``add_responses``: idempotent by contact id — the same response again is a no-op, a
different one for a stored contact a ``ResponseConflict`` naming the field, and nothing of such a
batch is stored). A contact id is the plan's ``customer_id`` (one contact per customer record).
Responses of customers outside the test cell and control group are kept with the reason.
The roll-out of a plan on its recorded read-out (``record_rollout``: each customer of the plan's
roll-out group only the arm the plan gave them, when that arm passed —
``models.decisions.saved_rollout``) is recorded once: asking again on the same read-out answers
the recorded one, on another read-out is a ``RolloutConflict``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from features.store import atomic_path
from models.decisions.allocate import Plan
from models.decisions.campaign import Campaign
from models.decisions.readout import DEFAULT_GATE_CONFIDENCE, ArmTerms, gate, read_segments
from models.decisions.repricing import (
    REPRICE,
    budget_left,
    build_retest,
    decisions_from,
    repricing_of,
)
from models.decisions.saved_rollout import (
    CONSENT_NOT_FOUND,
    CONSENT_WITHDRAWN,
    CONTACT,
    HELD,
    SavedRollout,
    arm_label,
    rollout_of_saved,
)
from models.decisions.sizing import gate_power, read_variances

ID = "customer_id"
PLANS_FOLDER = "campaigns"
PLAN_FILE, RECORD_FILE, READOUT_FILE = "plan.parquet", "plan.json", "readout.json"
ROLLOUT_FILE, ROLLOUT_ROWS_FILE = "rollout.json", "rollout.parquet"
REJECTED_FILE = "rejected_responses.csv"
RESPONSES_FILE = "responses.parquet"  # the wave's responses the read-out uses
LOCK_FILE = ".responses.lock"
#: What a response says; two responses of one contact are the same when these are.
CONTENT = ("responded", "reason", "value")
NOT_IN_WAVE = "not in the plan's test cell or control group"
NOT_A_FLAG = "responded: not 0/1"
_PLAN_ID = re.compile(r"^[A-Za-z0-9._-]{1,160}-\d{4}-\d{2}-\d{2}-[0-9a-f]{8}$")


class PlanNotFound(ValueError):
    """No plan with that id under the folder."""

    def __init__(self, plan_id: str, known: list[str]) -> None:
        super().__init__(f"{plan_id!r}: no such plan (known: {known[-5:]})")
        self.plan_id = plan_id
        self.known = known


class PlanConflict(ValueError):
    """A plan id that exists with other contents: plans are immutable."""


class RolloutRefused(ValueError):
    """A roll-out that cannot be recorded now: ``field`` names what is at fault (``readout``:
    none recorded, or not the one the roll-out was recorded from; ``responses``: stored
    responses the recorded read-out did not read)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ResponseConflict(ValueError):
    """A response that differs from the one stored (or posted with it) for the same contact;
    the message names rows by position, never a customer id."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.field = field


@dataclass(frozen=True)
class SavedPlan:
    """Where a plan was written and its record."""

    plan_id: str
    folder: Path
    record: dict[str, Any]
    created: bool  # False when the identical plan already existed


@dataclass(frozen=True)
class Intake:
    """What a batch of responses did: rows new, unchanged (already stored), rejected."""

    received: int
    accepted: int
    unchanged: int
    rejected: list[dict[str, Any]] = field(default_factory=list)  # index, customer_id, reason
    stored: int = 0  # responses stored for the plan after the batch
    wave: int = 0  # test cell + control group


# --------------------------------------------------------------------------- ids and paths


def plans_root(home: Path | str) -> Path:
    """Where the plans live: ``<home>/campaigns``."""
    return Path(home) / PLANS_FOLDER


def valid_plan_id(text: str) -> bool:
    """A plan id as ``plan_id_of`` makes them (never a path: no ``/``, never ``..``)."""
    return bool(_PLAN_ID.match(text))


def plan_id_of(campaign: Campaign, as_of: date, inputs: dict[str, Any]) -> str:
    """``<campaign id>-<as of>-<8 hex>``: the hash covers the definition and the inputs."""
    blob = json.dumps(
        {"campaign": campaign.model_dump(mode="json"), "as_of": str(as_of), "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in campaign.campaign_id)
    return f"{safe}-{as_of}-{digest}"


# --------------------------------------------------------------------------- the plan


def expected_by_arm(plan: Plan, campaign: Campaign) -> list[dict[str, Any]]:
    """Per (offer, channel) arm of the contacted customers: contacts, expected incremental
    responses and profit, and the spread of the response count the model itself expects
    (``sqrt(sum u (1 - u))`` over the contacts: response noise only, not the model's error).
    A plan ranked by a non-causal score has no expected incremental figures (null)."""
    c = plan.customers
    contacted = c[c["selected"] & c["group"].isin(["test", "rollout"])]
    data_id = {o.id: o.data_id for o in campaign.offers}
    incremental = "expected_incremental_responses" in c.columns
    rows = []
    for (offer, channel), part in contacted.groupby(["offer", "channel"], sort=True):
        row: dict[str, Any] = {
            "arm": arm_label(data_id[str(offer)], str(channel)),
            "offer": str(offer),
            "channel": str(channel),
            "contacts": int(len(part)),
            "test_cell": int((part["group"] == "test").sum()),
            "expected_incremental_responses": None,
            "expected_incremental_responses_sd": None,
            "expected_incremental_profit": None,
        }
        if incremental:
            u = part["expected_incremental_responses"].to_numpy(dtype=float)
            row["expected_incremental_responses"] = float(u.sum())
            row["expected_incremental_responses_sd"] = float(
                np.sqrt(np.sum(np.clip(u, 0, 1) * (1 - np.clip(u, 0, 1))))
            )
            row["expected_incremental_profit"] = float(part["expected_incremental_profit"].sum())
        rows.append(row)
    return rows


def gate_power_by_arm(
    plan: Plan, campaign: Campaign, confidence: float = DEFAULT_GATE_CONFIDENCE, goal: float = 0.8
) -> list[dict[str, Any]]:
    """Per arm of the plan's test cell, **the chance the roll-out gate passes it if the model's
    expectation is right** (response noise only: the read of its test contacts against the
    controls of its plan segment, the gate one-sided at ``confidence``), and the test contacts
    that would give it ``goal`` at the plan's ratio of controls to test contacts — the test
    cell's sizing, before any response. Needs the plan's ``expected_response`` (P(accept |
    contacted)); an arm valued per customer, or without controls or expected profit, gets
    null figures with the reason."""
    c = plan.customers
    if "expected_response" not in c.columns or "expected_incremental_responses" not in c.columns:
        return []
    offers = {o.id: o for o in campaign.offers}
    channels = {ch.name: ch for ch in campaign.channels}
    normal = NormalDist()
    z, z_goal = normal.inv_cdf(confidence), normal.inv_cdf(goal)
    sel = c[c["selected"].astype(bool)]
    rows = []
    for (offer, channel), part in sel.groupby(["offer", "channel"], sort=True):
        o, ch = offers[str(offer)], channels[str(channel)]
        n_t = int((part["group"] == "test").sum())
        n_c = int((part["group"] == "control").sum())
        row: dict[str, Any] = {
            "arm": arm_label(o.data_id, str(channel)),
            "test_contacts": n_t,
            "controls": n_c,
            "confidence": confidence,
            "expected_profit_per_contact": None,
            "gate_power": None,
            "test_contacts_for_goal": None,
            "goal": goal,
            "why_none": None,
        }
        p = float(part["expected_response"].mean())
        u = float(part["expected_incremental_responses"].mean())
        r_c = min(max(p - u, 0.0), 1.0)
        if o.value_source != "offer" or o.value is None:
            row["why_none"] = "valued per customer: the read's spread depends on the values"
        elif n_t == 0 or n_c == 0:
            row["why_none"] = "no test contact or no control on its segment"
        else:
            v, a = float(o.value), float(o.cost_per_acceptance)
            profit = u * v - a * p - float(ch.cost_per_contact)
            var_t, var_c = read_variances(p, r_c, v, a)
            row["expected_profit_per_contact"] = profit
            if profit <= 0:
                row["why_none"] = "the model expects no profit per contact on its segment"
            elif var_t + var_c > 0:
                row["gate_power"] = gate_power(profit, var_t, var_c, n_t, n_c, confidence)
                k = n_c / n_t  # controls per test contact, as planned
                row["test_contacts_for_goal"] = int(
                    np.ceil(((z + z_goal) / profit) ** 2 * (var_t + var_c / k))
                )
        rows.append(row)
    return rows


def plan_record(
    plan: Plan, campaign: Campaign, as_of: date, inputs: dict[str, Any]
) -> dict[str, Any]:
    """The record saved as ``plan.json`` (its id from ``plan_id_of``)."""
    return {
        "plan_id": plan_id_of(campaign, as_of, inputs),
        "campaign": campaign.model_dump(mode="json"),
        "as_of": str(as_of),
        "inputs": inputs,
        "summary": clean(plan.summary),
        "by_arm": expected_by_arm(plan, campaign),
        "test_cell_power": clean(gate_power_by_arm(plan, campaign)),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_plan(
    root: Path,
    customers: pd.DataFrame,
    record: dict[str, Any],
    on_create: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None,
) -> SavedPlan:
    """Write the plan once: its table, then its record (atomically each; the record last, so a
    plan folder with a record is complete). The same id again returns the stored plan when the
    contents are the same and raises ``PlanConflict`` when not. ``on_create(folder, record)``
    runs between the two writes and returns fields added to the record (an MLflow run id)."""
    plan_id = record["plan_id"]
    folder = root / plan_id
    if (folder / RECORD_FILE).exists():
        old = json.loads((folder / RECORD_FILE).read_text())
        keys = ("campaign", "as_of", "inputs", "by_arm")  # not the timings or the run id
        same = {k: old.get(k) for k in keys} == json.loads(
            json.dumps({k: record[k] for k in keys}, default=str)
        )
        if not same:
            raise PlanConflict(f"plan {plan_id} exists with other contents: plans are immutable")
        return SavedPlan(plan_id, folder, old, False)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / PLAN_FILE) as tmp:
        customers.to_parquet(tmp, index=False)
    if on_create is not None:
        record = {**record, **on_create(folder, record)}
    with atomic_path(folder / RECORD_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return SavedPlan(plan_id, folder, record, True)


def load_plan(root: Path, plan_id: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """A saved plan's record and per-customer table; ``PlanNotFound`` for an unknown id."""
    folder = root / plan_id
    if not valid_plan_id(plan_id) or not (folder / RECORD_FILE).exists():
        known = sorted(p.name for p in root.glob("*") if (p / RECORD_FILE).exists())
        raise PlanNotFound(plan_id, known)
    return json.loads((folder / RECORD_FILE).read_text()), pd.read_parquet(folder / PLAN_FILE)


def wave_of(customers: pd.DataFrame) -> pd.DataFrame:
    """The plan's wave: its test cell and its control group (selected customers)."""
    return customers[customers["selected"] & customers["group"].isin(["test", "control"])]


# --------------------------------------------------------------------------- responses


def flag(value: Any) -> float | None:
    """A response flag as 1.0 / 0.0; None when it is not one."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "1.0"):
        return 1.0
    if text in ("0", "false", "no", "n", "0.0"):
        return 0.0
    return None


def screen_responses(
    responses: pd.DataFrame, customers: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted, rejected) of a wave's responses: accepted are the wave's customers with a 0/1
    ``responded`` (the last row per customer), one row each with the plan's group, offer and
    channel; rejected keeps every other row as given, with ``reason_rejected``."""
    missing = {ID, "responded"} - set(responses.columns)
    if missing:
        raise ValueError(f"responses lack columns {sorted(missing)} (campaign_history layout)")
    r = responses.copy()
    r[ID] = r[ID].astype(str)
    flags = r["responded"].map(flag)
    wave = wave_of(customers)
    known = r[ID].isin(wave[ID])
    bad = flags.isna()
    rejected = r[~known | bad].copy()
    rejected["reason_rejected"] = np.where(~known[~known | bad], NOT_IN_WAVE, NOT_A_FLAG)
    r["responded"] = flags
    # the plan says each contact's group, offer and channel; a file's own columns do not count
    r = r.drop(columns=[c for c in ("group", "offer", "channel") if c in r.columns])
    r = r[known & ~bad].drop_duplicates(ID, keep="last")
    rows = wave[[ID, "group", "offer", "channel"]].merge(r, on=ID, how="inner")
    kept = rows[[ID, "group", "offer", "channel", "responded"]].copy()
    kept["reason"] = rows["reason"] if "reason" in rows.columns else None
    for extra in ("value", "received_at"):
        if extra in rows.columns:
            kept[extra] = rows[extra]
    return kept.reset_index(drop=True), rejected.reset_index(drop=True)


def stored_responses(folder: Path) -> pd.DataFrame:
    """The wave's accepted responses stored beside the plan (empty when none)."""
    path = folder / RESPONSES_FILE
    if path.exists():
        return pd.read_parquet(path)
    return pd.DataFrame({c: [] for c in (ID, "group", "offer", "channel", "responded", "reason")})


def rejected_count(folder: Path) -> int:
    path = folder / REJECTED_FILE
    return int(len(pd.read_csv(path, dtype=str))) if path.exists() else 0


def write_wave(folder: Path, kept: pd.DataFrame, rejected: pd.DataFrame) -> None:
    """Replace the wave's responses with ``kept``; write ``rejected`` when there are any."""
    with atomic_path(folder / RESPONSES_FILE) as tmp:
        kept.to_parquet(tmp, index=False)
    if len(rejected):
        with atomic_path(folder / REJECTED_FILE) as tmp:
            rejected.to_csv(tmp, index=False)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer of a plan's responses at a time, across threads and worker processes."""
    with open(folder / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _norm(v: Any) -> Any:
    """A response cell compared by content: missing values (None, NaN, "") are None, numbers
    and flags floats, anything else text."""
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, str) and not v.strip():
        return None
    if isinstance(v, bool | np.bool_ | int | np.integer | float | np.floating):
        return None if np.isnan(float(v)) else float(v)
    return str(v)


def _same(a: Any, b: Any) -> bool:
    """Equal response content: missing values (None, NaN, "") are equal to each other."""
    return bool(_norm(a) == _norm(b))


def responses_digest(kept: pd.DataFrame) -> str:
    """sha256 of the accepted responses' content (contact id, ``responded``, ``reason``,
    ``value``), in contact-id order: the same for the stored file and the frame it was written
    from, whichever way they came (a wave's file or batches)."""
    cols = {c: kept[c].tolist() if c in kept.columns else [None] * len(kept) for c in CONTENT}
    ids = kept[ID].astype(str).tolist() if ID in kept.columns else []
    rows = sorted(
        ([i, *(_norm(cols[c][k]) for c in CONTENT)] for k, i in enumerate(ids)),
        key=lambda row: str(row[0]),
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _differs(new: dict[str, Any], old: dict[str, Any]) -> str | None:
    return next((c for c in CONTENT if not _same(new.get(c), old.get(c))), None)


def add_responses(root: Path, plan_id: str, responses: pd.DataFrame) -> Intake:
    """Store a batch of the wave's responses, idempotently by contact id (``customer_id``).

    ``responses``: ``customer_id``, ``responded`` and optionally ``reason`` and ``value``, in
    the order received. A contact stored with the same content is left as it is (unchanged); a
    contact stored — or given earlier in the batch — with other content raises
    ``ResponseConflict`` naming the batch row and field, and nothing of the batch is stored.
    Rows of customers outside the test cell and control group, or whose ``responded`` is not
    0/1, are kept in ``rejected_responses.csv`` with the reason (once each)."""
    _, customers = load_plan(root, plan_id)
    folder = root / plan_id
    r = responses.reset_index(drop=True).copy()
    for c in CONTENT:
        if c not in r.columns:
            r[c] = None
    r[ID] = r[ID].astype(str)
    r["value"] = pd.to_numeric(r["value"], errors="coerce")
    r["received_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    wave = wave_of(customers)
    in_wave = r[ID].isin(wave[ID]).to_numpy()
    flags = r["responded"].map(flag)
    ok = in_wave & flags.notna().to_numpy()
    with _locked(folder):
        stored = stored_responses(folder)
        old: dict[str, dict[str, Any]] = {
            str(row[ID]): {str(k): v for k, v in row.items()} for row in stored.to_dict("records")
        }
        seen: dict[str, tuple[int, dict[str, Any]]] = {}
        new_rows: list[dict[str, Any]] = []
        unchanged = 0
        records = r.to_dict("records")
        for i in np.flatnonzero(ok):
            row: dict[str, Any] = {str(k): v for k, v in records[i].items()}
            row["responded"] = flags.iloc[i]
            cid = row[ID]
            if cid in seen:
                first, earlier = seen[cid]
                diff = _differs(row, earlier)
                if diff is not None:
                    raise ResponseConflict(
                        int(i),
                        diff,
                        f"row {i} gives the contact of row {first} again with a different {diff}",
                    )
                unchanged += 1
                continue
            seen[cid] = (int(i), row)
            if cid in old:
                diff = _differs(row, old[cid])
                if diff is not None:
                    raise ResponseConflict(
                        int(i),
                        diff,
                        f"row {i}: the contact already has a stored response with a different "
                        f"{diff} (responses are idempotent by contact id: the stored one stands)",
                    )
                unchanged += 1
                continue
            new_rows.append(row)
        rejected = r[~ok].copy()
        rejected["reason_rejected"] = np.where(~in_wave[~ok], NOT_IN_WAVE, NOT_A_FLAG)
        rejected_rows = [
            {"index": int(i), ID: str(cid), "reason": str(why)}
            for i, cid, why in zip(
                rejected.index, rejected[ID], rejected["reason_rejected"], strict=True
            )
        ]
        if new_rows:
            new = pd.DataFrame(new_rows)
            new = wave[[ID, "group", "offer", "channel"]].merge(
                new[[ID, *CONTENT, "received_at"]], on=ID, how="inner"
            )
            both = new if stored.empty else pd.concat([stored, new], ignore_index=True)
            with atomic_path(folder / RESPONSES_FILE) as tmp:
                both.to_parquet(tmp, index=False)
            n_stored = len(both)
        else:
            n_stored = len(stored)
        if len(rejected):
            _append_rejected(folder, rejected)
    return Intake(
        received=int(len(r)),
        accepted=len(new_rows),
        unchanged=unchanged,
        rejected=rejected_rows,
        stored=int(n_stored),
        wave=int(len(wave)),
    )


def _append_rejected(folder: Path, rejected: pd.DataFrame) -> None:
    """Add rejected rows to the plan's file, each (contact, content, reason) once."""
    path = folder / REJECTED_FILE
    new = rejected.astype(object).where(rejected.notna(), None).astype(str)
    new = new.replace({"None": ""})
    if path.exists():
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        both = pd.concat([old, new], ignore_index=True).fillna("")
    else:
        both = new
    key = [c for c in (ID, *CONTENT, "reason_rejected") if c in both.columns]
    both = both.drop_duplicates(key, keep="first")
    with atomic_path(path) as tmp:
        both.to_csv(tmp, index=False)


# --------------------------------------------------------------------------- the read-out


def readout_of(
    record: dict[str, Any],
    customers: pd.DataFrame,
    kept: pd.DataFrame,
    confidence: float = DEFAULT_GATE_CONFIDENCE,
    *,
    received: int | None = None,
    rejected: int = 0,
) -> dict[str, Any]:
    """The wave's read-out and the gate's decision per arm, from the accepted responses
    ``kept`` (``customer_id``, ``responded``, ``reason``): each arm's test-cell contacts
    against the control customers the plan gave the same arm (``readout.read_segments``).
    JSON-ready."""
    campaign = Campaign.model_validate(record["campaign"])
    wave = wave_of(customers)
    cols = [ID, "group", "offer", "channel"]
    if "expected_incremental_responses" in wave.columns:
        cols.append("expected_incremental_responses")
    valued = [o.id for o in campaign.offers if o.value_source == "customer_value"]
    if valued:
        if "customer_value" not in wave.columns:
            raise ValueError(
                f"offers {valued} are valued per customer and the plan {record['plan_id']} kept "
                "no customer_value (planned before plans recorded it): plan it again to read it"
            )
        cols.append("customer_value")
    answers = kept[[ID, "responded"]].copy()
    answers["reason"] = kept["reason"] if "reason" in kept.columns else None
    rows = wave[cols].merge(answers, on=ID, how="inner")
    data_id = {o.id: o.data_id for o in campaign.offers}
    test = (rows["group"] == "test").to_numpy()
    labels = [
        arm_label(data_id[o], c) if t else None
        for o, c, t in zip(rows["offer"], rows["channel"], test, strict=True)
    ]
    offers = {o.id: o for o in campaign.offers}
    channels = {c.name: c for c in campaign.channels}
    terms = {}
    for o, c in {(o, c) for o, c, t in zip(rows["offer"], rows["channel"], test, strict=True) if t}:
        offer, channel = offers[o], channels[c]
        terms[arm_label(data_id[o], c)] = ArmTerms(
            None if offer.value_source == "customer_value" else float(offer.value or 0.0),
            float(channel.cost_per_contact),
            float(offer.cost_per_acceptance),
        )
    expected = None
    if "expected_incremental_responses" in rows.columns:
        u = rows["expected_incremental_responses"].to_numpy(dtype=float)
        expected = np.where(test, u, np.nan)
    # each arm against the control customers the plan gave the same arm: the plan chose
    # whom each arm goes to, so the whole control group is not like any arm's contacts
    planned = [
        arm_label(data_id[o], c) for o, c in zip(rows["offer"], rows["channel"], strict=True)
    ]
    readouts = read_segments(
        labels,
        planned,
        rows["responded"].to_numpy(dtype=float),
        terms,
        expected_uplift=expected,
        reason=rows["reason"].tolist(),
        level=confidence,
        customer_value=rows["customer_value"].to_numpy(dtype=float) if valued else None,
    )
    decisions = gate(readouts, confidence)
    # a dropped arm whose offer has re-priced terms: re-priced when its declines say price
    repricing = repricing_of(campaign, [x.as_dict() for x in readouts], decisions, confidence)
    return clean(
        {
            "plan_id": record["plan_id"],
            "read_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "confidence": confidence,
            "responses": int(len(kept) if received is None else received),
            "responses_sha256": responses_digest(kept),
            "read": int(len(rows)),
            "rejected": int(rejected),
            "wave_without_response": int(len(wave) - len(rows)),
            "arms": [x.as_dict() for x in readouts],
            "gate": [d.as_dict() for d in decisions],
            "contradicting_arms": [x.arm for x in readouts if x.contradicts_model],
            "repricing": [d.as_dict() for d in repricing],
        }
    )


def write_readout(folder: Path, out: dict[str, Any]) -> None:
    """Record the read-out beside the plan (what ``patron campaign rollout`` goes on from)."""
    with atomic_path(folder / READOUT_FILE) as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n")


def clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become null, numpy scalars Python ones, tuples lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- the roll-out


def recorded_readout(folder: Path) -> dict[str, Any] | None:
    """The read-out recorded beside the plan (``readout.json``), None before the first."""
    path = folder / READOUT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def readout_identity(readout: dict[str, Any]) -> dict[str, Any]:
    """What a roll-out records of the read-out it went on: when it was read, at what
    confidence, which responses (their count and digest) and the gate's decision per arm."""
    return {
        "read_at": readout.get("read_at"),
        "confidence": readout.get("confidence"),
        "read": readout.get("read"),
        "responses_sha256": readout.get("responses_sha256"),
        "gate": [[g["arm"], bool(g["roll_out"])] for g in readout.get("gate", [])],
    }


def _same_readout(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same read-out: the same responses read at the same confidence with the same gate
    (not its time: every ``GET /readout`` records the read-out again)."""
    keys = ("confidence", "read", "responses_sha256", "gate")
    return {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}


def _check_read(plan_id: str, readout: dict[str, Any], stored: pd.DataFrame) -> None:
    """``RolloutRefused`` when the stored responses are not the ones the read-out read: by
    their digest (read-outs record it), else by their count (responses over HTTP only add)."""
    digest = readout.get("responses_sha256")
    if digest is not None:
        changed = digest != responses_digest(stored)
    else:
        changed = int(readout.get("read", -1)) != len(stored)
    if changed:
        raise RolloutRefused(
            "responses",
            f"the stored responses of plan {plan_id} changed since the read-out of "
            f"{readout.get('read_at')} ({readout.get('read')} read, {len(stored)} stored now): "
            f"GET /campaigns/{plan_id}/readout again first",
        )


def record_rollout(
    root: Path,
    plan_id: str,
    consent: Callable[[dict[str, Any]], tuple[pd.DataFrame | None, str]] | None = None,
    *,
    confidence: float | None = None,
) -> tuple[dict[str, Any], bool]:
    """Record the roll-out of a saved plan on its recorded read-out (``rollout.parquet`` then
    ``rollout.json``, atomically each, the record last); (record, created).

    Each customer of the plan's roll-out group gets only the arm the plan gave them, when the
    read-out's gate passed it, else is held (``saved_rollout.rollout_of_saved``).
    ``consent(plan record)``: the consent known now (customer id × channel name) and where it
    comes from, asked only when a roll-out is made; ``confidence``: the gate's confidence the
    caller decided on (the recorded read-out at another is refused). Recorded once: asked again
    on the same read-out, the recorded roll-out is answered (``created`` False);
    ``RolloutRefused`` before any read-out, when the stored responses changed since it, or when
    the roll-out was recorded from another read-out. One writer per plan (the responses'
    lock)."""
    record, customers = load_plan(root, plan_id)
    folder = root / plan_id
    with _locked(folder):
        readout = recorded_readout(folder)
        if readout is None:
            raise RolloutRefused(
                "readout",
                f"no read-out recorded for plan {plan_id}: GET /campaigns/{plan_id}/readout first",
            )
        if confidence is not None and abs(float(readout["confidence"]) - confidence) > 1e-12:
            raise RolloutRefused(
                "confidence",
                f"the read-out recorded for plan {plan_id} is at confidence "
                f"{readout['confidence']}, not {confidence}: GET "
                f"/campaigns/{plan_id}/readout?confidence={confidence} first",
            )
        used = readout_identity(readout)
        path = folder / ROLLOUT_FILE
        if path.exists():
            old = json.loads(path.read_text())
            if _same_readout(old["readout"], used):
                return old, False
            was = old["readout"]
            raise RolloutRefused(
                "readout",
                f"plan {plan_id}'s roll-out was recorded at {old.get('recorded_at')} from the "
                f"read-out of {was.get('read_at')} (confidence {was.get('confidence')}, "
                f"{was.get('read')} responses read); the read-out recorded now "
                f"({used['read_at']}, confidence {used['confidence']}, {used['read']} read) "
                f"differs: a roll-out is recorded once (GET /campaigns/{plan_id}/rollout lists it)",
            )
        _check_read(plan_id, readout, stored_responses(folder))
        now, source = consent(record) if consent is not None else (None, "none")
        out = rollout_of_saved(record, customers, readout, now)
        retest = _retest_of_saved(root, plan_id, record, customers, readout, out, now)
        result = clean(
            {
                "plan_id": plan_id,
                "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "readout": used,
                "consent": {"checked": now is not None, "source": source},
                "by_arm": out.by_arm,
                "totals": out.totals,
                "retest": retest,
            }
        )
        with atomic_path(folder / ROLLOUT_ROWS_FILE) as tmp:
            out.rows.to_parquet(tmp, index=False)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result, True


def _retest_of_saved(
    root: Path,
    plan_id: str,
    record: dict[str, Any],
    customers: pd.DataFrame,
    readout: dict[str, Any],
    out: SavedRollout,
    consent: pd.DataFrame | None,
) -> dict[str, Any] | None:
    """The re-test of a saved plan's re-priced arms (the read-out's ``repricing``): their held
    customers of the roll-out group — not those held for consent — at the new terms, in a plan
    of its own (``repricing.build_retest``; docs/campaign_loop.md §3), within the campaign's
    budget less what the wave and this roll-out contact; written before the roll-out's record,
    under a deterministic id, so a retry finds it. None when no arm was re-priced; without a
    consent source no re-test is made (its consent could not be checked)."""
    decisions = decisions_from(readout.get("repricing", []))
    chosen = {d.arm for d in decisions if d.action == REPRICE}
    if not chosen:
        return None
    if consent is None:
        return {
            "plan_id": None,
            "why": "no consent source: the re-test's consent cannot be checked",
        }
    campaign = Campaign.model_validate(record["campaign"])
    rows = out.rows
    waiting = rows[
        (rows["decision"] == HELD)
        & rows["arm"].isin(chosen)
        & ~rows["reason"].isin([CONSENT_WITHDRAWN, CONSENT_NOT_FOUND])
    ]
    arm_of = dict(zip(waiting[ID].astype(str), waiting["arm"].astype(str), strict=True))
    frame = customers[customers[ID].astype(str).isin(arm_of)].drop_duplicates(ID).copy()
    ids = pd.Index(frame[ID].astype(str), dtype=object)
    for channel in campaign.channels:
        flags = consent[channel.name] if channel.name in consent.columns else None
        frame[channel.consent] = (
            False if flags is None else flags.reindex(ids).fillna(False).astype(bool).to_numpy()
        )
    # what the campaign has left: its budget less the wave's contacts and this roll-out's
    spend = customers["expected_spend"].to_numpy(dtype=float)
    contacted_now = set(rows.loc[rows["decision"] == CONTACT, ID].astype(str))
    used = (customers["selected"].astype(bool) & (customers["group"] == "test")).to_numpy() | (
        customers[ID].astype(str).isin(contacted_now).to_numpy()
    )
    counts = customers.loc[used, "channel"].astype(str).value_counts()
    by_channel = {str(c): int(n) for c, n in counts.items()}
    left = budget_left(campaign, float(spend[used].sum()), int(used.sum()), by_channel)
    built = build_retest(
        campaign, decisions, frame, arm_of, readout.get("arms", []), left, eligible_as_planned=True
    )
    if built is None:
        return {"plan_id": None, "why": "no held customer of a re-priced arm is left to re-test"}
    retest, plan = built
    inputs = {
        **{k: v for k, v in record.get("inputs", {}).items() if k in ("dataset", "feature_set")},
        "parent_plan": plan_id,
        "wave": "retest",
        "retest_of": ",".join(sorted(chosen)),
        "repricing": [d.as_dict() for d in decisions if d.action == REPRICE],
        "made_by": "the roll-out of a saved plan",
    }
    saved = write_plan(
        root, plan.customers, plan_record(plan, retest, date.fromisoformat(record["as_of"]), inputs)
    )
    s = plan.summary
    return {
        "plan_id": saved.plan_id,
        "customers": int(s["base"]),
        "test_cell": int(s["test_cell"]),
        "control": int(s["control"]),
        "waiting": int(s["rollout"]),
        "excluded": plan.exclusions,
    }


def load_rollout(folder: Path) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """The roll-out recorded beside the plan and its rows; None when none is."""
    path = folder / ROLLOUT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text()), pd.read_parquet(folder / ROLLOUT_ROWS_FILE)
