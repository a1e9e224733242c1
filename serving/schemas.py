"""Request and response schemas of the campaign API (pydantic; they make the OpenAPI document).

Each request body is a model here (``ScoreRequest``, ``OffersRequest``, ``TargetRequest``, ...) that
serving.service hands to BentoML as the API's ``input_spec``: the model BentoML would build from
the method's parameters ignores unknown fields, so a misspelt ``"budjet"`` would silently drop the
budget. Every request model, nested ones included, refuses unknown fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from features.segment_names import ABC_CLASSES, LIFECYCLE_STAGES, RFM_SEGMENTS
from models.decisions.campaign import Ranking
from models.decisions.value import BASIS_NON_CAUSAL, BASIS_UPLIFT
from serving.settings import HARD_MAX_BATCH, MAX_K

CustomerId = Annotated[
    str,
    Field(min_length=1, max_length=128, description="customer id"),
]
CustomerIds = Annotated[
    list[CustomerId],
    Field(
        min_length=1,
        max_length=HARD_MAX_BATCH,
        description=(
            "customer ids, each at most once; the service's max_batch setting may lower the "
            f"maximum of {HARD_MAX_BATCH}"
        ),
        examples=[["C0000001", "C0000002"]],
        json_schema_extra={"uniqueItems": True},
    ),
]
ModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="model family as served (GET /models lists them)",
        examples=["churn"],
    ),
]
Channel = Literal["email", "sms", "phone"]
ScoreKind = Literal["uplift", "response_probability", "churn_probability"]
Basis = Literal[BASIS_UPLIFT, BASIS_NON_CAUSAL]  # type: ignore[valid-type]
OfferKind = Literal["cross_sell", "up_sell", "any"]
RfmSegment = Literal[RFM_SEGMENTS]  # type: ignore[valid-type]
AbcClass = Literal[ABC_CLASSES]  # type: ignore[valid-type]
LifecycleStage = Literal[LIFECYCLE_STAGES]  # type: ignore[valid-type]
#: Largest value per conversion or cost per contact accepted (keeps every sum finite).
MAX_MONEY = 1e9


class Strict(BaseModel):
    """Unknown fields are errors and values are not coerced (no "5" for 5, no 0 for false)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RequestBody(BaseModel):
    """A request body: unknown fields are errors (its nested models are ``Strict``)."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- /score


class Reason(BaseModel):
    """One reason code: a model input, its value and its contribution to the score."""

    feature: str = Field(description="model input", examples=["days_since_last_order"])
    value: float | None = Field(
        description="the customer's input value (null: missing)", examples=[142.0]
    )
    contribution: float = Field(
        description="SHAP contribution (log-odds for probabilities); sign = direction",
        examples=[0.83],
    )


class CustomerSegment(BaseModel):
    """Where the customer sits in the base at the snapshot date."""

    rfm_code: str = Field(description="R, F, M quintile scores (5 = best)", examples=["545"])
    rfm_segment: str = Field(description="named RFM segment", examples=["Champions"])
    abc_class: str = Field(description="Pareto class by revenue (A: first 80 %)", examples=["A"])
    lifecycle_stage: str = Field(description="lifecycle stage", examples=["active"])
    win_back_priority: bool = Field(
        description="lapsed within the last 7 days: contact first (a first-week win-back works "
        "about 4x better than a fourth-week one)",
        examples=[False],
    )


class CustomerScore(BaseModel):
    """The score of one known customer."""

    customer_id: str = Field(description="customer identifier", examples=["C0000042"])
    score: float = Field(
        description="the model's output: probability, or value for CLV", examples=[0.27]
    )
    probability: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="probability (probability models; else null)",
        examples=[0.27],
    )
    value: float | None = Field(
        None, description="predicted value (value models such as CLV)", examples=[None]
    )
    gross_profit: float | None = Field(
        None,
        description="value models: the predicted revenue over the model's horizon times the "
        "margin the model records (global; else null)",
        examples=[None],
    )
    npv: float | None = Field(
        None,
        description="value models: that gross profit discounted to the snapshot date at the "
        "recorded annual rate, once at the horizon's end (else null)",
        examples=[None],
    )
    percentile: float = Field(
        ge=0.0,
        le=100.0,
        description="share of the current base scoring at or below, in %",
        examples=[81.4],
    )
    decile: int = Field(
        ge=1, le=10, description="decile in the current base (1 = top 10 %)", examples=[2]
    )
    segment: CustomerSegment | None = Field(description="segments (null if not computable)")
    reasons: list[Reason] = Field(description="top-3 reason codes (empty if not requested)")


class UnknownCustomer(BaseModel):
    """A requested id that the feature snapshot does not hold."""

    customer_id: str = Field(description="the id as sent", examples=["C9999999"])
    reason: str = Field(
        description="why it could not be scored", examples=["not in the feature snapshot"]
    )


class ScoreResponse(BaseModel):
    """Scores of the known customers, in request order, and the ids that could not be scored."""

    model: str = Field(description="model family", examples=["churn"])
    kind: Literal["probability", "value", "uplift"] = Field(description="what score means")
    registered_model: str = Field(
        description="MLflow registered model", examples=["churn-synthetic"]
    )
    alias: str = Field(description="registry alias served", examples=["champion"])
    version: str = Field(description="model version in the registry", examples=["3"])
    as_of: str = Field(description="date of the feature snapshot scored", examples=["2024-12-31"])
    scores: list[CustomerScore]
    unknown: list[UnknownCustomer]


# --------------------------------------------------------------------------- /next-best-offer


class OfferScore(BaseModel):
    """One ranked offer for a customer."""

    rank: int = Field(ge=1, description="1 = best", examples=[1])
    offer_id: str = Field(description="offer identifier", examples=["XS_cat_03"])
    kind: str = Field(description="cross_sell | up_sell | retention", examples=["cross_sell"])
    probability: float | None = Field(
        None, description="probability of acceptance", examples=[0.12]
    )
    expected_value: float | None = Field(
        None, description="probability x offer value", examples=[1.6]
    )


class CustomerOffers(BaseModel):
    """The best offers of one known customer."""

    customer_id: str = Field(examples=["C0000042"])
    offers: list[OfferScore]


class OffersResponse(BaseModel):
    """Next-best offers per known customer, in request order."""

    model: str = Field(examples=["nbo"])
    registered_model: str = Field(examples=["nbo-synthetic"])
    version: str = Field(examples=["1"])
    as_of: str = Field(examples=["2024-12-31"])
    kind: OfferKind = Field(examples=["any"])
    customers: list[CustomerOffers]
    unknown: list[UnknownCustomer]


# --------------------------------------------------------------------------- /target


class Audience(Strict):
    """Who may be targeted; every filter is optional and all given filters must hold."""

    segments: list[RfmSegment] | None = Field(
        None,
        min_length=1,
        description="named RFM segments",
        examples=[["At risk", "Can't lose them"]],
    )
    abc_classes: list[AbcClass] | None = Field(
        None, min_length=1, description="Pareto ABC classes", examples=[["A", "B"]]
    )
    lifecycle_stages: list[LifecycleStage] | None = Field(
        None, min_length=1, description="lifecycle stages", examples=[["lapsing", "lapsed"]]
    )
    min_score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="minimum model score (probability or uplift)",
        examples=[0.3],
    )


class Budget(Strict):
    """Limits on the contacts (control members cost nothing); omit both for no limit."""

    max_contacts: int | None = Field(
        None, ge=0, le=10**9, description="most customers contacted", examples=[500]
    )
    max_cost: float | None = Field(
        None,
        ge=0.0,
        le=MAX_MONEY * 10**6,
        allow_inf_nan=False,
        description="most money spent on contacts; needs a cost per contact above 0 "
        "(cost_per_contact, or the offer's cost)",
        examples=[250.0],
    )


class TargetedCustomer(BaseModel):
    """One selected customer, in ranking order."""

    rank: int = Field(ge=1, examples=[1])
    customer_id: str = Field(examples=["C0000042"])
    group: Literal["control", "test", "rollout"] = Field(
        description="control: held out, not contacted; test: the test cell; rollout: the rest",
        examples=["rollout"],
    )
    score: float = Field(
        description="the model's score, as score_kind says: uplift, P(respond | contacted) or "
        "P(churn)",
        examples=[0.41],
    )
    expected_profit: float = Field(
        description="score x value - cost: incremental with an uplift; a non-causal ranking "
        "value otherwise (basis)",
        examples=[18.3],
    )
    win_back_priority: bool = Field(description="lapsed in the last 7 days", examples=[False])
    lifecycle_stage: str | None = Field(examples=["lapsing"])
    rfm_segment: str | None = Field(examples=["At risk"])


class Exclusions(BaseModel):
    """Customers of the base not selected, each counted once under the first rule it failed."""

    no_consent: int = Field(description="no consent for the channel (missing = no)")
    not_eligible: int = Field(description="no score: the offer is not eligible for them")
    segment: int = Field(description="outside the segment / ABC filters")
    lifecycle_stage: int = Field(description="outside the lifecycle filter")
    min_score: int = Field(description="below the minimum score")
    unprofitable: int = Field(description="expected profit <= 0")
    budget: int = Field(description="eligible but beyond the budget")


class TargetSummary(BaseModel):
    """What the selection is expected to bring."""

    base: int = Field(description="customers in the snapshot")
    eligible: int = Field(description="passing consent, filters and profit")
    selected: int = Field(description="listed: contacted + control")
    contacted: int = Field(description="test cell + rollout")
    control: int
    test_cell: int
    rollout: int
    win_back_priority: int = Field(description="selected customers lapsed in the last 7 days")
    expected_responses: float | None = Field(
        description="sum of scores over contacted customers: incremental responses with an "
        "uplift model, non-incremental ones (those who would respond anyway included) with a "
        "response probability; null with a churn probability, which is no response"
    )
    expected_profit: float = Field(
        description="sum of score x value - cost over contacted: incremental profit with an "
        "uplift model; with a non-causal score its ranking value (value at risk P(churn) x value "
        "- cost for a churn model), not an effect of the contact"
    )
    spend: float = Field(description="contacted x cost per contact")
    excluded: Exclusions


class TargetResponse(BaseModel):
    """The campaign's selection and its summary."""

    campaign_id: str = Field(examples=["spring-winback-2025"])
    model: str = Field(examples=["uplift"])
    registered_model: str = Field(examples=["uplift-synthetic"])
    version: str = Field(examples=["3"])
    score_kind: ScoreKind = Field(
        description="what the score is: uplift (incremental effect of a contact), "
        "response_probability (P(respond | contacted)) or churn_probability (P(leave); ranks "
        "by value at risk, never as a response)",
        examples=["uplift"],
    )
    basis: Basis = Field(
        description="what every figure is based on (models.decisions.value): "
        f"{BASIS_UPLIFT!r} with an uplift model, else {BASIS_NON_CAUSAL!r}",
        examples=[BASIS_UPLIFT],
    )
    warning: str | None = Field(
        description="set when a non-causal score ranked the campaign (with the reason given)",
        examples=[None],
    )
    offer_id: str | None = Field(examples=["RET_01"])
    channel: Channel = Field(examples=["email"])
    as_of: str = Field(examples=["2024-12-31"])
    value_per_conversion: float
    cost_per_contact: float
    summary: TargetSummary
    customers: list[TargetedCustomer] = Field(description="empty when include_customers is false")


# --------------------------------------------------------------------------- /contactable


class ContactableResponse(BaseModel):
    """Which of the requested customers may be contacted on the channel, in request order.

    Only an explicit yes of the customers table is consent (a missing value or row is no); the
    answer holds nothing of a customer but the id in one of the three lists."""

    model: str = Field(description="family whose base's consent was read", examples=["churn"])
    registered_model: str = Field(examples=["churn-synthetic"])
    alias: str = Field(examples=["champion"])
    version: str = Field(examples=["3"])
    as_of: str = Field(description="date of the base's feature snapshot", examples=["2024-12-31"])
    channel: Channel = Field(examples=["email"])
    contactable: list[str] = Field(
        description="ids with an explicit yes for the channel", examples=[["C0000001"]]
    )
    not_contactable: list[str] = Field(
        description="ids in the base without consent for the channel (no, or nothing recorded)",
        examples=[["C0000002"]],
    )
    unknown: list[str] = Field(
        description="ids not in the base (never contactable)", examples=[["C9999999"]]
    )


# --------------------------------------------------------------------------- /models, admin


class ShadowInfo(BaseModel):
    """Aggregates of the shadow model's scores against the served ones (never per customer)."""

    model_config = ConfigDict(extra="allow")
    alias: str
    version: str


class ModelInfo(BaseModel):
    """One loaded model."""

    family: str = Field(examples=["churn"])
    kind: str = Field(description="score | nbo | uplift", examples=["score"])
    output: str = Field(description="probability | value | ...", examples=["probability"])
    registered_model: str = Field(examples=["churn-synthetic"])
    alias: str = Field(examples=["champion"])
    version: str = Field(examples=["3"])
    run_id: str
    trained_at: str | None = Field(description="start of the training run (UTC)")
    metrics: dict[str, float] = Field(
        description="out-of-time test metrics of the run", examples=[{"test_roc_auc": 0.74}]
    )
    tags: dict[str, str]
    dataset: str = Field(examples=["synthetic"])
    feature_set: str = Field(examples=["churn_v1"])
    snapshot_as_of: str = Field(
        description="as-of date of the feature snapshot served", examples=["2024-12-31"]
    )
    customers: int = Field(description="customers in the snapshot")
    loaded_at: str
    monitoring: dict[str, Any] | None = Field(description="summary of monitor.json, if present")
    shadow: ShadowInfo | None
    served_from: Literal["memory", "online_store"] = Field(
        "memory",
        description="memory: model and snapshot loaded in this process; online_store: records "
        "published by `patron publish`, read per request (loaded_at: when published)",
    )
    publication: str | None = Field(None, description="the online store's publication id")


class ReloadInfo(BaseModel):
    """The last reload's outcome: while it failed, the old models answer and /readyz is 503."""

    ok: bool = Field(description="false while the last reload (poll or admin) failed")
    error: str | None = Field(None, description="why the last reload failed, one line")
    failed_at: str | None = None
    last_success_at: str | None = None
    failures: int = Field(0, description="failed reloads since start")


class ModelsResponse(BaseModel):
    """Every loaded model."""

    loaded_at: str
    models: list[ModelInfo]
    reload: ReloadInfo


class ReloadResponse(BaseModel):
    """What a reload changed."""

    swapped: bool = Field(description="a new state was built and swapped in")
    versions: dict[str, str] = Field(
        description="family -> version now served", examples=[{"churn": "4"}]
    )
    loaded_at: str


class ErrorResponse(BaseModel):
    """A client error."""

    error: str = Field(examples=["customer_ids: duplicated ids at positions 3"])
    field: str | None = Field(None, examples=["customer_ids"])
    request_id: str | None = None


# --------------------------------------------------------------------------- request fields
# The fields of the request bodies below (each API's parameters are its body's fields).

WithReasons = Annotated[
    bool, Field(strict=True, description="include the top-3 reason codes (SHAP)", examples=[True])
]
OffersK = Annotated[
    int, Field(strict=True, ge=1, le=MAX_K, description="offers per customer", examples=[3])
]
OffersKind = Annotated[OfferKind, Field(description="cross_sell, up_sell or any", examples=["any"])]
# Optional parameters are declared without ``| None`` and default to None: BentoML publishes a
# top-level parameter's type without its null branch, so an explicit null must be refused too.
OfferModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="NBO model (default: the one served)",
        examples=["nbo"],
    ),
]
CampaignId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="campaign identifier; fixes control and test-cell membership",
        examples=["winback-2025-03"],
    ),
]
ContactChannel = Annotated[
    Channel, Field(description="contact channel; consent for it is required", examples=["email"])
]
CampaignModel = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="uplift model ranking the audience by the incremental effect of a contact; "
        "a churn or response-probability model (default: the NBO model scoring offer_id) "
        "needs ranking.basis non_causal_score",
        examples=["uplift"],
    ),
]
CampaignOffer = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description="offer made (its value and cost are the defaults)",
        examples=["RET_01"],
    ),
]
TargetRanking = Annotated[
    Ranking,
    Field(
        description="what ranks the audience (models.decisions.campaign.Ranking): by default "
        "an uplift model's incremental effect; a churn or response-probability model ranks only "
        "with basis non_causal_score and a reason, its figures labelled non-incremental",
        examples=[{"basis": "non_causal_score", "reason": "no uplift model for this offer yet"}],
    ),
]
AudienceFilters = Annotated[Audience, Field(description="audience filters")]
CampaignBudget = Annotated[Budget, Field(description="contact and money limits")]
CostPerContact = Annotated[
    float,
    Field(
        strict=True,
        ge=0.0,
        le=MAX_MONEY,
        allow_inf_nan=False,
        description="default: the offer's cost, else 0",
        examples=[0.5],
    ),
]
ValuePerConversion = Annotated[
    float,
    Field(
        strict=True,
        ge=0.0,
        le=MAX_MONEY,
        allow_inf_nan=False,
        description="default: the offer's value, else 1 (profit counted in responses)",
        examples=[40.0],
    ),
]
ControlFraction = Annotated[
    float,
    Field(
        strict=True,
        ge=0.0,
        le=0.5,
        allow_inf_nan=False,
        description="share held out as control",
        examples=[0.1],
    ),
]
TestCellFraction = Annotated[
    float,
    Field(
        strict=True,
        ge=0.0,
        le=0.5,
        allow_inf_nan=False,
        description="share of the contacted put in the test cell (default 5 %, the CRM "
        "practice's test cell; 0 for none)",
        examples=[0.05],
    ),
]
WinBackFirst = Annotated[
    bool,
    Field(
        strict=True, description="rank customers lapsed in the last 7 days first", examples=[False]
    ),
]
ConsentChannel = Annotated[
    Channel,
    Field(
        description="contact channel whose consent is asked (the base's consent flags)",
        examples=["email"],
    ),
]
ConsentModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="served family whose base's consent is read (default: the only family "
        "served; GET /models lists them)",
        examples=["churn"],
    ),
]
IncludeCustomers = Annotated[
    bool,
    Field(
        strict=True,
        description="list the selected customers (else the summary only)",
        examples=[True],
    ),
]


# --------------------------------------------------------------------------- request bodies
# Optional fields default to None but are typed without ``| None``: BentoML publishes a top-level
# field's type without its null branch, so an explicit null is refused (leave the field out).


class ScoreRequest(RequestBody):
    """POST /score."""

    customer_ids: CustomerIds
    model: ModelName = "churn"
    reasons: WithReasons = True


class OffersRequest(RequestBody):
    """POST /next-best-offer."""

    customer_ids: CustomerIds
    k: OffersK = 3
    kind: OffersKind = "any"
    model: OfferModelName = None  # type: ignore[assignment]


class ContactableRequest(RequestBody):
    """POST /contactable."""

    customer_ids: CustomerIds
    channel: ConsentChannel
    model: ConsentModelName = None  # type: ignore[assignment]


class TargetRequest(RequestBody):
    """POST /target."""

    campaign_id: CampaignId
    channel: ContactChannel
    model: CampaignModel = None  # type: ignore[assignment]
    offer_id: CampaignOffer = None  # type: ignore[assignment]
    audience: AudienceFilters = None  # type: ignore[assignment]
    budget: CampaignBudget = None  # type: ignore[assignment]
    cost_per_contact: CostPerContact = None  # type: ignore[assignment]
    value_per_conversion: ValuePerConversion = None  # type: ignore[assignment]
    control_fraction: ControlFraction = 0.1
    test_cell_fraction: TestCellFraction = 0.05
    win_back_first: WinBackFirst = False
    include_customers: IncludeCustomers = True
    ranking: TargetRanking = None  # type: ignore[assignment]


# ---------------------------------------------------------------- /campaigns/plan, /offers
# The campaign definition is models.decisions.campaign.Campaign (docs/decisions.md). Inline, it is
# taken as an object and validated by the handler against that strict schema (unknown fields at
# any depth are a 400 naming their path, e.g. ``campaign.offers.0.valu``), in the same error shape.

PLAN_EXAMPLE: dict[str, Any] = {
    "campaign_id": "retention-2026-12",
    "offers": [
        {
            "id": "retention_email",
            "kind": "retention",
            "value": 40.0,
            "model": "uplift",
        }
    ],
    "channels": [{"name": "email", "cost_per_contact": 0.2}],
    "budget": {"contacts": 500},
}

PlanCampaignName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="a campaign the server is configured with (GET /offers lists them); give "
        "this or `campaign`",
        examples=["retention"],
    ),
]
InlineCampaign = Annotated[
    dict[str, Any],
    Field(
        description="a whole campaign definition (models.decisions.campaign.Campaign, "
        "docs/decisions.md; each offer names its served `model`); unknown fields at any level "
        "are refused naming their path; give this or `campaign_name`",
        examples=[PLAN_EXAMPLE],
    ),
]
ValueModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="served value (CLV) model giving the customer value of offers with "
        "value_source customer_value (default: the only served value model)",
        examples=["clv"],
    ),
]
PlanCustomerIds = Annotated[
    list[CustomerId],
    Field(
        min_length=1,
        max_length=HARD_MAX_BATCH,
        description="list only these customers' rows (the plan is always made over the whole "
        "base, so totals are the campaign's)",
        examples=[["C0000001"]],
    ),
]
SelectedOnly = Annotated[
    bool, Field(strict=True, description="list only the selected customers", examples=[False])
]
RowOffset = Annotated[
    int,
    Field(strict=True, ge=0, le=10**9, description="first row listed (paging)", examples=[0]),
]
MaxRows = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=HARD_MAX_BATCH,
        description="most customer rows listed (0: totals only)",
        examples=[1000],
    ),
]


SavePlan = Annotated[
    bool,
    Field(
        strict=True,
        description="store the plan, immutable, under its `plan_id` (the same inputs give the "
        "same id: saving again is a no-op); then post the wave's responses to "
        "/campaigns/{plan_id}/responses and read it at /campaigns/{plan_id}/readout",
        examples=[False],
    ),
]


class PlanRequest(RequestBody):
    """POST /campaigns/plan."""

    campaign_name: PlanCampaignName = None  # type: ignore[assignment]
    campaign: InlineCampaign = None  # type: ignore[assignment]
    value_model: ValueModelName = None  # type: ignore[assignment]
    customer_ids: PlanCustomerIds = None  # type: ignore[assignment]
    selected_only: SelectedOnly = False
    offset: RowOffset = 0
    max_rows: MaxRows = 1000
    save: SavePlan = False


class PlanRow(BaseModel):
    """One customer record of the base: what the plan does with it, or why not."""

    customer_id: str = Field(examples=["C0000042"])
    person_id: str = Field(description="the record's person (merge map; itself if none)")
    household_id: str = Field(description="household (person:<id> when none is known)")
    selected: bool
    group: Literal["control", "test", "rollout"] | None = Field(
        description="control: selected but held out; test: the test cell; rollout: the rest"
    )
    offer: str | None = Field(examples=["retention_email"])
    channel: str | None = Field(examples=["email"])
    expected_incremental_profit: float | None = Field(
        description="uplift x value - costs (uplift basis only; null otherwise)"
    )
    expected_incremental_responses: float | None = Field(description="uplift (uplift basis)")
    non_causal_ranking_value: float | None = Field(
        description="non-causal basis only: NOT an incremental effect"
    )
    expected_spend: float | None = Field(description="channel cost + offer cost x P(accept)")
    basis: str = Field(examples=["incremental (uplift)"])
    exclusion_reason: str | None = Field(
        description="first rule failed (docs/decisions.md); null when selected",
        examples=["no_consent"],
    )


class PlanTotal(BaseModel):
    """Totals of one offer or channel over the selected customers."""

    name: str = Field(description="offer id or channel name")
    selected: int
    contacted: int
    control: int
    expected_incremental_profit_contacted: float | None = Field(
        description="uplift basis only (null otherwise)"
    )
    non_causal_ranking_value_contacted: float | None = Field(
        description="non-causal basis only: NOT an incremental effect"
    )
    expected_spend_contacted: float


class PlanInput(BaseModel):
    """Which served model gave an offer's estimate, and what that estimate is."""

    offer_id: str
    model: str = Field(description="served model key")
    registered_model: str
    version: str
    estimate: Literal["uplift", "churn_probability", "response_probability", "customer_value"]
    basis: str | None = Field(
        None,
        description="what the estimate is, when a word is not enough (customer_value: present "
        "value of the expected gross profit, or revenue when the model records no margin)",
    )


class PlanCheck(BaseModel):
    """Selected + excluded (every reason) = the base."""

    base: int
    selected: int
    excluded: int
    adds_up: bool


class PlanSummary(BaseModel):
    """The plan's figures (over the whole base, whatever rows are listed)."""

    basis: str = Field(description="what every figure is based on")
    incremental: bool = Field(description="false: ranked by a non-causal score")
    warning: str | None = Field(description="set when the figures are not incremental")
    objective: str
    base: int
    selected: int
    contacted: int
    control: int
    test_cell: int
    rollout: int
    expected_incremental_profit_contacted: float | None
    expected_incremental_responses_contacted: float | None
    non_causal_ranking_value_contacted: float | None
    expected_spend_selected: float
    expected_spend_contacted: float
    solver: dict[str, Any] = Field(description="method, objective, bound, gap, seconds, ...")
    constraints: dict[str, dict[str, float]] = Field(
        description="per budget / capacity: its limit and what the selected use"
    )


class PlanPage(BaseModel):
    """Which rows are listed."""

    offset: int
    returned: int
    total_rows: int = Field(description="rows matching the filters")
    next_offset: int | None = Field(description="null on the last page")


class PlanResponse(BaseModel):
    """A campaign plan: per customer, totals, exclusions, the check, the inputs used."""

    campaign_id: str
    source: str = Field(description="configured:<name> or inline", examples=["configured:ret"])
    dataset: str
    as_of: str = Field(description="snapshot date of the base planned")
    inputs: list[PlanInput]
    value_model: list[PlanInput] = Field(
        description="the value (CLV) model of customer_value offers (empty when none is needed)"
    )
    history: str = Field(description="where contact history came from, or why there is none")
    households: str = Field(description="where households and duplicates came from")
    summary: PlanSummary
    by_offer: list[PlanTotal]
    by_channel: list[PlanTotal]
    excluded: dict[str, int] = Field(description="customers per exclusion reason")
    check: PlanCheck
    page: PlanPage
    customers: list[PlanRow]
    unknown: list[UnknownCustomer] = Field(description="customer_ids not in the base")
    plan_id: str | None = Field(
        None,
        description="with save: the stored plan's id (null without save)",
        examples=["retention-2026-12-2024-12-31-1a2b3c4d"],
    )
    plan_created: bool | None = Field(
        None, description="with save: false when the identical plan was stored already"
    )


class ListedOffer(BaseModel):
    """One offer of a configured campaign."""

    offer_id: str
    kind: str
    value: float | None
    value_source: str
    cost_per_acceptance: float
    model: str | None = Field(description="served model estimating it")
    model_served: bool = Field(description="that model is loaded now")


class ConfiguredCampaign(BaseModel):
    """A campaign the server is configured with."""

    name: str
    campaign_id: str
    ranking_basis: str
    objective: str
    channels: list[str]
    offers: list[ListedOffer]


class ModelOffer(BaseModel):
    """An offer a served next-best-offer model ranks."""

    model: str
    offer_id: str
    kind: str | None
    value: float | None


class OffersListResponse(BaseModel):
    """The offers the service can plan with."""

    campaigns: list[ConfiguredCampaign]
    model_offers: list[ModelOffer] = Field(description="offers of served NBO models")


# --------------------------------------------------------------------------- the campaign loop
# POST /campaigns/{plan_id}/responses and GET /campaigns/{plan_id}/readout (ops routes): the
# wave of a saved plan, read against its control group (models.decisions.plan_store, .readout).


class CampaignResponse(Strict):
    """One contact's response (the campaign_history layout); the contact id is the customer id."""

    customer_id: CustomerId = Field(examples=["C0000042"])
    responded: bool = Field(
        description="responded within the campaign window (true / false)", examples=[False]
    )
    reason: str | None = Field(
        None,
        max_length=64,
        description="the reason given with a (negative) response, e.g. price",
        examples=["price"],
    )
    value: float | None = Field(
        None,
        ge=-MAX_MONEY,
        le=MAX_MONEY,
        allow_inf_nan=False,
        description="the response's value, kept with it (the read-out values a response at "
        "its offer's value, as the plan did)",
        examples=[40.0],
    )


class ResponsesRequest(RequestBody):
    """POST /campaigns/{plan_id}/responses."""

    responses: list[CampaignResponse] = Field(
        min_length=1,
        max_length=HARD_MAX_BATCH,
        description="the wave's responses; idempotent by customer_id: the same response again "
        "is a no-op, a different one for a stored contact a 409 naming the field",
        examples=[[{"customer_id": "C0000042", "responded": False, "reason": "price"}]],
    )


class RejectedResponse(BaseModel):
    """A posted response not read: kept beside the plan with the reason."""

    index: int = Field(description="position in the posted list")
    customer_id: str
    reason: str = Field(examples=["not in the plan's test cell or control group"])


class ResponsesResponse(BaseModel):
    """What a batch of responses did."""

    plan_id: str
    received: int
    accepted: int = Field(description="responses stored now")
    unchanged: int = Field(description="identical to a response stored already (a retry)")
    rejected: list[RejectedResponse] = Field(
        description="not in the plan's test cell or control group: kept with the reason"
    )
    stored: int = Field(description="responses stored for the plan in all")
    wave: int = Field(description="the plan's test cell and control group")


class ArmReadoutOut(BaseModel):
    """One arm's wave against its plan segment's controls (null: not measurable yet)."""

    arm: str = Field(description="offer/channel", examples=["RET_01/email"])
    contacts: int
    responders: int
    control: int
    control_responders: int
    response_rate: float | None
    control_rate: float | None
    incremental_response: float | None
    incremental_response_ci: list[float | None] = Field(description="at the confidence level")
    profit_per_contact: float | None
    profit_per_contact_ci: list[float | None]
    profit_lower_one_sided: float | None = Field(description="the gate's figure")
    profit_se: float | None
    incremental_profit: float | None
    expected_incremental_response: float | None = Field(
        description="the plan's expectation per contact (actual vs expected)"
    )
    contradicts_model: bool | None = Field(
        description="the expectation lies outside the measured interval"
    )
    declined: dict[str, list[float | None]] = Field(
        description="reason -> [share of the arm's contacts, share of the control]"
    )
    level: float


class GateDecisionOut(BaseModel):
    """Roll an arm out or not, and why."""

    arm: str
    roll_out: bool
    reason: str
    confidence: float


class RepriceDecisionOut(BaseModel):
    """A dropped arm whose offer has re-priced terms: re-priced (re-tested at the new terms)
    or dropped, and the evidence (models.decisions.repricing)."""

    arm: str = Field(examples=["UP_T3/email"])
    offer: str
    channel: str
    action: Literal["re-price", "drop"]
    reason: str
    confidence: float
    declined_with_reason: int = Field(description="contacts who declined and gave a reason")
    declined_on_reasons: int = Field(description="of them, one of on_reasons")
    on_reasons: list[str]
    share_on_reasons: float | None
    share_lower: float | None = Field(description="one-sided lower bound at the confidence")
    measured_incremental_response: float | None
    break_even_acceptance_cost: float | None = Field(
        description="the acceptance cost at which the arm breaks even at the measured response"
    )
    required_incremental_response: float | None = Field(
        description="the incremental response the re-priced offer needs to break even"
    )
    repriced_offer: str
    repriced_terms: dict[str, float | None]


class ReadoutResponse(BaseModel):
    """A saved plan's wave read against its control group, and the roll-out gate."""

    plan_id: str
    read_at: str
    confidence: float = Field(description="the gate's one-sided confidence")
    responses: int = Field(description="responses stored")
    read: int = Field(description="responses of the wave read")
    rejected: int = Field(description="responses kept aside with a reason")
    wave_without_response: int
    arms: list[ArmReadoutOut]
    gate: list[GateDecisionOut]
    responses_sha256: str = Field(
        description="digest of the responses read (POST /campaigns/{plan_id}/rollout checks "
        "that the stored responses are still these)"
    )
    contradicting_arms: list[str]
    repricing: list[RepriceDecisionOut] = Field(
        default_factory=list,
        description="each dropped arm whose offer has re-priced terms: re-priced or dropped",
    )
    expected_by_arm: list[dict[str, Any]] = Field(
        description="the plan's expected figures per arm (plan.json's by_arm)"
    )


class SavedPlanResponse(BaseModel):
    """A saved plan as it was saved: its record and a page of its customer rows."""

    plan_id: str
    campaign_id: str
    as_of: str = Field(description="snapshot date the plan was made on")
    created_at: str | None
    inputs: dict[str, Any] = Field(description="what the plan was made from (models, versions)")
    summary: dict[str, Any] = Field(description="the plan's totals when it was made")
    by_arm: list[dict[str, Any]] = Field(description="expected figures per offer/channel arm")
    page: PlanPage
    customers: list[PlanRow]


# POST /campaigns/{plan_id}/rollout and GET /campaigns/{plan_id}/rollout (ops routes): the
# roll-out of a saved plan on its recorded read-out (models.decisions.saved_rollout).


class RolloutReadout(BaseModel):
    """The recorded read-out a roll-out went on."""

    read_at: str | None
    confidence: float | None
    read: int | None = Field(description="responses of the wave read")
    responses_sha256: str | None
    gate: list[list[Any]] = Field(
        description="[arm, roll_out] per arm", examples=[[["RET_01/email", True]]]
    )


class RolloutConsent(BaseModel):
    """Where the consent checked at the roll-out came from."""

    checked: bool
    source: str = Field(examples=["served base synthetic/churn_v1 as of 2024-01-01 (loaded ...)"])


class RolloutArm(BaseModel):
    """One arm of the plan's roll-out group."""

    arm: str = Field(description="offer/channel", examples=["RET_01/email"])
    offer: str
    channel: str
    roll_out: bool | None = Field(description="the gate's decision; null: not read")
    gate_reason: str
    customers: int = Field(description="of the plan's roll-out group, given this arm")
    contacted: int
    held: int
    held_for_consent: int = Field(description="held: consent withdrawn or not found now")
    expected_incremental_profit_contacted: float | None = Field(
        description="the plan's expectation over the contacted (null: a non-causal plan)"
    )


class RolloutTotals(BaseModel):
    """The roll-out's counts."""

    customers: int
    contacted: int
    held: int
    held_for_consent: int
    arms_rolled_out: list[str]
    expected_incremental_profit_contacted: float | None


class RolloutRetest(BaseModel):
    """The re-test of the re-priced arms' held customers: a plan of its own."""

    plan_id: str | None = Field(
        description="the re-test plan (read it like any saved plan); null: none was made"
    )
    why: str | None = Field(default=None, description="why none was made")
    customers: int | None = None
    test_cell: int | None = Field(default=None, description="contacted at the new terms")
    control: int | None = None
    waiting: int | None = Field(default=None, description="waiting for the re-test's read")
    excluded: dict[str, int] | None = None


class RolloutResponse(BaseModel):
    """A saved plan's roll-out, recorded from its read-out."""

    plan_id: str
    created: bool = Field(description="false: recorded already from the same read-out")
    recorded_at: str
    readout: RolloutReadout
    consent: RolloutConsent
    by_arm: list[RolloutArm]
    totals: RolloutTotals
    retest: RolloutRetest | None = Field(
        default=None,
        description="a dropped arm re-priced by the read-out (its declines were mostly on "
        "price): its held customers re-tested at the new terms (docs/campaign_loop.md §3)",
    )


class RolloutRow(BaseModel):
    """One customer of the plan's roll-out group."""

    customer_id: str
    offer: str
    channel: str
    arm: str
    decision: Literal["contact", "held"]
    reason: str = Field(
        examples=["consent withdrawn since the plan", "arm not read in the test cell"]
    )
    expected_incremental_profit: float | None


class RolloutPageResponse(BaseModel):
    """The recorded roll-out and a page of its rows."""

    plan_id: str
    recorded_at: str
    readout: RolloutReadout
    consent: RolloutConsent
    by_arm: list[RolloutArm]
    totals: RolloutTotals
    retest: RolloutRetest | None = None
    page: PlanPage
    customers: list[RolloutRow]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its nested models written in place (no ``$defs``): for an
    ops route's documented body, which FastAPI does not add to the document's components."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    out: dict[str, Any] = resolve(schema)
    return out
