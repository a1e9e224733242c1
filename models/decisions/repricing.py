"""Re-pricing an arm that failed the roll-out gate (issue 12, item 3; docs/campaign_loop.md §3).

The CRM practice reads a test cell's negative responses as much as its positive ones: did the
customers decline **on price**, or did the offer not fit them? An arm that failed the gate is
dropped — or, when its offer defines re-priced terms (``Offer.reprice``) and its declines say
price, **re-priced and re-tested**: its customers get the offer at the new terms in a test cell
of their own with a control group, and the rest of them wait for that read. Nothing re-priced is
rolled out unread: the response at a new price is not the response measured at the old one.

The rule (``reprice_decision``), on the failed arm's read of the wave (on its segment,
``readout.read_segments``):

* **re-price** when more than half of the arm's contacts who gave a reason for declining gave
  one of ``reprice.on_reasons`` (default ``price``), with the gate's confidence (Wilson lower
  bound above one half): price, not fit, is why it failed;
* else **drop**, saying why (the declines were not mostly on price, or no reason was given).

With it, two figures for the analyst, labelled for what they are: the **break-even acceptance
cost at the measured response** (what an acceptance could cost for the arm to pay, *if* the
response stayed as measured — a smaller discount usually lowers the response too) and the
**incremental response the re-priced offer needs to pay** (``(c + a' r_c) / (v' - a')``: the
controls' response rate unchanged, every responder taking the new terms), against the
incremental response measured at the old price.

Pure: read-outs and the campaign in, decisions and the re-test's rows out; ``experiments.rollout``
saves the re-test as a plan of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.decisions.allocate import Plan, consent_matrix, eligibility
from models.decisions.campaign import Campaign, Channel, Offer
from models.decisions.groups import assign_groups, campaign_uniforms
from models.decisions.readout import GateDecision, wilson_interval

ID = "customer_id"
REPRICE, DROP = "re-price", "drop"
#: The basis of a re-test plan's rows: no expected figure, the re-test measures it.
RETEST_BASIS = "re-test at the re-priced terms: the effect is unknown until read"
RETEST_SUFFIX = "-reprice"


@dataclass(frozen=True)
class RepriceDecision:
    """A failed arm: re-priced and re-tested, or dropped; and the evidence."""

    arm: str
    offer: str  # the campaign's offer id
    channel: str
    action: str  # REPRICE or DROP
    reason: str
    confidence: float
    declined_with_reason: int  # the arm's contacts who declined and gave a reason
    declined_on_reasons: int  # of them, one of ``on_reasons``
    on_reasons: tuple[str, ...]
    share_on_reasons: float | None
    share_lower: float | None  # one-sided lower bound at ``confidence``
    measured_incremental_response: float
    break_even_acceptance_cost: float | None  # at the measured response
    required_incremental_response: float | None  # at the re-priced terms
    repriced_offer: str  # the re-priced offer's id
    repriced_terms: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def break_even_acceptance_cost(
    incremental_response: float, response_rate: float, value: float | None, cost_per_contact: float
) -> float | None:
    """The cost per acceptance at which the arm's profit per contact is zero **at the measured
    response**: ``(Δ v − c) / r_t`` (None when no response or valued per customer; negative:
    no acceptance cost makes it pay at that response)."""
    if value is None or not response_rate > 0:
        return None
    return (incremental_response * value - cost_per_contact) / response_rate


def required_incremental_response(
    control_rate: float, value: float | None, cost_per_acceptance: float, cost_per_contact: float
) -> float | None:
    """The incremental response at which an arm with these terms breaks even, the controls'
    response rate ``r_c`` unchanged and every responder taking the acceptance:
    ``(c + a r_c) / (v − a)``; None when valued per customer or ``v <= a`` (it never pays)."""
    if value is None or not value > cost_per_acceptance or not np.isfinite(control_rate):
        return None
    return (cost_per_contact + cost_per_acceptance * control_rate) / (value - cost_per_acceptance)


def reprice_decision(
    read: Mapping[str, Any], offer: Offer, channel: Channel, confidence: float
) -> RepriceDecision:
    """Re-price or drop a failed arm of ``offer`` on ``channel`` (``offer.reprice`` given),
    from its read on its segment (``ArmReadout.as_dict()``: contacts, rates, incremental
    response, ``declined``: reason → (share of contacts, share of controls))."""
    rule = offer.reprice
    if rule is None:
        raise ValueError(f"offer {offer.id!r} has no reprice terms")
    new = offer.repriced()
    n_t = int(read["contacts"])
    declined = dict(read.get("declined") or {})
    counts = {k: int(round(float(v[0]) * n_t)) for k, v in declined.items() if _finite(v[0])}
    given = sum(counts.values())
    on = sum(n for k, n in counts.items() if k in rule.on_reasons)
    share = on / given if given else None
    lower = float(wilson_interval(on, given, 2 * confidence - 1)[0]) if given else None
    delta = float(read["incremental_response"])
    r_t, r_c = float(read["response_rate"]), float(read["control_rate"])
    cost = float(channel.cost_per_contact)
    even = break_even_acceptance_cost(
        delta, r_t, offer.value if offer.value_source == "offer" else None, cost
    )
    need = required_incremental_response(
        r_c, new.value if new.value_source == "offer" else None, new.cost_per_acceptance, cost
    )
    why_terms = ", ".join(
        f"{k} {getattr(offer, k)} → {getattr(new, k)}"
        for k in ("value", "cost_per_acceptance")
        if getattr(offer, k) != getattr(new, k)
    )
    reasons = " / ".join(rule.on_reasons)
    if not given:
        action = DROP
        why = (
            f"dropped, not re-priced: no contact of {read['arm']} gave a reason for declining, "
            f"so price cannot be told from fit (reprice.on_reasons: {reasons})"
        )
    elif lower is not None and lower > 0.5:
        action = REPRICE
        assert share is not None
        why = (
            f"re-priced ({why_terms}): {on:,} of the {given:,} contacts who gave a reason "
            f"declined on {reasons} ({share:.0%}, more than half with {confidence:.0%} "
            f"confidence: lower bound {lower:.0%}); at the new terms it pays when its incremental "
            f"response reaches {_pp(need)} (measured at the old terms {_pp(delta)}) — re-tested "
            "on the customers it was planned for, not rolled out unread"
        )
    else:
        action = DROP
        assert share is not None and lower is not None
        why = (
            f"dropped, not re-priced: {on:,} of the {given:,} contacts who gave a reason "
            f"declined on {reasons} ({share:.0%}, lower bound {lower:.0%} at {confidence:.0%} "
            "confidence, not more than half): the offer, not its price, did not fit"
        )
    return RepriceDecision(
        arm=str(read["arm"]),
        offer=offer.id,
        channel=channel.name,
        action=action,
        reason=why,
        confidence=confidence,
        declined_with_reason=given,
        declined_on_reasons=on,
        on_reasons=tuple(rule.on_reasons),
        share_on_reasons=share,
        share_lower=lower,
        measured_incremental_response=delta,
        break_even_acceptance_cost=even,
        required_incremental_response=need,
        repriced_offer=new.id,
        repriced_terms={"value": new.value, "cost_per_acceptance": new.cost_per_acceptance},
    )


def _pp(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.2f} pp"


def repricing_of(
    campaign: Campaign,
    reads: list[Mapping[str, Any]],
    gate: list[GateDecision],
    confidence: float,
) -> list[RepriceDecision]:
    """The re-pricing decision of each arm the ``gate`` dropped (not one it held on too few
    counts) whose offer has ``reprice`` terms, from its read in ``reads``
    (``ArmReadout.as_dict()``; labels ``<offer data id>/<channel>``); an arm without such
    terms, or without a read, gets none."""
    failed = {d.arm for d in gate if not d.roll_out and d.reason.startswith("dropped")}
    by_label = {str(r["arm"]): r for r in reads}
    out = []
    for offer in campaign.offers:
        if offer.reprice is None:
            continue
        for channel in campaign.channels:
            label = f"{offer.data_id}/{channel.name}"
            if label in failed and label in by_label:
                out.append(reprice_decision(by_label[label], offer, channel, confidence))
    return out


def retest_campaign(campaign: Campaign, decisions: list[RepriceDecision]) -> Campaign:
    """The re-test's campaign: the re-priced offers on the failed arms' channels, the same
    control fraction, the re-priced offers' test-cell fraction, no budget of its own (the
    roll-out's budget pays for it), campaign id ``<id>-reprice`` (its own groups)."""
    chosen = [d for d in decisions if d.action == REPRICE]
    if not chosen:
        raise ValueError("no arm was re-priced")
    offers = {o.id: o for o in campaign.offers}
    names = {d.channel for d in chosen}
    fractions: set[float] = set()
    for d in chosen:
        rule = offers[d.offer].reprice
        if rule is not None and rule.test_cell_fraction is not None:
            fractions.add(rule.test_cell_fraction)
    if len(fractions) > 1:
        raise ValueError(
            f"offers[].reprice.test_cell_fraction: the re-priced arms {[d.arm for d in chosen]} "
            f"ask for different test cells {sorted(fractions)}; one re-test has one"
        )
    test = fractions.pop() if fractions else campaign.test_cell_fraction
    if test + campaign.control_fraction > 1:
        raise ValueError("offers[].reprice.test_cell_fraction + control_fraction must be at most 1")
    repriced = [offers[o].repriced() for o in dict.fromkeys(d.offer for d in chosen)]
    definition = campaign.model_dump(mode="json")
    definition.update(
        campaign_id=f"{campaign.campaign_id}{RETEST_SUFFIX}",
        offers=[o.model_dump(mode="json") for o in repriced],
        channels=[c.model_dump(mode="json") for c in campaign.channels if c.name in names],
        budget={},
        test_cell_fraction=test,
    )
    return Campaign.model_validate(definition)


def retest_rows(
    customers: pd.DataFrame,
    arm_of: Mapping[str, str],
    decisions: list[RepriceDecision],
    retest: Campaign,
    response_rate: Mapping[str, float],
    *,
    eligible_as_planned: bool = False,
) -> pd.DataFrame:
    """The re-test's per-customer rows (the plan table's layout): each customer of
    ``customers`` (``customer_id``, ``person_id``, ``household_id``, the consent and
    eligibility columns) whose failed arm (``arm_of``: customer id → arm label) was re-priced
    gets the re-priced offer on the arm's channel, in ``retest``'s groups (a hash of the
    customer: control, test — contacted at the new terms — or roll-out, waiting for the
    re-test's read). Consent for the channel and the re-priced offer's eligibility are checked
    again on ``customers`` (excluded with ``no_consent`` / ``not_eligible``). No expected
    incremental figure: the re-test measures it; ``expected_spend`` is the contact cost plus
    the acceptance cost at ``response_rate`` (per arm: ``retest_response_rate``).
    ``eligible_as_planned``: the eligibility is not checked again — the customers were planned
    for the same offer, whose re-priced version has the same eligibility, on the same plan date
    (for a caller that has the plan's rows and the consent, not the customers' attributes)."""
    chosen = {d.arm: d for d in decisions if d.action == REPRICE}
    frame = customers[customers[ID].astype(str).isin({c for c, a in arm_of.items() if a in chosen})]
    frame = frame.drop_duplicates(ID).reset_index(drop=True)
    arm = frame[ID].astype(str).map(arm_of).to_numpy(dtype=object)
    offer = np.array([chosen[a].repriced_offer for a in arm], dtype=object)
    channel = np.array([chosen[a].channel for a in arm], dtype=object)
    consent = consent_matrix(retest, frame)
    eligible = (
        np.ones((len(frame), len(retest.offers)), dtype=bool)
        if eligible_as_planned
        else eligibility(retest, frame)
    )
    offer_at = {o.id: i for i, o in enumerate(retest.offers)}
    channel_at = {c.name: i for i, c in enumerate(retest.channels)}
    ok_consent = consent[np.arange(len(frame)), [channel_at[c] for c in channel]]
    elig = np.asarray(eligible)
    ok_elig = elig[np.arange(len(frame)), [offer_at[o] for o in offer]]
    reason = np.where(~ok_consent, "no_consent", np.where(~ok_elig, "not_eligible", ""))
    selected = reason == ""
    person = frame["person_id"] if "person_id" in frame.columns else frame[ID]
    group = np.full(len(frame), None, dtype=object)
    group[selected] = assign_groups(
        person[selected].astype(str),
        retest.campaign_id,
        retest.control_fraction,
        retest.test_cell_fraction,
    )
    terms = {o.id: o for o in retest.offers}
    costs = {c.name: c.cost_per_contact for c in retest.channels}
    spend = np.array(
        [
            costs[c] + terms[o].cost_per_acceptance * float(response_rate.get(a, 0.0))
            for o, c, a in zip(offer, channel, arm, strict=True)
        ]
    )
    return pd.DataFrame(
        {
            ID: frame[ID].astype(str),
            "person_id": person.astype(str),
            "household_id": (
                frame["household_id"] if "household_id" in frame.columns else person
            ).astype(str),
            "selected": selected,
            "group": group,
            "offer": pd.Series(offer).where(selected, None),
            "channel": pd.Series(channel).where(selected, None),
            "expected_spend": np.where(selected, spend, np.nan),
            "basis": RETEST_BASIS,
            "exclusion_reason": reason,
        }
    )


def retest_plan(rows: pd.DataFrame, retest: Campaign) -> Plan:
    """The re-test as a ``Plan`` (``retest_rows``' table, its totals per offer and channel, its
    exclusions and summary), saved like any plan and read like any plan's test cell."""
    table = rows
    sel = table[table["selected"]]
    contacted = sel[sel["group"] != "control"]

    def totals(key: str, levels: list[str]) -> pd.DataFrame:
        out = pd.DataFrame(index=pd.Index(levels, name=key))
        out["selected"] = sel.groupby(key).size().reindex(levels, fill_value=0)
        out["contacted"] = contacted.groupby(key).size().reindex(levels, fill_value=0)
        out["control"] = out["selected"] - out["contacted"]
        out["expected_spend_contacted"] = (
            contacted.groupby(key)["expected_spend"].sum().reindex(levels).fillna(0.0)
        )
        return out.reset_index()

    reasons = table.loc[~table["selected"], "exclusion_reason"]
    exclusions = {str(r): int(n) for r, n in reasons.value_counts().sort_index().items()}
    summary: dict[str, Any] = {
        "campaign_id": retest.campaign_id,
        "objective_name": retest.objective,
        "basis": RETEST_BASIS,
        "base": int(len(table)),
        "selected": int(len(sel)),
        "contacted": int(len(contacted)),
        "control": int((sel["group"] == "control").sum()),
        "test_cell": int((sel["group"] == "test").sum()),
        "rollout": int((sel["group"] == "rollout").sum()),
        "excluded": exclusions,
        "expected_spend_selected": float(sel["expected_spend"].sum()),
        "expected_spend_contacted": float(contacted["expected_spend"].sum()),
        "solver": {"method": "none: a re-test takes every held customer of a re-priced arm"},
        "constraints": {},
    }
    return Plan(
        table,
        totals("offer", retest.offer_ids),
        totals("channel", retest.channel_names),
        exclusions,
        summary,
    )


def within_budget(
    rows: pd.DataFrame,
    money: float | None,
    contacts: int | None,
    capacity: Mapping[str, int | None],
) -> pd.DataFrame:
    """The re-test's rows cut to what the campaign has left after its roll-out: the test cell
    first, then the roll-out group waiting for the read (each in the rows' order), kept while
    the expected spend, the contacts and each channel's capacity (``None``: no limit) hold;
    the others are excluded with ``budget_or_capacity``. Controls cost nothing."""
    out = rows.reset_index(drop=True).copy()
    spend = out["expected_spend"].to_numpy(dtype=float)
    spent, used = 0.0, 0
    by_channel: dict[str, int] = {}
    cut: list[int] = []
    # within each group in an order drawn by a hash of the customer: the test cell kept is a
    # random part of it, whatever order the customers came in
    rank = np.argsort(campaign_uniforms(out[ID].astype(str), "re-test budget order"), kind="stable")
    ranked = out.index[rank]
    chosen = out["selected"].to_numpy(bool)
    group = out["group"].to_numpy(dtype=object)
    channel = out["channel"].astype(str).to_numpy()
    order = [i for g in ("test", "rollout") for i in ranked if chosen[i] and group[i] == g]
    for i in order:
        ch, cost = str(channel[i]), float(spend[i])
        limit = capacity.get(ch)
        if (
            (money is not None and spent + cost > money + 1e-9)
            or (contacts is not None and used + 1 > contacts)
            or (limit is not None and by_channel.get(ch, 0) + 1 > limit)
        ):
            cut.append(i)
            continue
        spent, used = spent + cost, used + 1
        by_channel[ch] = by_channel.get(ch, 0) + 1
    out.loc[cut, ["selected", "group", "offer", "channel"]] = [False, None, None, None]
    out.loc[cut, "expected_spend"] = np.nan
    out.loc[cut, "exclusion_reason"] = "budget_or_capacity"
    return out


#: What a campaign has left: money, contacts and each channel's capacity (None: no limit).
Left = tuple[float | None, int | None, dict[str, int | None]]


def budget_left(
    campaign: Campaign, spent: float, contacts: int, by_channel: Mapping[str, int]
) -> Left:
    """The campaign's budgets less what was used: ``spent`` money, ``contacts`` and
    ``by_channel`` contacts per channel (each floored at 0; None where there is no limit)."""
    b = campaign.budget
    return (
        None if b.money is None else max(float(b.money) - spent, 0.0),
        None if b.contacts is None else max(int(b.contacts) - contacts, 0),
        {
            c.name: None if c.capacity is None else max(c.capacity - by_channel.get(c.name, 0), 0)
            for c in campaign.channels
        },
    )


def retest_response_rate(
    reads: list[Mapping[str, Any]], decisions: list[RepriceDecision]
) -> dict[str, float]:
    """The response rate per re-priced arm that prices the re-test's acceptances for its
    budget: the rate measured at the old terms, or the rate the new terms need to pay (the
    controls' rate plus ``required_incremental_response``) when that is higher — a re-test
    worth running expects at least that response, so pricing it at the old rate could let it
    overspend. ``reads``: the wave's reads (``ArmReadout.as_dict()``)."""
    need = {d.arm: d.required_incremental_response for d in decisions if d.action == REPRICE}
    out = {}
    for r in reads:
        arm, rate = str(r["arm"]), float(r["response_rate"])
        required = need.get(arm)
        if required is not None:
            rate = max(rate, float(r["control_rate"]) + required)
        out[arm] = min(rate, 1.0)
    return out


def build_retest(
    campaign: Campaign,
    decisions: list[RepriceDecision],
    customers: pd.DataFrame,
    arm_of: Mapping[str, str],
    reads: list[Mapping[str, Any]],
    left: Left,
    *,
    eligible_as_planned: bool = False,
) -> tuple[Campaign, Plan] | None:
    """The re-test of the re-priced arms' held customers (``arm_of``: customer id → the failed
    arm) within what the campaign has ``left`` (``budget_left``): its campaign and plan, or
    None when no arm was re-priced or none of those customers is left to it. ``reads``: the
    wave's reads (``ArmReadout.as_dict()``), which price the re-test's acceptances
    (``retest_response_rate``)."""
    if not any(d.action == REPRICE for d in decisions):
        return None
    response_rate = retest_response_rate(reads, decisions)
    retest = retest_campaign(campaign, decisions)
    rows = retest_rows(
        customers, arm_of, decisions, retest, response_rate, eligible_as_planned=eligible_as_planned
    )
    if rows.empty:
        return None
    rows = within_budget(rows, *left)
    return retest, retest_plan(rows, retest)


def decisions_from(records: list[Mapping[str, Any]]) -> list[RepriceDecision]:
    """``RepriceDecision`` back from a read-out's JSON (``repricing``)."""
    out = []
    for r in records:
        fields = dict(r)
        fields["on_reasons"] = tuple(fields.get("on_reasons") or ())
        out.append(RepriceDecision(**fields))
    return out
