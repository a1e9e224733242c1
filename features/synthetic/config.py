"""What to generate (``SyntheticConfig``, ``CampaignSpec``) and the constants that parameterise
the synthetic world: purchase rates, seasonality, price tiers, dirt and campaign effects."""

from __future__ import annotations

from datetime import date
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

GENERATOR_VERSION = 1
YEAR_DAYS = 365.25
DAY_SECONDS = 86_400
SIGNUP_MARGIN_DAYS = 60
POPULARITY_SLOTS = 4096  # resolution of the product-popularity lookup table

# Latent-parameter distributions (rates per year); tuned so that ~1 000 customers give ~10-20 k
# transaction rows over 3 years, ~35-45 % of active customers churn within 90 days and the top
# 20 % of customers hold ~65 % of the revenue.
LAMBDA_MEAN, LAMBDA_SHAPE = 6.0, 3.0
MU_MEAN, MU_SHAPE = 0.33, 3.0  # typical lifetime 1 / 0.33 = 3 years
SPEND_SHAPE = 0.5
DIRICHLET_CONCENTRATION = 2.5
LINES_BASE, LINES_PER_SPEND = 0.45, 0.35
QTY_PER_SPEND = 0.25
MAIN_CHANNEL_LOYALTY = 0.75
CHANNELS = ("web", "store", "app")
CHANNEL_SHARES = (0.5, 0.3, 0.2)
RETURN_DELAY_DAYS = (1, 21)

MONTH_FACTORS = np.array([0.85, 0.80, 0.90, 0.95, 0.95, 0.90, 0.88, 0.92, 0.95, 1.00, 1.35, 1.60])
WEEKDAY_FACTORS = np.array([0.95, 0.92, 0.95, 1.00, 1.05, 1.10, 1.03])  # Monday..Sunday
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
SEASON_NORM = float(MONTH_FACTORS @ _DAYS_IN_MONTH / 365.0 * WEEKDAY_FACTORS.mean())

# Hour-of-day weights per channel (web, store, app).
HOUR_WEIGHTS = np.array(
    [
        [1, 1, 0.5, 0.3, 0.3, 0.5, 1, 2, 3, 4, 5, 5, 6, 6, 5, 5, 5, 6, 7, 8, 9, 8, 5, 2],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 6, 7, 8, 8, 7, 7, 7, 8, 8, 6, 0, 0, 0, 0],
        [1, 0.5, 0.3, 0.2, 0.2, 0.5, 2, 4, 5, 4, 4, 4, 5, 5, 4, 4, 4, 5, 6, 7, 8, 8, 6, 3],
    ],
    dtype=float,
)

TIER_BASE = np.array([0.0, -0.5, -1.6])
TIER_SLOPE = np.array([0.0, 0.9, 1.8])

# Corrupted values of the dirty transaction rows.
BAD_TS = ("2023-13-45 99:00:00", "not a date", "2024-02-30 10:00:00", "31/12/2023 25:61")
BAD_AMOUNT = ("n/a", "N/A", "-", "abc")

# Campaign responses: the reasons non-responders give and the shape of the treatment effects.
REASONS = ("price", "not relevant", "no need", "unsubscribed")
REASON_GIVEN = 0.4  # share of (unsuppressed) treated non-responders who say why
UNSUBSCRIBE_GIVEN_SUPPRESSED = 0.6
UPLIFT_PEAK_DAYS, UPLIFT_WIDTH = 60.0, 0.7  # g(r): lapsing customers respond most
HEAVY_ORDERS = 6.0  # h(f): the effect halves at 6 orders a year
DOG_ORDERS, DOG_SLOPE, DOG_RECENCY = 10.0, 2.0, 45.0  # s: frequent and recent buyers

# Multi-arm campaigns: the contact channels (each gated by the customers' ``consent_<channel>``),
# how much of the offer's effect each carries to a customer (``channel_fit``) and how much more
# than an e-mail it annoys (it scales the sleeping-dog probability ``s``).
CONTACT_CHANNELS = ("email", "sms", "phone")
CHANNEL_SUPPRESSION = {"email": 1.0, "sms": 1.2, "phone": 1.5}
SMS_BASE, SMS_RECENT, SMS_RECENCY = 0.5, 1.0, 45.0  # sms: a reminder, works on the recently active
PHONE_SPAN = 2.4  # phone: a personal call, works on high spenders: 2.4 spend / (1 + spend)

# Prospects (opt-in, ``prospects``): people who visit, may register, and may place a first order.
# Interest fades as exp(-(t - a) / INTEREST_DAYS) after the first visit ``a``; a latent
# ``z ~ N(0, 1)`` scales the visit, registration and conversion rates (synthetic/prospects.py).
PROSPECT_STREAM = 1_000_000  # chunk index offset of the prospects' random streams
INTEREST_DAYS = 90.0
VISIT_RATE, VISIT_INTEREST = 0.12, 0.8  # repeat visits per day at the first visit, exp(0.8 z)
REGISTER_RATE, REGISTER_INTEREST = 1 / 90, 0.7  # registrations per day at the first visit
CONVERT_RATE, CONVERT_INTEREST = 0.006, 0.9  # first orders per day at the first visit, exp(0.9 z)
REGISTERED_LIFT = 3.0  # the conversion rate once registered
AGE_LIFT = (0.7, 1.25, 1.3, 1.0, 0.8, 0.6)  # per age band (people.AGE_BANDS order)


class ArmSpec(BaseModel):
    """One treatment arm of a multi-arm campaign: an offer sent on a channel."""

    model_config = ConfigDict(extra="forbid")

    offer_id: str
    channel: Literal["email", "sms", "phone"]


class CampaignSpec(BaseModel):
    """One synthetic campaign: send date, offer (or arms), audience, control share and effects.

    With ``arms``, every treated audience member gets one arm drawn uniformly at random (a
    randomised multi-arm test: control ``control_share``, each arm ``(1 - control_share) / A``)
    and the audience needs consent on every arm's channel."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    send_date: date
    offer_id: str = "RET_01"
    arms: list[ArmSpec] = Field(
        default_factory=list, description="several (offer, channel) arms; empty = one e-mail offer"
    )
    window_days: int = Field(default=30, ge=1, le=365, description="response window from D")
    lookback_days: int = Field(default=365, ge=1, description="eligible: an order in these days")
    audience_share: float = Field(default=0.6, gt=0.0, le=1.0)
    control_share: float = Field(default=0.5, gt=0.0, lt=1.0)
    max_uplift: float = Field(default=0.35, ge=0.0, le=1.0, description="scale of q")
    sleeping_dog: float = Field(default=0.3, ge=0.0, le=1.0, description="scale of s")
    require_consent: bool = True

    @model_validator(mode="after")
    def _check_arms(self) -> CampaignSpec:
        if self.arms and "offer_id" in self.model_fields_set:
            raise ValueError(f"campaign {self.campaign_id}: give either offer_id or arms, not both")
        pairs = [(a.offer_id, a.channel) for a in self.arms]
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"campaign {self.campaign_id}: arms repeat an (offer, channel) pair")
        return self

    @property
    def offer_ids(self) -> list[str]:
        """The offers the campaign sends (one, or one per arm)."""
        return [a.offer_id for a in self.arms] if self.arms else [self.offer_id]

    @property
    def last_day(self) -> date:
        """The last day of the response window."""
        return date.fromordinal(self.send_date.toordinal() + self.window_days - 1)


class ProspectSpec(BaseModel):
    """Prospects: visitors and registered non-buyers with a known first-purchase process."""

    model_config = ConfigDict(extra="forbid")

    n_prospects: int = Field(ge=1, description="people who arrive by a first visit")
    truth_cutoffs: list[date] = Field(
        default_factory=list, description="first-purchase truth cutoffs (empty: truth_cutoffs)"
    )
    horizon_days: int | None = Field(
        None, ge=1, description="first-purchase truth horizon (None: horizon_days)"
    )


class SyntheticConfig(BaseModel):
    """What to generate: size, period, dirt, the churn-truth cutoffs and optional campaigns."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=42, ge=0)
    n_customers: int = Field(default=5_000, ge=1)
    start: date = date(2022, 1, 1)
    end: date = date(2024, 12, 31)
    n_categories: int = Field(default=8, ge=1, le=99)
    dirty_share: float = Field(default=0.002, ge=0.0, le=0.5)
    truth_cutoffs: list[date] = []
    horizon_days: int = Field(default=90, ge=1)
    # customers simulated per chunk: memory is bounded by the chunk, ~0.5 GB peak at 50 k (200 k
    # peaks at ~1.3 GB and is slower); results depend on it, as each chunk has its own seed
    chunk_customers: int = Field(default=50_000, ge=1)
    campaigns: list[CampaignSpec] = []
    prospects: ProspectSpec | None = None

    @model_validator(mode="after")
    def _check_dates(self) -> SyntheticConfig:
        if (self.end - self.start).days < SIGNUP_MARGIN_DAYS:
            raise ValueError(f"end must be at least {SIGNUP_MARGIN_DAYS} days after start")
        for cutoff in self.truth_cutoffs + self.prospect_cutoffs:
            if not self.start < cutoff <= self.end:
                raise ValueError(f"truth cutoff {cutoff} is not in (start, end]")
        self._check_campaigns()
        return self

    @property
    def n_prospects(self) -> int:
        """Prospects generated (0 without a ``prospects`` block)."""
        return self.prospects.n_prospects if self.prospects else 0

    @property
    def prospect_cutoffs(self) -> list[date]:
        """The cutoffs of the first-purchase truth, sorted."""
        if self.prospects is None:
            return []
        return sorted(set(self.prospects.truth_cutoffs or self.truth_cutoffs))

    @property
    def prospect_horizon(self) -> int:
        """The first-purchase truth horizon in days."""
        spec = self.prospects
        return spec.horizon_days if spec and spec.horizon_days else self.horizon_days

    def _check_campaigns(self) -> None:
        ids = [c.campaign_id for c in self.campaigns]
        if len(set(ids)) != len(ids):
            raise ValueError(f"campaign ids must be unique: {ids}")
        k = self.n_categories
        offers = {*(f"XS_cat_{c + 1:02d}" for c in range(k)), "UP_T1", "UP_T2", "UP_T3", "RET_01"}
        previous: CampaignSpec | None = None
        for c in sorted(self.campaigns, key=lambda c: c.send_date):
            if not self.start < c.send_date or c.last_day > self.end:
                raise ValueError(
                    f"campaign {c.campaign_id}: the send date must be after start "
                    f"and the window must end by end ({self.end})"
                )
            for offer_id in c.offer_ids:
                if offer_id not in offers:
                    raise ValueError(f"campaign {c.campaign_id}: unknown offer {offer_id!r}")
            if previous is not None and c.send_date <= previous.last_day:
                raise ValueError(
                    f"campaign windows overlap: {previous.campaign_id} and {c.campaign_id}"
                )
            for cutoff in self.truth_cutoffs:
                horizon_end = date.fromordinal(cutoff.toordinal() + self.horizon_days)
                if c.send_date <= horizon_end and c.last_day > cutoff:
                    raise ValueError(
                        f"campaign {c.campaign_id} overlaps the churn-truth horizon "
                        f"of {cutoff}: that truth would not hold"
                    )
            previous = c
