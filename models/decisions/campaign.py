"""A campaign definition: offers, channels, objective, budgets, contact and household policies.

One pydantic schema for the YAML file (``load_campaign``) and the HTTP request body of
``POST /campaigns/plan`` (where each offer's ``model`` names the served model estimating it).
Every model forbids unknown fields, so a typo (``budjet``) is an error that names the field
instead of silently removing a budget.

Consent follows the serving convention (``serving.targeting.consent_column``): channel ``c`` is
gated by the customers-table column ``consent_<c>``, and only an explicit yes counts
(True, 1, "true"/"yes"/"y"/"1"). A channel may name another column with ``consent_column``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

_NAME = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Strict):
    """A cap in contacts and/or money (expected spend: channel cost + offer cost x P(accept))."""

    contacts: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="At most this many contacts.", examples=[50_000]
    )
    money: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="At most this expected spend, in the campaign's currency."
    )


class Condition(_Strict):
    """One condition on a column of the customers table, e.g. ``tenure_months ge 6``."""

    column: str
    op: Literal["eq", "ne", "in", "not_in", "lt", "le", "gt", "ge"]
    value: Any = Field(description="A scalar, or a list for `in` / `not_in`.")

    @model_validator(mode="after")
    def _list_for_membership(self) -> Condition:
        if self.op in ("in", "not_in") and not isinstance(self.value, list | tuple):
            raise ValueError(f"condition on {self.column!r}: `{self.op}` needs a list value")
        return self


class Reprice(_Strict):
    """How to re-price an offer whose arm fails the roll-out gate on price (issue 12, item 3):
    the terms of the re-priced offer. Its customers are re-tested at these terms — a test cell
    and a control group of the customers the failed arm was planned for — never rolled out
    unread (docs/campaign_loop.md §3)."""

    value: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Margin of one incremental response at the new price (default: unchanged).",
    )
    cost_per_acceptance: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Paid on every acceptance at the new price, e.g. a bigger discount "
        "(default: unchanged).",
        examples=[12.0],
    )
    on_reasons: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["price"],
        min_length=1,
        description="The decline reasons that say the price, not the offer, failed: re-price "
        "only when more than half of the arm's contacts who gave a reason gave one of these, "
        "with the gate's confidence; else the arm is dropped.",
    )
    catalog_id: str | None = Field(
        default=None,
        min_length=1,
        description="The re-priced offer's id in the data (default: the offer's id in the data "
        "with `_REPRICED`).",
    )
    test_cell_fraction: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None,
        description="The share of the failed arm's held customers contacted at the new price "
        "(default: the campaign's test_cell_fraction); the campaign's control_fraction of them "
        "are its controls, the rest wait for the re-test's read.",
    )

    @model_validator(mode="after")
    def _some_term(self) -> Reprice:
        if self.value is None and self.cost_per_acceptance is None:
            raise ValueError("reprice: give the new `value` and/or `cost_per_acceptance`")
        return self


class Offer(_Strict):
    """An offer: what a response is worth, what an acceptance costs, who may get it."""

    id: str = Field(pattern=_NAME)
    kind: Literal["retention", "cross_sell", "up_sell", "win_back", "acquisition"]
    catalog_id: str | None = Field(
        default=None,
        min_length=1,
        description="The offer's id in the data (the offers table, campaign_history.offer_id), "
        "e.g. RET_01, when it differs from `id`; an arm model's arms are matched by it.",
        examples=["RET_01"],
    )
    value: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Margin of one incremental response (when value_source=offer)."
    )
    value_source: Literal["offer", "customer_value"] = Field(
        default="offer",
        description="`customer_value`: a response is worth the customer's value (e.g. the CLV "
        "margin kept by a retention offer), given per customer at planning time.",
    )
    cost_per_acceptance: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="Paid on every acceptance (discount, gift), incremental or not."
    )
    eligibility: list[Condition] = Field(
        default_factory=list, description="All must hold (AND); empty = everyone."
    )
    segments: list[str] | None = Field(
        default=None, description="If given, only customers whose `segment_column` is listed."
    )
    segment_column: str = "rfm_segment"
    budget: Budget = Field(default_factory=Budget)
    model: str | None = Field(
        default=None,
        min_length=1,
        description="For serving (POST /campaigns/plan): the served model (a key of the "
        "serving config's `models`) that estimates this offer's effect — an uplift model, or, "
        "only with `ranking.basis: non_causal_score`, a churn or response-probability model. "
        "`plan_campaign` ignores it: there the estimate is an argument.",
        examples=["uplift"],
    )

    reprice: Reprice | None = Field(
        default=None,
        description="When this offer's arm fails the roll-out gate and most of its contacts "
        "who gave a reason declined on price (`on_reasons`): re-test the arm's customers at "
        "these terms instead of dropping them.",
    )

    @property
    def data_id(self) -> str:
        """The id of the offer in the data: ``catalog_id``, else ``id``."""
        return self.catalog_id or self.id

    @model_validator(mode="after")
    def _value_given(self) -> Offer:
        if self.value_source == "offer" and self.value is None:
            raise ValueError(f"offer {self.id!r}: `value` is required when value_source=offer")
        r = self.reprice
        if r is not None:
            if r.value is not None and self.value_source != "offer":
                raise ValueError(
                    f"offer {self.id!r}: reprice.value only for value_source=offer (a "
                    "customer-valued response is worth the customer's value)"
                )
            same_value = r.value is None or r.value == self.value
            same_cost = r.cost_per_acceptance in (None, self.cost_per_acceptance)
            if same_value and same_cost:
                raise ValueError(
                    f"offer {self.id!r}: reprice gives the offer's own terms (value "
                    f"{self.value}, cost_per_acceptance {self.cost_per_acceptance}): change one"
                )
            if r.catalog_id == self.data_id:
                raise ValueError(
                    f"offer {self.id!r}: reprice.catalog_id is the offer's own id in the data"
                )
        return self

    def repriced(self) -> Offer:
        """The re-priced offer (``reprice``'s terms; id ``<id>_repriced``, its own id in the
        data, the same eligibility and segments, no budget of its own); ValueError when the
        offer has no ``reprice``."""
        r = self.reprice
        if r is None:
            raise ValueError(f"offer {self.id!r} has no reprice terms")
        return self.model_copy(
            update={
                "id": f"{self.id}_repriced",
                "catalog_id": r.catalog_id or f"{self.data_id}_REPRICED",
                "value": self.value if r.value is None else r.value,
                "cost_per_acceptance": (
                    self.cost_per_acceptance
                    if r.cost_per_acceptance is None
                    else r.cost_per_acceptance
                ),
                "budget": Budget(),
                "reprice": None,
            }
        )


class Channel(_Strict):
    """A contact channel: its cost, optional capacity and the consent column that gates it."""

    name: str = Field(pattern=_NAME, examples=["email", "sms", "phone", "direct_mail"])
    cost_per_contact: Annotated[float, Field(ge=0)]
    capacity: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="At most this many contacts on the channel (e.g. agent hours)."
    )
    consent_column: str | None = Field(
        default=None, description="Defaults to `consent_<name>` (the serving convention)."
    )
    uplift_multiplier: Annotated[float, Field(ge=0)] = Field(
        default=1.0,
        description="Scales a per-offer uplift estimate to this channel; ignored when the "
        "estimate is given per (offer, channel) arm.",
    )

    @property
    def consent(self) -> str:
        """The customers-table column holding this channel's consent."""
        return self.consent_column or f"consent_{self.name}"


class ContactPolicy(_Strict):
    """Fatigue rules counted from past contacts (``campaign_history``)."""

    max_contacts: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="At most this many contacts per customer in `window_days`, "
        "this campaign's contact included.",
    )
    window_days: Annotated[int, Field(ge=1)] = 30
    quiet_days_after_negative: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="No contact within this many days of a negative response."
    )
    quiet_days_by_reason: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Per reason given with the customer's last negative response (e.g. "
        "`unsubscribed: 3650`, `price: 30`): no contact within that many days; overrides "
        "`quiet_days_after_negative` for that reason. Offers can also use the reason: the "
        'planner gives eligibility rules the column `last_negative_reason` ("" when none), '
        "e.g. a discount only for those who declined on price.",
        examples=[{"unsubscribed": 3650, "price": 30}],
    )


class HouseholdPolicy(_Strict):
    """Households are the unit of a mailing; duplicate records collapse to one person first."""

    one_contact_per_household: bool = True


class Ranking(_Strict):
    """What ranks customers: an uplift estimate (default) or, explicitly, a non-causal score."""

    basis: Literal["uplift", "non_causal_score"] = "uplift"
    reason: str | None = Field(
        default=None, description="Why a non-causal score is acceptable here (required then)."
    )

    @model_validator(mode="after")
    def _reason_for_non_causal(self) -> Ranking:
        if self.basis == "non_causal_score" and not (self.reason and self.reason.strip()):
            raise ValueError("ranking.reason: say why a non-causal score may rank this campaign")
        return self


class CellSizing(_Strict):
    """Size each arm's test cell for the read it needs (docs/campaign_loop.md §1): the test
    fraction of the customers an arm is planned for is the one whose test contacts, against
    the arm's control customers, give the roll-out gate the chance ``power`` of passing the
    arm if the model's expected profit per contact on them is right (response noise only), at
    least the campaign's ``test_cell_fraction``, at most ``max_fraction``. The larger test
    cell comes out of the roll-out group: the same customers are contacted, more of them
    before the read."""

    power: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.8,
        description="The chance the gate passes an arm if the model's expectation is right.",
    )
    max_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.25,
        description="The largest test fraction of an arm's customers (also when the model "
        "expects no profit there, or no size would do).",
    )
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = Field(
        default=0.9, description="The gate's confidence the test cell is sized for."
    )


class Campaign(_Strict):
    """A whole campaign definition, validated."""

    campaign_id: str = Field(min_length=1)
    objective: Literal["incremental_profit", "incremental_responses"] = "incremental_profit"
    ranking: Ranking = Field(default_factory=Ranking)
    offers: list[Offer] = Field(min_length=1)
    channels: list[Channel] = Field(min_length=1)
    budget: Budget = Field(default_factory=Budget)
    contact_policy: ContactPolicy = Field(default_factory=ContactPolicy)
    household: HouseholdPolicy = Field(default_factory=HouseholdPolicy)
    test_cell_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    control_fraction: Annotated[float, Field(ge=0, le=1)] = 0.1
    test_cell_sizing: CellSizing | None = Field(
        default=None,
        description="Size each arm's test cell for the gate's power (default: every arm gets "
        "test_cell_fraction).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Campaign:
        for what, names in (
            ("offers", [o.id for o in self.offers]),
            ("channels", [c.name for c in self.channels]),
        ):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what}: duplicate ids {dup}")
        if self.test_cell_fraction + self.control_fraction > 1:
            raise ValueError("test_cell_fraction + control_fraction must be at most 1")
        sizing = self.test_cell_sizing
        if sizing is not None and sizing.max_fraction + self.control_fraction > 1:
            raise ValueError("test_cell_sizing.max_fraction + control_fraction must be at most 1")
        if sizing is not None and sizing.max_fraction < self.test_cell_fraction:
            raise ValueError(
                "test_cell_sizing.max_fraction: below test_cell_fraction, it would shrink the "
                "test cell it is there to size up"
            )
        channel_cost = max(c.cost_per_contact for c in self.channels)
        if (
            self.budget.money is not None
            and channel_cost == 0
            and not any(o.cost_per_acceptance > 0 for o in self.offers)
        ):
            raise ValueError(
                "budget.money: every channel and offer costs 0, so a money budget cannot bind; "
                "give costs (channels[].cost_per_contact, offers[].cost_per_acceptance) or drop it"
            )
        for i, o in enumerate(self.offers):
            if o.budget.money is not None and channel_cost == 0 and o.cost_per_acceptance == 0:
                raise ValueError(
                    f"offers[{i}].budget.money: offer {o.id!r} and every channel cost 0, so a "
                    "money budget cannot bind"
                )
        return self

    @property
    def needs_history(self) -> bool:
        """True when the plan reads past contacts: a contact policy, or an offer's rule on
        ``last_negative_reason``."""
        pol = self.contact_policy
        return (
            pol.max_contacts is not None
            or pol.quiet_days_after_negative is not None
            or bool(pol.quiet_days_by_reason)
            or any(c.column == "last_negative_reason" for o in self.offers for c in o.eligibility)
        )

    @property
    def offer_ids(self) -> list[str]:
        """Offer ids in definition order (the offer axis of every array)."""
        return [o.id for o in self.offers]

    @property
    def channel_names(self) -> list[str]:
        """Channel names in definition order (the channel axis of every array)."""
        return [c.name for c in self.channels]


def parse_campaign(data: dict[str, Any]) -> Campaign:
    """Validate a campaign given as a mapping (a parsed YAML file or a JSON request body)."""
    return Campaign.model_validate(data)


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign YAML file."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a campaign is a mapping of keys")
    return parse_campaign(data)
