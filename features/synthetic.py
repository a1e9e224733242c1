"""Deterministic synthetic CRM data with a known ground truth: Patron's default demo data.

Time runs in days from ``start`` 00:00. A cutoff date ``T`` follows ``features.definitions``: the
data known at ``T`` is every row dated on or before ``T`` (the whole day), the churn label looks at
days ``T+1 .. T+H`` and the lookback at days ``T-364 .. T``; so ``T`` is the instant ``T+1 00:00``.

The generative process, per customer ``i`` (all draws vectorised, chunk by chunk):

1. Sign-up on a day uniform over ``[start, end - 60 days]``; the first order is placed at sign-up.
2. Latent parameters drawn once (Pareto/NBD-like):
   purchase rate ``lambda_i ~ Gamma`` (mean ``LAMBDA_MEAN`` orders / year);
   drop-out rate ``mu_i ~ Gamma`` per year, lifetime after sign-up ``~ Exp(mu_i)``, then no orders;
   spend level ``m_i ~ Gamma`` (mean 1) driving the price tier, the quantities and the basket size;
   category preferences ``~ Dirichlet(concentration * popularity)``; a main channel.
3. While alive (and up to ``end``), repeat orders arrive as a Poisson process of intensity
   ``lambda_i * s(t)``, ``s`` a daily factor (month x weekday, high in November and December) of
   mean 1. It is simulated exactly: counts are Poisson of the integrated intensity and times invert
   the cumulative intensity ``S`` (piecewise linear on a daily grid). Each order then gets a time of
   day on the same day from a channel profile (stores open 9-20): daily counts are unchanged.
4. An order has ``1 + Poisson`` lines; a line draws a category from the customer's preferences, a
   price tier (1..3) from the spend level, a product by popularity within (category, tier) at the
   catalogue price, and a quantity. Amounts are computed in integer cents.
5. Returns: a line is returned with a category-specific probability (~4 %) 1-21 days after its
   order, as a row with negative quantity and amount, ``is_return = true``, order id
   ``<order_id>-R`` (one return time per order); returns that would fall after ``end`` have not
   happened and are absent.
6. Dirty rows: about ``dirty_share`` of the clean rows are copied and corrupted (missing customer
   id, unparseable ts, non-numeric amount, or missing order id) and appended, so the clean rows
   stay consistent with the truth.
7. Personal data are fake but deterministic (small word lists, ``example.*`` e-mail domains). About
   1 % of customers are duplicate records of another customer (same person, varied casing and
   whitespace) and about 12 % join another customer's household (same last name and address).

Truth. At cutoff ``T`` (instant ``t``), for customers with a non-return order on days
``T-364 .. T``: ``alive`` is the latent state at ``t``; ``p_churn = 1`` if dead, else (the
lifetime being memoryless, remaining ``R ~ Exp(mu)``) ``P(no order on days T+1 .. T+H) =
E_R[exp(-lambda * (S(t + min(R, H)) - S(t)))]``, which with a daily piecewise-constant ``s`` is
``sum_j mu / (mu + lambda c_j) * exp(-mu j - lambda dS_j) * (1 - exp(-(mu + lambda c_j)))
+ exp(-mu H - lambda dS_H)`` over the days ``j = 0 .. H-1`` of the horizon (``c_j`` = ``s`` on
day ``j``, ``dS_j = S(t + j) - S(t)``).

Campaigns (opt-in: ``campaigns``, empty by default; with none, every file is byte-identical to a
generator without them). Campaigns run in send-date order, after the organic orders of a chunk are
drawn and before its lines. A campaign sent on day ``D`` (contact time ``D 00:00``) sees the
customers' history at the cutoff ``T = D - 1``: recency ``r`` (days from the last order date to
``T``) and frequency ``f`` (orders on days ``T-364 .. T``) -- the features ``days_since_last_order``
and ``orders_count_365d`` -- including earlier campaigns' orders.

1. Audience: customers with an order in the ``lookback_days`` before ``T`` and e-mail consent
   (``require_consent``), each kept with probability ``audience_share``; each audience member is
   in the control group with probability ``control_share``, else treated (contacted).
2. A response is an order on days ``D .. D + W - 1`` (``W = window_days``), in either group.
   Control: the organic process alone, ``p_control = 1 - P(no order in (t, t + W])`` with the
   churn truth's formula (``t`` the instant ``T``; 0 for a customer dead at ``t``).
3. Treatment has two heterogeneous effects, functions of what is observable at ``T``:
   an *induced* order with probability ``q = max_uplift * rel * g(r) * h(f)``, where
   ``g(r) = exp(-(ln(1 + r) - ln(1 + 60))^2 / (2 * 0.7^2))`` peaks for lapsing customers (last
   order ~60 days ago), ``h(f) = 1 / (1 + (f / 6)^2)`` vanishes for heavy buyers (who buy anyway),
   and ``rel`` is the offer's relevance (1 for retention; ``1 - exp(-pref_k / popularity_k)`` for a
   cross-sell of category ``k``; ``min(1, 2 P(tier))`` for an up-sell); and *suppression* ("sleeping
   dogs": the contact annoys) with probability ``s = sleeping_dog * sigmoid((f - 10) / 2) *
   exp(-r / 45)``, which removes the customer's organic orders in the window. So ``p_treatment =
   (1 - s) * (1 - (1 - p_control) * (1 - q))`` and ``true_uplift = p_treatment - p_control``
   (negative for frequent, recent buyers). Induced orders are ordinary orders (lines, returns)
   placed on a uniform day of the window; responses are therefore exactly the orders in
   ``transactions.csv`` within the window.
4. Treated non-responders sometimes say why (``reason``): a suppressed customer says
   "unsubscribed" with probability 0.6; another gives a reason with probability 0.4, drawn with
   weights ``price`` ~ ``1.5 / (1 + m_i)`` (low spenders are price-sensitive), ``not relevant`` ~
   ``1.5 (1 - rel) + 0.1``, ``no need`` ~ ``exp(-r / 30) + 0.1`` (bought recently), ``unsubscribed``
   ~ 0.05. Control rows and responders have no reason.
5. ``truth_uplift.parquet`` holds, per audience member, ``p_control``, ``p_treatment`` and
   ``true_uplift`` (both groups: the average treatment effect over a campaign's audience is the
   mean of ``true_uplift``). The churn truth stays exact because campaign windows may not overlap
   a truth horizon (validated), nor each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.store import atomic_path

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

COUNTRIES = ("GB", "DE", "FR", "NL", "BE", "IE", "ES", "IT")
COUNTRY_SHARES = (0.30, 0.20, 0.15, 0.10, 0.05, 0.05, 0.08, 0.07)
CALLING_CODES = ("44", "49", "33", "31", "32", "353", "34", "39")
NUMBER_FIRST = (True, False, True, False, False, True, False, False)


def _split(words: str) -> tuple[str, ...]:
    """Word list from a '|'-separated string (keeps the lists compact)."""
    return tuple(words.split("|"))


REGIONS = (
    _split("London|South East|North West|Scotland|Wales|West Midlands|Yorkshire"),
    _split("Bayern|Berlin|Hamburg|Hessen|Nordrhein-Westfalen|Sachsen|Bremen"),
    _split("Île-de-France|Auvergne-Rhône-Alpes|Occitanie|Hauts-de-France|Bretagne"),
    _split("Noord-Holland|Zuid-Holland|Utrecht|Noord-Brabant|Gelderland"),
    _split("Flanders|Wallonia|Brussels"),
    _split("Dublin|Cork|Galway|Limerick"),
    _split("Madrid|Cataluña|Andalucía|Valencia"),
    _split("Lombardia|Lazio|Campania|Veneto|Piemonte"),
)
FIRST_NAMES = (
    _split(
        "Oliver|George|Harry|Jack|James|Amelia|Olivia|Emily|Isla|Sophie|Thomas|Charlotte|"
        "William|Grace"
    ),
    _split("Lukas|Leon|Finn|Paul|Jonas|Mia|Emma|Hannah|Lea|Anna|Felix|Sophia|Max|Laura"),
    _split(
        "Lucas|Hugo|Louis|Jules|Gabriel|Léa|Chloé|Manon|Camille|Inès|Arthur|Jade|Nathan|"
        "Louise"
    ),
    _split("Daan|Sem|Lucas|Milan|Levi|Julia|Sophie|Tess|Fenna|Sara|Bram|Noor|Jesse|Lotte"),
    _split(
        "Arthur|Noah|Jules|Louis|Adam|Olivia|Emma|Louise|Marie|Elena|Victor|Lina|Liam|"
        "Alice"
    ),
    _split(
        "Jack|Noah|James|Conor|Oisín|Emily|Grace|Fiadh|Sophie|Aoife|Seán|Ciara|Darragh|"
        "Niamh"
    ),
    _split(
        "Hugo|Martín|Lucas|Mateo|Pablo|Lucía|Sofía|María|Paula|Julia|Daniel|Carmen|"
        "Alejandro|Elena"
    ),
    _split(
        "Leonardo|Francesco|Alessandro|Lorenzo|Mattia|Sofia|Giulia|Aurora|Alice|Ginevra|"
        "Marco|Chiara|Andrea|Martina"
    ),
)
LAST_NAMES = (
    _split(
        "Smith|Jones|Taylor|Brown|Williams|Wilson|Johnson|Davies|Patel|Robinson|Wright|"
        "Thompson|Evans|Walker|White|Roberts"
    ),
    _split(
        "Müller|Schmidt|Schneider|Fischer|Weber|Meyer|Wagner|Becker|Schulz|Hoffmann|Koch|"
        "Richter|Klein|Wolf|Neumann|Braun"
    ),
    _split(
        "Martin|Bernard|Dubois|Thomas|Robert|Richard|Petit|Durand|Leroy|Moreau|Simon|"
        "Laurent|Lefebvre|Michel|Garcia|Fournier"
    ),
    _split(
        "de Jong|Jansen|de Vries|van den Berg|van Dijk|Bakker|Janssen|Visser|Smit|Meijer|"
        "de Boer|Mulder|de Groot|Bos|Vos|Peters"
    ),
    _split(
        "Peeters|Janssens|Maes|Jacobs|Mertens|Willems|Claes|Goossens|Wouters|De Smet|"
        "Dubois|Lambert|Dupont|Martens|Leclercq|Hermans"
    ),
    _split(
        "Murphy|Kelly|O'Sullivan|Walsh|Smith|O'Brien|Byrne|Ryan|O'Connor|O'Neill|Reilly|"
        "Doyle|McCarthy|Gallagher|Doherty|Kennedy"
    ),
    _split(
        "García|Rodríguez|González|Fernández|López|Martínez|Sánchez|Pérez|Gómez|Martín|"
        "Jiménez|Ruiz|Hernández|Díaz|Moreno|Muñoz"
    ),
    _split(
        "Rossi|Russo|Ferrari|Esposito|Bianchi|Romano|Colombo|Ricci|Marino|Greco|Bruno|"
        "Gallo|Conti|De Luca|Costa|Giordano"
    ),
)
STREETS = (
    _split(
        "High Street|Station Road|Church Lane|Park Avenue|Victoria Road|Mill Lane|"
        "Green Lane|Kings Road|Queen Street|New Road"
    ),
    _split(
        "Hauptstraße|Schulstraße|Gartenstraße|Bahnhofstraße|Dorfstraße|Bergstraße|"
        "Lindenweg|Kirchstraße|Waldstraße|Ringstraße"
    ),
    _split(
        "rue de la Paix|rue Victor Hugo|avenue Jean Jaurès|rue de la Gare|rue Pasteur|"
        "boulevard Voltaire|rue des Écoles|place de l'Église|rue du Moulin|rue Nationale"
    ),
    _split(
        "Kerkstraat|Dorpsstraat|Molenweg|Schoolstraat|Stationsweg|Hoofdstraat|"
        "Julianastraat|Beatrixlaan|Nieuwstraat|Parallelweg"
    ),
    _split(
        "Kerkstraat|Rue de la Station|Stationsstraat|Rue de l'Église|Nieuwstraat|"
        "Dorpsstraat|Rue du Moulin|Molenstraat|Grand-Place|Rue Haute"
    ),
    _split(
        "Main Street|Church Road|Strand Road|Bridge Street|Patrick Street|"
        "O'Connell Street|Castle Street|Mill Road|Green Road|Abbey Street"
    ),
    _split(
        "Calle Mayor|Calle Real|Calle de la Iglesia|Avenida de la Constitución|"
        "Calle del Sol|Plaza Mayor|Calle Nueva|Calle San Juan|Calle del Carmen|Calle Luna"
    ),
    _split(
        "Via Roma|Via Garibaldi|Via Mazzini|Via Dante|Corso Italia|Via Verdi|Via Cavour|"
        "Via Marconi|Piazza della Repubblica|Via Vittorio Emanuele"
    ),
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.example")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SHARES = (0.10, 0.20, 0.22, 0.20, 0.15, 0.13)
POSTCODE_LETTERS = "ABCDEFGHJKLMNPRSTUWXYZ"
DUPLICATE_SHARE = 0.01
HOUSEHOLD_JOIN_SHARE = 0.12
CONSENT_EMAIL = 0.78
CONSENT_SMS_GIVEN_EMAIL = (0.20, 0.55)
CONSENT_PHONE_GIVEN_SMS = (0.15, 0.38)
BAD_TS = ("2023-13-45 99:00:00", "not a date", "2024-02-30 10:00:00", "31/12/2023 25:61")
BAD_AMOUNT = ("n/a", "N/A", "-", "abc")

TRANSACTION_COLUMNS = (
    "customer_id", "ts", "order_id", "product_id", "category", "quantity", "amount",
    "is_return", "channel",
)
CUSTOMER_COLUMNS = (
    "customer_id", "signup_date", "country", "region", "age_band", "first_name", "last_name",
    "email", "phone", "address", "postcode", "consent_email", "consent_sms", "consent_phone",
)
TRUTH_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("as_of", pa.date32()),
        ("horizon_days", pa.int32()),
        ("alive", pa.bool_()),
        ("p_churn", pa.float64()),
    ]
)


REASONS = ("price", "not relevant", "no need", "unsubscribed")
REASON_GIVEN = 0.4  # share of (unsuppressed) treated non-responders who say why
UNSUBSCRIBE_GIVEN_SUPPRESSED = 0.6
UPLIFT_PEAK_DAYS, UPLIFT_WIDTH = 60.0, 0.7  # g(r): lapsing customers respond most
HEAVY_ORDERS = 6.0  # h(f): the effect halves at 6 orders a year
DOG_ORDERS, DOG_SLOPE, DOG_RECENCY = 10.0, 2.0, 45.0  # s: frequent and recent buyers
CAMPAIGN_COLUMNS = (
    "campaign_id", "customer_id", "offer_id", "ts", "group", "responded", "reason",
)
UPLIFT_TRUTH_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.string()),
        ("customer_id", pa.string()),
        ("p_control", pa.float64()),
        ("p_treatment", pa.float64()),
        ("true_uplift", pa.float64()),
    ]
)


class CampaignSpec(BaseModel):
    """One synthetic campaign: send date, offer, audience, control share and effect sizes."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    send_date: date
    offer_id: str = "RET_01"
    window_days: int = Field(default=30, ge=1, le=365, description="response window from D")
    lookback_days: int = Field(default=365, ge=1, description="eligible: an order in these days")
    audience_share: float = Field(default=0.6, gt=0.0, le=1.0)
    control_share: float = Field(default=0.5, gt=0.0, lt=1.0)
    max_uplift: float = Field(default=0.35, ge=0.0, le=1.0, description="scale of q")
    sleeping_dog: float = Field(default=0.3, ge=0.0, le=1.0, description="scale of s")
    require_consent: bool = True

    @property
    def last_day(self) -> date:
        """The last day of the response window."""
        return date.fromordinal(self.send_date.toordinal() + self.window_days - 1)


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

    @model_validator(mode="after")
    def _check_dates(self) -> SyntheticConfig:
        if (self.end - self.start).days < SIGNUP_MARGIN_DAYS:
            raise ValueError(f"end must be at least {SIGNUP_MARGIN_DAYS} days after start")
        for cutoff in self.truth_cutoffs:
            if not self.start < cutoff <= self.end:
                raise ValueError(f"truth cutoff {cutoff} is not in (start, end]")
        self._check_campaigns()
        return self

    def _check_campaigns(self) -> None:
        ids = [c.campaign_id for c in self.campaigns]
        if len(set(ids)) != len(ids):
            raise ValueError(f"campaign ids must be unique: {ids}")
        k = self.n_categories
        offers = {*(f"XS_cat_{c + 1:02d}" for c in range(k)), "UP_T1", "UP_T2", "UP_T3", "RET_01"}
        previous: CampaignSpec | None = None
        for c in sorted(self.campaigns, key=lambda c: c.send_date):
            if not self.start < c.send_date or c.last_day > self.end:
                raise ValueError(f"campaign {c.campaign_id}: the send date must be after start "
                                 f"and the window must end by end ({self.end})")
            if c.offer_id not in offers:
                raise ValueError(f"campaign {c.campaign_id}: unknown offer {c.offer_id!r}")
            if previous is not None and c.send_date <= previous.last_day:
                raise ValueError(f"campaign windows overlap: {previous.campaign_id} and "
                                 f"{c.campaign_id}")
            for cutoff in self.truth_cutoffs:
                horizon_end = date.fromordinal(cutoff.toordinal() + self.horizon_days)
                if c.send_date <= horizon_end and c.last_day > cutoff:
                    raise ValueError(f"campaign {c.campaign_id} overlaps the churn-truth horizon "
                                     f"of {cutoff}: that truth would not hold")
            previous = c


@dataclass(frozen=True)
class _World:
    """What all chunks share: the daily seasonality, the catalogue, category properties."""

    n_data_days: int
    season: np.ndarray  # s(day), day = 0..G-1 from start
    cum_season: np.ndarray  # S at day boundaries 0..G, S[0] = 0
    category_names: list[str]
    category_popularity: np.ndarray
    category_return_rate: np.ndarray
    product_ids: list[str]
    product_category: np.ndarray
    product_tier: np.ndarray  # 0..2
    product_price_cents: np.ndarray
    product_lookup: np.ndarray  # (3 * category + tier) * POPULARITY_SLOTS + slot -> product


@dataclass
class _Chunk:
    """One chunk of simulated customers: orders, transaction rows and churn truth."""

    index: int
    first: int
    signup_day: np.ndarray
    n_orders: int
    event_sec: np.ndarray  # seconds since start of each order, then of each return event
    return_orders: np.ndarray  # order index of each return event
    rows_cust: np.ndarray  # local customer index per transaction row
    rows_event: np.ndarray  # < n_orders: the order; else a return event
    rows_return: np.ndarray
    rows_product: np.ndarray
    rows_qty: np.ndarray
    rows_channel: np.ndarray
    truth_cust: np.ndarray
    truth_cutoff: np.ndarray  # index into the sorted cutoffs
    truth_alive: np.ndarray
    truth_p: np.ndarray
    customers: tuple[pa.Table, pa.Table, pa.Table]  # customers, duplicates, households
    campaigns: _CampaignRows | None = None


@dataclass
class _CampaignRows:
    """Audience members of the campaigns of a chunk, sorted by customer then send date."""

    cust: np.ndarray  # local customer index
    campaign: np.ndarray  # index into the campaigns sorted by send date
    treated: np.ndarray
    responded: np.ndarray
    reason: np.ndarray  # index into REASONS, -1 = none given
    p_control: np.ndarray
    p_treatment: np.ndarray


def _cutoff_day(cfg: SyntheticConfig, cutoff: date) -> int:
    """The instant a cutoff date stands for (the end of day ``cutoff``), in days from ``start``."""
    return (cutoff - cfg.start).days + 1


def _build_world(cfg: SyntheticConfig) -> _World:
    """Draw the catalogue and the seasonality from the seed (shared by all chunks)."""
    rng = np.random.default_rng([cfg.seed, 0])
    n_data_days = (cfg.end - cfg.start).days + 1
    last_truth_day = max((_cutoff_day(cfg, c) for c in cfg.truth_cutoffs), default=0)
    n_grid = max(n_data_days, last_truth_day + cfg.horizon_days) + 1
    days = np.datetime64(cfg.start.isoformat(), "D") + np.arange(n_grid)
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    season = MONTH_FACTORS[month] * WEEKDAY_FACTORS[weekday] / SEASON_NORM
    cum_season = np.concatenate([[0.0], np.cumsum(season)])

    k = cfg.n_categories
    popularity = rng.permutation(1.0 / np.arange(1, k + 1) ** 0.7)
    popularity /= popularity.sum()
    return_rate = rng.uniform(0.02, 0.07, k)
    price_level = np.exp(rng.normal(np.log(30.0), 0.6, k))
    tier_mult = np.array([0.6, 1.0, 1.8])
    ids: list[str] = []
    cats: list[np.ndarray] = []
    tiers: list[np.ndarray] = []
    prices: list[np.ndarray] = []
    lookups: list[np.ndarray] = []
    slots = (np.arange(POPULARITY_SLOTS) + 0.5) / POPULARITY_SLOTS
    for c in range(k):
        n = int(rng.integers(20, 51))
        n1, n2 = round(0.5 * n), round(0.3 * n)
        for t, m in enumerate((n1, n2, n - n1 - n2)):
            done = sum(map(len, cats[3 * c :]))  # products already made in this category
            ids.extend(f"P{c + 1:02d}{done + j + 1:03d}" for j in range(m))
            price = price_level[c] * tier_mult[t] * np.exp(rng.normal(0.0, 0.2, m))
            weight = rng.permutation(1.0 / np.arange(1, m + 1) ** 0.8)
            cdf = np.cumsum(weight) / weight.sum()
            offset = sum(map(len, cats))
            lookups.append(offset + np.minimum(np.searchsorted(cdf, slots), m - 1))
            cats.append(np.full(m, c))
            tiers.append(np.full(m, t))
            prices.append(np.maximum(np.round(price) * 100 - 1, 99).astype(np.int64))
    return _World(
        n_data_days=n_data_days,
        season=season,
        cum_season=cum_season,
        category_names=[f"cat_{c + 1:02d}" for c in range(k)],
        category_popularity=popularity,
        category_return_rate=return_rate,
        product_ids=ids,
        product_category=np.concatenate(cats),
        product_tier=np.concatenate(tiers),
        product_price_cents=np.concatenate(prices),
        product_lookup=np.concatenate(lookups).astype(np.int32),
    )


def _categorical_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw one category per entry of ``rows`` from the distributions ``probs[rows]``."""
    cdf = np.ascontiguousarray(np.cumsum(probs[:, :-1], axis=1).T)
    u = rng.random(rows.size)
    picks = np.zeros(rows.size, np.int64)
    for column in cdf:  # K - 1 comparisons per row: faster than a search for small K
        picks += u > column[rows]
    return picks


def _time_of_day(rng: np.random.Generator, channel: np.ndarray) -> np.ndarray:
    """Seconds after midnight (1..86399) from each channel's hour-of-day profile."""
    cdf = np.cumsum(HOUR_WEIGHTS, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    flat = (cdf + np.arange(len(CHANNELS))[:, None]).ravel()
    hour = np.searchsorted(flat, channel + rng.random(channel.size), side="right") - channel * 24
    sec = np.minimum(hour, 23) * 3600 + rng.integers(0, 3600, channel.size)
    return np.maximum(sec, 1)


def _p_no_purchase(
    world: _World, day: int, horizon: int, lam: np.ndarray, mu: np.ndarray
) -> np.ndarray:
    """P(no order in (day, day + horizon]) for customers alive at ``day`` (rates per day)."""
    cum = world.cum_season[day : day + horizon + 1] - world.cum_season[day]
    season = world.season[day : day + horizon]
    p = np.exp(-mu * horizon - lam * cum[horizon])
    for j in range(horizon):
        rate = mu + lam * season[j]
        p += mu / rate * np.exp(-mu * j - lam * cum[j]) * -np.expm1(-rate)
    return np.minimum(p, 1.0)


def _simulate_chunk(
    cfg: SyntheticConfig,
    world: _World,
    cutoff_days: list[int],
    index: int,
    first: int,
    n: int,
    id_width: int,
) -> _Chunk:
    """Simulate customers ``first .. first + n - 1``: customers, orders, campaigns, lines,
    returns and churn truth."""
    rng = np.random.default_rng([cfg.seed, 1, index])
    end_sec = world.n_data_days * DAY_SECONDS
    signup_day = rng.integers(0, world.n_data_days - SIGNUP_MARGIN_DAYS, n)
    customers = _customers_tables(cfg, index, first, signup_day, id_width)  # its own stream
    lam = rng.gamma(LAMBDA_SHAPE, LAMBDA_MEAN / LAMBDA_SHAPE, n) / YEAR_DAYS
    mu = rng.gamma(MU_SHAPE, MU_MEAN / MU_SHAPE, n) / YEAR_DAYS
    spend = rng.gamma(SPEND_SHAPE, 1.0 / SPEND_SHAPE, n)
    main_channel = rng.choice(len(CHANNELS), n, p=CHANNEL_SHARES)
    prefs = rng.dirichlet(DIRICHLET_CONCENTRATION * world.category_popularity, n)
    tier_logit = TIER_BASE + TIER_SLOPE * np.log(spend)[:, None]
    tier_probs = np.exp(tier_logit - tier_logit.max(axis=1, keepdims=True))
    tier_probs /= tier_probs.sum(axis=1, keepdims=True)

    # First order at sign-up, then a Poisson process of intensity lam * s(t) until death or end.
    first_channel = _order_channel(rng, main_channel, np.arange(n))
    signup_sec = signup_day * DAY_SECONDS + _time_of_day(rng, first_channel)
    birth = signup_sec / DAY_SECONDS
    death = birth + rng.exponential(1.0, n) / mu
    stop = np.minimum(death, world.n_data_days)
    grid = np.arange(world.cum_season.size, dtype=float)
    s_birth = np.interp(birth, grid, world.cum_season)
    s_span = np.maximum(np.interp(stop, grid, world.cum_season) - s_birth, 0.0)
    n_repeat = rng.poisson(lam * s_span)
    cust_r = np.repeat(np.arange(n), n_repeat)
    u = s_birth[cust_r] + rng.random(cust_r.size) * s_span[cust_r]
    day_r = np.minimum(np.interp(u, world.cum_season, grid).astype(np.int64), world.n_data_days - 1)
    channel_r = _order_channel(rng, main_channel, cust_r)
    sec_r = np.maximum(day_r * DAY_SECONDS + _time_of_day(rng, channel_r), signup_sec[cust_r])

    order_cust = np.concatenate([np.arange(n), cust_r])
    order_sec = np.concatenate([signup_sec, sec_r])
    order_channel = np.concatenate([first_channel, channel_r])
    perm = np.argsort((order_cust << 32) | order_sec, kind="stable")
    order_cust, order_sec, order_channel = order_cust[perm], order_sec[perm], order_channel[perm]
    campaigns: _CampaignRows | None = None
    if cfg.campaigns:
        consent = customers[0]["consent_email"].to_numpy(zero_copy_only=False).astype(bool)
        latent = _Latent(lam, mu, death, spend, prefs, tier_probs, main_channel)
        orders, campaigns = _run_campaigns(
            cfg, world, index, consent, latent, (order_cust, order_sec, order_channel)
        )
        perm = np.argsort((orders[0] << 32) | orders[1], kind="stable")
        order_cust, order_sec, order_channel = (a[perm] for a in orders)
    n_orders = order_cust.size

    # Lines: category from preferences, tier from spend, product by popularity, quantity.
    n_lines = 1 + rng.poisson(LINES_BASE + LINES_PER_SPEND * spend[order_cust])
    line_order = np.repeat(np.arange(n_orders), n_lines)
    line_cust = order_cust[line_order]
    category = _categorical_rows(rng, prefs, line_cust)
    tier = _categorical_rows(rng, tier_probs, line_cust)
    slot = (rng.random(line_cust.size) * POPULARITY_SLOTS).astype(np.int64)
    product = world.product_lookup[(3 * category + tier) * POPULARITY_SLOTS + slot]
    qty = 1 + rng.poisson(QTY_PER_SPEND * spend[line_cust])

    # Returns: one return time per order, each line returned with its category's probability.
    lo, hi = RETURN_DELAY_DAYS
    return_sec = order_sec + rng.integers(lo * DAY_SECONDS, hi * DAY_SECONDS + 1, n_orders)
    returned = rng.random(line_order.size) < world.category_return_rate[category]
    returned &= return_sec[line_order] < end_sec
    return_qty = 1 + (rng.random(line_order.size) * qty).astype(np.int64)
    ret = np.flatnonzero(returned)
    return_orders, return_event = np.unique(line_order[ret], return_inverse=True)
    event_sec = np.concatenate([order_sec, return_sec[return_orders]])

    rows_event = np.concatenate([line_order, n_orders + return_event.reshape(-1)])
    rows_cust = np.concatenate([line_cust, line_cust[ret]])
    perm = np.argsort((rows_cust << 32) | event_sec[rows_event], kind="stable")
    rows_event = rows_event[perm]
    rows_product = np.concatenate([product, product[ret]])[perm]
    truth = _churn_truth(
        world, cutoff_days, cfg.horizon_days, order_cust, order_sec, death, lam, mu
    )
    return _Chunk(
        index=index,
        first=first,
        signup_day=signup_day,
        n_orders=n_orders,
        event_sec=event_sec,
        return_orders=return_orders,
        rows_cust=rows_cust[perm],
        rows_event=rows_event,
        rows_return=rows_event >= n_orders,
        rows_product=rows_product,
        rows_qty=np.concatenate([qty, -return_qty[ret]])[perm],
        rows_channel=np.concatenate([order_channel, order_channel[return_orders]])[rows_event],
        truth_cust=truth[0],
        truth_cutoff=truth[1],
        truth_alive=truth[2],
        truth_p=truth[3],
        customers=customers,
        campaigns=campaigns,
    )


@dataclass(frozen=True)
class _Latent:
    """A chunk's latent customer parameters (rates per day) that campaign responses depend on."""

    lam: np.ndarray
    mu: np.ndarray
    death: np.ndarray  # in days from start
    spend: np.ndarray
    prefs: np.ndarray
    tier_probs: np.ndarray
    main_channel: np.ndarray


def _offer_relevance(world: _World, offer_id: str, latent: _Latent) -> np.ndarray:
    """How much an offer fits each customer, in [0, 1] (1 for a retention offer)."""
    if offer_id.startswith("XS_cat_"):
        k = int(offer_id.removeprefix("XS_cat_")) - 1
        return 1.0 - np.exp(-latent.prefs[:, k] / world.category_popularity[k])
    if offer_id.startswith("UP_T"):
        return np.minimum(1.0, 2.0 * latent.tier_probs[:, int(offer_id.removeprefix("UP_T")) - 1])
    return np.ones(latent.lam.size)


def campaign_effects(
    recency_days: np.ndarray,
    orders_365d: np.ndarray,
    relevance: np.ndarray,
    max_uplift: float,
    sleeping_dog: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(q, s): P(an order induced by the contact), P(the contact suppresses organic orders)."""
    r = np.asarray(recency_days, dtype=float)
    f = np.asarray(orders_365d, dtype=float)
    g = np.exp(-0.5 * ((np.log1p(r) - np.log1p(UPLIFT_PEAK_DAYS)) / UPLIFT_WIDTH) ** 2)
    h = 1.0 / (1.0 + (f / HEAVY_ORDERS) ** 2)
    q = max_uplift * np.asarray(relevance, dtype=float) * g * h
    s = sleeping_dog / (1.0 + np.exp(-(f - DOG_ORDERS) / DOG_SLOPE)) * np.exp(-r / DOG_RECENCY)
    return q, s


def _run_campaigns(
    cfg: SyntheticConfig,
    world: _World,
    index: int,
    consent: np.ndarray,
    latent: _Latent,
    orders: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], _CampaignRows]:
    """Run the campaigns in send order on a chunk's orders (customer, seconds, channel): returns
    the orders with induced ones added and suppressed ones removed, and the audience rows."""
    rng = np.random.default_rng([cfg.seed, 4, index])
    order_cust, order_sec, order_channel = orders
    n = latent.lam.size
    parts: list[tuple[np.ndarray, ...]] = []
    specs = sorted(cfg.campaigns, key=lambda c: c.send_date)
    for k, spec in enumerate(specs):
        day = (spec.send_date - cfg.start).days  # the instant T: D 00:00
        start_sec, end_sec = day * DAY_SECONDS, (day + spec.window_days) * DAY_SECONDS
        before = order_sec < start_sec
        last = np.full(n, -1, np.int64)
        np.maximum.at(last, order_cust[before], order_sec[before])
        recency = (day - 1) - last // DAY_SECONDS  # days from the last order date to T = D - 1
        recent = before & (order_sec >= (day - 365) * DAY_SECONDS)
        frequency = np.bincount(order_cust[recent], minlength=n)
        eligible = (last >= 0) & (recency < spec.lookback_days)
        if spec.require_consent:
            eligible &= consent
        audience = np.flatnonzero(eligible & (rng.random(n) < spec.audience_share))
        m = audience.size
        treated = rng.random(m) >= spec.control_share
        alive = latent.death[audience] > day
        p_control = np.zeros(m)
        a = audience[alive]
        p_control[alive] = 1.0 - _p_no_purchase(
            world, day, spec.window_days, latent.lam[a], latent.mu[a]
        )
        relevance = _offer_relevance(world, spec.offer_id, latent)[audience]
        r = recency[audience].astype(float)
        q, s = campaign_effects(
            r, frequency[audience], relevance, spec.max_uplift, spec.sleeping_dog
        )
        p_treatment = (1.0 - s) * (1.0 - (1.0 - p_control) * (1.0 - q))
        suppressed = treated & (rng.random(m) < s)
        induced = treated & ~suppressed & (rng.random(m) < q)
        in_window = (order_sec >= start_sec) & (order_sec < end_sec)
        organic = np.zeros(n, bool)
        organic[order_cust[in_window]] = True
        responded = np.where(treated, ~suppressed & (organic[audience] | induced),
                             organic[audience])

        # the contact: suppressed customers' organic orders in the window vanish, induced appear
        quiet = np.zeros(n, bool)
        quiet[audience[suppressed]] = True
        keep = ~(in_window & quiet[order_cust])
        new_cust = audience[induced]
        new_channel = _order_channel(rng, latent.main_channel, new_cust)
        new_day = day + rng.integers(0, spec.window_days, new_cust.size)
        new_sec = new_day * DAY_SECONDS + _time_of_day(rng, new_channel)
        order_cust = np.concatenate([order_cust[keep], new_cust])
        order_sec = np.concatenate([order_sec[keep], new_sec])
        order_channel = np.concatenate([order_channel[keep], new_channel])

        # reasons of treated non-responders
        reason = np.full(m, -1, np.int64)
        declined = treated & ~responded
        reason[suppressed & (rng.random(m) < UNSUBSCRIBE_GIVEN_SUPPRESSED)] = REASONS.index(
            "unsubscribed"
        )
        weights = np.column_stack(
            [
                1.5 / (1.0 + latent.spend[audience]),
                1.5 * (1.0 - relevance) + 0.1,
                np.exp(-r / 30.0) + 0.1,
                np.full(m, 0.05),
            ]
        )
        pick = _categorical_rows(rng, weights / weights.sum(axis=1, keepdims=True), np.arange(m))
        says = declined & ~suppressed & (rng.random(m) < REASON_GIVEN)
        reason[says] = pick[says]
        parts.append(
            (audience, np.full(m, k), treated, responded, reason, p_control, p_treatment)
        )
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    perm = np.lexsort((cols[1], cols[0]))
    rows = _CampaignRows(*(c[perm] for c in cols))
    return (order_cust, order_sec, order_channel), rows


def _order_channel(
    rng: np.random.Generator, main_channel: np.ndarray, cust: np.ndarray
) -> np.ndarray:
    """Channel per order: the customer's main channel mostly, else any channel."""
    other = rng.integers(0, len(CHANNELS), cust.size)
    return np.where(rng.random(cust.size) < MAIN_CHANNEL_LOYALTY, main_channel[cust], other)


def _churn_truth(
    world: _World,
    cutoff_days: list[int],
    horizon: int,
    order_cust: np.ndarray,
    order_sec: np.ndarray,
    death: np.ndarray,
    lam: np.ndarray,
    mu: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True churn probability at each cutoff for customers with an order in the past 365 days."""
    custs: list[np.ndarray] = []
    cuts: list[np.ndarray] = []
    alives: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    for k, day in enumerate(cutoff_days):
        in_lookback = (order_sec > (day - 365) * DAY_SECONDS) & (order_sec <= day * DAY_SECONDS)
        active = np.unique(order_cust[in_lookback])
        alive = death[active] > day
        p = np.ones(active.size)
        p[alive] = _p_no_purchase(world, day, horizon, lam[active[alive]], mu[active[alive]])
        custs.append(active)
        cuts.append(np.full(active.size, k))
        alives.append(alive)
        ps.append(p)
    if not custs:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, bool), np.zeros(0)
    cust, cut = np.concatenate(custs), np.concatenate(cuts)
    perm = np.lexsort((cut, cust))
    return cust[perm], cut[perm], np.concatenate(alives)[perm], np.concatenate(ps)[perm]


def _id_strings(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded numbers, e.g. C0000001."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _money_strings(cents: np.ndarray) -> pa.Array:
    """Integer cents as exact two-decimal strings, e.g. -1205 -> '-12.05'."""
    mag = np.abs(cents)
    whole = pc.cast(pa.array(mag // 100), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(mag % 100), pa.string()), 2, "0")
    sign = pc.if_else(pa.array(cents < 0), "-", "")
    return pc.binary_join_element_wise(sign, whole, ".", frac, "")


def _encoded(
    indices: np.ndarray, dictionary: pa.Array, null: np.ndarray | None = None
) -> pa.DictionaryArray:
    """A dictionary-encoded column: the CSV writer decodes it, so no per-row strings are built."""
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32), mask=null), dictionary)


def _transactions_table(
    cfg: SyntheticConfig, world: _World, chunk: _Chunk, order_offset: int, id_width: int
) -> tuple[pa.Table, int]:
    """A chunk's rows, dirty copies appended, as a CSV-ready table; returns (table, n_dirty)."""
    n_rows = chunk.rows_cust.size
    epoch = (cfg.start - date(1970, 1, 1)).days * DAY_SECONDS
    order_id = _id_strings("O", order_offset + np.arange(chunk.n_orders) + 1, 9)
    return_id = pc.binary_join_element_wise(order_id.take(pa.array(chunk.return_orders)), "-R", "")
    event_ts = pa.array(chunk.event_sec + epoch, pa.timestamp("s")).cast(pa.string())
    q_max = int(np.abs(chunk.rows_qty).max()) if n_rows else 1
    width = 2 * q_max + 1
    amount_cents = world.product_price_cents[:, None] * np.arange(-q_max, q_max + 1)
    amount_idx = chunk.rows_product * width + chunk.rows_qty + q_max

    rng = np.random.default_rng([cfg.seed, 3, chunk.index])
    n_dirty = int(rng.binomial(n_rows, cfg.dirty_share)) if n_rows else 0
    source = rng.integers(0, max(n_rows, 1), n_dirty)
    kind = rng.integers(0, 4, n_dirty)
    variant = rng.integers(0, 4, n_dirty)

    def with_dirty(values: np.ndarray) -> np.ndarray:
        return np.concatenate([values, values[source]])

    clean = np.zeros(n_rows, bool)
    ts_idx = with_dirty(chunk.rows_event)
    ts_idx[n_rows:][kind == 1] = len(event_ts) + variant[kind == 1]
    amount_idx = with_dirty(amount_idx)
    amount_idx[n_rows:][kind == 2] = amount_cents.size + variant[kind == 2]
    product = with_dirty(chunk.rows_product)
    table = pa.table(
        {
            "customer_id": _encoded(
                with_dirty(chunk.rows_cust),
                _id_strings("C", chunk.first + np.arange(chunk.signup_day.size) + 1, id_width),
                np.concatenate([clean, kind == 0]),
            ),
            "ts": _encoded(ts_idx, pa.concat_arrays([event_ts, pa.array(BAD_TS)])),
            "order_id": _encoded(
                with_dirty(chunk.rows_event),
                pa.concat_arrays([order_id, return_id]),
                np.concatenate([clean, kind == 3]),
            ),
            "product_id": _encoded(product, pa.array(world.product_ids)),
            "category": _encoded(
                world.product_category[product], pa.array(world.category_names)
            ),
            "quantity": pa.array(with_dirty(chunk.rows_qty), pa.int64()),
            "amount": _encoded(
                amount_idx,
                pa.concat_arrays(
                    [_money_strings(amount_cents.ravel()), pa.array(BAD_AMOUNT)]
                ),
            ),
            "is_return": pa.array(with_dirty(chunk.rows_return)),
            "channel": _encoded(with_dirty(chunk.rows_channel), pa.array(CHANNELS)),
        }
    )
    return table, n_dirty


def _draw_words(
    rng: np.random.Generator, options: tuple[tuple[str, ...], ...], country: np.ndarray
) -> np.ndarray:
    """Index into the flattened word lists of one word per row, from the row's country list."""
    sizes = np.array([len(words) for words in options])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return offsets[country] + (rng.random(country.size) * sizes[country]).astype(np.int64)


def _vocabulary(options: tuple[tuple[str, ...], ...]) -> pa.Array:
    """The flattened word lists."""
    return pa.array([w for words in options for w in words])


def _digits(rng: np.random.Generator, n: int, width: int, low: int = 0) -> pa.Array:
    """Random zero-padded digit strings of a fixed width."""
    values = rng.integers(low, 10**width, n)
    return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0")


def _letters(rng: np.random.Generator, n: int, k: int) -> pa.Array:
    """Random strings of ``k`` postcode letters."""
    letters = pa.array(list(POSTCODE_LETTERS))
    parts = [letters.take(pa.array(rng.integers(0, len(POSTCODE_LETTERS), n))) for _ in range(k)]
    return pc.binary_join_element_wise(*parts, "")


def _postcodes(rng: np.random.Generator, country: np.ndarray) -> pa.Array:
    """Country-shaped postcodes (GB 'AB1 2CD', NL '1234 AB', IE 'D02 X285', 4 or 5 digits)."""
    parts: list[pa.Array] = []
    positions: list[np.ndarray] = []
    for c, code in enumerate(COUNTRIES):
        rows = np.flatnonzero(country == c)
        m = rows.size
        if code == "GB":
            letters, d1, d2 = _letters(rng, m, 2), _digits(rng, m, 1, 1), _digits(rng, m, 1)
            part = pc.binary_join_element_wise(letters, d1, " ", d2, _letters(rng, m, 2), "")
        elif code == "NL":
            digits, letters = _digits(rng, m, 4, 1000), _letters(rng, m, 2)
            part = pc.binary_join_element_wise(digits, " ", letters, "")
        elif code == "IE":
            area, unit = _letters(rng, m, 1), _letters(rng, m, 1)
            part = pc.binary_join_element_wise(
                area, _digits(rng, m, 2), " ", unit, _digits(rng, m, 3), ""
            )
        else:
            part = _digits(rng, m, 4 if code == "BE" else 5, 1000)
        parts.append(part)
        positions.append(rows)
    where = np.empty(country.size, np.int64)
    where[np.concatenate(positions)] = np.arange(country.size)
    return pa.concat_arrays(parts).take(pa.array(where))


def _varied(rng: np.random.Generator, values: pa.Array, force: bool) -> pa.Array:
    """Upper-cased, lower-cased or space-padded copies of ``values`` (duplicate-record noise)."""
    kind = rng.integers(1 if force else 0, 4, len(values))
    out = pc.if_else(pa.array(kind == 1), pc.utf8_upper(values), values)
    out = pc.if_else(pa.array(kind == 2), pc.utf8_lower(values), out)
    return pc.if_else(pa.array(kind == 3), pc.binary_join_element_wise(values, " ", ""), out)


def _ascii_lower(values: pa.Array) -> pa.Array:
    """Lower-case ASCII letters only, for e-mail addresses ('Müller' -> 'muller')."""
    folded = pc.utf8_lower(pc.utf8_normalize(values, form="NFKD"))
    return pc.replace_substring_regex(folded, "[^a-z]", "")


def _customers_tables(
    cfg: SyntheticConfig, index: int, offset: int, signup_day: np.ndarray, id_width: int
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Customers of a chunk with fake personal data, plus the duplicate and household truth."""
    rng = np.random.default_rng([cfg.seed, 2, index])
    n = signup_day.size
    global_index = offset + np.arange(n)
    customer_id = _id_strings("C", global_index + 1, id_width)

    # Roles: a duplicate record belongs to another customer's person; a household joiner takes a
    # head's country, last name, address and postcode (and sometimes the landline).
    order = rng.permutation(n)
    n_dup = round(DUPLICATE_SHARE * n) if n >= 10 else 0
    n_join = round(HOUSEHOLD_JOIN_SHARE * n) if n >= 10 else 0
    dup = np.sort(order[:n_dup])
    join, rest = order[n_dup : n_dup + n_join], order[n_dup + n_join :]
    head = rest[rng.integers(0, rest.size, n_join)]
    people = np.concatenate([join, rest])
    person = np.arange(n)
    person[dup] = people[rng.integers(0, people.size, n_dup)]
    home = np.arange(n)
    home[join] = head
    phone_of = np.arange(n)
    shares_phone = rng.random(n_join) < 0.3
    phone_of[join[shares_phone]] = head[shares_phone]

    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_SHARES)[home]
    first = _draw_words(rng, FIRST_NAMES, country)
    same = join[first[join] == first[head]]  # household members have different first names
    sizes = np.array([len(words) for words in FIRST_NAMES])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])[country[same]]
    first[same] = offsets + (first[same] - offsets + 1) % sizes[country[same]]
    last = _draw_words(rng, LAST_NAMES, country)[home]
    region = _draw_words(rng, REGIONS, country)[home]
    street = _draw_words(rng, STREETS, country)[home]
    house = rng.integers(1, 200, n)[home]
    postcode = _postcodes(rng, country).take(pa.array(home[person]))
    calling = pa.array(CALLING_CODES).take(pa.array(country))
    prefix = pc.binary_join_element_wise("+", calling, "")
    phone = pc.binary_join_element_wise(prefix, _digits(rng, n, 3, 100), _digits(rng, n, 6), " ")
    phone = phone.take(pa.array(phone_of[person]))
    domain = rng.integers(0, len(EMAIL_DOMAINS), n)[person]
    age = rng.choice(len(AGE_BANDS), n, p=AGE_SHARES)[person]
    first, last, region, street, house, country = (
        v[person] for v in (first, last, region, street, house, country)
    )

    first_vocab, last_vocab = _vocabulary(FIRST_NAMES), _vocabulary(LAST_NAMES)
    modulus = 10 ** max(5, len(str(cfg.n_customers)) + 1)
    tag = pc.cast(pa.array((global_index[person] * 7919 + cfg.seed) % modulus), pa.string())
    local = pc.binary_join_element_wise(
        _ascii_lower(first_vocab).take(pa.array(first)),
        _ascii_lower(last_vocab).take(pa.array(last)),
        ".",
    )
    email = pc.binary_join_element_wise(
        pc.binary_join_element_wise(local, tag, ""),
        pa.array(EMAIL_DOMAINS).take(pa.array(domain)),
        "@",
    )
    house_str = pc.cast(pa.array(house), pa.string())
    street_str = _vocabulary(STREETS).take(pa.array(street))
    address = pc.if_else(
        pa.array(np.array(NUMBER_FIRST)[country]),
        pc.binary_join_element_wise(house_str, street_str, " "),
        pc.binary_join_element_wise(street_str, house_str, " "),
    )

    # Duplicate records: the same person's details, with casing and whitespace noise.
    dup_mask = np.zeros(n, bool)
    dup_mask[dup] = True
    is_dup, dup_arr = pa.array(dup_mask), pa.array(dup)
    first_idx, last_idx = first.copy(), last.copy()
    first_idx[dup] = len(first_vocab) + np.arange(n_dup)
    last_idx[dup] = len(last_vocab) + np.arange(n_dup)
    first_dict = pa.concat_arrays(
        [first_vocab, _varied(rng, first_vocab.take(pa.array(first[dup])), force=True)]
    )
    last_dict = pa.concat_arrays(
        [last_vocab, _varied(rng, last_vocab.take(pa.array(last[dup])), force=False)]
    )
    email = pc.replace_with_mask(email, is_dup, _varied(rng, email.take(dup_arr), force=False))
    address = pc.replace_with_mask(
        address, is_dup, _varied(rng, address.take(dup_arr), force=False)
    )
    unspaced = np.zeros(n, bool)
    unspaced[dup[rng.random(n_dup) < 0.5]] = True
    unspaced_arr = pa.array(unspaced)
    phone = pc.replace_with_mask(
        phone, unspaced_arr, pc.replace_substring(phone.filter(unspaced_arr), " ", "")
    )

    consent_email = rng.random(n) < CONSENT_EMAIL
    consent_sms = rng.random(n) < np.where(consent_email, *CONSENT_SMS_GIVEN_EMAIL[::-1])
    consent_phone = rng.random(n) < np.where(consent_sms, *CONSENT_PHONE_GIVEN_SMS[::-1])
    signup = pa.array(signup_day + (cfg.start - date(1970, 1, 1)).days, pa.int32())
    customers = pa.table(
        {
            "customer_id": customer_id,
            "signup_date": signup.cast(pa.date32()),
            "country": _encoded(country, pa.array(COUNTRIES)),
            "region": _encoded(region, _vocabulary(REGIONS)),
            "age_band": _encoded(age, pa.array(AGE_BANDS)),
            "first_name": _encoded(first_idx, first_dict),
            "last_name": _encoded(last_idx, last_dict),
            "email": email,
            "phone": phone,
            "address": address,
            "postcode": postcode,
            "consent_email": pa.array(consent_email),
            "consent_sms": pa.array(consent_sms),
            "consent_phone": pa.array(consent_phone),
        }
    )
    duplicates = pa.table(
        {
            "customer_id": customer_id.take(dup_arr),
            "duplicate_of": customer_id.take(pa.array(person[dup])),
        }
    )
    households = pa.table(
        {
            "customer_id": customer_id,
            "household_key": _id_strings("H", offset + home[person] + 1, id_width),
        }
    )
    return customers, duplicates, households


def _offers_table(world: _World) -> pa.Table:
    """One cross-sell offer per category, three up-sell tiers and one retention offer."""
    k = len(world.category_names)
    mean_price = np.array(
        [world.product_price_cents[world.product_category == c].mean() / 100 for c in range(k)]
    )
    overall = float(mean_price.mean())
    ids = [f"XS_{name}" for name in world.category_names] + ["UP_T1", "UP_T2", "UP_T3", "RET_01"]
    categories: list[str | None] = [*world.category_names, None, None, None, None]
    kinds = ["cross_sell"] * k + ["up_sell"] * 3 + ["retention"]
    tiers: list[int | None] = [*(None for _ in range(k)), 1, 2, 3, None]
    basket = overall * (1 + QTY_PER_SPEND) * (1 + LINES_BASE + LINES_PER_SPEND)
    values = [*(0.35 * mean_price), 0.2 * overall, 0.45 * overall, 0.9 * overall]
    values.append(0.3 * basket * LAMBDA_MEAN)  # a year of margin from a retained customer
    costs = [0.1] * k + [0.5, 0.5, 0.5, 2.0]
    return pa.table(
        {
            "offer_id": pa.array(ids),
            "category": pa.array(categories, pa.string()),
            "kind": pa.array(kinds),
            "tier": pa.array(tiers, pa.int64()),
            "value": pa.array(np.round(values, 2)),
            "cost": pa.array(np.round(costs, 2)),
        }
    )


def _products_table(world: _World) -> pa.Table:
    """The product catalogue: id, category, tier (1..3) and list price."""
    return pa.table(
        {
            "product_id": pa.array(world.product_ids),
            "category": pa.array(world.category_names).take(pa.array(world.product_category)),
            "tier": pa.array(world.product_tier + 1, pa.int64()),
            "price": _money_strings(world.product_price_cents),
        }
    )


class _CsvSink:
    """Append pyarrow tables to a CSV file with a plain (unquoted) header."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.stream = pa.OSFile(str(path), "wb")
        self.stream.write((",".join(schema.names) + "\n").encode())
        options = pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=16_384)
        self.writer = pacsv.CSVWriter(self.stream, schema, write_options=options)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
        self.stream.close()


def _config_record(cfg: SyntheticConfig) -> dict[str, object]:
    """The config as JSON for the manifest (no ``campaigns`` key when there are none, so files
    without campaigns stay identical to the generator's earlier output)."""
    record = cfg.model_dump(mode="json")
    if not cfg.campaigns:
        record.pop("campaigns")
    return record


def _campaign_tables(
    cfg: SyntheticConfig, rows: _CampaignRows, first: int, id_width: int
) -> tuple[pa.Table, pa.Table]:
    """A chunk's campaign_history rows (CSV-ready) and their uplift truth."""
    specs = sorted(cfg.campaigns, key=lambda c: c.send_date)
    campaign_ids = pa.array([c.campaign_id for c in specs])
    customer_id = _id_strings("C", first + rows.cust + 1, id_width)
    history = pa.table(
        {
            "campaign_id": _encoded(rows.campaign, campaign_ids),
            "customer_id": customer_id,
            "offer_id": _encoded(rows.campaign, pa.array([c.offer_id for c in specs])),
            "ts": _encoded(rows.campaign, pa.array([f"{c.send_date} 00:00:00" for c in specs])),
            "group": _encoded(rows.treated.astype(np.int64), pa.array(["control", "treatment"])),
            "responded": pa.array(rows.responded),
            "reason": _encoded(
                np.maximum(rows.reason, 0), pa.array(REASONS), null=rows.reason < 0
            ),
        }
    )
    truth = pa.table(
        {
            "campaign_id": campaign_ids.take(pa.array(rows.campaign)),
            "customer_id": customer_id,
            "p_control": pa.array(rows.p_control),
            "p_treatment": pa.array(rows.p_treatment),
            "true_uplift": pa.array(rows.p_treatment - rows.p_control),
        },
        schema=UPLIFT_TRUTH_SCHEMA,
    )
    return history, truth


def generate(
    cfg: SyntheticConfig, out_dir: Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, int]:
    """Write the synthetic CRM files into ``out_dir`` and return the row count of each file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = _build_world(cfg)
    cutoffs = sorted(set(cfg.truth_cutoffs))
    cutoff_days = [_cutoff_day(cfg, c) for c in cutoffs]
    id_width = max(7, len(str(cfg.n_customers)))
    epoch_day = (cfg.start - date(1970, 1, 1)).days - 1  # cutoff days count the day T itself
    as_of = pa.array(np.array(cutoff_days, np.int32) + epoch_day, pa.int32()).cast(pa.date32())
    counts: dict[str, int] = {}
    n_dirty = 0
    names = [
        "transactions.csv", "customers.csv", "truth_duplicates.csv", "truth_households.csv",
        "truth_churn.parquet", "offers.csv", "products.csv", "MANIFEST.json",
    ]
    if cfg.campaigns:
        names += ["campaign_history.csv", "truth_uplift.parquet"]
    with ExitStack() as stack:
        paths = {name: stack.enter_context(atomic_path(out_dir / name)) for name in names}
        sinks: dict[str, _CsvSink] = {}
        truth_writer = pq.ParquetWriter(str(paths["truth_churn.parquet"]), TRUTH_SCHEMA)
        truth_rows = 0
        uplift_writer = (
            pq.ParquetWriter(str(paths["truth_uplift.parquet"]), UPLIFT_TRUTH_SCHEMA)
            if cfg.campaigns
            else None
        )
        uplift_rows = 0
        order_offset = 0
        for index, first in enumerate(range(0, cfg.n_customers, cfg.chunk_customers)):
            n = min(cfg.chunk_customers, cfg.n_customers - first)
            chunk = _simulate_chunk(cfg, world, cutoff_days, index, first, n, id_width)
            transactions, dirty = _transactions_table(cfg, world, chunk, order_offset, id_width)
            order_offset += chunk.n_orders
            n_dirty += dirty
            tables = dict(
                zip(
                    ("customers.csv", "truth_duplicates.csv", "truth_households.csv"),
                    chunk.customers,
                    strict=True,
                )
            )
            tables["transactions.csv"] = transactions
            if uplift_writer is not None and chunk.campaigns is not None:
                history, truth_up = _campaign_tables(cfg, chunk.campaigns, first, id_width)
                tables["campaign_history.csv"] = history
                uplift_writer.write_table(truth_up)
                uplift_rows += truth_up.num_rows
            for name, table in tables.items():
                if name not in sinks:
                    sinks[name] = _CsvSink(paths[name], table.schema)
                sinks[name].write(table)
            if chunk.truth_cust.size:
                truth = pa.table(
                    {
                        "customer_id": _id_strings("C", first + chunk.truth_cust + 1, id_width),
                        "as_of": as_of.take(pa.array(chunk.truth_cutoff)),
                        "horizon_days": pa.array(
                            np.full(chunk.truth_cust.size, cfg.horizon_days), pa.int32()
                        ),
                        "alive": pa.array(chunk.truth_alive),
                        "p_churn": pa.array(chunk.truth_p),
                    },
                    schema=TRUTH_SCHEMA,
                )
                truth_writer.write_table(truth)
                truth_rows += truth.num_rows
            if progress is not None:
                progress(first + n, cfg.n_customers)
        truth_writer.close()
        for name, sink in sinks.items():
            sink.close()
            counts[name] = sink.rows
        counts["truth_churn.parquet"] = truth_rows
        if uplift_writer is not None:
            uplift_writer.close()
            counts["truth_uplift.parquet"] = uplift_rows
        for name, table in (
            ("offers.csv", _offers_table(world)),
            ("products.csv", _products_table(world)),
        ):
            sink = _CsvSink(paths[name], table.schema)
            sink.write(table)
            sink.close()
            counts[name] = sink.rows
        manifest = {
            "generator": "features.synthetic",
            "version": GENERATOR_VERSION,
            "config": _config_record(cfg),
            "rows": dict(sorted(counts.items())),
            "dirty_transaction_rows": n_dirty,
        }
        paths["MANIFEST.json"].write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dict(sorted(counts.items()))


__all__ = [
    "CAMPAIGN_COLUMNS",
    "CUSTOMER_COLUMNS",
    "REASONS",
    "TRANSACTION_COLUMNS",
    "CampaignSpec",
    "SyntheticConfig",
    "campaign_effects",
    "generate",
]
