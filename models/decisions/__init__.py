"""Decisions, not scores: a campaign definition, the value of a contact, the allocation.

Pure functions over frames and arrays (only ``load_campaign`` reads a file); importable by
serving, training and experiments alike.
"""

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
