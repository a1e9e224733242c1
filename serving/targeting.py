"""Campaign targeting rules, pure: what a score is, consent, audience filters, expected profit,
budget, controls.

Every function takes arrays or frames and returns new ones; nothing here reads files or a model.
The order of the exclusion reasons is part of the contract: a customer is counted once, under the
first rule it fails (``EXCLUSION_REASONS``), so the counts add up to the base.

What a score is decides what its figures mean (``score_kind``, the planner's rule in
``models.decisions.value``), read from what the model recorded (its output and ``label_meaning``),
never from its name: an uplift is the incremental effect of a contact; a response
probability P(respond | contacted) counts those who would respond anyway; a churn probability is
no response at all, so it ranks by value at risk (P(churn) x value - cost) and sums to no
"expected responses". Only an uplift ranks by default (``basis_for``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.decisions.groups import groups_of, uniforms_from_hashes
from models.decisions.value import BASIS_NON_CAUSAL, BASIS_UPLIFT

CHANNELS = ("email", "sms", "phone")
#: Why a customer of the base is not in the selection, in the order the rules are applied.
EXCLUSION_REASONS = (
    "no_consent",
    "not_eligible",
    "segment",
    "lifecycle_stage",
    "min_score",
    "unprofitable",
    "budget",
)


# --------------------------------------------------------------------------- what a score is

#: What a model's campaign score is: the incremental effect of a contact, P(respond | contacted)
#: (a propensity, a next-best-offer acceptance) or P(leave) (a churn model).
SCORE_KINDS = ("uplift", "response_probability", "churn_probability")

#: What a 1 of a probability model's label means, as recorded with the model (``info``
#: ``label_meaning``; ``training.families.labelled.LabelMeaning`` for a labelled table).
LABEL_MEANINGS = ("churn", "response", "other")

#: The meaning of families whose label is fixed by the family, for models that recorded none.
FAMILY_LABEL_MEANINGS = {"churn": "churn", "propensity": "response"}

#: The score kind of a probability model by its label meaning ("other" ranks no campaign).
_KIND_OF_MEANING = {"churn": "churn_probability", "response": "response_probability"}


def label_meaning(family: str, recorded: object = None) -> str:
    """What a 1 of a model's label means: the meaning recorded with it, else its family's.

    A model trained before meanings were recorded carries none: a churn model means churn, a
    propensity model a response, anything else (an old ``labelled`` model among them) ``other``.
    No name decides it: a labelled table called "attrition" is as much a churn table as one
    called "churn", and only its config (``label_meaning``) knows. The old name rule is not kept
    as a fallback, because it is the misreading this replaces; an old labelled model is served by
    /score as before and ranks a campaign once retrained with its ``label_meaning``.
    """
    if recorded is None or recorded == "":
        return FAMILY_LABEL_MEANINGS.get(family, "other")
    if recorded not in LABEL_MEANINGS:
        raise ValueError(f"label_meaning must be one of {LABEL_MEANINGS}, not {recorded!r}")
    return str(recorded)


def score_kind(output: str, meaning: str) -> str:
    """What a served model's campaign score is, from its output and its label meaning.

    ``output`` is the served output (``uplift``, ``probability`` or ``value``), ``meaning`` what a
    1 of its label means (``label_meaning``). /target and /campaigns/plan both decide by this
    function. Raises ValueError for a value, and for a probability of a label that is neither
    churn nor a response (``other``): such a score is P(label) of something no campaign figure
    can be read from.
    """
    if output == "uplift":
        return "uplift"
    if output != "probability":
        raise ValueError(f"a {output} output is not a campaign score")
    if meaning not in LABEL_MEANINGS:
        raise ValueError(f"label_meaning must be one of {LABEL_MEANINGS}, not {meaning!r}")
    kind = _KIND_OF_MEANING.get(meaning)
    if kind is None:
        raise ValueError(
            "its label_meaning is 'other' (its score is the probability of a label that is "
            "neither churn nor a response to a contact; /score serves it): set label_meaning "
            "to churn or response in its experiment config and retrain it"
        )
    return kind


def basis_for(kind: str, ranking_basis: str) -> str:
    """The basis label (``models.decisions.value``) of a ranking by a ``kind`` of score.

    Raises ValueError when the two disagree: a non-uplift score ranks only when the ranking says
    ``non_causal_score``, and an uplift is no non-causal score.
    """
    if kind not in SCORE_KINDS:
        raise ValueError(f"score kind must be one of {SCORE_KINDS}, not {kind!r}")
    if kind == "uplift":
        if ranking_basis != "uplift":
            raise ValueError("an uplift is an incremental effect: rank by basis uplift")
        return BASIS_UPLIFT
    if ranking_basis != "non_causal_score":
        raise ValueError(f"a {kind} is no incremental effect: it ranks only as non_causal_score")
    return BASIS_NON_CAUSAL


# --------------------------------------------------------------------------- consent


def consent_column(channel: str) -> str:
    """Column of the customers table holding the consent for a channel."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, not {channel!r}")
    return f"consent_{channel}"


def consent_flags(
    customer_ids: Iterable[str], customers: pd.DataFrame | None, channel: str
) -> np.ndarray:
    """True where the customers table grants consent for the channel; missing anything = False.

    A customer absent from the table, a table without the channel's column, a missing value, or
    any row of a duplicated customer saying no: all count as no consent.
    """
    ids = pd.Index(pd.Series(list(customer_ids), dtype=object).astype(str))
    column = consent_column(channel)
    if customers is None or column not in customers.columns or len(customers) == 0:
        return np.zeros(len(ids), dtype=bool)
    raw = customers[column]
    granted = raw.map(_is_true).astype(bool)
    per_customer = granted.groupby(customers["customer_id"].astype(str).to_numpy()).all()
    return per_customer.reindex(ids, fill_value=False).to_numpy(dtype=bool)


def _is_true(value: Any) -> bool:
    """Only an explicit yes is consent: True, 1, "true"/"yes"/"y"/"1" (any case)."""
    if value is None or value is pd.NA:
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value) == 1
    if isinstance(value, (float, np.floating)):
        return bool(value == 1.0)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "y", "1")
    return False


# --------------------------------------------------------------------------- groups by hash


def campaign_uniforms(customer_hashes: np.ndarray, campaign_id: str) -> np.ndarray:
    """A number in [0, 1) per customer, fixed by (campaign id, customer id) and nothing else:
    the top 53 bits of ``splitmix64(blake2b64(customer_id) XOR blake2b64(campaign_id))`` over
    2**53 (``models.decisions.groups``, shared with the campaign planner)."""
    return uniforms_from_hashes(customer_hashes, campaign_id)


def assign_groups(
    uniforms: np.ndarray, control_fraction: float, test_fraction: float
) -> np.ndarray:
    """control if u < control_fraction, test if u < control + test fraction, else rollout."""
    return groups_of(uniforms, control_fraction, test_fraction)


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class CampaignRules:
    """A campaign's targeting rules with every default resolved."""

    campaign_id: str
    value_per_conversion: float
    cost_per_contact: float
    segments: frozenset[str] | None = None
    abc_classes: frozenset[str] | None = None
    lifecycle_stages: frozenset[str] | None = None
    min_score: float | None = None
    max_contacts: int | None = None
    max_cost: float | None = None
    control_fraction: float = 0.1
    test_cell_fraction: float = 0.05  # the CRM practice's test cell; 0 for none
    win_back_first: bool = False
    # False when the score is no response probability (a churn probability): the summary's
    # expected_responses is then None, never a sum of churn probabilities
    score_is_response: bool = True

    def __post_init__(self) -> None:
        # free contacts would make any money budget select everyone
        if self.max_cost is not None and not self.cost_per_contact > 0.0:
            raise ValueError(
                "a money budget (max_cost) needs cost_per_contact above 0, "
                f"not {self.cost_per_contact}"
            )


@dataclass(frozen=True)
class Selection:
    """The selected customers (ranked, with their group) and the campaign's summary numbers."""

    customers: pd.DataFrame
    summary: dict[str, Any]


#: Columns a candidates frame must have (one row per customer of the base).
CANDIDATE_COLUMNS = (
    "customer_id",
    "score",
    "consent",
    "rfm_segment",
    "abc_class",
    "lifecycle_stage",
    "lapsed_recently",
    "id_hash",
)


def expected_profit(score: np.ndarray, value: float, cost: float) -> np.ndarray:
    """score x value - cost per contact: incremental with an uplift; P(respond) x value, or the
    value at risk P(churn) x value, for a non-causal score."""
    return np.asarray(score, dtype=float) * value - cost


def _not_in(values: pd.Series, allowed: frozenset[str] | None) -> np.ndarray:
    if allowed is None:
        return np.zeros(len(values), dtype=bool)
    return ~values.astype(object).isin(allowed).to_numpy(dtype=bool)


def exclusion_reasons(candidates: pd.DataFrame, rules: CampaignRules) -> np.ndarray:
    """The first rule each customer fails before the budget ("" when it fails none)."""
    missing = [c for c in CANDIDATE_COLUMNS if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack columns {missing}")
    score = candidates["score"].to_numpy(dtype=float)
    profit = expected_profit(score, rules.value_per_conversion, rules.cost_per_contact)
    checks: Sequence[tuple[str, np.ndarray]] = (
        ("no_consent", ~candidates["consent"].to_numpy(dtype=bool)),
        ("not_eligible", np.isnan(score)),
        (
            "segment",
            _not_in(candidates["rfm_segment"], rules.segments)
            | _not_in(candidates["abc_class"], rules.abc_classes),
        ),
        ("lifecycle_stage", _not_in(candidates["lifecycle_stage"], rules.lifecycle_stages)),
        (
            "min_score",
            ~(score >= rules.min_score)
            if rules.min_score is not None
            else np.zeros(len(score), dtype=bool),
        ),
        ("unprofitable", ~(profit > 0.0)),
    )
    reason = np.full(len(candidates), "", dtype=object)
    for name, failed in checks:
        reason[(reason == "") & failed] = name
    return reason


def budget_prefix(treated: np.ndarray, rules: CampaignRules) -> int:
    """How many ranked candidates fit the budget: up to the last contact the budget pays for.

    Control members cost nothing; the prefix ends at the last treated customer within both the
    contact and the money budget, so controls beyond it are not held out for nothing.
    """
    treated = np.asarray(treated, dtype=bool)
    if rules.max_contacts is None and rules.max_cost is None:
        return len(treated)
    contacts = np.cumsum(treated)
    fits = treated.copy()
    if rules.max_contacts is not None:
        fits &= contacts <= rules.max_contacts
    if rules.max_cost is not None:
        # a cent's slack so that 10 contacts at 0.1 fit a budget of 1.0 despite binary fractions
        fits &= contacts * rules.cost_per_contact <= rules.max_cost + 1e-9
    last = np.flatnonzero(fits)
    return int(last[-1]) + 1 if len(last) else 0


def select_customers(candidates: pd.DataFrame, rules: CampaignRules) -> Selection:
    """The customers maximising expected profit within the budget, with control and test cells.

    Eligible customers (consent, audience filters, positive expected profit) are ranked by expected
    profit (win-back priority first when asked; ties by customer id) and taken in that order until
    the budget runs out; membership of the control group (held out, not contacted) and of the test
    cell is fixed by hash(campaign id, customer id).
    """
    reason = exclusion_reasons(candidates, rules)
    score = candidates["score"].to_numpy(dtype=float)
    profit = expected_profit(score, rules.value_per_conversion, rules.cost_per_contact)
    eligible_pos = np.flatnonzero(reason == "")
    elig = pd.DataFrame(
        {
            "pos": eligible_pos,
            "customer_id": candidates["customer_id"].to_numpy()[eligible_pos].astype(str),
            "profit": profit[eligible_pos],
            "win_back": candidates["lapsed_recently"].to_numpy(dtype=bool)[eligible_pos],
        }
    )
    keys = ["profit", "customer_id"]
    ascending = [False, True]
    if rules.win_back_first:
        keys, ascending = ["win_back", *keys], [False, *ascending]
    elig = elig.sort_values(keys, ascending=ascending, kind="mergesort")
    ranked = elig["pos"].to_numpy(dtype=np.int64)
    u = campaign_uniforms(
        candidates["id_hash"].to_numpy(dtype=np.uint64)[ranked], rules.campaign_id
    )
    group = assign_groups(u, rules.control_fraction, rules.test_cell_fraction)
    n_sel = budget_prefix(group != "control", rules)
    chosen, group = ranked[:n_sel], group[:n_sel]
    reason[ranked[n_sel:]] = "budget"

    customers = pd.DataFrame(
        {
            "rank": np.arange(1, n_sel + 1),
            "customer_id": candidates["customer_id"].to_numpy()[chosen].astype(str),
            "group": group,
            "score": score[chosen],
            "expected_profit": profit[chosen],
            "win_back_priority": candidates["lapsed_recently"].to_numpy(dtype=bool)[chosen],
            "lifecycle_stage": candidates["lifecycle_stage"].to_numpy()[chosen],
            "rfm_segment": candidates["rfm_segment"].to_numpy()[chosen],
        }
    )
    contacted = customers["group"] != "control"
    n_contacted = int(contacted.sum())
    summary = {
        "base": int(len(candidates)),
        "eligible": int(len(eligible_pos)),
        "selected": int(n_sel),
        "contacted": n_contacted,
        "control": int((customers["group"] == "control").sum()),
        "test_cell": int((customers["group"] == "test").sum()),
        "rollout": int((customers["group"] == "rollout").sum()),
        "win_back_priority": int(customers["win_back_priority"].sum()),
        "expected_responses": float(customers.loc[contacted, "score"].sum())
        if rules.score_is_response
        else None,
        "expected_profit": float(customers.loc[contacted, "expected_profit"].sum()),
        "spend": float(n_contacted * rules.cost_per_contact),
        "excluded": {r: int((reason == r).sum()) for r in EXCLUSION_REASONS},
    }
    return Selection(customers=customers, summary=summary)
