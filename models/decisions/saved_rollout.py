"""The roll-out of a saved plan on its recorded read-out: each customer only the arm the plan
gave them, and only when that arm passed the gate (docs/campaign_loop.md §4, §7).

A plan saved over HTTP (``POST /campaigns/plan`` with ``save``) already gave every selected
customer an arm and a group; its test cell was read on each arm's plan segment and the gate
decided per arm (``readout.json``). The roll-out keeps §5's rule: an arm rolls out only on the
population it was read on — the plan's ``rollout`` group, which the plan gave arms by the same
rule as the test cell and control group (the groups are a hash of the customer). A dropped
arm's customers are **held** (not contacted, re-tested in the campaign's next plan), never moved
to another arm that was not read on them; customers the plan did not select are not listed.
Nothing is re-planned or re-estimated: that needs a model fit (``patron campaign rollout``).

Pure: the plan's rows, its record and the read-out in, the roll-out rows and counts out; the
files are ``models.decisions.plan_store``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.decisions.campaign import Campaign

ID = "customer_id"
CONTACT, HELD = "contact", "held"
NOT_READ = "arm not read in the test cell"
CONSENT_WITHDRAWN = "consent withdrawn since the plan"
CONSENT_NOT_FOUND = "consent not found now: the customer is not in the served base"
#: The roll-out rows, in the plan's order.
ROW_COLUMNS = (ID, "offer", "channel", "arm", "decision", "reason", "expected_incremental_profit")


@dataclass(frozen=True)
class SavedRollout:
    """The roll-out of a saved plan: one row per customer of its roll-out group, and counts."""

    rows: pd.DataFrame  # ROW_COLUMNS
    by_arm: list[dict[str, Any]]
    totals: dict[str, Any]


def arm_label(offer_data_id: str, channel: str) -> str:
    """An arm's name in read-outs, gates and responses: ``<offer data id>/<channel>``."""
    return f"{offer_data_id}/{channel}"


def rollout_of_saved(
    record: Mapping[str, Any],
    customers: pd.DataFrame,
    readout: Mapping[str, Any],
    consent: pd.DataFrame | None = None,
) -> SavedRollout:
    """Every selected customer of the plan's ``rollout`` group with the plan's arm for them:
    ``contact`` when the read-out's gate rolled that arm out, else ``held`` with the reason (the
    gate's own, or the arm was not read in the test cell).

    ``record``: the plan's ``plan.json`` (its campaign); ``customers``: its ``plan.parquet``;
    ``readout``: the recorded read-out (its ``gate``: ``arm``, ``roll_out``, ``reason``);
    ``consent``: the consent known now, indexed by customer id, one boolean column per channel
    name — a customer whose consent for their arm's channel is no longer given is held, one
    missing from it too (None: no consent source; nothing checked)."""
    campaign = Campaign.model_validate(record["campaign"])
    data_id = {o.id: o.data_id for o in campaign.offers}
    offer_of = {o.data_id: o.id for o in reversed(campaign.offers)}  # the first offer wins
    gate = {str(g["arm"]): g for g in readout.get("gate", [])}

    part = customers[customers["selected"].astype(bool) & (customers["group"] == "rollout")]
    offers = part["offer"].astype(str).to_numpy()
    channels = part["channel"].astype(str).to_numpy()
    arms = np.array(
        [arm_label(data_id.get(o, o), c) for o, c in zip(offers, channels, strict=True)],
        dtype=object,
    )
    passed = np.array([bool(gate[a]["roll_out"]) if a in gate else False for a in arms])
    reason = np.array([str(gate[a]["reason"]) if a in gate else NOT_READ for a in arms], object)
    if consent is not None:
        ids = part[ID].astype(str).to_numpy()
        known = np.asarray(consent.index.get_indexer(pd.Index(ids, dtype=object))) >= 0
        given = np.zeros(len(part), dtype=bool)
        for channel in np.unique(channels):
            rows = (channels == channel) & known
            if channel in consent.columns and rows.any():
                flags = consent[channel].reindex(pd.Index(ids[rows], dtype=object))
                given[rows] = flags.fillna(False).astype(bool).to_numpy()
        reason = np.where(passed & ~known, CONSENT_NOT_FOUND, reason)
        reason = np.where(passed & known & ~given, CONSENT_WITHDRAWN, reason)
        passed = passed & known & given
    profit = (
        part["expected_incremental_profit"].to_numpy(dtype=float)
        if "expected_incremental_profit" in part.columns
        else np.full(len(part), np.nan)
    )
    rows = pd.DataFrame(
        {
            ID: part[ID].astype(str).to_numpy(),
            "offer": offers,
            "channel": channels,
            "arm": arms,
            "decision": np.where(passed, CONTACT, HELD),
            "reason": reason,
            "expected_incremental_profit": profit,
        },
        columns=list(ROW_COLUMNS),
    )
    incremental = "expected_incremental_profit" in part.columns
    by_arm = []
    for arm in sorted({*arms, *gate}):
        mine = rows[rows["arm"] == arm]
        contact = mine["decision"] == CONTACT
        decided = gate.get(arm)
        head, _, channel = arm.rpartition("/")
        by_arm.append(
            {
                "arm": arm,
                "offer": str(mine["offer"].iloc[0]) if len(mine) else offer_of.get(head, head),
                "channel": str(mine["channel"].iloc[0]) if len(mine) else channel,
                "roll_out": None if decided is None else bool(decided["roll_out"]),
                "gate_reason": NOT_READ if decided is None else str(decided["reason"]),
                "customers": int(len(mine)),
                "contacted": int(contact.sum()),
                "held": int((~contact).sum()),
                "held_for_consent": int(
                    mine["reason"].isin([CONSENT_WITHDRAWN, CONSENT_NOT_FOUND]).sum()
                ),
                "expected_incremental_profit_contacted": float(
                    mine.loc[contact, "expected_incremental_profit"].sum()
                )
                if incremental
                else None,
            }
        )
    contact = rows["decision"] == CONTACT
    totals = {
        "customers": int(len(rows)),
        "contacted": int(contact.sum()),
        "held": int((~contact).sum()),
        "held_for_consent": sum(a["held_for_consent"] for a in by_arm),
        "arms_rolled_out": sorted(a for a, g in gate.items() if g["roll_out"]),
        "expected_incremental_profit_contacted": float(
            rows.loc[contact, "expected_incremental_profit"].sum()
        )
        if incremental
        else None,
    }
    return SavedRollout(rows, by_arm, totals)
