"""Decisions, not scores: a campaign definition, the value of a contact, the allocation.

Pure functions over frames and arrays (only ``load_campaign`` reads a file); importable by
serving, training and experiments alike.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The names below are loaded on first use (PEP 562): importing one submodule — serving's schemas
# need only ``models.decisions.campaign`` — then does not import the allocation code and pandas
# into every server process at start.
if TYPE_CHECKING:
    from models.decisions.allocate import (
        EXCLUSION_REASONS,
        AllocationProblem,
        ContactHistory,
        HouseholdMaps,
        Plan,
        allocation_problem,
        contact_history,
        plan_campaign,
        plan_from,
        solve,
    )
    from models.decisions.campaign import Campaign, load_campaign, parse_campaign
    from models.decisions.groups import assign_groups
    from models.decisions.value import (
        BASIS_NON_CAUSAL,
        BASIS_UPLIFT,
        ChurnProbability,
        ResponseProbability,
        UpliftEstimate,
        contact_values,
    )

__all__ = [
    "AllocationProblem",
    "BASIS_NON_CAUSAL",
    "BASIS_UPLIFT",
    "EXCLUSION_REASONS",
    "Campaign",
    "ChurnProbability",
    "ContactHistory",
    "HouseholdMaps",
    "Plan",
    "ResponseProbability",
    "UpliftEstimate",
    "allocation_problem",
    "assign_groups",
    "contact_history",
    "contact_values",
    "load_campaign",
    "parse_campaign",
    "plan_campaign",
    "plan_from",
    "solve",
]

_SOURCES = {
    "EXCLUSION_REASONS": "allocate",
    "AllocationProblem": "allocate",
    "ContactHistory": "allocate",
    "HouseholdMaps": "allocate",
    "Plan": "allocate",
    "allocation_problem": "allocate",
    "contact_history": "allocate",
    "plan_campaign": "allocate",
    "plan_from": "allocate",
    "solve": "allocate",
    "Campaign": "campaign",
    "load_campaign": "campaign",
    "parse_campaign": "campaign",
    "assign_groups": "groups",
    "BASIS_NON_CAUSAL": "value",
    "BASIS_UPLIFT": "value",
    "ChurnProbability": "value",
    "ResponseProbability": "value",
    "UpliftEstimate": "value",
    "contact_values": "value",
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{source}"), name)
    globals()[name] = value
    return value
