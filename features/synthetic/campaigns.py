"""Campaign simulation, the heterogeneous treatment effects and the uplift truth.

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
6. Multi-arm campaigns (``arms``: several (offer, channel) pairs): the audience also needs consent
   on every arm's channel; each treated member gets one arm uniformly at random. An arm's induced
   probability is ``q`` with the offer's relevance times the channel's fit to the customer
   (``channel_fit``: e-mail 1; sms ``0.5 + exp(-r / 45)``, a reminder for the recently active;
   phone ``2.4 m / (1 + m)``, a personal call that moves high spenders ``m``), capped at 1, and its
   suppression ``s`` is scaled by the channel's intrusiveness (e-mail 1, sms 1.2, phone 1.5).
   ``campaign_history`` then has a ``channel`` column (the arm's; e-mail for single-offer
   campaigns; empty for controls, whose ``offer_id`` is empty too) and ``truth_arms.parquet``
   holds, per audience member and arm, ``p_control``, ``p_treatment`` and ``true_uplift``: the
   true value of any policy over the arms is known. In ``truth_uplift.parquet`` a multi-arm
   campaign's ``p_treatment`` is the treated member's own arm's and, for a control, the mean over
   the arms (the randomised treatment it did not get).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from features.synthetic.columns import encoded, id_strings
from features.synthetic.config import (
    CHANNEL_SUPPRESSION,
    DAY_SECONDS,
    DOG_ORDERS,
    DOG_RECENCY,
    DOG_SLOPE,
    HEAVY_ORDERS,
    PHONE_SPAN,
    REASON_GIVEN,
    REASONS,
    SMS_BASE,
    SMS_RECENCY,
    SMS_RECENT,
    UNSUBSCRIBE_GIVEN_SUPPRESSED,
    UPLIFT_PEAK_DAYS,
    UPLIFT_WIDTH,
    SyntheticConfig,
)
from features.synthetic.world import (
    World,
    draw_categorical,
    draw_channels,
    draw_time_of_day,
    p_no_purchase,
)

CAMPAIGN_COLUMNS = (
    "campaign_id",
    "customer_id",
    "offer_id",
    "ts",
    "group",
    "responded",
    "reason",
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
ARM_TRUTH_FILE = "truth_arms.parquet"
ARM_TRUTH_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.string()),
        ("customer_id", pa.string()),
        ("offer_id", pa.string()),
        ("channel", pa.string()),
        ("p_control", pa.float64()),
        ("p_treatment", pa.float64()),
        ("true_uplift", pa.float64()),
    ]
)


@dataclass
class CampaignRows:
    """Audience members of the campaigns of a chunk, sorted by customer then send date."""

    cust: np.ndarray  # local customer index
    campaign: np.ndarray  # index into the campaigns sorted by send date
    treated: np.ndarray
    responded: np.ndarray
    reason: np.ndarray  # index into REASONS, -1 = none given
    p_control: np.ndarray
    p_treatment: np.ndarray
    arm: np.ndarray  # index into the campaign's arms; -1 for controls and single-offer campaigns
    # per (audience member, arm) of the multi-arm campaigns: customer, campaign, arm, p_treatment
    arm_truth: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Latent:
    """A chunk's latent customer parameters (rates per day) that campaign responses depend on."""

    lam: np.ndarray
    mu: np.ndarray
    death: np.ndarray  # in days from start
    spend: np.ndarray
    prefs: np.ndarray
    tier_probs: np.ndarray
    main_channel: np.ndarray


def _offer_relevance(world: World, offer_id: str, latent: Latent) -> np.ndarray:
    """How much an offer fits each customer, in [0, 1] (1 for a retention offer)."""
    if offer_id.startswith("XS_cat_"):
        k = int(offer_id.removeprefix("XS_cat_")) - 1
        return 1.0 - np.exp(-latent.prefs[:, k] / world.category_popularity[k])
    if offer_id.startswith("UP_T"):
        return np.minimum(1.0, 2.0 * latent.tier_probs[:, int(offer_id.removeprefix("UP_T")) - 1])
    return np.ones(latent.lam.size)


def channel_fit(channel: str, recency_days: np.ndarray, spend: np.ndarray) -> np.ndarray:
    """How much of an offer's effect a contact on ``channel`` carries to each customer."""
    if channel == "sms":
        return SMS_BASE + SMS_RECENT * np.exp(-np.asarray(recency_days, float) / SMS_RECENCY)
    if channel == "phone":
        m = np.asarray(spend, float)
        return PHONE_SPAN * m / (1.0 + m)
    return np.ones(np.shape(recency_days))


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


def run_campaigns(
    cfg: SyntheticConfig,
    world: World,
    index: int,
    consent: dict[str, np.ndarray],
    latent: Latent,
    orders: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], CampaignRows]:
    """Run the campaigns in send order on a chunk's orders (customer, seconds, channel): returns
    the orders with induced ones added and suppressed ones removed, and the audience rows."""
    rng = np.random.default_rng([cfg.seed, 4, index])
    order_cust, order_sec, order_channel = orders
    n = latent.lam.size
    parts: list[tuple[np.ndarray, ...]] = []
    arm_parts: list[tuple[np.ndarray, ...]] = []
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
            for channel in sorted({a.channel for a in spec.arms} or {"email"}):
                eligible &= consent[channel]
        audience = np.flatnonzero(eligible & (rng.random(n) < spec.audience_share))
        m = audience.size
        treated = rng.random(m) >= spec.control_share
        alive = latent.death[audience] > day
        p_control = np.zeros(m)
        a = audience[alive]
        p_control[alive] = 1.0 - p_no_purchase(
            world, day, spec.window_days, latent.lam[a], latent.mu[a]
        )
        r = recency[audience].astype(float)
        arm = np.full(m, -1, np.int64)
        if spec.arms:
            qs, ss = [], []
            for arm_spec in spec.arms:
                relevance = _offer_relevance(world, arm_spec.offer_id, latent)[audience]
                fit = channel_fit(arm_spec.channel, r, latent.spend[audience])
                q_a, s_a = campaign_effects(
                    r, frequency[audience], relevance * fit, spec.max_uplift, spec.sleeping_dog
                )
                qs.append(np.minimum(q_a, 1.0))
                ss.append(np.minimum(s_a * CHANNEL_SUPPRESSION[arm_spec.channel], 1.0))
            q_all, s_all = np.column_stack(qs), np.column_stack(ss)
            p_arms = (1.0 - s_all) * (1.0 - (1.0 - p_control[:, None]) * (1.0 - q_all))
            drawn = rng.integers(0, len(spec.arms), m)
            arm[treated] = drawn[treated]
            rows_m = np.arange(m)
            q, s = q_all[rows_m, drawn], s_all[rows_m, drawn]
            relevance = np.array(
                [_offer_relevance(world, o.offer_id, latent)[audience] for o in spec.arms]
            ).T[rows_m, drawn]
            p_treatment = np.where(treated, p_arms[rows_m, drawn], p_arms.mean(axis=1))
            n_arms = len(spec.arms)
            arm_parts.append(
                (
                    np.repeat(audience, n_arms),
                    np.full(m * n_arms, k),
                    np.tile(np.arange(n_arms), m),
                    np.repeat(p_control, n_arms),
                    p_arms.reshape(-1),
                )
            )
        else:
            relevance = _offer_relevance(world, spec.offer_id, latent)[audience]
            q, s = campaign_effects(
                r, frequency[audience], relevance, spec.max_uplift, spec.sleeping_dog
            )
            p_treatment = (1.0 - s) * (1.0 - (1.0 - p_control) * (1.0 - q))
        suppressed = treated & (rng.random(m) < s)
        induced = treated & ~suppressed & (rng.random(m) < q)
        in_window = (order_sec >= start_sec) & (order_sec < end_sec)
        organic = np.zeros(n, bool)
        organic[order_cust[in_window]] = True
        responded = np.where(
            treated, ~suppressed & (organic[audience] | induced), organic[audience]
        )

        # the contact: suppressed customers' organic orders in the window vanish, induced appear
        quiet = np.zeros(n, bool)
        quiet[audience[suppressed]] = True
        keep = ~(in_window & quiet[order_cust])
        new_cust = audience[induced]
        new_channel = draw_channels(rng, latent.main_channel, new_cust)
        new_day = day + rng.integers(0, spec.window_days, new_cust.size)
        new_sec = new_day * DAY_SECONDS + draw_time_of_day(rng, new_channel)
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
        pick = draw_categorical(rng, weights / weights.sum(axis=1, keepdims=True), np.arange(m))
        says = declined & ~suppressed & (rng.random(m) < REASON_GIVEN)
        reason[says] = pick[says]
        parts.append(
            (audience, np.full(m, k), treated, responded, reason, p_control, p_treatment, arm)
        )
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    perm = np.lexsort((cols[1], cols[0]))
    if arm_parts:
        arm_cols = [np.concatenate(c) for c in zip(*arm_parts, strict=True)]
        arm_perm = np.lexsort((arm_cols[2], arm_cols[1], arm_cols[0]))
        a_cust, a_campaign, a_arm, a_p0, a_p1 = (c[arm_perm] for c in arm_cols)
        arm_truth = (a_cust, a_campaign, a_arm, a_p0, a_p1)
    else:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        arm_truth = (empty_i, empty_i, empty_i, empty_f, empty_f)
    c_cust, c_campaign, c_treated, c_responded, c_reason, c_p0, c_p1, c_arm = (
        c[perm] for c in cols
    )
    rows = CampaignRows(
        c_cust, c_campaign, c_treated, c_responded, c_reason, c_p0, c_p1, c_arm, arm_truth
    )
    return (order_cust, order_sec, order_channel), rows


def campaign_tables(
    cfg: SyntheticConfig, rows: CampaignRows, first: int, id_width: int
) -> tuple[pa.Table, pa.Table, pa.Table | None]:
    """A chunk's campaign_history rows (CSV-ready), their uplift truth and, with multi-arm
    campaigns, the truth per (audience member, arm)."""
    specs = sorted(cfg.campaigns, key=lambda c: c.send_date)
    campaign_ids = pa.array([c.campaign_id for c in specs])
    customer_id = id_strings("C", first + rows.cust + 1, id_width)
    columns: dict[str, pa.Array] = {
        "campaign_id": encoded(rows.campaign, campaign_ids),
        "customer_id": customer_id,
        "offer_id": encoded(rows.campaign, pa.array([c.offer_id for c in specs])),
        "ts": encoded(rows.campaign, pa.array([f"{c.send_date} 00:00:00" for c in specs])),
        "group": encoded(rows.treated.astype(np.int64), pa.array(["control", "treatment"])),
        "responded": pa.array(rows.responded),
        "reason": encoded(np.maximum(rows.reason, 0), pa.array(REASONS), null=rows.reason < 0),
    }
    arm_truth: pa.Table | None = None
    if any(c.arms for c in specs):
        # one code per (campaign, arm) pair: the offer and channel each treated row was sent
        pairs = [(c.offer_id, "email") for c in specs]
        code = rows.campaign.copy()
        for k, c in enumerate(specs):
            for j, a in enumerate(c.arms):
                code[(rows.campaign == k) & (rows.arm == j)] = len(pairs)
                pairs.append((a.offer_id, a.channel))
        multi = np.array([bool(c.arms) for c in specs])[rows.campaign]
        no_offer = multi & ~rows.treated
        columns["offer_id"] = encoded(code, pa.array([p[0] for p in pairs]), null=no_offer)
        columns["channel"] = encoded(code, pa.array([p[1] for p in pairs]), null=~rows.treated)
        cust, campaign, arm, p_control, p_treatment = rows.arm_truth
        offset = np.cumsum([0] + [len(c.arms) for c in specs])[:-1]
        arm_code = offset[campaign] + arm
        arms = [a for c in specs for a in c.arms]
        arm_truth = pa.table(
            {
                "campaign_id": campaign_ids.take(pa.array(campaign)),
                "customer_id": id_strings("C", first + cust + 1, id_width),
                "offer_id": encoded(
                    arm_code, pa.array([a.offer_id for a in arms])
                ).dictionary_decode(),
                "channel": encoded(
                    arm_code, pa.array([a.channel for a in arms])
                ).dictionary_decode(),
                "p_control": pa.array(p_control),
                "p_treatment": pa.array(p_treatment),
                "true_uplift": pa.array(p_treatment - p_control),
            },
            schema=ARM_TRUTH_SCHEMA,
        )
    history = pa.table(columns)
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
    return history, truth, arm_truth
